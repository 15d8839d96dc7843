"""Cameras started and stopped in a running worker (what camera assignment across workers uses)."""

from __future__ import annotations

import socket
from pathlib import Path

import yaml

from brightkitchen.bus import InProcessBus
from brightkitchen.config import load_config
from brightkitchen.snapshots import SnapshotStore
from models.cards import BUILTIN_DIR
from streams.worker import Worker


def test_stopping_a_camera_that_is_still_opening_does_not_wait_for_its_reader(tmp_path: Path, wait_until) -> None:
    # A camera that accepts the connection and never answers: its reader sits in the open until the timeout.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen()
    url = f"rtsp://127.0.0.1:{hung.getsockname()[1]}/cam"
    config = {
        "sites": [{"id": "s1", "cameras": [{"id": "cam-h", "url": url}]}],
        "models": [{"name": "det", "path": str(BUILTIN_DIR / "kitchen-starter.onnx"), "provider": "cpu",
                    "precision": "fp32", "threads": 1, "processes": 1}],
        "rules": [{"name": "no_hat", "model": "det", "classes": ["head_bare"]}],
        "storage": {"database": "sqlite:///bk.db", "snapshots_dir": "snapshots"},
        "worker": {"open_timeout_s": 3.0},
    }
    path = tmp_path / "kitchen.yaml"
    path.write_text(yaml.safe_dump(config))
    worker = Worker(load_config(path), InProcessBus(), SnapshotStore(tmp_path / "snapshots"))
    worker.hold_cameras()
    worker.start()
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
