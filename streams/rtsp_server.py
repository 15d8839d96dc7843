#!/usr/bin/python3
"""Loopback RTSP server that replays H.264 or H.265 Annex-B files forever, without re-encoding.

Stands in for real cameras in tests, benchmarks and the demo. Run it with the system Python, the one
that has python3-gi (GStreamer's RTSP server bindings); it imports nothing but the standard library
and gi, so it works without the project's virtualenv:

    /usr/bin/python3 streams/rtsp_server.py --port 8554 --mount /cam1=cam1.h264 --mount /cam2=cam2.h265

A file is H.265 when its name ends in .h265 or .hevc. `--user NAME:PASSWORD` makes every mount ask for
Digest authentication, as most cameras do.

It prints exactly one line, "READY rtsp://127.0.0.1:PORT", on stdout once it listens (launchers wait
for it) and logs to stderr. SIGTERM or SIGINT stops it. `--check` only verifies that GStreamer and the
elements it needs are present.

Each file is split into access units once, at start; an appsrc then pushes them round and round with
timestamps that keep increasing across loops (a segment seek would restart them at zero), and the
RTSP sinks pace them by the clock at --fps. Each mount's pipeline is shared by all its clients, like a
camera that serves several viewers.
"""

from __future__ import annotations

import argparse
import signal
import sys
from fractions import Fraction
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

REQUIRED_ELEMENTS = ("appsrc", "h264parse", "rtph264pay", "h265parse", "rtph265pay")
START_CODE = b"\x00\x00\x01"
H265_SUFFIXES = (".h265", ".hevc")


class H264:
    name, label, parse, pay = "h264", "H.264", "h264parse", "rtph264pay"
    # NAL types that, after a picture's slices, open the next access unit (H.264 7.4.1.2.3).
    OPENS_ACCESS_UNIT = {6, 7, 8, 9, 14, 15, 16, 17, 18}

    @staticmethod
    def nal_type(unit: bytes) -> int:
        return unit[0] & 0x1F

    @staticmethod
    def is_slice(nal_type: int) -> bool:
        return nal_type in (1, 5)

    @staticmethod
    def is_keyframe(nal_type: int) -> bool:
        return nal_type == 5

    # first_mb_in_slice, the first ue(v) after the 1-byte header: a leading 1 bit means 0, a new picture.
    HEADER_SIZE = 1


class H265:
    name, label, parse, pay = "h265", "H.265", "h265parse", "rtph265pay"
    # VPS, SPS, PPS, AUD, prefix SEI and reserved types open the next access unit (H.265 7.4.2.4.4).
    OPENS_ACCESS_UNIT = {32, 33, 34, 35, 39, 41, 42, 43, 44, *range(48, 56)}

    @staticmethod
    def nal_type(unit: bytes) -> int:
        return (unit[0] >> 1) & 0x3F

    @staticmethod
    def is_slice(nal_type: int) -> bool:
        return nal_type < 32

    @staticmethod
    def is_keyframe(nal_type: int) -> bool:
        return 16 <= nal_type <= 21  # IRAP: BLA, IDR, CRA

    # first_slice_segment_in_pic_flag, the first bit after the 2-byte header.
    HEADER_SIZE = 2


def codec_of(path: Path) -> type[H264] | type[H265]:
    return H265 if path.suffix.lower() in H265_SUFFIXES else H264


def split_nal_units(data: bytes) -> list[bytes]:
    """NAL unit payloads of an Annex-B byte stream, without their start codes."""
    starts = []
    position = data.find(START_CODE)
    while position >= 0:
        starts.append(position + len(START_CODE))
        position = data.find(START_CODE, position + len(START_CODE))
    units = []
    for index, start in enumerate(starts):
        end = starts[index + 1] - len(START_CODE) if index + 1 < len(starts) else len(data)
        # A NAL unit never ends in a zero byte; trailing zeros belong to the next 4-byte start code.
        unit = data[start:end].rstrip(b"\x00")
        if unit:
            units.append(unit)
    return units


def access_units(units: list[bytes], codec: type[H264] | type[H265] = H264) -> list[tuple[bytes, bool]]:
    """Group NAL units into access units (one picture each) -> [(annex-b bytes, is_keyframe)]."""
    grouped: list[list[bytes]] = []
    current: list[bytes] = []
    has_slice = False
    for unit in units:
        nal_type = codec.nal_type(unit)
        is_slice = codec.is_slice(nal_type)
        first_slice = is_slice and len(unit) > codec.HEADER_SIZE and bool(unit[codec.HEADER_SIZE] & 0x80)
        if has_slice and (nal_type in codec.OPENS_ACCESS_UNIT or first_slice):
            grouped.append(current)
            current, has_slice = [], False
        current.append(unit)
        has_slice = has_slice or is_slice
    if current and has_slice:
        grouped.append(current)
    return [
        (b"".join(b"\x00\x00\x00\x01" + unit for unit in group),
         any(codec.is_keyframe(codec.nal_type(u)) for u in group))
        for group in grouped
    ]


def load_loop(path: Path) -> list[bytes]:
    """Access units of an H.264 or H.265 file, starting at its first keyframe so every loop starts decodable."""
    return [unit for unit, _ in load_loop_with_keyframes(path)]


def load_loop_with_keyframes(path: Path) -> list[tuple[bytes, bool]]:
    """Like load_loop, with each access unit's is-keyframe flag."""
    data = path.read_bytes()
    codec = codec_of(path)
    if not data.startswith(START_CODE) and not data.startswith(b"\x00" + START_CODE):
        raise ValueError(f"{path} is not an {codec.label} Annex-B elementary stream (no start code)")
    units = access_units(split_nal_units(data), codec)
    first_idr = next((index for index, (_, is_idr) in enumerate(units) if is_idr), None)
    if first_idr is None:
        raise ValueError(f"{path} has no keyframe")
    return units[first_idr:]


