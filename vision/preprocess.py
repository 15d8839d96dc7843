"""Letterboxing frames to the model input and mapping boxes back to camera pixels.

The input is the model's square, or, for models whose input height and width are free, the smallest
canvas in multiples of the model's stride that holds the frame (what ultralytics' own predictor does):
most of a square around a 16:9 frame is padding the network would compute over for nothing.

The content is centred (as ultralytics does at prediction time, so results match its own
evaluation) with integer padding, so the mapping back is an exact affine inverse. Frames that already fit
in the square (a reader that converted straight to model size) are only padded, never upscaled; the
scale then comes from the original camera size the caller passes, not from the shrunk frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class LetterboxInfo:
    """How a camera frame of orig_w x orig_h became the letterboxed model input.

    Model-input x = original x * scale_x + pad_x (same for y). The two scales differ only by the
    rounding of the content size to whole pixels; keeping both makes the inverse exact.
    """

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    orig_w: int
    orig_h: int

    def to_original(self, xyxy: np.ndarray) -> np.ndarray:
        """Boxes in model-input pixels -> original frame pixels, clipped to the frame."""
        boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
        out = np.empty_like(boxes)
        out[:, 0::2] = (boxes[:, 0::2] - self.pad_x) / self.scale_x
        out[:, 1::2] = (boxes[:, 1::2] - self.pad_y) / self.scale_y
        np.clip(out[:, 0::2], 0, self.orig_w, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.orig_h, out=out[:, 1::2])
        return out

    def to_letterbox(self, xyxy: np.ndarray) -> np.ndarray:
        """Boxes in original frame pixels -> model-input pixels (the forward mapping)."""
        boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
        out = np.empty_like(boxes)
        out[:, 0::2] = boxes[:, 0::2] * self.scale_x + self.pad_x
        out[:, 1::2] = boxes[:, 1::2] * self.scale_y + self.pad_y
        return out


def letterbox(
    image_bgr: np.ndarray,
    size: int,
    orig_size: tuple[int, int] | None = None,
    pad_value: int = 114,
    canvas: tuple[int, int] | None = None,
) -> tuple[np.ndarray, LetterboxInfo]:
    """Fit an image into a size x size square, keeping its aspect ratio, padding equally on both sides.

    orig_size is the (width, height) of the camera frame the image was shrunk from; None means the image
    is the camera frame itself. Images larger than the square are shrunk so the long side equals size;
    smaller ones are padded only. canvas, a (width, height) no larger than the square that holds the
    shrunk image (see rect_canvas), replaces the square.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {image_bgr.shape}")
    h, w = image_bgr.shape[:2]
    orig_w, orig_h = orig_size if orig_size is not None else (w, h)
    if orig_w <= 0 or orig_h <= 0:
        raise ValueError(f"original size must be positive, got {orig_w}x{orig_h}")

    new_w, new_h = fitted_size(w, h, size)
    if (new_w, new_h) != (w, h):
        image_bgr = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas_w, canvas_h = canvas or (size, size)
    if new_w > canvas_w or new_h > canvas_h:
        raise ValueError(f"a {canvas_w}x{canvas_h} canvas cannot hold a {new_w}x{new_h} image")

    pad_x, pad_y = (canvas_w - new_w) // 2, (canvas_h - new_h) // 2
    if new_w == canvas_w and new_h == canvas_h:
        out = np.ascontiguousarray(image_bgr)
    else:
        out = np.full((canvas_h, canvas_w, 3), pad_value, dtype=np.uint8)
        out[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = image_bgr
    info = LetterboxInfo(new_w / orig_w, new_h / orig_h, pad_x, pad_y, int(orig_w), int(orig_h))
    return out, info


def fitted_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) of an image once it fits in the size x size square: shrunk, never enlarged."""
    if max(width, height) <= size:
        return width, height
    r = size / max(width, height)
    return max(1, round(width * r)), max(1, round(height * r))


def rect_canvas(image_sizes: Sequence[tuple[int, int]], size: int, stride: int) -> tuple[int, int]:
    """The smallest (width, height), in multiples of stride and at most size, that holds every one of
    these (width, height) images once fitted: a 16:9 frame at 320 px runs on 320x192, not 320x320."""

    def up(n: int) -> int:
        return min(size, -(-n // stride) * stride)

    fitted = [fitted_size(w, h, size) for w, h in image_sizes]
    return up(max(w for w, _ in fitted)), up(max(h for _, h in fitted))


def to_blob(images: Sequence[np.ndarray]) -> np.ndarray:
    """Same-sized HxWx3 uint8 BGR images -> float32 NCHW RGB in [0, 1], in one pass per channel."""
    if not images:
        raise ValueError("to_blob needs at least one image")
    batch = np.stack(images)
    n, h, w, _ = batch.shape
    blob = np.empty((n, 3, h, w), dtype=np.float32)
    for rgb_channel, bgr_channel in enumerate((2, 1, 0)):
        np.multiply(batch[..., bgr_channel], np.float32(1 / 255), out=blob[:, rgb_channel], casting="unsafe")
    return blob
