"""Live video for browsers: one pull per camera, shared by all of its viewers, sent over WebRTC.

A `CameraFeed` pulls one camera in its own thread and hands each H.264 access unit to every viewer's
`ViewerTrack` (an aiortc video track). In pass-through the camera's own H.264 goes out untouched: the
tracks return encoded `av.Packet`s, which aiortc's RTP sender packetises without an encoder (as
`MediaPlayer(decode=False)` does). Each packet is made once and shared by every viewer.

A new viewer starts at the next keyframe (before one, nothing is decodable); a viewer that falls
behind drops what it has queued and waits for the next keyframe, so it never slows the others.

Privacy mode decodes the camera, blurs every face a face detector finds, and encodes once per camera
(`FaceBlurEncoder`); its viewers then share that stream like a pass-through one, and a new viewer gets
a fresh keyframe at once. Privacy never falls back to pass-through: a camera whose blurring fails sends
nothing.

Sources: RTSP (over TCP, with open and read timeouts) or a video file, looped and paced like a camera.
A dropped camera is reconnected with backoff; RTP timestamps follow the wall clock across reconnects so
browsers resume playing without a jump.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, Protocol

import av
import av.error
import cv2
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from brightkitchen.config import Config, SiteConfig
from streams.reader import SourceError, describe_error, is_live_url
from vision.detections import Detections
from vision.schedule import Schedule, Window

log = logging.getLogger("streams.live")

RTP_CLOCK = 90_000  # H.264 over RTP counts time in 90 kHz ticks
RTP_TIME_BASE = Fraction(1, RTP_CLOCK)
VIEWER_QUEUE = 50  # access units queued per viewer (2 s at 25 fps) before it is dropped to the next keyframe
# Source timestamps further than this from the wall clock are not trusted (camera clock reset, file loop).
MAX_CLOCK_DRIFT_S = 2.0
DEFAULT_FPS = 25.0
START_CODE = b"\x00\x00\x01"
NAL_SPS = 7

FeedState = Literal["idle", "connecting", "live", "offline"]


class FaceDetector(Protocol):
    """What privacy mode needs of a detector (vision's detectors have this shape); class "face" is blurred."""

    names: Sequence[str]

    def detect(
        self, frames: Sequence[np.ndarray], orig_sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[Detections]: ...


@dataclass(frozen=True)
class LiveCamera:
    id: str
    site: str
    url: str
    privacy: Literal["none", "blur_faces"] = "none"


def live_cameras(config: Config) -> list[LiveCamera]:
    return [LiveCamera(c.id, s.id, c.live_url or c.url, c.privacy) for s, c in config.cameras()]


def viewing_schedule(site: SiteConfig) -> Schedule | None:
    """The site's parents' viewing hours as a schedule; None when it names none."""
    if not site.viewing_hours:
        return None
    days = {d: i for i, d in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))}
    windows = [Window({days[d] for d in w.days}, w.start, w.end) for w in site.schedules[site.viewing_hours]]
    return Schedule(windows, tz=site.timezone)


def viewing_hours(config: Config) -> Callable[[str, float], bool]:
    """site id, UTC timestamp -> whether parents may watch the site then."""
    schedules = {site.id: viewing_schedule(site) for site in config.sites}

    def allowed(site_id: str, ts: float) -> bool:
        schedule = schedules.get(site_id)
        return schedule is not None and schedule.is_active(ts)

    return allowed


def face_detector(config: Config) -> Callable[[], FaceDetector]:
    """What loads the privacy mode's face detector (on the first privacy viewer, not at start-up)."""
    live = config.live

    def load() -> FaceDetector:
        from models.cards import builtin_model_path
        from vision.faces import RetinaFaceDetector

        name = live.face_model
        path = builtin_model_path(name.removeprefix("builtin:")) if name.startswith("builtin:") \
            else config.resolve_path(name)
        return RetinaFaceDetector(path, score_threshold=live.face_min_score, threads=live.face_threads)

    return load


# -- H.264 access units --------------------------------------------------------------------------


def nal_types(annexb: bytes) -> set[int]:
    types = set()
    position = annexb.find(START_CODE)
    while position >= 0 and position + 3 < len(annexb):
        types.add(annexb[position + 3] & 0x1F)
        position = annexb.find(START_CODE, position + 3)
    return types


