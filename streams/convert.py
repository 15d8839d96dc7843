"""Decoded frame -> BGR: at analysis size, the one conversion every analysed frame pays for, and at full
size for the frames that become evidence.

Shrinking first and converting colour after costs a fraction of converting at full size: for 4:2:0
frames (what H.264 cameras send) the three planes are area-averaged by OpenCV (halved first while they
are 4 times the target or more) and only the small picture is turned into BGR, within about one grey
level of libswscale's area filter on average. Other pixel formats take libswscale's path. At full size
OpenCV converts from the planes, within 3 grey levels of libswscale.

Which of the two costs less depends on the CPU. For a 1080p keyframe of the capacity benchmark's clip:
on a 2-core AMD EPYC of family 26 (Zen 5), the full-size conversion took 0.9 ms of CPU against 2.3 for
libswscale; on an AMD EPYC of family 25 (Zen 3, AVX2 only), 1.5 against 0.8 for full size, and 1.0
(in one step of 6: 1.8) against 0.6 for 320 px, with eight threads converting at once.
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
        cv2.resize(_halved(source, plane.shape), plane.shape[::-1], dst=plane, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_YUV2BGR_I420)


def _halved(plane: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
    """The plane halved while it is still at least 4 times the target (height, width) on both axes.

    OpenCV's area shrink by exactly 2 is a vectorised special case; the general one is not. The average of
    2x2 averages is the average of the larger block, so 1080p to 320 px in two steps (2, then 3) costs about
    half of one step of 6, and differs from it only by the rounding of the middle step.
    """
    height, width = plane.shape
    while height >= 4 * target[0] and width >= 4 * target[1] and not (height | width) & 1:
        height, width = height // 2, width // 2
        plane = cv2.resize(plane, (width, height), interpolation=cv2.INTER_AREA)
    return plane


def to_full_bgr(frame: av.VideoFrame) -> np.ndarray:
    """The frame at its own size in BGR, HxWx3 uint8."""
    w, h = frame.width, frame.height
    if frame.format.name != PLANAR_420 or w % 2 or h % 2:
        return frame.to_ndarray(format="bgr24")
    image, planes = _i420(w, h)
    for source, plane in zip(_planes(frame), planes, strict=True):
        plane[:] = source
    return cv2.cvtColor(image, cv2.COLOR_YUV2BGR_I420)
