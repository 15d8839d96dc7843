"""A cheap motion measure for frames analysed about once a second: what changed since the previous one.

Each frame is shrunk to a small grey image (long side `size`), blurred so that sensor and compression
noise do not count, and compared with the previous frame of the same camera. Pixels whose grey level
changed by at least `threshold` are changed; a frame with fewer than `still_below` of its pixels
changed is still. Changed pixels are grown a little and grouped into blobs, returned as boxes in
normalised frame coordinates, so that rules can use moving blobs as detections.

At one frame a second the previous frame is the background: a moving object leaves a blob that covers
where it was and where it is, and a scene that stopped moving is still from its next frame on.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Motion:
    """What moved between two frames. boxes: (N, 4) x1, y1, x2, y2 in [0, 1]; areas: (N,) fraction of
    the frame each blob's box covers; changed: fraction of the frame's pixels that changed."""

    changed: float
    still: bool
    boxes: np.ndarray
    areas: np.ndarray

    @staticmethod
    def unknown() -> Motion:
        """The first frame of a camera: nothing to compare with, so it counts as moving, without blobs."""
        return Motion(1.0, False, np.zeros((0, 4), np.float32), np.zeros(0, np.float32))


class MotionDetector:
    """Motion of one camera's frames, each compared with the previous one passed to update()."""

    def __init__(self, *, threshold: int = 25, still_below: float = 0.002, size: int = 160,
                 max_blobs: int = 32) -> None:
        if not 1 <= threshold <= 255:
            raise ValueError(f"threshold must be within 1..255, got {threshold}")
        if not 0.0 <= still_below <= 1.0:
            raise ValueError(f"still_below must be within [0, 1], got {still_below}")
        if size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {size}")
        self.threshold = threshold
        self.still_below = still_below
        self.size = size
        self.max_blobs = max_blobs
        self._previous: np.ndarray | None = None
        self._kernel = np.ones((3, 3), np.uint8)

    @property
    def primed(self) -> bool:
        """Whether a previous frame is kept to compare the next one with."""
        return self._previous is not None

    def reset(self) -> None:
        """Forget the previous frame (after a reconnect the next frame has nothing to compare with)."""
        self._previous = None

    def small_grey(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        scale = self.size / max(w, h)
        if scale < 1.0:
            image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                               interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        return cv2.GaussianBlur(grey, (5, 5), 0)

    def update(self, image: np.ndarray) -> Motion:
        """The motion of this frame (BGR or grey, any size) against the previous one."""
        grey = self.small_grey(image)
        previous, self._previous = self._previous, grey
        if previous is None or previous.shape != grey.shape:
            return Motion.unknown()
        changed_mask = cv2.absdiff(grey, previous) >= self.threshold
        changed = float(np.count_nonzero(changed_mask)) / changed_mask.size
        if changed == 0.0:
            boxes, areas = np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        else:
            boxes, areas = self._blobs(changed_mask)
        return Motion(changed, changed < self.still_below, boxes, areas)

    def _blobs(self, changed_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Grown a little, so that the parts of one moving object make one blob.
        mask = cv2.dilate(changed_mask.astype(np.uint8), self._kernel, iterations=2)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if count <= 1:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        stats = stats[1:]  # label 0 is the background
        order = np.argsort(-stats[:, cv2.CC_STAT_AREA], kind="stable")[: self.max_blobs]
        stats = stats[order]
        h, w = mask.shape
        x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
        bw, bh = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
        boxes = np.stack([x / w, y / h, (x + bw) / w, (y + bh) / h], axis=1).astype(np.float32)
        areas = ((bw * bh) / float(w * h)).astype(np.float32)
        return boxes, areas
