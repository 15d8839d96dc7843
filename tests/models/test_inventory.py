"""Installed models and the check of each ONNX file against its card, on tiny ONNX models built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from brightkitchen.cli import main
from brightkitchen.config import load_config
from models.cards import DataInfo, ModelCard, Thresholds, TrainingInfo, save_card
from models.inventory import check_model, describe, find_model, installed_models

NAMES = ["head_bare", "face"]
META = {"names": "{0: 'head_bare', 1: 'face'}", "task": "detect"}


def make_card(
    onnx_path: Path,
    classes: list[str],
    input_size: int,
    *,
    task: str = "detect",
    score: float = 0.5,
    name: str | None = None,
) -> Path:
    """Writes the card `<name>.yaml` beside the ONNX file; returns its path."""
    card = ModelCard(
        name=name or onnx_path.stem,
        version="1.2.3",
        task=task,
        file=onnx_path.name,
        classes=classes,
        input_size=input_size,
        normalisation="rgb, 0..1, letterbox pad 114",
        output_format="test",
        thresholds=Thresholds(score=score, iou=0.5 if task == "detect" else None),
        licence="Apache-2.0",
        data=DataInfo(what="none", where="tests", licence="Apache-2.0", attribution="none"),
        training=TrainingInfo(command="none", settings={}, epochs=0, time="0 s", machine="test"),
        metrics=[],
        intended_use="tests",
        limitations=[],
    )
    return save_card(card, onnx_path.with_suffix(".yaml"))


def detector(make_detector_onnx, nc: int = 2, size: int = 64, metadata: dict | None = None) -> Path:
    return make_detector_onnx(
        np.zeros((4 + nc, 8), np.float32), size=size, metadata=META if metadata is None else metadata
    )


def test_a_matching_card_passes(make_detector_onnx):
    path = detector(make_detector_onnx)
    make_card(path, NAMES, 64)
    model = find_model(str(path))
    assert model.source == "file" and model.card is not None and model.card.classes == NAMES
    assert check_model(model) == []


def test_a_wrong_input_size_is_reported(make_detector_onnx):
    path = detector(make_detector_onnx)
    make_card(path, NAMES, 320)
    assert check_model(find_model(str(path))) == ["input size: the ONNX input is 64x64 but the card says 320"]


def test_a_dynamic_input_is_checked_against_the_imgsz_metadata(make_detector_onnx):
    path = make_detector_onnx(
        np.zeros((6, 8), np.float32), size="size", metadata={**META, "imgsz": "[320, 320]"}
    )
    make_card(path, NAMES, 416)
    problems = check_model(find_model(str(path)))
    assert problems == ["input size: the ONNX metadata says imgsz [320, 320] but the card says 416"]
    make_card(path, NAMES, 320)
    assert check_model(find_model(str(path))) == []


def test_a_wrong_class_list_is_reported(make_detector_onnx):
    path = detector(make_detector_onnx)
    make_card(path, ["head_bare", "face", "rodent"], 64)
    problems = check_model(find_model(str(path)))
    assert len(problems) == 2
    assert problems[0] == (
        "output channels: the ONNX output has 6 channels but the card's 3 classes need 7 "
        "(4 box + 1 per class)"
    )
    assert problems[1].startswith(
        "class names: the ONNX metadata has ['head_bare', 'face'] but the card lists"
    )


def test_renamed_classes_are_reported(make_detector_onnx):
    path = detector(make_detector_onnx)
    make_card(path, ["face", "head_bare"], 64)
    assert [p.split(":")[0] for p in check_model(find_model(str(path)))] == ["class names"]


def test_a_corrupt_onnx_file_is_reported(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"this is not a protobuf" * 10)
    make_card(path, NAMES, 64)
    problems = check_model(find_model(str(path)))
    assert len(problems) == 1 and problems[0].startswith(f"broken model file: cannot load ONNX model {path}")


def test_a_model_without_a_card_fails_the_check(make_detector_onnx):
    path = detector(make_detector_onnx)
    assert check_model(find_model(str(path))) == [
        f"no model card: expected {path.with_suffix('.yaml')} beside the ONNX file"
    ]


def test_an_unreadable_card_is_reported(make_detector_onnx):
    path = detector(make_detector_onnx)
    path.with_suffix(".yaml").write_text("name: det\nclasses: [a]\n")
    model = find_model(str(path))
    assert model.card is None
    (problem,) = check_model(model)
    assert "invalid model card" in problem and "version" in problem


def test_classifiers_are_checked_against_their_class_count(make_classifier_onnx):
    path = make_classifier_onnx(size=32)
    make_card(path, ["hat", "no_hat"], 32, task="classify")
    assert check_model(find_model(str(path))) == []
    make_card(path, ["hat", "no_hat", "hairnet"], 32, task="classify")
    problems = check_model(find_model(str(path)))
    assert problems[0] == "output: 2 class scores but the card lists 3 classes"
    assert problems[1].startswith("class names:")


def write_config(tmp_path: Path, det: Path, clf: Path | None = None) -> Path:
    data = {
        "sites": [{"id": "s1", "cameras": [{"id": "cam1", "url": "clip.mp4"}]}],
        "models": [{"name": "kitchen", "path": det.name, "score_threshold": 0.3}],
        "classifiers": [{"name": "hats", "path": clf.name, "detector": "kitchen", "on_class": "head_bare"}]
        if clf
        else [],
        "rules": [
            {"name": "no_hat", "model": "kitchen", "classes": ["no_hat"]},
            {"name": "faces", "model": "kitchen", "classes": ["face"]},
        ],
        "storage": {"database": "sqlite:///db.sqlite", "snapshots_dir": "snapshots"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_list_names_the_config_models_their_rules_and_the_builtins(
    tmp_path, make_detector_onnx, make_classifier_onnx
):
    det = detector(make_detector_onnx)
    make_card(det, NAMES, 64)
    clf = make_classifier_onnx(size=32)
    make_card(clf, ["hat", "no_hat"], 32, task="classify")
    config = load_config(write_config(tmp_path, det, clf))
    models = {m.name: m for m in installed_models(config)}
    assert models["kitchen"].source == "config" and models["kitchen"].rules == ("no_hat", "faces")
    assert models["kitchen"].score_threshold == 0.3  # the config's threshold wins over the card's
    assert models["hats"].task == "classify" and models["hats"].rules == ("no_hat",)
    assert models["kitchen-starter"].source == "builtin" and models["kitchen-starter"].rules == ()
    text = describe(models["hats"])
    assert "hats  1.2.3  classify  32 px" in text and "classifies kitchen.head_bare boxes" in text
    assert "rules: no_hat" in text


def test_a_config_entry_for_a_builtin_replaces_the_builtin_listing(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "sites": [{"id": "s1"}],
                "models": [{"name": "starter", "path": "builtin:kitchen-starter"}],
                "rules": [{"name": "rodent", "model": "starter", "classes": ["rodent"]}],
            }
        )
    )
    models = installed_models(load_config(path))
    assert [m.name for m in models if m.path.name == "kitchen-starter.onnx"] == ["starter"]
    assert find_model("starter", load_config(path)).rules == ("rodent",)


def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(LookupError, match="unknown model 'nope'.*kitchen-starter"):
        find_model("nope")
    with pytest.raises(LookupError, match="model file not found"):
        find_model("missing.onnx")


def test_the_shipped_models_match_their_cards():
    builtins = [m for m in installed_models() if m.source == "builtin"]
    assert builtins
    for model in builtins:
        assert check_model(model) == [], model.name


def test_cli_check_exits_non_zero_and_names_each_mismatch(
    tmp_path, make_detector_onnx, make_classifier_onnx, capsys
):
    det = detector(make_detector_onnx)
    make_card(det, NAMES, 320)
    clf = make_classifier_onnx(size=32)
    make_card(clf, ["hat", "no_hat"], 32, task="classify")
    config = write_config(tmp_path, det, clf)
    assert main(["models", "check", "-c", str(config)]) == 1
    out = capsys.readouterr().out
    assert f"kitchen ({det}): MISMATCH\n  - input size: the ONNX input is 64x64 but the card says 320" in out
    assert f"hats ({clf}): OK" in out

    make_card(det, NAMES, 64)
    assert main(["models", "check", "-c", str(config)]) == 0
    assert "MISMATCH" not in capsys.readouterr().out


def test_cli_list(tmp_path, make_detector_onnx, capsys):
    det = detector(make_detector_onnx)
    make_card(det, NAMES, 64)
    assert main(["models", "list", "-c", str(write_config(tmp_path, det))]) == 0
    out = capsys.readouterr().out
    assert "kitchen  1.2.3  detect  64 px" in out and "rules: no_hat, faces" in out
    assert "classes (2): head_bare, face" in out and "kitchen-starter" in out
