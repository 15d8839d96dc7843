"""An empty kitchen after hours, still but for light sensor noise, with a rodent crossing its floor.

The scene for motion rules (moving blobs in a kitchen with nobody in it) and for measuring what a still
kitchen costs: `AfterHoursScene.frame(t)` renders one frame, `render_after_hours_frames` a clip.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from models.synthetic import CLASSES, RODENT_COLOURS, Canvas, draw_rodent, render_scene

# A seed of render_scene whose kitchen has nobody and nothing labelled in it.
EMPTY_KITCHEN_SEED = 4


class AfterHoursScene:
    """The empty kitchen; the rodent crosses from right to left between `crossing` (t0, t1) seconds, every
    `period_s` seconds (the clip loops). Without `crossing` the kitchen stays still."""

    def __init__(self, width: int = 1280, height: int = 720, *, crossing: tuple[float, float] | None = (4.0, 10.0),
                 period_s: float = 20.0, seed: int = EMPTY_KITCHEN_SEED) -> None:
        background, boxes = render_scene(np.random.default_rng(seed), width, height)
        if boxes:
            raise ValueError(f"seed {seed} renders a kitchen with {len(boxes)} labelled objects, not an empty one")
        self.width, self.height = width, height
        self.crossing = crossing
        self.period_s = period_s
        self._background = background
        noise_rng = np.random.default_rng(seed + 1)
        self._noise = [noise_rng.integers(0, 5, size=background.shape, dtype=np.uint8) for _ in range(3)]

    def rodent_at(self, t_seconds: float) -> tuple[float, float, float] | None:
        """(x centre, ground y, length) in pixels of the rodent at t, or None when there is none."""
        if self.crossing is None:
            return None
        t = t_seconds % self.period_s
        t0, t1 = self.crossing
        if not t0 <= t < t1:
            return None
        s = (t - t0) / (t1 - t0)
        x = (0.9 - 0.8 * s) * self.width
        return x, 0.9 * self.height, 0.09 * self.width

    def frame(self, t_seconds: float) -> tuple[np.ndarray, list[tuple[str, float, float, float, float]]]:
        """The frame at t and its labels (class name, x1, y1, x2, y2) in pixels: the rodent, if any."""
        cv = Canvas(self._background.copy())
        rodent = self.rodent_at(t_seconds)
        if rodent is not None:
            x, ground, length = rodent
            draw_rodent(cv, x, ground, length, -1, RODENT_COLOURS[1], phase=t_seconds * 9)
        img = cv2.subtract(cv2.add(cv.img, self._noise[int(t_seconds * 25) % 3]), 2)
        return img, [(CLASSES[c], x1, y1, x2, y2) for c, x1, y1, x2, y2 in cv.boxes()]


def render_after_hours_frames(seconds: float, fps: float, scene: AfterHoursScene | None = None) -> Iterator[np.ndarray]:
    """BGR frames of the after-hours kitchen from t=0, `fps` per second, for `seconds` seconds."""
    scene = scene or AfterHoursScene()
    for i in range(int(round(seconds * fps))):
        yield scene.frame(i / fps)[0]
