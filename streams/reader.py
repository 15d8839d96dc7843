"""One thread per camera: pull the stream, decode only what will be analysed, keep the newest frame.

A `CameraReader` owns one source (an RTSP URL or a video file) and never blocks anything but its own
thread. It

- reads rtsp:// cameras with the built-in RTSP client (`streams/rtsp_client.py`), which reads the
  connection a few times a second instead of once per packet, and other sources (files, rtsps://, HTTP,
  cameras that send neither H.264 nor H.265, or `receiver="ffmpeg"`) with PyAV/FFmpeg;
- opens the source with open and read timeouts, so a hung camera times out instead of blocking
  forever, and reconnects with exponential backoff and full jitter; the end of a live stream is a
  disconnect too;
- decodes keyframes only (`skip_frame = "NONKEY"`) when the analysis rate is at or below the keyframe
  rate it measures on the stream, and otherwise decodes every frame but converts colour only for the
  frames that are due;
- converts straight to analysis size (long side = `frame_size`) in BGR, and keeps the decoded frame so
  a full-resolution snapshot is made only when an event needs one;
- hands frames over through a one-slot mailbox that holds only the newest frame; a consumer that asks
  for a maximum age never gets an older frame;
- can run below the worker's priority (`nice`): when the box is busy, the analysis of frames already
  decoded goes first, and decoding catches up in the time between keyframes.

Files behave like cameras: they are replayed at their native frame rate (by timestamps) and, with
`loop_file`, forever.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import av
import av.error
import numpy as np

from streams.convert import to_analysis_bgr, to_full_bgr
from streams.rtp import AccessUnit
from streams.rtsp_client import RtspClient, RtspError, UnsupportedStream
from streams.status import DECODE_ALL_FRAMES, DECODE_KEYFRAMES, CameraStatus, RateMeter
from vision.preprocess import fitted_size

DECODE_AUTO = "auto"
DECODE_CHOICES = (DECODE_AUTO, DECODE_KEYFRAMES, DECODE_ALL_FRAMES)
RECEIVER_BUILTIN = "builtin"
RECEIVER_FFMPEG = "ffmpeg"
RECEIVER_CHOICES = (RECEIVER_BUILTIN, RECEIVER_FFMPEG)

log = logging.getLogger(__name__)

LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt"})
# Consecutive undecodable packets tolerated before the source counts as broken (a lost packet on a
# live stream spoils a few frames, not dozens).
MAX_DECODE_ERRORS_IN_A_ROW = 25
# Timestamps that jump back, or forward by more than this, are a discontinuity (file loop, camera
# restart, clock reset): the reader's timeline glues them on instead of following them.
MAX_TIMESTAMP_GAP_S = 5.0
DEFAULT_FRAME_RATE = 25.0
# A live camera's clock may run this much faster or slower than ours (1000 ppm) without its frames
# looking late; the lag estimate follows drift up to this rate.
CLOCK_DRIFT = 1e-3


@dataclass(eq=False)
class Frame:
    """A frame due for analysis: BGR at analysis size, plus the decoded frame for full-size snapshots."""

    camera_id: str
    image: np.ndarray
    orig_size: tuple[int, int]
    captured_at: float
    seq: int
    av_frame: av.VideoFrame = field(repr=False)
    # PyAV converts a frame with the frame's own scaler (for pixel formats OpenCV does not convert), which
    # crashes when two threads use it at once (two events opened on one frame have their snapshots rendered
    # in parallel).
    _converting: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def full_bgr(self) -> np.ndarray:
        """The frame at the camera's full resolution in BGR (converted only when asked for)."""
        with self._converting:
            return to_full_bgr(self.av_frame)


class SourceError(Exception):
    """A source failed; the message is what operators see in the camera status."""


