"""Load the configured detectors once per process: one model per config entry, shared by all cameras.

A model runs in this process (processes: 1) or in a pool of inference processes (streams/inference.py);
its engine, provider and precision come from vision.runtime.plan_runtime. A model whose card does not
describe its ONNX file, or that does not run, is refused with the reason.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brightkitchen.config import ClassifierConfig, Config, ModelConfig
from models.cards import ModelCard, builtin_model_path, find_card
from streams.inference import DetectorSpec, InferencePool
from vision.backends import Detector, detector_class
from vision.classifier import CropClassifier
from vision.detections import Detections
from vision.detector import YoloDetector
from vision.precision_probe import model_plan
from vision.quantize import Calibration, converted_model, file_sha256, folder_calibration
from vision.runtime import ModelLoadError, RuntimePlan, plan_runtime

log = logging.getLogger("streams.detectors")

AUTO_MAX_PROCESSES = 8
SYNTHETIC_CALIBRATION_IMAGES = 64


@dataclass
class LoadedModel:
    name: str
    version: str
    path: Path
    card: ModelCard | None
    detector: Detector | InferencePool
    classifiers: list[CropClassifier] = field(default_factory=list)
    entry: ModelConfig | None = None
    sha256: str = ""
    loaded_at: float = field(default_factory=time.time)

    @property
    def names(self) -> list[str]:
        """Class names of the boxes this model yields: the detector's, then each classifier's labels."""
        names = self.detector.names
        for clf in self.classifiers:
            names = clf.output_names(names)
        return names

    @property
    def processes(self) -> int:
        return self.detector.processes if isinstance(self.detector, InferencePool) else 1

    def detect(
        self, frames: Sequence[np.ndarray], orig_sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[Detections | None]:
        """The detector's boxes for each frame; None for a frame an inference process dropped."""
        return list(self.detector.detect(frames, orig_sizes))

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

    @property
    def runtime(self) -> str:
        """Engine, provider and precision, e.g. "openvino OpenVINO CPU bf16"."""
        plan = getattr(self.detector, "plan", None)
        return plan.describe() if plan is not None else f"onnxruntime {self.detector.providers[0]} fp32"

    def describe(self) -> str:
        return f"{self.runtime}, {self.processes} process(es), providers {self.detector.providers}"

    def close(self) -> None:
        if isinstance(self.detector, InferencePool):
            self.detector.close()


def model_path(config: Config, model: ModelConfig | ClassifierConfig) -> Path:
    if model.path.startswith("builtin:"):
        return builtin_model_path(model.path.removeprefix("builtin:"))
    return config.resolve_path(model.path)


def _card_problems(config: Config, entry: ModelConfig | ClassifierConfig, path: Path, card: ModelCard) -> list[str]:
    """What models.inventory's check finds wrong between the card and its ONNX file."""
    from models.inventory import InstalledModel, check_model  # imports this module: import it late

    installed = InstalledModel(entry.name, "config", path, card, None, entry)
    return check_model(installed)


def _read_card(path: Path) -> ModelCard | None:
    try:
        return find_card(path)
    except ValueError as exc:  # CardError: an unreadable or invalid card refuses its model
        raise ModelLoadError(str(exc)) from exc


def load_classifier(config: Config, clf: ClassifierConfig) -> CropClassifier:
    path = model_path(config, clf)
    card = _read_card(path)
    if card is not None:
        problems = _card_problems(config, clf, path, card)
        if problems:
            raise ModelLoadError(f"classifier {clf.name}: card does not match {path.name}: {'; '.join(problems)}")
    classifier = CropClassifier(
        path,
        on_class=clf.on_class,
        class_names=list(card.classes) if card else None,
        expand=clf.expand,
        threads=clf.threads,
        plan=model_plan(path, clf.provider, "auto", config.resolve_path(config.inference.cache_dir)),
        min_score=clf.min_score,
    )
    log.info("classifier %s on %s.%s loaded from %s (%s)", clf.name, clf.detector, clf.on_class, path,
             classifier.plan.describe())
    return classifier


def cameras_using(config: Config, model_name: str) -> int:
    return sum(1 for _, cam in config.cameras() if any(r.model == model_name for r in config.rules_for(cam)))


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_processes(model: ModelConfig, plan: RuntimePlan, cameras: int, cores: int | None = None) -> int:
    """processes: 0 means one per usable core (at most 8 and at most one per camera) on CPU providers,
    and 1 on GPU providers, whose one session already keeps the GPU busy."""
    if model.processes:
        return model.processes
    if plan.provider in ("cuda", "tensorrt"):
        return 1
    cores = usable_cores() if cores is None else cores
    return max(1, min(cores, AUTO_MAX_PROCESSES, cameras))


def calibration_for(config: Config, model: ModelConfig) -> Calibration | None:
    """int8 calibration images: the config's folder; for built-in models, rendered kitchen frames."""
    if model.calibration_images:
        return folder_calibration(config.resolve_path(model.calibration_images))
    if model.path.startswith("builtin:"):
        return synthetic_calibration()
    return None


