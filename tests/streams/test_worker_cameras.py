"""Cameras started and stopped in a running worker (what camera assignment across workers uses)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import yaml

from brightkitchen.bus import InProcessBus
from brightkitchen.config import Config, load_config
from brightkitchen.snapshots import SnapshotStore
from models.cards import BUILTIN_DIR
from streams.worker import Worker


def worker_config(tmp_path: Path, cameras: dict[str, str], **worker_settings: object) -> Config:
    """A config of cameras (id -> URL) with a rule on the starter model."""
    config = {
        "sites": [{"id": "s1", "cameras": [{"id": c, "url": url} for c, url in cameras.items()]}],
        "models": [{"name": "det", "path": str(BUILTIN_DIR / "kitchen-starter.onnx"), "provider": "cpu",
                    "precision": "fp32", "threads": 1, "processes": 1}],
        "rules": [{"name": "no_hat", "model": "det", "classes": ["head_bare"]}],
        "storage": {"database": "sqlite:///bk.db", "snapshots_dir": "snapshots"},
        "worker": worker_settings,
    }
    path = tmp_path / "kitchen.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


def held_worker(tmp_path: Path, cameras: dict[str, str], **worker_settings: object) -> Worker:
    """A started worker on the starter model whose cameras (id -> URL) all wait for start_camera."""
    worker = Worker(worker_config(tmp_path, cameras, **worker_settings), InProcessBus(),
                    SnapshotStore(tmp_path / "snapshots"))
    worker.hold_cameras()
    worker.start()
    return worker


def test_stopping_a_camera_that_is_still_opening_does_not_wait_for_its_reader(tmp_path: Path, wait_until) -> None:
    # A camera that accepts the connection and never answers: its reader sits in the open until the timeout.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen()
    worker = held_worker(tmp_path, {"cam-h": f"rtsp://127.0.0.1:{hung.getsockname()[1]}/cam"}, open_timeout_s=3.0)
    try:
        assert worker.start_camera("cam-h")
        reader = worker.pipelines[0].reader
        wait_until(lambda: reader.is_alive(), what="the reader opening the stream")
        assert worker.stop_camera("cam-h")
        # Not analysed any more, but its reader was only asked to stop: the caller (renewing leases) goes on.
        assert worker.running_cameras() == set() and reader.is_alive()
    finally:
        worker.stop()
        hung.close()
    assert not reader.is_alive()  # stop() waits for the readers of stopped cameras too


def test_cameras_start_and_stop_during_an_inference_call_and_a_stopped_camera_s_frame_is_dropped(
    tmp_path: Path, h264_clip: Path, wait_until
) -> None:
    worker = held_worker(tmp_path, {"cam-a": str(h264_clip), "cam-b": str(h264_clip)})
    model = worker.models["det"]
    detect, in_call, go_on = model.detect, threading.Event(), threading.Event()
    # A safety net, not a timing: if stopping waits for the call, it returns only after this releases it.
    unblock = threading.Timer(30, go_on.set)

    def slow_detect(*args: object, **kwargs: object) -> object:
        in_call.set()
        go_on.wait()
        return detect(*args, **kwargs)

    model.detect = slow_detect
    try:
        assert worker.start_camera("cam-a")
        unblock.start()
        wait_until(in_call.is_set, timeout_s=30, what="a batch with cam-a's frame in inference")
        assert worker.stop_camera("cam-a") and worker.start_camera("cam-b")
        assert not go_on.is_set()  # both happened while the batch was still in inference
        go_on.set()
        wait_until(lambda: worker.stats.frames_analysed.get("cam-b", 0) >= 1, timeout_s=30, what="cam-b analysed")
        # The batch finished after cam-a had stopped: its frame is neither counted nor run through the rules.
        assert "cam-a" not in worker.stats.frames_analysed
        assert worker.running_cameras() == {"cam-b"}
    finally:
        go_on.set()
        unblock.cancel()
        worker.stop()