class AnnexB:
    """Turns one stream's packets into Annex-B access units that carry SPS/PPS on every keyframe.

    MP4-style input (length-prefixed NAL units, avcC extradata) goes through FFmpeg's
    h264_mp4toannexb filter; Annex-B input whose parameter sets are only out of band (RTSP cameras
    that send them in the SDP) gets the extradata put in front of each keyframe, so a viewer that
    joins at that keyframe can decode it.
    """

    def __init__(self, stream: av.video.stream.VideoStream) -> None:
        extradata = bytes(stream.codec_context.extradata or b"")
        self._filter = None
        self._parameter_sets = b""
        if extradata[:1] == b"\x01":
            self._filter = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", stream)
        elif START_CODE in extradata[:4]:
            self._parameter_sets = extradata

    def convert(self, packet: av.Packet) -> list[tuple[bytes, bool]]:
        packets = self._filter.filter(packet) if self._filter else [packet]
        units = []
        for p in packets:
            data = bytes(p)
            if not data:
                continue
            key = bool(p.is_keyframe)
            if key and self._parameter_sets and NAL_SPS not in nal_types(data[:256]):
                data = self._parameter_sets + data
            units.append((data, key))
        return units


class RtpClock:
    """90 kHz timestamps that follow the source's timestamps while they track the wall clock, and the
    wall clock across reconnects and jumps, always increasing."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._anchor: float | None = None
        self._last = -1

    def reconnect(self) -> None:
        self._anchor = None

    def stamp(self, source_s: float | None) -> int:
        now = time.monotonic() - self._start
        if source_s is None:
            t = now
        else:
            if self._anchor is None or abs(self._anchor + source_s - now) > MAX_CLOCK_DRIFT_S:
                self._anchor = now - source_s
            t = self._anchor + source_s
        ticks = max(round(t * RTP_CLOCK), self._last + 1)
        self._last = ticks
        return ticks


def access_unit(data: bytes, ticks: int) -> av.Packet:
    packet = av.Packet(data)
    packet.pts = packet.dts = ticks
    packet.time_base = RTP_TIME_BASE
    return packet


# -- privacy: blur faces, encode once ------------------------------------------------------------


def blur_boxes(image: np.ndarray, boxes: np.ndarray, margin: float = 0.25) -> None:
    """Blur each (x1, y1, x2, y2) box of a BGR image in place, grown by `margin` of its size on each side."""
    height, width = image.shape[:2]
    for x1, y1, x2, y2 in boxes:
        grow_x, grow_y = (x2 - x1) * margin, (y2 - y1) * margin
        left, top = max(0, int(x1 - grow_x)), max(0, int(y1 - grow_y))
        right, bottom = min(width, int(x2 + grow_x + 1)), min(height, int(y2 + grow_y + 1))
        if right - left < 2 or bottom - top < 2:
            continue
        region = image[top:bottom, left:right]
        # Pixelate then smooth: nothing of the face survives, whatever its size.
        small = cv2.resize(region, (max(1, (right - left) // 12), max(1, (bottom - top) // 12)),
                           interpolation=cv2.INTER_AREA)
        image[top:bottom, left:right] = cv2.GaussianBlur(
            cv2.resize(small, (right - left, bottom - top), interpolation=cv2.INTER_LINEAR), (0, 0), 3)


class FaceBlurEncoder:
    """Decode -> blur faces -> H.264, for one camera.

    Faces are looked for on every `detect_every`th frame. The frames in between are held back until the
    next detection and blurred with the boxes of both detections around them, so a face that walks in
    between two detections is blurred from the first frame it is in (at the cost of `detect_every`
    frames of delay); only a face that comes and goes entirely between two detections could pass."""

    def __init__(self, detector: FaceDetector, *, bitrate_kbps: int, detect_every: int = 1) -> None:
        self.detector = detector
        self.face_class = list(detector.names).index("face") if "face" in detector.names else None
        if self.face_class is None:
            raise SourceError(f"the face detector has no class 'face' (it has {list(detector.names)})")
        self.bitrate = bitrate_kbps * 1000
        self.detect_every = detect_every
        self.want_keyframe = threading.Event()
        self._decoder: av.VideoCodecContext | None = None
        self._encoder: av.VideoCodecContext | None = None
        self._fps = 25
        self._boxes = np.zeros((0, 4), np.float32)
        self._held: list[tuple[np.ndarray, int]] = []  # frames waiting for the next detection
        self._count = 0
        self.frames = 0
        self.faces = 0  # boxes blurred, summed over the detections

    def reset(self, stream: av.video.stream.VideoStream, fps: float) -> None:
        """A new connection: a decoder for its stream; the encoder stays while the size stays."""
        self._decoder = av.CodecContext.create(stream.codec_context.name, "r")
        self._decoder.extradata = stream.codec_context.extradata
        self._decoder.thread_count = 1
        self._fps = max(1, round(fps))
        self._held.clear()  # frames of the lost connection are not sent half-checked
        self._count = 0
        self.want_keyframe.set()

    def _encoder_for(self, width: int, height: int) -> av.VideoCodecContext:
        if self._encoder is None or (self._encoder.width, self._encoder.height) != (width, height):
            encoder = av.CodecContext.create("libx264", "w")
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            encoder.bit_rate = self.bitrate
            encoder.time_base = Fraction(1, self._fps)
            encoder.framerate = Fraction(self._fps, 1)
            encoder.gop_size = self._fps
            encoder.max_b_frames = 0
            encoder.thread_count = 1
            encoder.profile = "Constrained Baseline"
            # A keyframe every second, parameter sets with each, no lookahead: what live viewers need.
            encoder.options = {"preset": "veryfast", "tune": "zerolatency",
                               "x264-params": f"keyint={self._fps}:min-keyint={self._fps}:scenecut=0:repeat-headers=1"}
            self._encoder = encoder
            self.want_keyframe.set()
        return self._encoder

    def _faces(self, image: np.ndarray) -> np.ndarray:
        found = self.detector.detect([image])[0]
        return found.xyxy[found.class_ids == self.face_class]

    def _encode(self, image: np.ndarray, ticks: int) -> list[tuple[bytes, bool, int]]:
        encoder = self._encoder_for(image.shape[1], image.shape[0])
        picture = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        picture.pts = self.frames
        picture.time_base = encoder.time_base
        if self.want_keyframe.is_set():
            self.want_keyframe.clear()
            picture.pict_type = av.video.frame.PictureType.I
        self.frames += 1
        return [(bytes(p), bool(p.is_keyframe), ticks) for p in encoder.encode(picture)]

    def process(self, packet: av.Packet, ticks: int) -> list[tuple[bytes, bool, int]]:
        """One camera packet and its RTP time -> encoded access units (annex-B, keyframe, RTP time)."""
        assert self._decoder is not None, "reset() first"
        try:
            frames = self._decoder.decode(packet)
        except av.error.InvalidDataError:
            return []  # a damaged packet spoils its frame; the next keyframe repairs the picture
        out = []
        for frame in frames:
            self._held.append((frame.to_ndarray(format="bgr24"), ticks))
            self._count += 1
            if (self._count - 1) % self.detect_every:
                continue
            image = self._held[-1][0]
            boxes = self._faces(image)
            self.faces += len(boxes)
            around = np.concatenate([self._boxes, boxes])
            for held, held_ticks in self._held:
                blur_boxes(held, around)  # the last two detections: a face one of them missed stays hidden
                out.extend(self._encode(held, held_ticks))
            self._held.clear()
            self._boxes = boxes
        return out


# -- viewers -------------------------------------------------------------------------------------


class ViewerTrack(MediaStreamTrack):
    """One viewer's video: the camera's shared access units, from the next keyframe on."""

    kind = "video"

    def __init__(self, feed: CameraFeed) -> None:
        super().__init__()
        self.feed: CameraFeed | None = feed
        self._queue: asyncio.Queue[av.Packet | None] = asyncio.Queue()
        self._waiting_for_keyframe = True
        self.sent = 0
        self.dropped = 0

    def offer(self, packet: av.Packet | None, keyframe: bool) -> None:
        """Called on the event loop for every access unit of the camera (None: the feed is closed)."""
        if packet is None:
            self._queue.put_nowait(None)
            return
        if self._queue.qsize() >= VIEWER_QUEUE:
            # Too slow to keep up: drop the backlog rather than slow the camera's other viewers.
            self.dropped += self._queue.qsize()
            while not self._queue.empty():
                self._queue.get_nowait()
            self._waiting_for_keyframe = True
        if self._waiting_for_keyframe:
            if not keyframe:
                return
            self._waiting_for_keyframe = False
        self._queue.put_nowait(packet)

    def resync(self) -> None:
        """The source restarted: wait for its next keyframe."""
        self._waiting_for_keyframe = True

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._queue.get()
        if packet is None:
            self.stop()
            raise MediaStreamError
        self.sent += 1
        return packet

    def stop(self) -> None:
        super().stop()
        feed, self.feed = self.feed, None
        if feed is not None:
            feed.unsubscribe(self)


# -- one camera's pull ---------------------------------------------------------------------------


@dataclass
class FeedOptions:
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    idle_close_s: float = 10.0


class CameraFeed:
    """One camera's live pull: a thread that reads access units and hands them to the viewers."""

    def __init__(self, camera: LiveCamera, loop: asyncio.AbstractEventLoop, options: FeedOptions,
                 blur: FaceBlurEncoder | None = None, blur_error: str | None = None) -> None:
        self.camera = camera
        self.loop = loop
        self.options = options
        self.blur = blur
        self.live = is_live_url(camera.url)
        self.viewers: set[ViewerTrack] = set()
        self.state: FeedState = "idle"
        self.last_error: str | None = blur_error
        self.reconnects = 0
        self.units = 0
        self.keyframes = 0
        self.last_unit_at: float | None = None
        self.source_codec: str | None = None
        self._clock = RtpClock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._random = random.Random()
        self._blur_error = blur_error

    # Called on the event loop.

    def subscribe(self) -> ViewerTrack:
        track = ViewerTrack(self)
        self.viewers.add(track)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._thread is None or not self._thread.is_alive():
            self._start()
        elif self.blur is not None:
            self.blur.want_keyframe.set()  # re-encoding: the new viewer need not wait for the GOP
        return track

    def unsubscribe(self, track: ViewerTrack) -> None:
        self.viewers.discard(track)
        if not self.viewers and self._idle_timer is None and self._thread is not None:
            self._idle_timer = self.loop.call_later(self.options.idle_close_s, self._close_if_idle)

    def _close_if_idle(self) -> None:
        self._idle_timer = None
        if not self.viewers:
            self.stop(wait=False)

    def _fanout(self, packet: av.Packet, keyframe: bool) -> None:
        for track in list(self.viewers):
            track.offer(packet, keyframe)

    def _resync(self) -> None:
        for track in list(self.viewers):
            track.resync()

    def status(self) -> dict[str, Any]:
        return {
            "camera": self.camera.id,
            "state": self.state,
            "mode": "privacy" if self.camera.privacy != "none" else "passthrough",
            "viewers": len(self.viewers),
            "source_codec": self.source_codec,
            "last_error": self.last_error,
            "reconnects": self.reconnects,
            "last_frame_at": self.last_unit_at,
        }

    def _start(self) -> None:
        self._stop = threading.Event()
        self.state = "connecting"
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name=f"live-{self.camera.id}",
                                        daemon=True)
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(self.options.open_timeout_s + self.options.read_timeout_s + 2)
        self.state = "idle"

    # The pull thread.

    def _run(self, stop: threading.Event) -> None:
        if self._blur_error:
            self.state = "offline"
            log.error("camera %s: live view unavailable: %s", self.camera.id, self._blur_error)
            return
        failures = 0
        while not stop.is_set():
            delivered_before = self.units
            try:
                self._read(stop)
            except SourceError as error:
                self.last_error = str(error)
            except Exception as error:  # a bug must not end the camera's live view for good
                log.exception("camera %s: unexpected live pull error", self.camera.id)
                self.last_error = f"unexpected error: {error!r}"
            if stop.is_set():
                break
            self.state = "offline"
            failures = 1 if self.units > delivered_before else failures + 1
            ceiling = min(self.options.backoff_max_s, self.options.backoff_initial_s * 2 ** (failures - 1))
            delay = self._random.uniform(0.5 * ceiling, ceiling)
            log.info("camera %s live: %s; reconnecting in %.1f s", self.camera.id, self.last_error, delay)
            if stop.wait(delay):
                break
            self.reconnects += 1

    def _open(self) -> av.container.InputContainer:
        options = {}
        if self.live:
            options = {"rtsp_transport": "tcp", "timeout": str(int(self.options.open_timeout_s * 1e6))}
        started = time.monotonic()
        try:
            return av.open(self.camera.url, options=options,
                           timeout=(self.options.open_timeout_s, self.options.read_timeout_s))
        except (av.error.FFmpegError, OSError) as error:
            raise SourceError(describe_error(error, phase="open", timeout_s=self.options.open_timeout_s,
                                             elapsed_s=time.monotonic() - started)) from error

    def _read(self, stop: threading.Event) -> None:
        """One connection (for a file: passes round and round) until it fails or stop is set."""
        while not stop.is_set():
            container = self._open()
            try:
                self._read_pass(container, stop)
            except (av.error.FFmpegError, OSError) as error:
                raise SourceError(describe_error(error, phase="read", timeout_s=self.options.read_timeout_s,
                                                 elapsed_s=0.0)) from error
            finally:
                container.close()
            if self.live and not stop.is_set():
                raise SourceError("end of stream")

    def _read_pass(self, container: av.container.InputContainer, stop: threading.Event) -> None:
        if not container.streams.video:
            raise SourceError("no video stream in the source")
        stream = container.streams.video[0]
        self.source_codec = stream.codec_context.name
        fps = float(stream.average_rate or stream.guessed_rate or DEFAULT_FPS)
        if self.blur is not None:
            self.blur.reset(stream, fps)
            convert = None
        elif self.source_codec != "h264":
            raise SourceError(f"the camera sends {self.source_codec}; the live view passes through H.264 only "
                              "(set the camera to H.264, or privacy: blur_faces to re-encode)")
        else:
            convert = AnnexB(stream)
        self._clock.reconnect()
        self.loop.call_soon_threadsafe(self._resync)
        frame_s = 1.0 / fps
        wall_start: float | None = None
        index = 0
        for packet in container.demux(stream):
            if stop.is_set():
                return
            if not packet.size:
                continue
            timestamp = packet.pts if packet.pts is not None else packet.dts
            source_s = float(timestamp * packet.time_base) if timestamp is not None else None
            if not self.live:
                # A file plays at its frame rate, like a camera.
                wall_start = wall_start or time.monotonic()
                delay = wall_start + index * frame_s - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return
                source_s = None  # file timestamps restart on every loop: the wall clock is the clock
            index += 1
            ticks = self._clock.stamp(source_s)
            if self.blur is not None:
                units = self.blur.process(packet, ticks)
            else:
                units = [(data, keyframe, ticks) for data, keyframe in convert.convert(packet)]
            for data, keyframe, ticks in units:
                self.units += 1
                self.keyframes += keyframe
                self.last_unit_at = time.time()
                self.state = "live"
                self.loop.call_soon_threadsafe(self._fanout, access_unit(data, ticks), keyframe)