class LoopingFeeder:
    """Feeds one media pipeline's appsrc with the clip's access units, round and round.

    Each need-data pushes a second of video: the sinks pace by timestamps anyway, and a call into Python
    per frame was a measurable share of the server's CPU with dozens of mounts.
    """

    def __init__(self, units: list[bytes], fps: float, start: int = 0) -> None:
        self.units = units
        self.fps = fps
        self.start = start  # index of the access unit the loop starts at (an IDR)
        self.sent = 0
        self.per_call = max(1, round(fps))

    def timestamp(self, index: int) -> int:
        return round(index * Gst.SECOND / self.fps)

    def on_need_data(self, appsrc: Gst.Element, _length: int) -> None:
        for _ in range(self.per_call):
            buffer = Gst.Buffer.new_wrapped(self.units[(self.start + self.sent) % len(self.units)])
            buffer.pts = buffer.dts = self.timestamp(self.sent)
            buffer.duration = self.timestamp(self.sent + 1) - buffer.pts
            self.sent += 1
            appsrc.emit("push-buffer", buffer)


class LoopingFileFactory(GstRtspServer.RTSPMediaFactory):
    """One mount: a pipeline per prepared media, shared by all of the mount's clients."""

    def __init__(self, units: list[bytes], fps: float, start: int = 0,
                 codec: type[H264] | type[H265] = H264) -> None:
        super().__init__()
        self.units = units
        self.fps = fps
        self.start = start
        fraction = Fraction(fps).limit_denominator(1001)
        caps = (f"video/x-{codec.name},stream-format=byte-stream,alignment=au,"
                f"framerate={fraction.numerator}/{fraction.denominator}")
        self.set_launch(
            f'( appsrc name=src format=time is-live=false caps="{caps}" '
            f"! {codec.parse} ! {codec.pay} name=pay0 pt=96 config-interval=-1 )"
        )
        self.set_shared(True)
        self.connect("media-configure", self.on_media_configure)

    def on_media_configure(self, _factory: GstRtspServer.RTSPMediaFactory,
                           media: GstRtspServer.RTSPMedia) -> None:
        # A fresh pipeline starts its clock at zero, so its timestamps start at zero too.
        # The signal connection holds the feeder for as long as the pipeline lives.
        feeder = LoopingFeeder(self.units, self.fps, self.start)
        media.get_element().get_by_name("src").connect("need-data", feeder.on_need_data)


def parse_mount(text: str) -> tuple[str, Path]:
    mount, separator, file_name = text.partition("=")
    if not separator or not mount.startswith("/") or not file_name:
        raise argparse.ArgumentTypeError(f"--mount wants /path=file.h264, got {text!r}")
    return mount, Path(file_name)


def parse_user(text: str) -> tuple[str, str]:
    user, separator, password = text.partition(":")
    if not separator or not user:
        raise argparse.ArgumentTypeError(f"--user wants NAME:PASSWORD, got {text!r}")
    return user, password


def digest_auth(user: str, password: str) -> GstRtspServer.RTSPAuth:
    """Digest authentication for one user, who may open every mount."""
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", user)
    auth.add_digest(user, password, token)
    auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    return auth


def allow(factory: GstRtspServer.RTSPMediaFactory, role: str) -> None:
    factory.add_role_from_structure(Gst.Structure.new_from_string(
        f"{role}, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"))


def check_elements() -> list[str]:
    return [name for name in REQUIRED_ELEMENTS if Gst.ElementFactory.find(name) is None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--mount", type=parse_mount, action="append", default=[], metavar="/PATH=FILE.h264")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate the files are replayed at")
    parser.add_argument("--check", action="store_true", help="only check that GStreamer is usable")
    parser.add_argument("--user", type=parse_user, metavar="NAME:PASSWORD",
                        help="ask for Digest authentication with this user name and password")
    parser.add_argument("--spread", action="store_true",
                        help="start the mounts of one file at keyframes spread over it, so they are not in step")
    args = parser.parse_args()

    Gst.init(None)
    missing = check_elements()
    if missing:
        print(f"missing GStreamer elements: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.check:
        print(f"OK {Gst.version_string()}")
        return 0
    if not args.mount:
        parser.error("at least one --mount is needed")
    if args.fps <= 0:
        parser.error("--fps must be positive")

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    if args.user:
        server.set_auth(digest_auth(*args.user))
    mounts = server.get_mount_points()
    loaded: dict[Path, tuple[list[bytes], list[int]]] = {}  # one copy of each file, however many mounts serve it
    served: dict[Path, int] = {}
    for mount, path in args.mount:
        try:
            if path not in loaded:
                with_keyframes = load_loop_with_keyframes(path)
                keyframes = [index for index, (_, is_idr) in enumerate(with_keyframes) if is_idr]
                loaded[path] = ([unit for unit, _ in with_keyframes], keyframes)
        except (OSError, ValueError) as error:
            print(f"cannot serve {mount}: {error}", file=sys.stderr)
            return 1
        units, keyframes = loaded[path]
        start = 0
        if args.spread:
            count = sum(1 for m, p in args.mount if p == path)
            nth = served[path] = served.get(path, -1) + 1
            start = keyframes[nth * len(keyframes) // count]
        factory = LoopingFileFactory(units, args.fps, start, codec_of(path))
        if args.user:
            allow(factory, args.user[0])
        mounts.add_factory(mount, factory)
        print(f"{mount}: {path} ({len(units)} frames at {args.fps:g} fps, looping)", file=sys.stderr)

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port} (port in use?)", file=sys.stderr)
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print(f"READY rtsp://127.0.0.1:{server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
