"""Decoded frame -> BGR: at analysis size, the one conversion every analysed frame pays for, and at full
size for the frames that become evidence.

Shrinking first and converting colour after costs a fraction of converting at full size: for 4:2:0
frames (what H.264 cameras send) the three planes are area-averaged by OpenCV and only the small
picture is turned into BGR. That is about half the CPU of libswscale's area filter for 1080p to 320 px
and within about one grey level of it on average. Other pixel formats take libswscale's path.
At full size, OpenCV's conversion from the planes takes about a third of libswscale's CPU (0.9 against 2.3 ms
for 1080p on a 2-core AMD EPYC), within 3 grey levels of it.
"""

from __future__ import annotations

import av
import cv2
import numpy as np

PLANAR_420 = "yuv420p"  # limited range BT.601, as OpenCV's I420 conversion expects


def _plane(frame: av.VideoFrame, index: int, width: int, height: int) -> np.ndarray:
    """A view of one plane's pixels in the decoder's own buffer (rows padded to line_size): no copy."""
    plane = frame.planes[index]
    return np.frombuffer(plane, np.uint8, plane.line_size * height).reshape(height, plane.line_size)[:, :width]


def to_analysis_bgr(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """The frame shrunk to width x height (never enlarged by the caller) in BGR, HxWx3 uint8."""
    w, h = frame.width, frame.height
    if frame.format.name != PLANAR_420 or w % 2 or h % 2 or width % 2 or height % 4 or (width, height) == (w, h):
        return frame.reformat(width=width, height=height, format="bgr24", interpolation="AREA").to_ndarray()
    # The planes are read where the decoder left them: copying the 1080p frame out first would touch
    # 3 MB and hold the GIL while the other cameras' readers wait.
    small = np.empty((height * 3 // 2, width), np.uint8)  # I420 layout: Y rows, then U and V at half size
    cv2.resize(_plane(frame, 0, w, h), (width, height), dst=small[:height], interpolation=cv2.INTER_AREA)
    quarter = height // 4
    for index, rows in ((1, small[height : height + quarter]), (2, small[height + quarter :])):
        chroma = rows.reshape(height // 2, width // 2)
        cv2.resize(_plane(frame, index, w // 2, h // 2), (width // 2, height // 2), dst=chroma,
                   interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_YUV2BGR_I420)


def to_full_bgr(frame: av.VideoFrame) -> np.ndarray:
    """The frame at its own size in BGR, HxWx3 uint8."""
    w, h = frame.width, frame.height
    if frame.format.name != PLANAR_420 or w % 2 or h % 2:
        return frame.to_ndarray(format="bgr24")
    i420 = np.empty(w * h * 3 // 2, np.uint8)  # Y, then U and V at half size, each without row padding
    i420[: w * h].reshape(h, w)[:] = _plane(frame, 0, w, h)
    quarter = w * h // 4
    for index, start in ((1, w * h), (2, w * h + quarter)):
        i420[start : start + quarter].reshape(h // 2, w // 2)[:] = _plane(frame, index, w // 2, h // 2)
    return cv2.cvtColor(i420.reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_I420)
