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


def _planes(frame: av.VideoFrame) -> list[np.ndarray]:
    """A 4:2:0 frame's Y, U and V planes, where the decoder left them (U and V at half size)."""
    w, h = frame.width, frame.height
    return [_plane(frame, index, w // scale, h // scale) for index, scale in enumerate((1, 2, 2))]


def _i420(width: int, height: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """An I420 image (what OpenCV's conversion takes: Y, then U and V at half size, rows unpadded) and views
    of its three planes, to be filled in."""
    image = np.empty(width * height * 3 // 2, np.uint8)
    quarter = width * height // 4
    y = image[: width * height].reshape(height, width)
    u, v = (image[start : start + quarter].reshape(height // 2, width // 2)
            for start in (width * height, width * height + quarter))
    return image.reshape(height * 3 // 2, width), [y, u, v]


def to_analysis_bgr(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """The frame shrunk to width x height (never enlarged by the caller) in BGR, HxWx3 uint8."""
    w, h = frame.width, frame.height
    if frame.format.name != PLANAR_420 or w % 2 or h % 2 or width % 2 or height % 4 or (width, height) == (w, h):
        return frame.reformat(width=width, height=height, format="bgr24", interpolation="AREA").to_ndarray()
    # The planes are read where the decoder left them: copying the 1080p frame out first would touch
    # 3 MB and hold the GIL while the other cameras' readers wait.
    small, planes = _i420(width, height)
    for source, plane in zip(_planes(frame), planes, strict=True):
        cv2.resize(source, plane.shape[::-1], dst=plane, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_YUV2BGR_I420)


def to_full_bgr(frame: av.VideoFrame) -> np.ndarray:
    """The frame at its own size in BGR, HxWx3 uint8."""
    w, h = frame.width, frame.height
    if frame.format.name != PLANAR_420 or w % 2 or h % 2:
        return frame.to_ndarray(format="bgr24")
    image, planes = _i420(w, h)
    for source, plane in zip(_planes(frame), planes, strict=True):
        plane[:] = source
    return cv2.cvtColor(image, cv2.COLOR_YUV2BGR_I420)
