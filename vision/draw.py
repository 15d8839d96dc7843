"""Annotated snapshots: boxes, labels and a title bar drawn with OpenCV's built-in fonts (nothing to download)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime

import cv2
import numpy as np

from vision.detections import Detections

RED = (0, 0, 255)
GREEN = (0, 200, 0)
WHITE = (255, 255, 255)
BAR = (40, 40, 40)
FONT = cv2.FONT_HERSHEY_SIMPLEX


# OpenCV 5 draws text with an embedded font that covers CJK (camera names are often Chinese); OpenCV 4's
# Hershey fonts only have ASCII glyphs, so there other characters are replaced with '?'.
_UNICODE_TEXT = int(cv2.__version__.split(".")[0]) >= 5


def _drawable(text: str) -> str:
    return text if _UNICODE_TEXT else text.encode("ascii", "replace").decode("ascii")


def annotate(
    frame_bgr: np.ndarray,
    detections: Detections,
    names: Sequence[str],
    *,
    title: str,
    highlight: Collection[str],
    timestamp: float | None = None,
) -> np.ndarray:
    """A copy of the frame with every box (classes in highlight red, others green), "name 0.87 #12"
    labels and a top bar with the title followed by the UTC time of timestamp, the frame's capture time
    (when None, the title is drawn as given)."""
    image = frame_bgr.copy()
    h, w = image.shape[:2]
    # Sizes follow the frame so labels stay legible from 320-px thumbnails to 4K snapshots.
    font_scale = max(0.35, min(w, h) / 900)
    thickness = max(1, round(min(w, h) / 400))
    text_h = cv2.getTextSize("Ag", FONT, font_scale, thickness)[0][1]
    margin = max(2, text_h // 3)

    bar_h = text_h + 2 * margin + thickness
    for (x1, y1, x2, y2), score, name, track_id in zip(
        detections.xyxy.round().astype(int).tolist(),
        detections.scores.tolist(),
        detections.labels(names),
        detections.track_ids.tolist(),
        strict=True,
    ):
        color = RED if name in highlight else GREEN
        cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness + 1)
        label = _drawable(f"{name} {score:.2f}" + (f" #{track_id}" if track_id >= 0 else ""))
        (tw, th), baseline = cv2.getTextSize(label, FONT, font_scale, thickness)
        # Label above the box, or inside it (below the title bar) when there is no room above.
        top = y1 - th - baseline - 2 * margin
        if top < bar_h:
            top = max(y1, bar_h)
        cv2.rectangle(image, (x1, top), (x1 + tw + 2 * margin, top + th + baseline + 2 * margin), color, -1)
        cv2.putText(image, label, (x1 + margin, top + margin + th), FONT, font_scale, WHITE, thickness, cv2.LINE_AA)

    # The title bar goes on last so that boxes reaching the top edge never hide it.
    if timestamp is not None:
        title = f"{title}  {datetime.fromtimestamp(timestamp, UTC):%Y-%m-%d %H:%M:%S} UTC"
    cv2.rectangle(image, (0, 0), (w - 1, bar_h), BAR, -1)
    title_text = _drawable(title)
    cv2.putText(image, title_text, (margin, margin + text_h), FONT, font_scale, WHITE, thickness, cv2.LINE_AA)
    return image
