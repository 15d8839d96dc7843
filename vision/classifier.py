"""Secondary classification of detector boxes (face -> mask / no_mask, head -> hat / no_hat, ...).

Runs an ultralytics classify export (input (B, 3, S, S) RGB in [0, 1], output (B, nc) probabilities) on
crops of the boxes of one detector class. The result rewrites those boxes' classes: a face classified as
no_mask becomes a no_mask box, so rules and the tracker only ever see plain Detections.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from vision.detections import Detections
from vision.preprocess import to_blob
from vision.runtime import (
    BatchRunner,
    InferenceModel,
    ModelLoadError,
    RuntimePlan,
    class_names_from_metadata,
    open_model,
    plan_runtime,
    square_input_size,
)


class CropLabel(NamedTuple):
    index: int  # row in the Detections that was classified
    label: str
    prob: float


class CropClassifier:
    def __init__(
        self,
        path: str | Path,
        *,
        on_class: str,
        class_names: list[str] | None = None,
        expand: float = 0.1,
        provider: str = "auto",
        precision: str = "fp32",
        threads: int = 0,
        min_score: float = 0.0,
        max_batch: int = 16,
        plan: RuntimePlan | None = None,
    ) -> None:
        """expand grows each box by this fraction of its width/height on every side before cropping;
        min_score is the lowest top-class probability for which a box is relabelled."""
        if expand < 0:
            raise ValueError(f"expand must be >= 0, got {expand}")
        self.path = Path(path)
        self.on_class = on_class
        self.expand = expand
        self.min_score = min_score
        self.plan = plan or plan_runtime(provider, precision)
        self._model: InferenceModel = open_model(self.path, self.plan, threads=threads)
        names = class_names if class_names is not None else class_names_from_metadata(self._model)
        if not names:
            raise ModelLoadError(f"{self.path}: no class names given and none in the model's metadata")
        self._names = list(names)
        self._input_size = square_input_size(self._model, None)
        self._runner = BatchRunner(self._model, max_batch)

    @property
    def names(self) -> list[str]:
        """The classifier's own labels."""
        return list(self._names)

    @property
    def input_size(self) -> int:
        return self._input_size

    @property
    def providers(self) -> list[str]:
        return self._model.providers

    def classify(self, frame_bgr: np.ndarray, detections: Detections, names: Sequence[str]) -> list[CropLabel]:
        """Top label of every box of on_class in the frame (all crops in one batch), skipping labels
        below min_score."""
        if self.on_class not in names:
            raise ValueError(f"classifier {self.path.name} runs on {self.on_class!r}, which is not among {list(names)}")
        rows = np.flatnonzero(detections.class_ids == names.index(self.on_class))
        crops, indices = [], []
        for row in rows.tolist():
            crop = self._crop(frame_bgr, detections.xyxy[row])
            if crop is not None:
                crops.append(crop)
                indices.append(row)
        if not crops:
            return []
        probs = self._runner.run(to_blob(crops))
        best = probs.argmax(axis=1)
        return [
            CropLabel(row, self._names[c], float(probs[i, c]))
            for i, (row, c) in enumerate(zip(indices, best.tolist(), strict=True))
            if probs[i, c] >= self.min_score
        ]

    def output_names(self, names: Sequence[str]) -> list[str]:
        """Detector names extended with the classifier's labels, in a fixed order (stable class ids)."""
        return list(names) + [label for label in self._names if label not in names]

    def relabel(
        self, detections: Detections, names: Sequence[str], labels: Sequence[CropLabel]
    ) -> tuple[Detections, list[str]]:
        """New Detections whose classified boxes carry the classifier's label (indexing output_names)
        and score detector score x label probability; other boxes are unchanged."""
        extended = self.output_names(names)
        class_ids = detections.class_ids.copy()
        scores = detections.scores.copy()
        for label in labels:
            class_ids[label.index] = extended.index(label.label)
            scores[label.index] *= label.prob
        return Detections(detections.xyxy.copy(), scores, class_ids, detections.track_ids.copy()), extended

    def _crop(self, frame_bgr: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """Expanded box cut from the frame, short side resized to the input size, then centre-cropped
        square (ultralytics' classification preprocessing)."""
        frame_h, frame_w = frame_bgr.shape[:2]
        x1, y1, x2, y2 = box.tolist()
        dx, dy = (x2 - x1) * self.expand, (y2 - y1) * self.expand
        left, top = max(0, int(x1 - dx)), max(0, int(y1 - dy))
        right, bottom = min(frame_w, int(np.ceil(x2 + dx))), min(frame_h, int(np.ceil(y2 + dy)))
        if right - left < 2 or bottom - top < 2:
            return None
        crop = frame_bgr[top:bottom, left:right]
        size = self._input_size
        h, w = crop.shape[:2]
        r = size / min(h, w)
        new_w, new_h = max(size, round(w * r)), max(size, round(h * r))
        resized = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        x0, y0 = (new_w - size) // 2, (new_h - size) // 2
        return np.ascontiguousarray(resized[y0 : y0 + size, x0 : x0 + size])
