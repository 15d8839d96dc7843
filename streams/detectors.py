"""Load the configured detectors once per process: one ONNX session per model, shared by all cameras."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brightkitchen.config import ClassifierConfig, Config, ModelConfig
from models.cards import ModelCard, builtin_model_path, find_card
from vision.backends import Detector, detector_class
from vision.classifier import CropClassifier
from vision.detections import Detections

log = logging.getLogger("streams.detectors")


@dataclass
class LoadedModel:
    name: str
    version: str
    path: Path
    card: ModelCard | None
    detector: Detector
    classifiers: list[CropClassifier] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """Class names of the boxes this model yields: the detector's, then each classifier's labels."""
        names = self.detector.names
        for clf in self.classifiers:
            names = clf.output_names(names)
        return names

    def classify(self, detections: Detections, full_frame: Callable[[], np.ndarray]) -> Detections:
        """Run the crop classifiers; the full-resolution frame is converted only if a box needs it."""
        names = self.detector.names
        image: np.ndarray | None = None
        for clf in self.classifiers:
            labels = []
            if clf.on_class in names and np.any(detections.class_ids == names.index(clf.on_class)):
                image = full_frame() if image is None else image
                labels = clf.classify(image, detections, names)
            detections, names = clf.relabel(detections, names, labels)
        return detections


def model_path(config: Config, model: ModelConfig | ClassifierConfig) -> Path:
    if model.path.startswith("builtin:"):
        return builtin_model_path(model.path.removeprefix("builtin:"))
    return config.resolve_path(model.path)


def load_classifier(config: Config, clf: ClassifierConfig) -> CropClassifier:
    path = model_path(config, clf)
    card = find_card(path)
    classifier = CropClassifier(
        path,
        on_class=clf.on_class,
        class_names=list(card.classes) if card else None,
        expand=clf.expand,
        provider=clf.provider,
        threads=clf.threads,
        min_score=clf.min_score,
    )
    log.info("classifier %s on %s.%s loaded from %s", clf.name, clf.detector, clf.on_class, path)
    return classifier


def load_model(config: Config, model: ModelConfig) -> LoadedModel:
    path = model_path(config, model)
    card = find_card(path)
    thresholds = card.thresholds if card else None
    detector = detector_class(card.output_format if card else None)(
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
    classifiers = [load_classifier(config, c) for c in config.classifiers if c.detector == model.name]
    for clf in classifiers:
        if clf.on_class not in detector.names:
            raise ValueError(f"classifier on {clf.on_class!r}: model {model.name!r} has no such class")
    return LoadedModel(model.name, version, path, card, detector, classifiers)


def load_models(config: Config) -> dict[str, LoadedModel]:
    return {m.name: load_model(config, m) for m in config.models}
