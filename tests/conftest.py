"""Fixtures shared by every test folder: synthetic H.264 clips, a loopback RTSP server, polling."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams.reader import CameraReader
from streams.rtsp_launcher import RtspServerProcess, available
from streams.testclip import make_clip

ClipFactory = Callable[..., Path]
RtspServerFactory = Callable[..., RtspServerProcess]
CameraReaderFactory = Callable[..., CameraReader]
WaitUntil = Callable[..., object]


@pytest.fixture(scope="session")
def clip_factory(tmp_path_factory: pytest.TempPathFactory) -> ClipFactory:
    """make(seconds=10, fps=25, gop=25, width=640, height=360, suffix=".h264", ...) -> Path.

    Each distinct clip is encoded once per session.
    """
    folder = tmp_path_factory.mktemp("clips")
    made: dict[tuple[object, ...], Path] = {}

    def make(seconds: float = 10, *, fps: int = 25, gop: int = 25, width: int = 640, height: int = 360,
             bitrate: str = "1M", pattern: str = "testsrc", suffix: str = ".h264") -> Path:
        key = (seconds, fps, gop, width, height, bitrate, pattern, suffix)
        if key not in made:
            name = f"{pattern}_{width}x{height}_{fps}fps_gop{gop}_{seconds}s{suffix}"
            made[key] = make_clip(folder / name, seconds=seconds, fps=fps, gop=gop, width=width,
                                  height=height, bitrate=bitrate, pattern=pattern)
        return made[key]

    return make


@pytest.fixture(scope="session")
def h264_clip(clip_factory: ClipFactory) -> Path:
    """A 10 s, 640x360, 25 fps H.264 Annex-B clip with a keyframe every second."""
    return clip_factory()


@pytest.fixture
def rtsp_server() -> Iterator[RtspServerFactory]:
    """start(mounts={"/cam": path}, port=None) -> a running RtspServerProcess, always stopped afterwards.

    Skips only when the GStreamer RTSP server cannot run on this machine; with CI set, that fails.
    """
    ok, reason = available()
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    servers: list[RtspServerProcess] = []

    def start(mounts: dict[str, Path], port: int | None = None, fps: float = 25.0) -> RtspServerProcess:
        server = RtspServerProcess(mounts, port=port, fps=fps)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def camera_reader() -> Iterator[CameraReaderFactory]:
    """start(camera_id, url, **CameraReader options) -> a running reader; all are stopped, and must stop."""
    started: list[CameraReader] = []

    def start(camera_id: str, url: str, **options: object) -> CameraReader:
        reader = CameraReader(camera_id, url, **options)
        started.append(reader)
        reader.start()
        return reader

    yield start
    for reader in started:
        reader.stop()
    assert not any(reader.is_alive() for reader in started), "a camera reader did not stop"


@pytest.fixture
def wait_until() -> WaitUntil:
    """wait(condition, timeout_s=10, what="...") -> the condition's first truthy value, or fail the test."""

    def wait(condition: Callable[[], object], timeout_s: float = 10.0, what: str = "condition",
             interval_s: float = 0.05) -> object:
        deadline = time.monotonic() + timeout_s
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
            time.sleep(interval_s)

    return wait
