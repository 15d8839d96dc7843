"""`brightkitchen models train`: dataset views, class renames, the recorded command and clear errors.
A real (tiny) training run needs torch and ultralytics and runs only where they are installed."""

from __future__ import annotations

import importlib.util
import os

import cv2
import numpy as np
import pytest
import yaml

from brightkitchen.cli import build_parser, main
from models.cards import load_card
from models.evaluate import load_dataset
from models.training import (
    TrainingError,
    classify_view,
    command_line,
    detection_view,
    parse_renames,
    renamed,
)


def tiny_yolo_set(root, n_train=4, n_val=2, names=("Hand", "Hand-in-Glove")):
    """Images of one bright square (class 0) or dark square (class 1) on grey, with their labels."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("valid", n_val)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for i in range(n):
            image = np.full((96, 96, 3), 128, np.uint8)
            cls = i % 2
            x, y = (int(v) for v in rng.integers(10, 50, 2))
            image[y : y + 32, x : x + 32] = 230 if cls == 0 else 25
            cv2.imwrite(str(root / split / "images" / f"{i}.jpg"), image)
            label = f"{cls} {(x + 16) / 96} {(y + 16) / 96} {1 / 3} {1 / 3}\n"
            (root / split / "labels" / f"{i}.txt").write_text(label)
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": ".", "train": "train/images", "val": "valid/images",
                                    "names": dict(enumerate(names))}))
    return data


def test_renames_are_parsed_and_checked():
    assert parse_renames(["Hand=hand_bare", " Hand-in-Glove = hand_glove "]) == {
        "Hand": "hand_bare", "Hand-in-Glove": "hand_glove"}
    with pytest.raises(TrainingError, match="OLD=NEW"):
        parse_renames(["Hand"])
    assert renamed(["Hand", "Hand-in-Glove"], {"Hand": "hand_bare"}) == ["hand_bare", "Hand-in-Glove"]
    with pytest.raises(TrainingError, match="does not have"):
        renamed(["Hand"], {"Glove": "hand_glove"})
    with pytest.raises(TrainingError, match="repeat"):
        renamed(["a", "b"], {"a": "b"})


def test_detection_view_has_absolute_paths_and_the_rule_names(tmp_path):
    data = tiny_yolo_set(tmp_path / "set")
    view, names = detection_view(data, tmp_path / "run" / "data.yaml", {"Hand": "hand_bare",
                                                                       "Hand-in-Glove": "hand_glove"}, "val")
    assert names == ["hand_bare", "hand_glove"]
    raw = yaml.safe_load(view.read_text())
    assert os.path.isabs(raw["train"]) and os.path.isabs(raw["val"])
    assert raw["names"] == {0: "hand_bare", 1: "hand_glove"}
    # The view is a dataset the evaluation reads, with the original labels.
    val = load_dataset(view, "val")
    assert val.names == names and len(val.images) == 2 and all(i.labels.is_file() for i in val.images)


def test_classify_view_renames_folders_keeping_their_order(tmp_path):
    for split in ("train", "val"):
        for cls in ("Mask", "NoMask"):
            (tmp_path / "set" / split / cls).mkdir(parents=True)
            cv2.imwrite(str(tmp_path / "set" / split / cls / "a.png"), np.zeros((8, 8, 3), np.uint8))
    view, names = classify_view(tmp_path / "set", tmp_path / "run" / "dataset",
                                {"Mask": "face_mask", "NoMask": "face_nomask"}, "val")
    assert names == ["face_mask", "face_nomask"]
    assert (view / "train" / "face_mask" / "a.png").is_file() and (view / "val" / "face_nomask" / "a.png").is_file()
    with pytest.raises(TrainingError, match="sorted order"):
        classify_view(tmp_path / "set", tmp_path / "run2", {"Mask": "z_mask"}, "val")
    with pytest.raises(TrainingError, match="test/ folder"):
        classify_view(tmp_path / "set", tmp_path / "run3", {}, "test")


def test_the_recorded_command_repeats_the_run():
    args = build_parser().parse_args(
        ["models", "train", "--task", "detect", "--data", "d/data.yaml", "--name", "hand-glove", "--out", "/tmp/r",
         "--rename", "Hand=hand_bare", "--epochs", "5", "--aug", "degrees=10", "--data-licence", "CC BY 4.0"])
    command = command_line(args)
    assert command.startswith("brightkitchen models train --task detect --data d/data.yaml --name hand-glove")
    assert "--rename Hand=hand_bare" in command and "--epochs 5" in command and "--aug degrees=10" in command
    again = build_parser().parse_args(command.split()[1:] + ["--data-licence", "x"])
    assert command_line(again) == command


def test_bad_training_input_is_one_clear_line(tmp_path, capsys):
    data = tiny_yolo_set(tmp_path / "set")
    common = ["models", "train", "--task", "detect", "--data", str(data), "--name", "m", "--out", str(tmp_path / "r"),
              "--data-licence", "CC0"]
    assert main([*common, "--rename", "Glove=hand_glove"]) == 1
    assert "--rename names classes the dataset does not have: ['Glove']" in capsys.readouterr().err
    assert main([*common, "--aug", "sharpness=2"]) == 1
    assert "unknown augmentation ['sharpness']" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the data licence is required: a card must say it
        main(common[:-2])


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is not None, reason="ultralytics is installed here")
def test_without_the_training_environment_the_command_says_what_to_install(tmp_path, capsys):
    data = tiny_yolo_set(tmp_path / "set")
    assert main(["models", "train", "--task", "detect", "--data", str(data), "--name", "m", "--out",
                 str(tmp_path / "r"), "--data-licence", "CC0"]) == 1
    assert "training needs torch and the train extra" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                    reason="training needs the train extra and torch (models/README.md)")
def test_a_tiny_detector_trains_exports_and_gets_its_card(tmp_path, monkeypatch):
    for name in ("YOLO_OFFLINE", "YOLO_CONFIG_DIR"):  # training sets them for ultralytics; undone after the test
        monkeypatch.setenv(name, "")
    data = tiny_yolo_set(tmp_path / "set")
    out = tmp_path / "run"
    code = main(["models", "train", "--task", "detect", "--data", str(data), "--name", "tiny", "--out", str(out),
                 "--dest", str(tmp_path / "dest"), "--rename", "Hand=hand_bare", "--rename", "Hand-in-Glove=hand_glove",
                 "--epochs", "1", "--imgsz", "64", "--batch", "2", "--workers", "0", "--data-licence", "CC0"])
    assert code == 0
    card = load_card(tmp_path / "dest" / "tiny.yaml")
    assert card.classes == ["hand_bare", "hand_glove"] and card.input_size == 64 and card.task == "detect"
    assert card.data.licence == "CC0" and "AGPL-3.0" in card.licence
    assert set(card.metrics[0].values) >= {"map50", "map50_95", "precision", "recall"}
    # Resuming a finished run exports again without training.
    assert main(["models", "train", "--task", "detect", "--data", str(data), "--name", "tiny", "--out", str(out),
                 "--rename", "Hand=hand_bare", "--rename", "Hand-in-Glove=hand_glove", "--epochs", "1",
                 "--imgsz", "64", "--batch", "2", "--workers", "0", "--data-licence", "CC0", "--resume"]) == 0


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                    reason="training needs the train extra and torch (models/README.md)")
def test_a_tiny_crop_classifier_trains_and_is_measured_on_each_split(tmp_path, monkeypatch):
    for name in ("YOLO_OFFLINE", "YOLO_CONFIG_DIR"):
        monkeypatch.setenv(name, "")
    for split, n in (("train", 6), ("val", 2), ("extra", 2)):
        for cls, value in (("Bright", 230), ("Dark", 20)):
            (tmp_path / "set" / split / cls).mkdir(parents=True)
            for i in range(n):
                cv2.imwrite(str(tmp_path / "set" / split / cls / f"{i}.png"), np.full((24, 24, 3), value, np.uint8))
    assert main(["models", "train", "--task", "classify", "--data", str(tmp_path / "set"), "--name", "tinycls",
                 "--out", str(tmp_path / "run"), "--dest", str(tmp_path / "dest"), "--rename", "Bright=a_bright",
                 "--rename", "Dark=b_dark", "--measure-split", "extra", "--epochs", "1", "--imgsz", "32",
                 "--batch", "4", "--workers", "0", "--data-licence", "CC0"]) == 0
    card = load_card(tmp_path / "dest" / "tinycls.yaml")
    assert card.task == "classify" and card.classes == ["a_bright", "b_dark"]
    assert [m.dataset.split()[0] for m in card.metrics] == ["val", "extra"]
    assert all(0.0 <= m.values["top1"] <= 1.0 for m in card.metrics)
