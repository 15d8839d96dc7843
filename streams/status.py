"""What a camera reader reports about itself: connection, decode mode, rates and counters."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass

DECODE_KEYFRAMES = "keyframes"
DECODE_ALL_FRAMES = "all_frames"


@dataclass(frozen=True)
class CameraStatus:
    """A snapshot of one camera reader, safe to hand to other threads and to serialise.

    Rates are measured over the last `RateMeter.window_s` seconds, so a camera that stopped delivering
    drops to 0 within that window. `reconnects` counts attempts to open the source again after a
    failure or a lost stream; `last_error` keeps the most recent failure even after recovery.
    """

    camera_id: str
    url: str
    connected: bool
    decode_mode: str
    decode_mode_reason: str
    input_fps: float
    analysed_fps: float
    last_frame_at: float | None
    reconnects: int
    last_error: str | None
    last_error_at: float | None
    frames_received: int
    frames_decoded: int
    frames_analysed: int
    frames_dropped_stale: int
    keyframe_interval_s: float | None
    source_size: tuple[int, int] | None
    frames_replaced: int = 0  # analysed frames replaced in the mailbox by a newer one before anyone took them
    frames_dropped_late: int = 0  # due frames skipped (not decoded or converted): the reader was too far behind
    receiver: str = "ffmpeg"  # what reads the stream: "builtin" (the RTSP client) or "ffmpeg"
    receiver_reason: str = ""

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["source_size"] = list(self.source_size) if self.source_size else None
        return data


class RateMeter:
    """Events per second over a sliding wall-clock window (monotonic time)."""

    def __init__(self, window_s: float = 10.0, *, now: float | None = None) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.window_s = window_s
        self._events: deque[float] = deque()
        self._started = time.monotonic() if now is None else now

    def record(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._events.append(now)
        self._prune(now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._prune(now)
        # A meter younger than its window divides by its age, so a new camera does not read low.
        span = min(self.window_s, now - self._started)
        return len(self._events) / span if span > 0 else 0.0

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        while self._events and self._events[0] < horizon:
            self._events.popleft()