def analysis_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(w, h) with the long side scaled down to `long_side`, keeping the aspect; never scales up."""
    return (width, height) if long_side <= 0 else fitted_size(width, height, long_side)


def new_decoder(codec_name: str, extradata: bytes | None, keyframes_only: bool) -> av.VideoCodecContext:
    """A camera's decoder, as its reader runs it.

    One decoder thread per camera: cheaper with many cameras and no frame-threading delay. The keyframes
    decoder skips the deblocking filter: each keyframe stands alone, so nothing drifts, and at analysis size
    the difference does not show (about 50 dB PSNR at full 1080p) while a keyframe decodes 3% (one AMD EPYC)
    to 14% (another box) faster.
    """
    codec = av.CodecContext.create(codec_name, "r")
    if extradata:
        codec.extradata = extradata
    codec.thread_count = 1
    if keyframes_only:
        codec.skip_frame = "NONKEY"
        codec.options = {"skip_loop_filter": "all"}
    return codec


def lower_thread_priority(nice: int) -> None:
    """Add `nice` to the calling thread's nice value (Linux keeps one per thread; elsewhere it would be the
    whole process's, so nothing is changed there). Lowering a priority needs no privileges."""
    if nice <= 0 or sys.platform != "linux":
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as error:  # a sandbox that forbids it: the camera is still read, at the same priority
        log.warning("could not lower camera reader priority by %d: %s", nice, error)


def is_live_url(url: str) -> bool:
    return urlsplit(url).scheme.lower() in LIVE_SCHEMES