def synthetic_calibration() -> Calibration:
    """Rendered kitchen frames (what the built-in models are trained on), the same ones every time."""

    def frames() -> Iterator[np.ndarray]:
        from models.synthetic import render_scene

        rng = np.random.default_rng(20240601)
        for _ in range(SYNTHETIC_CALIBRATION_IMAGES):
            yield render_scene(rng, 640, 360)[0]

    return Calibration(f"synthetic-kitchen-{SYNTHETIC_CALIBRATION_IMAGES}", frames)


def watched_files(config: Config, model: ModelConfig) -> list[Path]:
    """The files whose change means the model must be reloaded: ONNX files and cards of the detector and
    of its classifiers."""
    paths = [model_path(config, model)]
    paths += [model_path(config, c) for c in config.classifiers if c.detector == model.name]
    return [f for p in paths for f in (p, p.with_suffix(".yaml"))]


def files_sha256(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path).encode() + b"\0" + (file_sha256(path).encode() if path.is_file() else b"-"))
    return digest.hexdigest()


def load_model(config: Config, model: ModelConfig) -> LoadedModel:
    path = model_path(config, model)
    if not path.is_file():
        raise ModelLoadError(f"model {model.name}: file not found: {path}")
    digest = files_sha256(watched_files(config, model))
    card = _read_card(path)
    if card is not None:
        problems = _card_problems(config, model, path, card)
        if problems:
            raise ModelLoadError(f"model {model.name}: card does not match {path.name}: {'; '.join(problems)}")
    thresholds = card.thresholds if card else None
    score = model.score_threshold or (thresholds.score if thresholds else 0.25)
    iou = model.iou_threshold or (thresholds.iou if thresholds else 0.45)
    version = model.version or (card.version if card else "unversioned")
    decoder = detector_class(card.output_format if card else None)
    if decoder is not YoloDetector:
        # Other decoders (RetinaFace) run on onnxruntime in this process, at fp32.
        if model.precision not in ("auto", "fp32") or model.processes > 1:
            log.warning("model %s: %s runs in the worker's process at fp32; precision and processes are ignored",
                        model.name, decoder.__name__)
        face = decoder(path, class_names=list(card.classes) if card else None, score_threshold=score,
                       iou_threshold=iou, provider=model.provider, threads=model.threads, max_batch=model.max_batch)
        classifiers = [load_classifier(config, c) for c in config.classifiers if c.detector == model.name]
        for clf in classifiers:
            if clf.on_class not in face.names:
                raise ValueError(f"classifier on {clf.on_class!r}: model {model.name!r} has no such class")
        loaded = LoadedModel(model.name, version, path, card, face, classifiers, model, digest)
        log.info("model %s %s loaded from %s: %s", model.name, version, path, loaded.describe())
        return loaded
    plan = model_plan(path, model.provider, model.precision, config.resolve_path(config.inference.cache_dir))
    processes = resolve_processes(model, plan, cameras_using(config, model.name))
    calibration = calibration_for(config, model) if plan.precision == "int8" else None
    spec = DetectorSpec(
        path=str(path),
        plan=plan,
        class_names=tuple(card.classes) if card else None,
        score_threshold=score,
        iou_threshold=iou,
        threads=model.threads or (1 if processes > 1 else 0),
        max_batch=model.max_batch,
        cache_dir=str(config.resolve_path(config.inference.cache_dir)),
        calibration_key=calibration.key if calibration else None,
    )
    detector: YoloDetector | InferencePool
    if processes > 1:
        if plan.converted:  # made once here, so the pool's processes find it in the cache
            try:
                converted_model(path, plan.converted, Path(spec.cache_dir or "."), calibration)
            except ValueError as exc:
                raise ModelLoadError(f"model {model.name}: {exc}") from exc
        detector = InferencePool(spec, processes, timeout_s=config.inference.timeout_s, label=model.name)
    else:
        detector = spec.build(calibration)
    try:
        classifiers = [load_classifier(config, c) for c in config.classifiers if c.detector == model.name]
        for clf in classifiers:
            if clf.on_class not in detector.names:
                raise ValueError(f"classifier on {clf.on_class!r}: model {model.name!r} has no such class")
    except BaseException:
        if isinstance(detector, InferencePool):
            detector.close()
        raise
    loaded = LoadedModel(model.name, version, path, card, detector, classifiers, model, digest)
    log.info("model %s %s loaded from %s: %s", model.name, version, path, loaded.describe())
    return loaded


def prepare_model(config: Config, model: ModelConfig) -> tuple[RuntimePlan, Path | None]:
    """Make the converted file (int8, CUDA fp16) a model entry runs, ahead of the service's start.
    Returns the plan and the file (None when the plan runs the configured file itself)."""
    plan = plan_runtime(model.provider, model.precision)
    if not plan.converted:
        return plan, None
    calibration = calibration_for(config, model) if plan.precision == "int8" else None
    cache = config.resolve_path(config.inference.cache_dir)
    return plan, converted_model(model_path(config, model), plan.converted, cache, calibration)


def load_models(config: Config) -> dict[str, LoadedModel]:
    loaded: dict[str, LoadedModel] = {}
    try:
        for m in config.models:
            loaded[m.name] = load_model(config, m)
    except BaseException:
        for model in loaded.values():
            model.close()
        raise
    return loaded