# -- every camera ----------------------------------------------------------------------------------


class LiveVideo:
    """The live side of the service: camera feeds, made on a camera's first viewer.

    `subscribe` and `status` run on the API's event loop."""

    def __init__(self, cameras: Sequence[LiveCamera], options: FeedOptions | None = None, *,
                 face_detector: Callable[[], FaceDetector] | None = None, bitrate_kbps: int = 1500,
                 detect_every: int = 1) -> None:
        self.cameras = {c.id: c for c in cameras}
        self.options = options or FeedOptions()
        self.face_detector = face_detector
        self.bitrate_kbps = bitrate_kbps
        self.detect_every = detect_every
        self._feeds: dict[str, CameraFeed] = {}
        self._detector: FaceDetector | None = None

    def _privacy(self, camera: LiveCamera) -> tuple[FaceBlurEncoder | None, str | None]:
        if camera.privacy == "none":
            return None, None
        if self.face_detector is None:
            return None, "privacy mode needs a face detector, and none is available"
        try:
            if self._detector is None:
                self._detector = self.face_detector()
            return FaceBlurEncoder(self._detector, bitrate_kbps=self.bitrate_kbps,
                                   detect_every=self.detect_every), None
        except Exception as error:  # no face detector: no video at all, never an unblurred one
            log.exception("camera %s: cannot start privacy mode", camera.id)
            return None, f"privacy mode cannot start: {error}"

    def _feed(self, camera_id: str) -> CameraFeed:
        feed = self._feeds.get(camera_id)
        if feed is None:
            camera = self.cameras[camera_id]
            blur, error = self._privacy(camera)
            feed = CameraFeed(camera, asyncio.get_running_loop(), self.options, blur, error)
            self._feeds[camera_id] = feed
        return feed

    def subscribe(self, camera_id: str) -> ViewerTrack:
        """A new viewer's track of the camera (KeyError for an unknown camera)."""
        return self._feed(camera_id).subscribe()

    def status(self, camera_id: str) -> dict[str, Any]:
        feed = self._feeds.get(camera_id)
        if feed is None:
            camera = self.cameras[camera_id]
            return {"camera": camera_id, "state": "idle", "viewers": 0, "last_error": None,
                    "mode": "privacy" if camera.privacy != "none" else "passthrough", "reconnects": 0,
                    "source_codec": None, "last_frame_at": None}
        return feed.status()

    def close(self) -> None:
        for feed in self._feeds.values():
            for track in list(feed.viewers):
                feed.loop.call_soon_threadsafe(track.offer, None, False)
            feed.stop()
        self._feeds.clear()
