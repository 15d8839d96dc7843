"""YOLO object detector for any ultralytics ONNX export.

Two output layouts are understood, told apart by the output shape:
- (B, 4 + nc, A): YOLOv8 / YOLO11 raw head. Boxes cx, cy, w, h in input pixels, class scores already
  sigmoided, no objectness; needs a score threshold and per-class NMS.
- (B, max_det, 6): end-to-end export (YOLO26, YOLOv10). Rows x1, y1, x2, y2, score, class_id in input
  pixels, already de-duplicated; only the score threshold applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vision.detections import Detections
from vision.nms import batched_nms
from vision.preprocess import LetterboxInfo, letterbox, rect_canvas, to_blob
from vision.quantize import Calibration
from vision.runtime import (
    BatchRunner,
    InferenceModel,
    ModelLoadError,
    RuntimePlan,
    class_names_from_metadata,
    metadata,
    open_model,
    plan_runtime,
    square_input_size,
)

MAX_DETECTIONS = 300
DEFAULT_STRIDE = 32  # YOLO's largest stride, when the model does not say


class YoloDetector:
    def __init__(
        self,
        path: str | Path,
        *,
        class_names: list[str] | None = None,
        input_size: int | None = None,
        score_threshold: float = 0.25,
        iou_threshold: float = 0.45,
        provider: str = "auto",
        precision: str = "auto",
        threads: int = 0,
        max_batch: int = 8,
        plan: RuntimePlan | None = None,
        cache_dir: str | Path | None = None,
        calibration: Calibration | None = None,
        rect: bool = True,
    ) -> None:
        """plan (from vision.runtime.plan_runtime) overrides provider and precision; int8 and CUDA fp16
        keep their converted file in cache_dir, and int8 calibrates on calibration when it makes one.
        rect=False keeps the full square input even where the model would take a smaller canvas."""
        self.path = Path(path)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.plan = plan or plan_runtime(provider, precision)
        self._model: InferenceModel = open_model(
            self.path, self.plan, threads=threads, cache_dir=cache_dir, calibration=calibration
        )
        names = class_names if class_names is not None else class_names_from_metadata(self._model)
        if not names:
            raise ModelLoadError(f"{self.path}: no class names given and none in the model's metadata")
        self._names = list(names)
        self._input_size = square_input_size(self._model, input_size)
        # Free height and width: run each batch on the smallest stride-multiple canvas that holds it.
        # Not on TensorRT, which would build an engine for every new shape.
        free = not all(isinstance(d, int) for d in self._model.input_shape[2:])
        self._rect = rect and free and self.plan.provider != "tensorrt"
        meta = metadata(self._model)
        self._stride = int(meta.get("stride", DEFAULT_STRIDE))
        self._runner = BatchRunner(self._model, max_batch)
        self._end_to_end = self._end_to_end_layout(self._model.output_shape, meta.get("end2end"))

    def _end_to_end_layout(self, shape: Sequence[int | str | None], declared: str | None) -> bool | None:
        """True for (B, max_det, 6), False for (B, 4 + nc, A), None while symbolic axes leave it open.

        ultralytics records the layout in its "end2end" metadata; without it the shape decides."""
        if len(shape) != 3:
            raise ModelLoadError(f"{self.path}: expected a 3-D detection output, got shape {shape}")
        channels = 4 + len(self._names)
        if declared in ("True", "False"):
            end_to_end = declared == "True"
        elif shape[1] == channels:
            end_to_end = False
        elif shape[2] == 6:
            end_to_end = True
        elif isinstance(shape[1], int):
            end_to_end = False  # a raw head whose channels do not fit the names: reported below
        else:
            return None
        if not end_to_end and isinstance(shape[1], int) and shape[1] != channels:
            raise ModelLoadError(
                f"{self.path}: output has {shape[1]} channels but {len(self._names)} class names "
                f"need {channels} (4 box + 1 per class)"
            )
        return end_to_end

    @property
    def names(self) -> list[str]:
        return list(self._names)

    @property
    def rect(self) -> bool:
        """Whether batches run on the smallest canvas that holds them rather than the full square."""
        return self._rect

    @property
    def input_size(self) -> int:
        return self._input_size

    @property
    def providers(self) -> list[str]:
        """Execution providers the model actually runs on, best first."""
        return self._model.providers

    @property
    def loaded_path(self) -> Path:
        """The file that runs: the configured one, or its int8 / fp16 conversion."""
        return self._model.path

    @property
    def model_name(self) -> str:
        return self.path.stem

    def detect(
        self, frames: Sequence[np.ndarray], orig_sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[Detections]:
        """Detect objects in BGR frames, returning boxes in original camera pixels.

        orig_sizes gives the (width, height) of the camera frame each frame was shrunk from; leave it
        None when the frames are full camera frames.
        """
        if not frames:
            return []
        if orig_sizes is not None and len(orig_sizes) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(orig_sizes)} original sizes")
        canvas = None
        if self._rect:
            canvas = rect_canvas([(f.shape[1], f.shape[0]) for f in frames], self._input_size, self._stride)
        boxed, infos = [], []
        for i, frame in enumerate(frames):
            orig = orig_sizes[i] if orig_sizes is not None else None
            image, info = letterbox(frame, self._input_size, orig, canvas=canvas)
            boxed.append(image)
            infos.append(info)
        output = self._runner.run(to_blob(boxed))
        if self._end_to_end is None:
            self._end_to_end = self._end_to_end_layout(output.shape, None)
        if self._end_to_end:
            return [self._decode_end_to_end(rows, info) for rows, info in zip(output, infos, strict=True)]
        return self._decode_raw(output, infos)

    def _decode_raw(self, output: np.ndarray, infos: list[LetterboxInfo]) -> list[Detections]:
        nc = len(self._names)
        if output.shape[1] != 4 + nc:
            raise ValueError(f"model output has {output.shape[1]} channels, expected {4 + nc}")
        # Best class and its score for every anchor of every image at once.
        class_scores = output[:, 4:, :]
        best_class = class_scores.argmax(axis=1)
        best_score = np.take_along_axis(class_scores, best_class[:, None, :], axis=1)[:, 0, :]
        candidates = best_score >= self.score_threshold
        results = []
        for b, info in enumerate(infos):
            anchors = np.flatnonzero(candidates[b])
            if not anchors.size:
                results.append(Detections.empty())
                continue
            cx, cy, w, h = output[b][:4, anchors]
            xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
            scores = best_score[b, anchors]
            classes = best_class[b, anchors]
            keep = batched_nms(xyxy, scores, classes, self.iou_threshold)[:MAX_DETECTIONS]
            results.append(Detections(info.to_original(xyxy[keep]), scores[keep], classes[keep]))
        return results

    def _decode_end_to_end(self, rows: np.ndarray, info: LetterboxInfo) -> Detections:
        rows = rows[rows[:, 4] >= self.score_threshold]
        classes = rows[:, 5].round().astype(np.int32)
        if classes.size and (classes.min() < 0 or classes.max() >= len(self._names)):
            raise ValueError(f"model output class id outside 0..{len(self._names) - 1}")
        order = np.argsort(-rows[:, 4], kind="stable")[:MAX_DETECTIONS]
        return Detections(info.to_original(rows[order, :4]), rows[order, 4], classes[order])