def redact_url(url: str) -> str:
    """The URL without its password, for logs and status."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def describe_error(error: BaseException, *, phase: str, timeout_s: float, elapsed_s: float) -> str:
    """A short, clear message for a failure while opening ("open") or reading ("read") a source."""
    if isinstance(error, SourceError):
        return str(error)
    timed_out = isinstance(error, av.error.ExitError | TimeoutError)
    # While opening, FFmpeg's RTSP client reports an interrupted handshake as invalid data; the time
    # it took tells the two apart.
    if timed_out or (phase == "open" and elapsed_s >= 0.95 * timeout_s):
        return f"{phase} timed out after {timeout_s:g} s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, FileNotFoundError):
        return "file not found"
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    if isinstance(error, av.error.InvalidDataError):
        return f"invalid data: {reason}"
    return f"{phase} failed: {reason}"


class Timeline:
    """Seconds on a continuous stream clock built from packet timestamps.

    Packets without a timestamp (raw H.264 files, the first packet of an RTSP session) get the previous
    time plus one frame; jumps (backwards, or forward by more than MAX_TIMESTAMP_GAP_S) are glued on
    one frame after the previous packet, so a looping file or a restarted camera reads as one clock.
    """

    def __init__(self, frame_duration_s: float) -> None:
        self.frame_duration_s = frame_duration_s
        self._offset = 0.0
        self._last: float | None = None

    def stamp(self, timestamp_s: float | None) -> float:
        if self._last is None:
            now = 0.0 if timestamp_s is None else timestamp_s
            self._offset = -now  # the clock starts at 0
        elif timestamp_s is None:
            now = self._last + self.frame_duration_s - self._offset
        else:
            now = timestamp_s
            step = now + self._offset - self._last
            if step < 0 or step > MAX_TIMESTAMP_GAP_S:
                self._offset = self._last + self.frame_duration_s - now
        self._last = now + self._offset
        return self._last


class Sampler:
    """Picks the frames due for analysis at `fps` on the stream clock, without drifting in phase."""

    def __init__(self, fps: float) -> None:
        self.period_s = 1.0 / fps
        # Camera timestamps jitter; a frame a little early for its slot still takes it.
        self.tolerance_s = min(0.02, 0.25 * self.period_s)
        self._next_due: float | None = None

    def restart(self) -> None:
        """Make the next frame due and count the period from it."""
        self._next_due = None

    def due(self, t: float) -> bool:
        if self._next_due is not None and t < self._next_due - self.tolerance_s:
            return False
        if self._next_due is None or t >= self._next_due + self.period_s:
            self._next_due = t + self.period_s  # first frame, or fell behind: restart the phase here
        else:
            self._next_due += self.period_s
        return True


class DecodePolicy:
    """Chooses keyframes-only or all-frames decoding from the keyframe interval seen on the stream.

    Keyframes only when every recent keyframe interval is at most the analysis period. Until an
    interval is measured, all frames are decoded (switching to keyframes is safe at any keyframe;
    switching back happens only at a keyframe too, so the decoder never misses a reference frame).
    With `keyframe_fps` given, the mode is fixed from it and nothing is measured.
    """

    RECENT_INTERVALS = 3

    def __init__(self, analysis_fps: float, keyframe_fps: float | None = None, decode: str = DECODE_AUTO) -> None:
        if decode not in DECODE_CHOICES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_CHOICES)}, got {decode!r}")
        self.analysis_fps = analysis_fps
        self.period_s = 1.0 / analysis_fps
        self._slack_s = 0.01 * self.period_s
        self._last_keyframe_t: float | None = None
        self._intervals: deque[float] = deque(maxlen=self.RECENT_INTERVALS)
        # A mode set in the camera's config is kept whatever is measured; the reason says what it costs.
        self.forced = decode if decode != DECODE_AUTO else None
        self.configured = keyframe_fps is not None or self.forced is not None
        if self.forced is not None:
            self.mode = self.forced
            self.reason = self._explain_forced(None)
        elif keyframe_fps is not None:
            if keyframe_fps <= 0:
                raise ValueError("keyframe_fps must be positive")
            keyframes = analysis_fps <= keyframe_fps * 1.01
            self.mode = DECODE_KEYFRAMES if keyframes else DECODE_ALL_FRAMES
            self.reason = self._explain(1.0 / keyframe_fps, "configured keyframe interval")
        else:
            self.mode = DECODE_ALL_FRAMES
            self.reason = "measuring the keyframe interval; decoding all frames until then"

    @property
    def keyframe_interval_s(self) -> float | None:
        return max(self._intervals) if self._intervals else None

    def observe(self, t: float, is_keyframe: bool) -> None:
        """Feed every packet's stream time; may change `mode` (only on a keyframe, before decoding it)."""
        if not is_keyframe:
            measuring = not self.configured and not self._intervals and self._last_keyframe_t is not None
            waited = t - self._last_keyframe_t if measuring else 0.0
            if waited > self.period_s + self._slack_s:
                self.reason = (f"no keyframe within {waited:.2f} s; analysis at {self.analysis_fps:g} fps "
                               f"needs a frame every {self.period_s:.2f} s: decoding all frames, converting "
                               "only those analysed")
            return
        if self._last_keyframe_t is not None and t > self._last_keyframe_t:
            self._intervals.append(t - self._last_keyframe_t)
        self._last_keyframe_t = t
        if self.forced is not None and self._intervals:
            self.reason = self._explain_forced(max(self._intervals))
        if self.configured or not self._intervals:
            return
        worst = max(self._intervals)
        self.mode = DECODE_KEYFRAMES if worst <= self.period_s + self._slack_s else DECODE_ALL_FRAMES
        self.reason = self._explain(worst, "keyframe interval")

    def _explain_forced(self, interval_s: float | None) -> str:
        text = f"decode: {self.forced} set in the camera's config"
        if self.forced == DECODE_KEYFRAMES:
            text += ": decoding keyframes only"
            if interval_s is not None and interval_s > self.period_s + self._slack_s:
                text += (f"; keyframe interval {interval_s:.2f} s allows at most {1.0 / interval_s:.2g} fps of the "
                         f"{self.analysis_fps:g} asked")
            elif interval_s is not None:
                text += f"; keyframe interval {interval_s:.2f} s"
            return text
        text += ": decoding all frames, converting only those analysed"
        if interval_s is not None and interval_s <= self.period_s + self._slack_s:
            text += f"; keyframe interval {interval_s:.2f} s would allow keyframes only (decode: auto)"
        return text

    def _explain(self, interval_s: float, source: str) -> str:
        needs = f"analysis at {self.analysis_fps:g} fps needs a frame every {self.period_s:.2f} s"
        if self.mode == DECODE_KEYFRAMES:
            return f"{source} {interval_s:.2f} s; {needs}: decoding keyframes only"
        return (f"{source} {interval_s:.2f} s is too long; {needs}: decoding all frames, "
                "converting only those analysed")


def live_options(read_timeout_s: float) -> dict[str, str]:
    """FFmpeg's options for a live camera: RTP interleaved in the RTSP connection, and a read timeout.

    The read timeout is FFmpeg's own socket timeout, not PyAV's: PyAV checks its timeouts in a callback
    that takes the GIL many times per packet, and with dozens of cameras the reader threads then spend
    their time waiting for the GIL instead of reading.
    """
    return {"rtsp_transport": "tcp", "timeout": str(int(read_timeout_s * 1e6))}


