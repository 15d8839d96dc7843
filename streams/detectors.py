"""Load the configured detectors once per process: one ONNX session per model, shared by all cameras."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from brightkitchen.config import Config, ModelConfig
from models.cards import ModelCard, builtin_model_path, find_card
from vision.detector import YoloDetector

log = logging.getLogger("streams.detectors")


@dataclass
class LoadedModel:
    name: str
    version: str
    path: Path
    card: ModelCard | None
    detector: YoloDetector


def model_path(config: Config, model: ModelConfig) -> Path:
    if model.path.startswith("builtin:"):
        return builtin_model_path(model.path.removeprefix("builtin:"))
    return config.resolve_path(model.path)


def load_model(config: Config, model: ModelConfig) -> LoadedModel:
    path = model_path(config, model)
    card = find_card(path)
    thresholds = card.thresholds if card else None
    detector = YoloDetector(
        path,
        class_names=list(card.classes) if card else None,
        score_threshold=model.score_threshold or (thresholds.score if thresholds else 0.25),
        iou_threshold=model.iou_threshold or (thresholds.iou if thresholds else 0.45),
        provider=model.provider,
        threads=model.threads,
        max_batch=model.max_batch,
    )
    version = model.version or (card.version if card else "unversioned")
    log.info("model %s %s loaded from %s (providers %s)", model.name, version, path, detector.providers)
    return LoadedModel(model.name, version, path, card, detector)


def load_models(config: Config) -> dict[str, LoadedModel]:
    return {m.name: load_model(config, m) for m in config.models}
