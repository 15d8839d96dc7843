"""Polygon zones in normalised frame coordinates, so one zone fits every resolution of a camera."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

Anchor = Literal["bottom_center", "center"]


class PolygonZone:
    def __init__(self, name: str, points: Sequence[Sequence[float]]) -> None:
        """points: (x, y) vertices in [0, 1] of the frame width/height, in drawing order."""
        if not name:
            raise ValueError("a zone needs a name")
        if len(points) < 3:
            raise ValueError(f"zone {name!r} needs at least 3 points, got {len(points)}")
        for i, point in enumerate(points):
            if len(point) != 2:
                raise ValueError(f"zone {name!r} point {i} must be (x, y), got {point!r}")
            if not all(isinstance(v, int | float) and math.isfinite(v) and 0.0 <= v <= 1.0 for v in point):
                raise ValueError(f"zone {name!r} point {i} {tuple(point)} must have x and y within [0, 1]")
        self.name = name
        self.points = np.asarray(points, dtype=np.float64)
        x, y = self.points[:, 0], self.points[:, 1]
        area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
        if area == 0.0:
            raise ValueError(f"zone {name!r} has no area (its points are on one line)")

    def __repr__(self) -> str:
        return f"PolygonZone({self.name!r}, {self.points.tolist()})"

    def contains(self, xyxy: np.ndarray, frame_w: int, frame_h: int, anchor: Anchor = "bottom_center") -> np.ndarray:
        """Boolean mask: is each box's anchor point inside the polygon (even-odd rule)."""
        boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        px = (boxes[:, 0] + boxes[:, 2]) / 2 / frame_w
        if anchor == "bottom_center":
            py = boxes[:, 3] / frame_h
        elif anchor == "center":
            py = (boxes[:, 1] + boxes[:, 3]) / 2 / frame_h
        else:
            raise ValueError(f"unknown anchor {anchor!r}; expected 'bottom_center' or 'center'")
        # Cast a ray to the right of each point and count the edges it crosses: (points, edges).
        x1, y1 = self.points[:, 0], self.points[:, 1]
        x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
        straddles = (y1[None, :] > py[:, None]) != (y2[None, :] > py[:, None])
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = x1[None, :] + (py[:, None] - y1[None, :]) * (x2 - x1)[None, :] / (y2 - y1)[None, :]
        crossings = straddles & (px[:, None] < x_cross)
        return crossings.sum(axis=1) % 2 == 1
