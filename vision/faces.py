"""RetinaFace face detector (biubug6/Pytorch_Retinaface layout) with the same interface as YoloDetector.

The network takes BGR pixels minus the per-channel mean (104, 117, 123), unscaled, in NCHW, at any size;
this detector letterboxes every frame into one square so frames of several cameras share a batch. Its
three outputs, per prior box (anchor):

- loc (B, A, 4): offsets dx, dy, dw, dh from the prior, scaled by the variances 0.1 (centre) and 0.2 (size);
- conf (B, A, 2): softmax over (background, face);
- landmarks (B, A, 10): five facial points (not used here).

Priors: for strides 8, 16 and 32, every cell of the feature map (row-major) holds two square priors of
sides (16, 32), (64, 128) and (256, 512) input pixels respectively.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from vision.detections import Detections
from vision.nms import nms
from vision.preprocess import letterbox
from vision.runtime import ModelLoadError, create_session

STRIDES = (8, 16, 32)
PRIOR_SIDES = ((16, 32), (64, 128), (256, 512))
CENTRE_VARIANCE, SIZE_VARIANCE = 0.1, 0.2
BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)
PAD_VALUE = 117  # close to the mean, so padding reads as nothing after the subtraction
MAX_DETECTIONS = 300
OUTPUTS = ("loc", "conf")


@lru_cache(maxsize=8)
def priors(size: int) -> np.ndarray:
    """(A, 4) priors cx, cy, w, h in input pixels for a size x size input."""
    rows = []
    for stride, sides in zip(STRIDES, PRIOR_SIDES, strict=True):
        cells = math.ceil(size / stride)
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        centres = (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride
        for_cell = [np.column_stack([centres, np.full((len(centres), 2), side)]) for side in sides]
        rows.append(np.stack(for_cell, axis=1).reshape(-1, 4))  # the sides of one cell are adjacent
    return np.concatenate(rows).astype(np.float32)


def decode_boxes(loc: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """(A, 4) network offsets -> (A, 4) x1, y1, x2, y2 in input pixels."""
    centre = prior[:, :2] + loc[:, :2] * CENTRE_VARIANCE * prior[:, 2:]
    size = prior[:, 2:] * np.exp(loc[:, 2:] * SIZE_VARIANCE)
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


class RetinaFaceDetector:
    """Faces in BGR frames, as Detections of the one class "face" in original camera pixels."""

    def __init__(
        self,
        path: str | Path,
        *,
        class_names: list[str] | None = None,
        input_size: int | None = None,
        score_threshold: float = 0.6,
        iou_threshold: float = 0.4,
        provider: str = "auto",
        threads: int = 0,
        max_batch: int = 8,
    ) -> None:
        self.path = Path(path)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_batch = max(1, max_batch)
        self._names = list(class_names or ["face"])
        if len(self._names) != 1:
            raise ModelLoadError(f"{self.path}: a face detector has one class, got {self._names}")
        self._session = create_session(self.path, provider, threads)
        inputs = self._session.get_inputs()
        outputs = [o.name for o in self._session.get_outputs()]
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or any(name not in outputs for name in OUTPUTS):
            raise ModelLoadError(f"{self.path}: not a RetinaFace model (outputs {outputs}, expected {OUTPUTS})")
        self._input_name = inputs[0].name
        h, w = inputs[0].shape[2:]
        fixed = h if isinstance(h, int) and h == w else None
        self._input_size = fixed or input_size or 640

    @property
    def names(self) -> list[str]:
        return list(self._names)

    @property
    def input_size(self) -> int:
        return self._input_size

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers()

    @property
    def model_name(self) -> str:
        return self.path.stem

    def detect(
        self, frames: Sequence[np.ndarray], orig_sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[Detections]:
        """Faces in each frame; orig_sizes as for YoloDetector.detect (None: frames are camera frames)."""
        if not frames:
            return []
        if orig_sizes is not None and len(orig_sizes) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(orig_sizes)} original sizes")
        boxed, infos = [], []
        for i, frame in enumerate(frames):
            image, info = letterbox(frame, self._input_size, orig_sizes[i] if orig_sizes else None, PAD_VALUE)
            boxed.append(image)
            infos.append(info)
        prior = priors(self._input_size)
        results = []
        for start in range(0, len(boxed), self.max_batch):
            blob = np.stack(boxed[start : start + self.max_batch]).astype(np.float32) - BGR_MEAN
            loc, conf = self._session.run(list(OUTPUTS), {self._input_name: blob.transpose(0, 3, 1, 2)})
            if loc.shape[1] != len(prior):
                raise ValueError(f"model gave {loc.shape[1]} priors, expected {len(prior)} at {self._input_size} px")
            for b, info in enumerate(infos[start : start + self.max_batch]):
                results.append(self._decode(loc[b], conf[b, :, 1], prior, info))
        return results

    def _decode(self, loc: np.ndarray, scores: np.ndarray, prior: np.ndarray, info) -> Detections:  # noqa: ANN001
        keep = np.flatnonzero(scores >= self.score_threshold)
        if not keep.size:
            return Detections.empty()
        boxes = decode_boxes(loc[keep], prior[keep])
        order = nms(boxes, scores[keep], self.iou_threshold)[:MAX_DETECTIONS]
        return Detections(info.to_original(boxes[order]), scores[keep][order], np.zeros(len(order), np.int32))
