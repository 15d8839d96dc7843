"""Deterministic H.264 test clips: what tests, benchmarks and the demo feed to readers and RTSP servers.

Frames are drawn with numpy/OpenCV (no ffmpeg binary needed) and encoded with PyAV's libx264 the way a
camera would encode them: a fixed GOP (every keyframe an IDR, no scene-cut keyframes), no B-frames
unless asked for, low-latency tuning, yuv420p. A `.h264` path gives an Annex-B elementary stream (what
the RTSP test server replays), `.mp4` an MP4 file. One encoder thread keeps the bytes identical across
machines.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

# testsrc: moving shapes; noisy: the same with sensor-like noise, so the encoder spends the bitrate it is
# given (as a real camera does) instead of a fraction of it; still: no motion but the frame counter.
PATTERNS = ("testsrc", "noisy", "still")
NOISE_AMPLITUDE = 12

_CONTAINER_FORMATS = {".h264": "h264", ".264": "h264", ".mp4": "mp4", ".h265": "hevc", ".hevc": "hevc"}


def parse_bitrate(bitrate: str | int) -> int:
    """'2M' -> 2_000_000, '800k' -> 800_000, 1500000 -> 1500000."""
    if isinstance(bitrate, int):
        return bitrate
    text = bitrate.strip().lower()
    multiplier = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    number = text[:-1] if multiplier != 1 else text
    try:
        return int(float(number) * multiplier)
    except ValueError:
        raise ValueError(f"bitrate {bitrate!r} is not a number with an optional k/M suffix") from None


def encode_h264(
    frames: Iterable[np.ndarray],
    path: str | Path,
    *,
    fps: int = 25,
    gop: int = 25,
    bitrate: str | int = "2M",
    bframes: int = 0,
) -> Path:
    """Encode BGR uint8 frames (all the same even width and height) into `path` (.h264 or .mp4).

    A .h265 or .hevc path gets an H.265 elementary stream instead (libx265, same GOP rules).

    `bframes` > 0 makes a stream whose decoder reorders pictures, as some cameras send.
    """
    path = Path(path)
    container_format = _CONTAINER_FORMATS.get(path.suffix.lower())
    if container_format is None:
        raise ValueError(f"{path}: suffix must be one of {sorted(_CONTAINER_FORMATS)}")
    if gop < 1 or fps < 1:
        raise ValueError(f"fps ({fps}) and gop ({gop}) must be positive")
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = None
        for index, image in enumerate(frames):
            if stream is None:
                stream = _add_video_stream(container, image, fps=fps, gop=gop, bitrate=parse_bitrate(bitrate),
                                           bframes=bframes, hevc=container_format == "hevc")
            elif image.shape != (stream.height, stream.width, 3):
                expected = (stream.height, stream.width, 3)
                raise ValueError(f"frame {index} is {image.shape}, expected {expected}")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
            written += 1
        if stream is None:
            raise ValueError("no frames to encode")
        container.mux(stream.encode(None))
    return path


def _add_video_stream(container: av.container.OutputContainer, first: np.ndarray, *, fps: int, gop: int,
                      bitrate: int, bframes: int, hevc: bool) -> av.video.stream.VideoStream:
    if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
        raise ValueError(f"frames must be HxWx3 uint8 BGR, got {first.shape} {first.dtype}")
    height, width = first.shape[:2]
    if width % 2 or height % 2:
        raise ValueError(f"yuv420p needs even frame sizes, got {width}x{height}")
    stream = container.add_stream("libx265" if hevc else "libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.bit_rate = bitrate
    stream.codec_context.time_base = Fraction(1, fps)
    stream.codec_context.gop_size = gop
    stream.codec_context.max_b_frames = bframes
    stream.codec_context.thread_count = 1
    # Fixed GOP like a camera: IDR exactly every `gop` frames, never an extra one on a scene cut.
    gop_params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}:open-gop=0"
    if hevc:  # parameter sets before every keyframe, as cameras send them
        stream.options = {"preset": "ultrafast", "tune": "zerolatency",
                          "x265-params": f"{gop_params}:repeat-headers=1:log-level=error"}
    else:
        stream.options = {"preset": "veryfast", "tune": "zerolatency", "x264-params": gop_params}
    return stream


def pattern_frames(count: int, *, width: int, height: int, pattern: str = "testsrc") -> Iterator[np.ndarray]:
    """`count` BGR frames: colour bars, a frame counter in big digits, and what `pattern` adds."""
    if pattern not in PATTERNS:
        raise ValueError(f"pattern {pattern!r} is not one of {PATTERNS}")
    background = _colour_bars(width, height)
    noise_source = np.random.default_rng(0)
    scale = height / 360
    box = max(8, int(60 * scale))
    for index in range(count):
        image = background.copy()
        if pattern in ("testsrc", "noisy"):
            # A box bouncing across and a bar sweeping down, so every frame differs from the last.
            span_x, span_y = width - box, height - box
            x = _bounce(index * max(1, int(7 * scale)), span_x)
            y = _bounce(index * max(1, int(4 * scale)), span_y)
            cv2.rectangle(image, (x, y), (x + box, y + box), (255, 255, 255), thickness=-1)
            bar_y = (index * max(1, int(3 * scale))) % height
            image[bar_y : bar_y + max(2, int(6 * scale))] = (0, 0, 0)
        if pattern == "noisy":
            noise = noise_source.integers(0, 2 * NOISE_AMPLITUDE + 1, size=(height, width), dtype=np.uint8)
            noise = cv2.cvtColor(noise, cv2.COLOR_GRAY2BGR)
            image = cv2.subtract(cv2.add(image, noise), (NOISE_AMPLITUDE,) * 3 + (0,))
        _draw_counter(image, index, scale)
        yield image


def make_clip(
    path: str | Path,
    *,
    seconds: float,
    fps: int = 25,
    gop: int = 25,
    width: int = 1280,
    height: int = 720,
    bitrate: str | int = "2M",
    pattern: str = "testsrc",
    bframes: int = 0,
) -> Path:
    """Write a `seconds`-long test clip of drawn frames to `path` (.h264 or .mp4) and return the path."""
    count = round(seconds * fps)
    if count < 1:
        raise ValueError(f"a {seconds} s clip at {fps} fps has no frames")
    frames = pattern_frames(count, width=width, height=height, pattern=pattern)
    return encode_h264(frames, path, fps=fps, gop=gop, bitrate=bitrate, bframes=bframes)


def _colour_bars(width: int, height: int) -> np.ndarray:
    colours = [(192, 192, 192), (0, 192, 192), (192, 192, 0), (0, 192, 0),
               (192, 0, 192), (0, 0, 192), (192, 0, 0), (16, 16, 16)]
    image = np.empty((height, width, 3), dtype=np.uint8)
    edges = np.linspace(0, width, len(colours) + 1).astype(int)
    for colour, left, right in zip(colours, edges[:-1], edges[1:], strict=True):
        image[:, left:right] = colour
    return image


def _bounce(position: int, span: int) -> int:
    if span <= 0:
        return 0
    position %= 2 * span
    return position if position < span else 2 * span - position


def _draw_counter(image: np.ndarray, index: int, scale: float) -> None:
    text = f"{index:05d}"
    font, font_scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 2.0 * scale, max(2, int(5 * scale))
    (text_w, text_h), baseline = cv2.getTextSize(text, font, font_scale, thickness)
    x, y = (image.shape[1] - text_w) // 2, image.shape[0] - baseline - int(20 * scale)
    cv2.rectangle(image, (x - 10, y - text_h - 10), (x + text_w + 10, y + baseline + 10), (0, 0, 0), -1)
    cv2.putText(image, text, (x, y), font, font_scale, (255, 255, 255), thickness, cv2.LINE_AA)
