"""Model cards: loading, strict schema with clear errors, lookup beside the ONNX file, built-in paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from models.cards import CardError, ModelCard, builtin_model_path, find_card, load_card, save_card
from models.synthetic import CLASSES


def _card_dict() -> dict:
    return {
        "name": "tiny",
        "version": "1.0.0",
        "task": "detect",
        "file": "tiny.onnx",
        "classes": ["person", "rodent"],
        "input_size": 320,
        "normalisation": "rgb, 0..1, letterbox pad 114",
        "output_format": "ultralytics-yolov8: (B, 4+nc, anchors), cx,cy,w,h in input pixels, sigmoid class scores",
        "thresholds": {"score": 0.3, "iou": 0.5},
        "licence": "Apache-2.0",
        "data": {"what": "drawings", "where": "generated", "licence": "Apache-2.0", "attribution": "none"},
        "training": {"command": "train", "settings": {"batch": 16}, "epochs": 3, "time": "1 min", "machine": "cpu"},
        "metrics": [{"dataset": "val", "how": "ultralytics val", "values": {"map50": 0.5}}],
        "intended_use": "tests",
        "limitations": ["not real"],
    }


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_load_card_reads_every_field(tmp_path: Path) -> None:
    card = load_card(_write(tmp_path / "tiny.yaml", _card_dict()))
    assert card.classes == ["person", "rodent"]
    assert card.thresholds.score == 0.3 and card.input_size == 320
    assert card.metrics[0].values["map50"] == 0.5
    assert card.model_path(tmp_path / "tiny.yaml") == (tmp_path / "tiny.onnx").resolve()


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    card = ModelCard.model_validate(_card_dict())
    assert load_card(save_card(card, tmp_path / "card.yaml")) == card


def test_unknown_keys_are_rejected_with_their_path(tmp_path: Path) -> None:
    data = _card_dict()
    data["thresholds"]["scroe"] = 0.2
    data["colour"] = "blue"
    with pytest.raises(CardError) as err:
        load_card(_write(tmp_path / "bad.yaml", data))
    message = str(err.value)
    assert "bad.yaml" in message
    assert "thresholds.scroe: unknown field" in message
    assert "colour: unknown field" in message


def test_wrong_values_name_the_field(tmp_path: Path) -> None:
    data = _card_dict()
    data["task"] = "segment"
    del data["licence"]
    with pytest.raises(CardError) as err:
        load_card(_write(tmp_path / "bad.yaml", data))
    assert "task:" in str(err.value) and "licence:" in str(err.value)


def test_unreadable_cards_raise_card_error(tmp_path: Path) -> None:
    with pytest.raises(CardError, match="cannot read"):
        load_card(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(CardError, match="mapping"):
        load_card(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(CardError, match="not valid YAML"):
        load_card(tmp_path / "broken.yaml")


def test_find_card_looks_beside_the_model(tmp_path: Path) -> None:
    _write(tmp_path / "tiny.yaml", _card_dict())
    card = find_card(tmp_path / "tiny.onnx")
    assert card is not None and card.name == "tiny"
    assert find_card(tmp_path / "other.onnx") is None


def test_builtin_model_path() -> None:
    path = builtin_model_path("kitchen-starter")
    assert path.name == "kitchen-starter.onnx" and path.parent.name == "starter"
    with pytest.raises(KeyError, match="kitchen-starter"):
        builtin_model_path("no-such-model")


def test_committed_starter_card_matches_the_class_contract() -> None:
    path = builtin_model_path("kitchen-starter")
    card = find_card(path)
    assert card is not None, f"no card beside {path}"
    assert card.classes == CLASSES and card.task == "detect"
    assert card.model_path(path.with_suffix(".yaml")) == path.resolve() and path.is_file()
    assert {m.dataset.split(" ")[0] for m in card.metrics} >= {"synthetic", "fresh"}
    assert all("map50" in m.values for m in card.metrics)
