"""The skin-colour baseline, the classifier evaluation and the reference decoder, on inputs with known answers."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from brightkitchen.cli import main
from models.aizoo_reference import ANCHORS, decode
from models.baselines import SkinColourBaseline, skin_mask
from models.evaluate import DatasetError, classify_folder, evaluate, load_dataset, rename_classes
from tests.models.test_evaluate import known_detector_set
from tests.models.test_training import tiny_yolo_set

SKIN_BGR = (120, 150, 210)  # a light skin tone: Cr 158, Cb 102 in YCrCb
GLOVE_BGR = (200, 120, 40)  # a blue nitrile glove


def photo(colour: tuple[int, int, int], box=(40, 50, 120, 150), size=(160, 200)) -> np.ndarray:
    image = np.full((size[1], size[0], 3), (60, 60, 60), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = colour
    return image


def test_skin_mask_finds_skin_and_not_a_glove():
    assert skin_mask(photo(SKIN_BGR))[60:140, 50:110].mean() == 255
    assert skin_mask(photo(GLOVE_BGR)).max() == 0


def test_a_bare_hand_is_boxed_as_hand_bare():
    found = SkinColourBaseline((0.5, 0.5)).detect([photo(SKIN_BGR)])[0]
    names = ["hand_bare", "hand_glove"]
    best = int(np.argmax(found.scores))
    assert names[int(found.class_ids[best])] == "hand_bare" and found.scores[best] > 0.99
    assert found.xyxy[best].tolist() == [40, 50, 120, 150]


def test_without_skin_the_prior_box_is_a_glove():
    found = SkinColourBaseline((0.5, 0.25)).detect([photo(GLOVE_BGR)])[0]
    best = int(np.argmax(found.scores))
    assert int(found.class_ids[best]) == 1 and found.scores[best] == pytest.approx(1.0)
    assert found.xyxy[best].tolist() == [40, 75, 120, 125]  # centred, half the width, a quarter of the height


def test_prior_only_keeps_the_centred_box_and_classes_it_by_skin():
    found = SkinColourBaseline((0.5, 0.5), prior_only=True).detect([photo(SKIN_BGR, box=(40, 50, 120, 150))])[0]
    assert found.xyxy[0].tolist() == [40, 50, 120, 150]  # the centred prior happens to be the skin patch here
    found = SkinColourBaseline((0.25, 0.25), prior_only=True).detect([photo(SKIN_BGR)])[0]
    assert found.xyxy[0].tolist() == [60, 75, 100, 125]
    assert int(found.class_ids[int(np.argmax(found.scores))]) == 0


def test_the_prior_comes_from_the_training_labels_and_the_baseline_is_evaluated_like_a_model(tmp_path):
    data = tiny_yolo_set(tmp_path / "set", n_train=4, n_val=2)
    renames = {"Hand": "hand_bare", "Hand-in-Glove": "hand_glove"}
    baseline = SkinColourBaseline.from_training_labels(rename_classes(load_dataset(data, "train"), renames))
    assert baseline.prior_wh == pytest.approx((1 / 3, 1 / 3))
    # Grey squares have no skin: every box is the centred prior, right only where a square is near the centre.
    metrics = evaluate(baseline, rename_classes(load_dataset(data, "val"), renames), 0.5)
    assert metrics.images == 2 and metrics.instances == 2


def test_rename_refuses_a_class_the_dataset_lacks(tmp_path):
    data = tiny_yolo_set(tmp_path / "set")
    with pytest.raises(DatasetError, match="no classes"):
        rename_classes(load_dataset(data, "val"), {"Glove": "hand_glove"})


def test_eval_reads_dataset_classes_under_the_model_names(tmp_path, make_detector_onnx, capsys):
    model, data = known_detector_set(tmp_path, make_detector_onnx)
    data.write_text(data.read_text().replace("- a\n", "- Alpha\n"))
    assert main(["models", "eval", "--model", str(model), "--data", str(data), "--json"]) == 1
    assert "['Alpha'] are not classes of the model" in capsys.readouterr().err
    assert main(["models", "eval", "--model", str(model), "--data", str(data), "--json", "--rename", "Alpha=a"]) == 0
    assert json.loads(capsys.readouterr().out)["per_class"]["a"]["ap50"] == 1.0


def crops_folder(root, bright: int, dark: int):
    for cls, value, n in (("hat", 230, bright), ("no_hat", 20, dark)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / cls / f"{i}.png"), np.full((40, 30, 3), value, np.uint8))
    return root


def test_classifier_accuracy_on_a_folder_of_crops(tmp_path, make_classifier_onnx):
    model = make_classifier_onnx()  # bright -> hat, dark -> no_hat
    folder = crops_folder(tmp_path / "crops", bright=3, dark=2)
    # One dark crop filed as "hat": a known mistake.
    cv2.imwrite(str(folder / "hat" / "dark.png"), np.full((40, 30, 3), 20, np.uint8))
    metrics = classify_folder(model, ["hat", "no_hat"], folder)
    assert metrics.images == 6 and metrics.top1 == pytest.approx(5 / 6)
    assert metrics.per_class_dict() == {
        "hat": {"precision": 1.0, "recall": 0.75, "instances": 4},
        "no_hat": {"precision": pytest.approx(2 / 3, abs=1e-4), "recall": 1.0, "instances": 2},
    }
    with pytest.raises(DatasetError, match="not classes of the model"):
        classify_folder(model, ["a", "b"], folder)


def test_models_eval_of_a_classifier_by_its_card(tmp_path, make_classifier_onnx, capsys):
    from tests.models.test_inventory import make_card

    model = make_classifier_onnx()
    make_card(model, ["hat", "no_hat"], 32, task="classify")
    crops_folder(tmp_path / "set" / "val", bright=2, dark=2)
    assert main(["models", "eval", "--model", str(model), "--data", str(tmp_path / "set"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 4 and report["top1"] == 1.0


def test_the_reference_decoder_has_its_anchor_layout():
    assert ANCHORS.shape == (4 * (33 * 33 + 17 * 17 + 9 * 9 + 5 * 5 + 3 * 3), 4)
    # Zero offsets decode to the anchors themselves.
    assert np.allclose(decode(np.zeros((len(ANCHORS), 4))), ANCHORS)
    # The first anchor sits in the top-left cell of the 33x33 map, square, side 0.04.
    assert np.allclose(ANCHORS[0], [0.5 / 33 - 0.02, 0.5 / 33 - 0.02, 0.5 / 33 + 0.02, 0.5 / 33 + 0.02])
