"""Annotated snapshots: boxes, labels and a title bar drawn with OpenCV (nothing to download).

Box labels are ASCII (class names, scores, track ids) and use OpenCV's built-in Hershey font. The title
carries the camera's name, often Chinese: OpenCV's built-in fonts have no CJK glyphs (they draw '?'), so
the title is drawn with a CJK font of the system (Debian's fonts-droid-fallback, which the installer
adds), and without one falls back to Hershey with a warning.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from vision.detections import Detections

RED = (0, 0, 255)
GREEN = (0, 200, 0)
WHITE = (255, 255, 255)
BAR = (40, 40, 40)
FONT = cv2.FONT_HERSHEY_SIMPLEX


# Fonts with CJK glyphs, by Debian package: fonts-droid-fallback, fonts-wqy-microhei, fonts-noto-cjk.
CJK_FONTS = (
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
)

log = logging.getLogger(__name__)


class _ThreadFaces(threading.local):
    def __init__(self) -> None:
        self.by_path: dict[str, cv2.FontFace] = {}


_thread_faces = _ThreadFaces()


@functools.cache
def cjk_font_path() -> str | None:
    """The first CJK font found on the system, or None (then titles are drawn in ASCII)."""
    for path in CJK_FONTS:
        if Path(path).is_file():
            return path
    log.warning("no CJK font found (install fonts-droid-fallback): snapshot titles draw non-ASCII characters "
                "as '?'")
    return None


def title_font() -> cv2.FontFace | None:
    """This thread's face of the CJK font, or None. A FreeType face keeps the size it last drew at as
    state, so threads rendering snapshots at the same time each get their own."""
    path = cjk_font_path()
    if path is None:
        return None
    faces = _thread_faces.by_path
    if path not in faces:
        faces[path] = cv2.FontFace(path)
    return faces[path]


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


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
        label = _ascii(f"{name} {score:.2f}" + (f" #{track_id}" if track_id >= 0 else ""))
        (tw, th), baseline = cv2.getTextSize(label, FONT, font_scale, thickness)
        # Label above the box, or inside it (below the title bar) when there is no room above.
        top = y1 - th - baseline - 2 * margin
        if top < bar_h:
            top = max(y1, bar_h)
        cv2.rectangle(image, (x1, top), (x1 + tw + 2 * margin, top + th + baseline + 2 * margin), color, -1)
        cv2.putText(image, label, (x1 + margin, top + margin + th), FONT, font_scale, WHITE, thickness, cv2.LINE_AA)

    # The title bar goes on last so that boxes reaching the top edge never hide it.
    stamp = "" if timestamp is None else f"  {datetime.fromtimestamp(timestamp, UTC):%Y-%m-%d %H:%M:%S} UTC"
    cv2.rectangle(image, (0, 0), (w - 1, bar_h), BAR, -1)
    room = w - 2 * margin
    font = title_font()
    if font is None:
        text = _fit(_ascii(title), stamp, room, lambda t: cv2.getTextSize(t, FONT, font_scale, thickness)[0][0], "...")
        cv2.putText(image, text, (margin, margin + text_h), FONT, font_scale, WHITE, thickness, cv2.LINE_AA)
    else:  # size in pixels: about the Hershey labels' height, glyphs sitting on the same baseline
        size = max(8, round(1.4 * text_h))
        text = _fit(title, stamp, room, lambda t: cv2.getTextSize((w, h), t, (0, 0), font, size)[2], "…")
        cv2.putText(image, text, (margin, margin + text_h), WHITE, font, size)
    return image


def _fit(title: str, stamp: str, room: int, width: Callable[[str], int], ellipsis: str) -> str:
    """title + stamp, with the title's end cut off (marked by the ellipsis) until it fits in `room` pixels;
    the time stamp is evidence, so it is kept whole."""
    if width(title + stamp) <= room:
        return title + stamp
    for end in range(len(title) - 1, 0, -1):
        text = title[:end].rstrip() + ellipsis + stamp
        if width(text) <= room:
            return text
    return ellipsis + stamp
