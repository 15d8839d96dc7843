"""Decoded frame -> BGR at analysis size, the one conversion every analysed frame pays for.

Shrinking first and converting colour after costs a fraction of converting at full size: for 4:2:0
frames (what H.264 cameras send) the three planes are area-averaged by OpenCV and only the small
picture is turned into BGR. That is about half the CPU of libswscale's area filter for 1080p to 320 px
and within about one grey level of it on average. Other pixel formats take libswscale's path.
"""

from __future__ import annotations

import av
import cv2
import numpy as np

PLANAR_420 = "yuv420p"  # limited range BT.601, as OpenCV's I420 conversion expects


def to_analysis_bgr(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """The frame shrunk to width x height (never enlarged by the caller) in BGR, HxWx3 uint8."""
    w, h = frame.width, frame.height
    if frame.format.name != PLANAR_420 or w % 2 or h % 4 or width % 2 or height % 4 or (width, height) == (w, h):
        return frame.reformat(width=width, height=height, format="bgr24", interpolation="AREA").to_ndarray()
    planes = frame.to_ndarray(format=PLANAR_420)  # I420 layout: Y rows, then U and V at half size
    u = planes[h : h + h // 4].reshape(h // 2, w // 2)
    v = planes[h + h // 4 :].reshape(h // 2, w // 2)
    small = np.empty((height * 3 // 2, width), np.uint8)
    cv2.resize(planes[:h], (width, height), dst=small[:height], interpolation=cv2.INTER_AREA)
    quarter = height // 4
    small[height : height + quarter] = cv2.resize(u, (width // 2, height // 2), interpolation=cv2.INTER_AREA).reshape(
        quarter, width
    )
    small[height + quarter :] = cv2.resize(v, (width // 2, height // 2), interpolation=cv2.INTER_AREA).reshape(
        quarter, width
    )
    return cv2.cvtColor(small, cv2.COLOR_YUV2BGR_I420)
