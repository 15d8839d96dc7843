"""Detections: the one container every vision stage passes along (boxes, scores, classes, track ids)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Detections:
    """N detections in pixel coordinates of the original camera frame.

    xyxy (N, 4) float32, scores (N,) float32, class_ids (N,) int32, track_ids (N,) int32 where -1 means
    the detection has not been through a tracker. Arrays are normalised to these dtypes on construction.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    track_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int32).reshape(-1)
        if self.track_ids is None:
            self.track_ids = np.full(n, -1, dtype=np.int32)
        else:
            self.track_ids = np.asarray(self.track_ids, dtype=np.int32).reshape(-1)
        lengths = {len(self.scores), len(self.class_ids), len(self.track_ids)}
        if lengths != {n}:
            raise ValueError(
                f"Detections arrays differ in length: xyxy {n}, scores {len(self.scores)}, "
                f"class_ids {len(self.class_ids)}, track_ids {len(self.track_ids)}"
            )

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    @classmethod
    def concat(cls, parts: Sequence[Detections]) -> Detections:
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.xyxy for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.class_ids for p in parts]),
            np.concatenate([p.track_ids for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def filter(self, selector: np.ndarray) -> Detections:
        """A new Detections holding the rows picked by a boolean mask or an index array."""
        selector = np.asarray(selector)
        if selector.dtype == bool:
            if selector.shape != (len(self),):
                raise ValueError(f"mask has shape {selector.shape}, expected ({len(self)},)")
        else:
            selector = selector.astype(np.intp).reshape(-1)  # an empty list arrives as float64
        return Detections(
            self.xyxy[selector], self.scores[selector], self.class_ids[selector], self.track_ids[selector]
        )

    def labels(self, names: Sequence[str]) -> list[str]:
        """Class name of each detection."""
        return [names[i] for i in self.class_ids.tolist()]