class CameraReader(threading.Thread):
    """Reads one camera in its own daemon thread; `latest()` gives the newest analysed frame."""

    def __init__(
        self,
        camera_id: str,
        url: str,
        *,
        analysis_fps: float,
        frame_size: int,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        loop_file: bool = False,
        keyframe_fps: float | None = None,
        decode: str = DECODE_AUTO,
        max_lag_s: float | None = None,
        receiver: str = RECEIVER_BUILTIN,
        nice: int = 0,
        start_delay_s: float = 0.0,
    ) -> None:
        super().__init__(name=f"camera-{camera_id}", daemon=True)
        if analysis_fps <= 0:
            raise ValueError(f"analysis_fps must be positive, got {analysis_fps}")
        if frame_size < 0:
            raise ValueError(f"frame_size must be 0 (native) or positive, got {frame_size}")
        if min(open_timeout_s, read_timeout_s, backoff_initial_s) <= 0 or backoff_max_s < backoff_initial_s:
            raise ValueError("timeouts and backoff must be positive, with backoff_max_s >= backoff_initial_s")
        if keyframe_fps is not None and keyframe_fps <= 0:
            raise ValueError(f"keyframe_fps must be positive, got {keyframe_fps}")
        if receiver not in RECEIVER_CHOICES:
            raise ValueError(f"receiver must be one of {', '.join(RECEIVER_CHOICES)}, got {receiver!r}")
        if not 0 <= nice <= 19:
            raise ValueError(f"nice must be 0..19, got {nice}")
        if start_delay_s < 0:
            raise ValueError(f"start_delay_s must be 0 or more, got {start_delay_s}")
        self.camera_id = camera_id
        self.url = url
        self.analysis_fps = analysis_fps
        self.frame_size = frame_size
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.loop_file = loop_file
        self.keyframe_fps = keyframe_fps
        self.decode = decode
        self.nice = nice
        self.start_delay_s = start_delay_s  # from the thread's start to the first open (see Worker)
        # A live source whose packets this reader handles later than this behind their time skips them
        # (they would be stale when analysed): an overloaded box sheds decoding, not freshness.
        self.max_lag_s = max_lag_s
        self.live = is_live_url(url)
        if receiver == RECEIVER_FFMPEG:
            self._receiver, self._receiver_reason = RECEIVER_FFMPEG, "receiver: ffmpeg set in the camera's config"
        elif urlsplit(url).scheme.lower() == "rtsp":
            self._receiver, self._receiver_reason = RECEIVER_BUILTIN, "built-in RTSP client (H.264 and H.265 over TCP)"
        else:
            self._receiver, self._receiver_reason = RECEIVER_FFMPEG, "FFmpeg reads this kind of source"

        self._stop_requested = threading.Event()
        self._random = random.Random()
        self._lock = threading.Lock()  # guards the mailbox and everything status() reports
        self._mailbox: Frame | None = None
        self._seq = 0
        self._policy = DecodePolicy(analysis_fps, keyframe_fps, decode)
        self._input_rate = RateMeter()
        self._analysed_rate = RateMeter()
        self._connected = False
        self._last_frame_at: float | None = None
        self._reconnects = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._source_size: tuple[int, int] | None = None
        self._counts = {"received": 0, "decoded": 0, "analysed": 0, "dropped_stale": 0, "replaced": 0,
                        "dropped_late": 0}

    # -- consumer side ---------------------------------------------------------------------------

    def latest(self, max_age_s: float | None = None) -> Frame | None:
        """Take the newest analysed frame, or None if there is nothing new (or it is older than max_age_s)."""
        with self._lock:
            frame, self._mailbox = self._mailbox, None
            if frame is not None and max_age_s is not None and time.time() - frame.captured_at > max_age_s:
                self._counts["dropped_stale"] += 1
                return None
        return frame

    def status(self) -> CameraStatus:
        with self._lock:
            return CameraStatus(
                camera_id=self.camera_id,
                url=redact_url(self.url),
                connected=self._connected,
                decode_mode=self._policy.mode,
                decode_mode_reason=self._policy.reason,
                input_fps=round(self._input_rate.rate(), 2),
                analysed_fps=round(self._analysed_rate.rate(), 2),
                last_frame_at=self._last_frame_at,
                reconnects=self._reconnects,
                last_error=self._last_error,
                last_error_at=self._last_error_at,
                frames_received=self._counts["received"],
                frames_decoded=self._counts["decoded"],
                frames_analysed=self._counts["analysed"],
                frames_dropped_stale=self._counts["dropped_stale"],
                keyframe_interval_s=self._policy.keyframe_interval_s,
                source_size=self._source_size,
                frames_replaced=self._counts["replaced"],
                frames_dropped_late=self._counts["dropped_late"],
                receiver=self._receiver,
                receiver_reason=self._receiver_reason,
            )

    def stop(self, timeout_s: float | None = None) -> None:
        """Ask the thread to end and wait for it (it notices within the open or read timeout)."""
        self._stop_requested.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(max(self.open_timeout_s, self.read_timeout_s) + 2.0 if timeout_s is None else timeout_s)

    # -- reader thread ---------------------------------------------------------------------------

    def run(self) -> None:
        lower_thread_priority(self.nice)
        if self._stop_requested.wait(self.start_delay_s):
            return
        failures = 0
        while not self._stop_requested.is_set():
            analysed_before = self._counts["analysed"]
            finished = False
            try:
                finished = self._read_source()
            except SourceError as error:
                self._set_error(str(error))
            except Exception as error:  # a bug must not end this camera's reader for good
                log.exception("camera %s: unexpected reader error", self.camera_id)
                self._set_error(f"unexpected error: {error!r}")
            with self._lock:
                self._connected = False
            if finished or self._stop_requested.is_set():
                break
            # A session that delivered frames was healthy: start the backoff over.
            failures = 1 if self._counts["analysed"] > analysed_before else failures + 1
            # Exponential backoff with full jitter, so cameras behind one failed switch do not retry in step.
            ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (failures - 1))
            delay = self._random.uniform(0.0, ceiling)
            log.info("camera %s: %s; reconnecting in %.1f s", self.camera_id, self._last_error, delay)
            if self._stop_requested.wait(delay):
                break
            with self._lock:
                self._reconnects += 1

    def _set_error(self, message: str) -> None:
        with self._lock:
            self._last_error = message
            self._last_error_at = time.time()

    def _open(self) -> av.container.InputContainer:
        options = live_options(self.read_timeout_s) if self.live else {}
        started = time.monotonic()
        try:
            return av.open(self.url, options=options, timeout=(self.open_timeout_s, None))
        except (av.error.FFmpegError, OSError) as error:
            elapsed = time.monotonic() - started
            raise SourceError(describe_error(error, phase="open", timeout_s=self.open_timeout_s,
                                             elapsed_s=elapsed)) from error

    def _read_source(self) -> bool:
        """Read until the source fails (SourceError) or ends; True when reading is over for good.

        A live stream that ends has failed. A file ends for good after one pass, or, with `loop_file`,
        is reopened at its end on the same stream clock, without backoff.
        """
        session = _Session(DecodePolicy(self.analysis_fps, self.keyframe_fps, self.decode),
                           Sampler(self.analysis_fps))
        if self._receiver == RECEIVER_BUILTIN:
            try:
                self._read_rtsp(session)
                return True
            except UnsupportedStream as error:
                with self._lock:
                    self._receiver, self._receiver_reason = RECEIVER_FFMPEG, f"{error}: FFmpeg reads it"
                log.info("camera %s: %s", self.camera_id, self._receiver_reason)
        while not self._stop_requested.is_set():
            container = self._open()
            try:
                packets = self._read_pass(container, session)
            except (av.error.FFmpegError, OSError) as error:
                if self._stop_requested.is_set():
                    break
                raise SourceError(describe_error(error, phase="read", timeout_s=self.read_timeout_s,
                                                 elapsed_s=0.0)) from error
            finally:
                container.close()
            if self._stop_requested.is_set():
                break
            if self.live:
                raise SourceError("end of stream")
            if packets == 0 or session.frames_decoded == 0:
                raise SourceError("invalid data: the file holds no decodable video frame")
            if not self.loop_file:
                break
        return True

    def _read_rtsp(self, session: _Session) -> None:
        """Read one session of an rtsp:// camera with the built-in client, until stopped or SourceError."""
        client = RtspClient(self.url, open_timeout_s=self.open_timeout_s, read_timeout_s=self.read_timeout_s,
                            stop=self._stop_requested)
        phase, started = "open", time.monotonic()
        try:
            track = client.open()
            self._start_pass(session, track.codec, track.parameter_sets, track.frame_rate)
            phase, scale = "read", 1.0 / track.clock_rate
            for unit in client.access_units():
                self._on_packet(unit.timestamp * scale, unit.keyframe, unit, session, complete=unit.complete)
            if not self._stop_requested.is_set():
                raise SourceError("end of stream")
        except UnsupportedStream:
            raise
        except RtspError as error:
            raise SourceError(str(error)) from error
        except (av.error.FFmpegError, OSError) as error:
            if self._stop_requested.is_set():
                return
            timeout_s = self.open_timeout_s if phase == "open" else self.read_timeout_s
            raise SourceError(describe_error(error, phase=phase, timeout_s=timeout_s,
                                             elapsed_s=time.monotonic() - started)) from error
        finally:
            client.close()

    def _start_pass(self, session: _Session, codec: str, extradata: bytes | None, frame_rate: float | None) -> None:
        """Get the session ready for a newly opened source: its codec, a fresh decoder, a keyframe to wait for."""
        session.codec_name, session.extradata = codec, extradata
        session.decoder = None  # made from the stream's parameters when first needed
        if session.timeline is None:
            session.timeline = Timeline(1.0 / (frame_rate or DEFAULT_FRAME_RATE))
        session.seen_keyframe = False
        session.decode_errors_in_a_row = 0
        with self._lock:
            self._connected = True
            self._policy = session.policy

    def _read_pass(self, container: av.container.InputContainer, session: _Session) -> int:
        """Demux and decode one opened container to its end -> the number of video packets read."""
        if not container.streams.video:
            raise SourceError("no video stream in the source")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        self._start_pass(session, stream.codec_context.name, stream.codec_context.extradata,
                         float(rate) if rate else None)
        packets = 0
        for packet in container.demux(stream):
            if self._stop_requested.is_set():
                break
            if packet.size:  # an empty packet only marks the end
                packets += 1
                timestamp = packet.pts if packet.pts is not None else packet.dts
                self._on_packet(None if timestamp is None else float(timestamp * packet.time_base),
                                packet.is_keyframe, packet, session)
        return packets

    def _on_packet(self, timestamp_s: float | None, is_keyframe: bool, packet: av.Packet | AccessUnit,
                   session: _Session, *, complete: bool = True) -> None:
        """One compressed picture (an incomplete one lost a packet on the way and is not decoded)."""
        t = session.timeline.stamp(timestamp_s)
        with self._lock:
            self._counts["received"] += 1
            self._input_rate.record()
        if not self.live:
            self._pace(session, t)
        late = self.live and self.max_lag_s is not None and session.lag_s(t, time.monotonic()) > self.max_lag_s
        session.seen_keyframe = session.seen_keyframe or (is_keyframe and complete)
        if not session.seen_keyframe:
            return  # nothing before the first keyframe can be decoded
        with self._lock:
            mode_before = session.policy.mode
            session.policy.observe(t, is_keyframe)
            keyframes_only = session.policy.mode == DECODE_KEYFRAMES
        if session.policy.mode != mode_before:
            # The other mode's decoder goes (and its picture buffers with it); a keyframe comes next.
            session.decoder = None
            session.sampler.restart()  # the new mode samples other frames; start its phase here
            log.info("camera %s: %s", self.camera_id, session.policy.reason)
        if not complete:
            # A packet of this picture was lost: it is not decoded, nor (decoding every frame) are the
            # pictures that refer to it, up to the next keyframe. Its time still counts for the policy.
            session.seen_keyframe = keyframes_only
            return
        if keyframes_only:
            # A keyframe that is not due is not even decoded: each one stands alone.
            if is_keyframe and session.sampler.due(t):
                if late:
                    self._count_late()
                    return
                for frame in self._decode(self._decoder(session, keyframes_only), packet, session, drain=True):
                    self._deliver(frame)
            return
        for frame in self._decode(self._decoder(session, keyframes_only), packet, session, drain=False):
            if session.sampler.due(t):
                if late:
                    self._count_late()
                    continue
                self._deliver(frame)

    @staticmethod
    def _decoder(session: _Session, keyframes_only: bool) -> av.VideoCodecContext:
        """The decoder of the current mode, made from the stream's parameters; one per camera at a time."""
        if session.decoder is None:
            session.decoder = new_decoder(session.codec_name, session.extradata, keyframes_only)
        return session.decoder

    def _count_late(self) -> None:
        with self._lock:
            self._counts["dropped_late"] += 1

    def _decode(self, codec: av.VideoCodecContext, packet: av.Packet | AccessUnit, session: _Session, *,
                drain: bool) -> list[av.VideoFrame]:
        try:
            frames = codec.decode(packet if isinstance(packet, av.Packet) else av.Packet(packet.data()))
            if drain and not frames:
                # A decoder that reorders (B-frames) holds a picture back until later pictures arrive,
                # a GOP or more from now in keyframes mode; drain it, then reset it for the next keyframe.
                frames = codec.decode(None)
                codec.flush_buffers()
        except av.error.InvalidDataError as error:
            session.decode_errors_in_a_row += 1
            if session.decode_errors_in_a_row >= MAX_DECODE_ERRORS_IN_A_ROW:
                raise SourceError(f"invalid data: {session.decode_errors_in_a_row} packets in a row failed "
                                  f"to decode ({error.strerror})") from error
            return []
        session.decode_errors_in_a_row = 0
        session.frames_decoded += len(frames)
        with self._lock:
            self._counts["decoded"] += len(frames)
        return frames

    def _pace(self, session: _Session, t: float) -> None:
        """Hold a file's packets back to their timestamps so it plays like a live camera."""
        now = time.monotonic()
        if session.wall_anchor is None or now - (session.wall_anchor + t) > 1.0:
            session.wall_anchor = now - t  # first packet, or decoding fell behind: do not burst to catch up
            return
        delay = session.wall_anchor + t - now
        if delay > 0:
            self._stop_requested.wait(delay)

    def _deliver(self, frame: av.VideoFrame) -> None:
        width, height = analysis_size(frame.width, frame.height, self.frame_size)
        image = to_analysis_bgr(frame, width, height)
        captured_at = time.time()
        with self._lock:
            self._seq += 1
            if self._mailbox is not None:
                self._counts["replaced"] += 1
            self._mailbox = Frame(self.camera_id, image, (frame.width, frame.height), captured_at, self._seq,
                                  av_frame=frame)
            self._counts["analysed"] += 1
            self._analysed_rate.record()
            self._last_frame_at = captured_at
            self._source_size = (frame.width, frame.height)


@dataclass
class _Session:
    """One connection's state (for a looping file, across its passes): clock, policy, sampler, counts."""

    policy: DecodePolicy
    sampler: Sampler
    timeline: Timeline | None = None
    wall_anchor: float | None = None
    seen_keyframe: bool = False
    decode_errors_in_a_row: int = 0
    frames_decoded: int = 0
    codec_name: str = ""
    extradata: bytes | None = None
    decoder: av.VideoCodecContext | None = None
    # Earliest seen (arrival - stream time): when packets arrive on time; later ones are late by the difference.
    on_time_anchor: float | None = None
    anchor_stream_t: float = 0.0

    def lag_s(self, t: float, now: float) -> float:
        """How late this packet (stream time t) is handled, against the most punctual packet so far."""
        offset = now - t
        if self.on_time_anchor is None:
            self.on_time_anchor, self.anchor_stream_t = offset, t
            return 0.0
        # The anchor follows a camera clock that drifts from ours, slowly; a real backlog stays visible.
        drifted = self.on_time_anchor + CLOCK_DRIFT * max(0.0, t - self.anchor_stream_t)
        self.on_time_anchor, self.anchor_stream_t = min(drifted, offset), t
        return offset - self.on_time_anchor
