"""Fixtures shared by every test folder: synthetic H.264 clips, a loopback RTSP server, polling."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
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

    def start(mounts: dict[str, Path], port: int | None = None, fps: float = 25.0,
              user: str | None = None) -> RtspServerProcess:
        server = RtspServerProcess(mounts, port=port, fps=fps, user=user)
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


@pytest.fixture(scope="session")
def demo_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo kitchen scenario (hatless worker from 3 s to 25 s), 30 s at 640x360, 1 s GOP."""
    from models.synthetic import DemoScene, render_demo_frames
    from streams.testclip import encode_h264

    path = tmp_path_factory.mktemp("demo") / "demo-640x360.h264"
    return encode_h264(render_demo_frames(30, 25, DemoScene(640, 360)), path, fps=25, gop=25, bitrate="1M")


# Tiny real ONNX models built with onnx.helper, so the runtime, detector and classifier run end to end.
OPSET = 17


def _onnx():
    # Only the tests that build models need the onnx package; the rest of tests/vision runs without it.
    return pytest.importorskip("onnx")


def _image_mean() -> tuple[list, list]:
    """Nodes computing each image's mean pixel as (N, 1, 1): the models' outputs depend on it, so a
    test can tell images in a batch apart."""
    onnx = _onnx()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean", "mean_shape"], ["mean3"]),
    ]
    inits = [numpy_helper.from_array(np.array([-1, 1, 1], dtype=np.int64), "mean_shape")]
    return nodes, inits


def _save(graph, path: Path, metadata: dict[str, str]) -> Path:
    onnx = _onnx()
    helper = onnx.helper
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def make_detector_onnx(tmp_path: Path) -> Callable[..., Path]:
    """Writes a detector whose output is base + mean(image) * shift for a fixed (1, C, A) base."""

    def make(
        base: np.ndarray,
        *,
        size: int | str = 64,
        batch: str | int = "batch",
        shift: np.ndarray | None = None,
        metadata: dict[str, str] | None = None,
        name: str = "det.onnx",
        symbolic_output: bool = False,
    ) -> Path:
        onnx = _onnx()
        helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto
        base = np.asarray(base, dtype=np.float32)[None]
        shift = np.zeros_like(base) if shift is None else np.asarray(shift, dtype=np.float32)[None]
        nodes, inits = _image_mean()
        nodes += [
            helper.make_node("Mul", ["mean3", "shift"], ["moved"]),
            helper.make_node("Add", ["moved", "base"], ["output0"]),
        ]
        inits += [numpy_helper.from_array(base, "base"), numpy_helper.from_array(shift, "shift")]
        # Dynamic exports name their output axes instead of giving sizes.
        out_shape = [batch, "rows", "cols"] if symbolic_output else [batch, *base.shape[1:]]
        graph = helper.make_graph(
            nodes,
            "detector",
            [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])],
            [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)],
            initializer=inits,
        )
        return _save(graph, tmp_path / name, metadata or {})

    return make


@pytest.fixture
def make_classifier_onnx(tmp_path: Path) -> Callable[..., Path]:
    """Writes a 2-class classifier: bright crops -> class 0, dark crops -> class 1 (softmax output)."""

    def make(*, size: int = 32, batch: str | int = 1, metadata: dict[str, str] | None = None) -> Path:
        onnx = _onnx()
        helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto
        nodes, inits = _image_mean()
        nodes += [
            helper.make_node("Reshape", ["mean3", "col_shape"], ["mean2"]),
            helper.make_node("Mul", ["mean2", "gain"], ["scaled"]),
            helper.make_node("Add", ["scaled", "offset"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["output0"], axis=1),
        ]
        inits += [
            numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), "col_shape"),
            numpy_helper.from_array(np.array([[20.0, -20.0]], dtype=np.float32), "gain"),
            numpy_helper.from_array(np.array([[-10.0, 10.0]], dtype=np.float32), "offset"),
        ]
        graph = helper.make_graph(
            nodes,
            "classifier",
            [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])],
            [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, 2])],
            initializer=inits,
        )
        meta = {"names": "{0: 'hat', 1: 'no_hat'}"} if metadata is None else metadata
        return _save(graph, tmp_path / "cls.onnx", meta)

    return make
