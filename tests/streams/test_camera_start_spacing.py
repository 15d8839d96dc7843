"""Cameras start `worker.camera_start_interval_s` apart, so a restart does not open every violation at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from brightkitchen.bus import InProcessBus
from brightkitchen.config import WorkerConfig
from brightkitchen.snapshots import SnapshotStore
from streams.reader import CameraReader
from streams.worker import Worker
from tests.streams.test_worker_cameras import held_worker, worker_config


def test_the_interval_has_a_default_and_refuses_negative_values() -> None:
    assert WorkerConfig().camera_start_interval_s == 0.2
    with pytest.raises(ValidationError, match="camera_start_interval_s"):
        WorkerConfig(camera_start_interval_s=-0.1)
    with pytest.raises(ValueError, match="start_delay_s must be 0 or more"):
        CameraReader("cam", "rtsp://127.0.0.1:1/cam", analysis_fps=1.0, frame_size=320, start_delay_s=-1.0)


def test_a_reader_stopped_before_its_start_delay_never_opens(camera_reader) -> None:
    # Port 1 refuses connections: a reader that tried would record the error.
    reader = camera_reader("cam", "rtsp://127.0.0.1:1/cam", analysis_fps=1.0, frame_size=320, start_delay_s=60.0)
    asked = time.monotonic()
    reader.stop()
    assert not reader.is_alive()
    assert time.monotonic() - asked < 30  # did not sit out the delay (a bound far from any timing)
    status = reader.status()
    assert status.last_error is None and status.reconnects == 0 and not status.connected


def test_cameras_assigned_together_open_one_interval_apart(tmp_path: Path, rtsp_server, clip_factory,
                                                           wait_until) -> None:
    clip = clip_factory(4)
    server = rtsp_server({f"/{c}": clip for c in "abc"})
    interval = 0.7
    worker = held_worker(tmp_path, {f"cam-{c}": server.url(f"/{c}") for c in "abc"},
                         camera_start_interval_s=interval)
    try:
        asked = time.monotonic()
        for c in "abc":
            assert worker.start_camera(f"cam-{c}")
        readers = [p.reader for p in worker.pipelines]
        # The first camera after hold_cameras starts at once; the next ones wait their turn.
        assert readers[0].start_delay_s == 0.0
        assert [r.start_delay_s for r in readers[1:]] == pytest.approx([interval, 2 * interval], abs=0.1)
        first_frame: dict[int, float] = {}

        def all_delivered() -> bool:
            for index, reader in enumerate(readers):
                if index not in first_frame and reader.status().frames_analysed >= 1:
                    first_frame[index] = time.monotonic()
            return len(first_frame) == len(readers)

        wait_until(all_delivered, timeout_s=30, interval_s=0.02, what="a frame from every camera")
        # A camera cannot deliver before it opens, and it opens no earlier than its turn.
        for index in (1, 2):
            assert first_frame[index] - asked >= readers[index].start_delay_s
    finally:
        worker.stop()


def test_the_configured_cameras_start_one_interval_apart(tmp_path: Path) -> None:
    config = worker_config(tmp_path, {f"cam-{i}": f"rtsp://127.0.0.1:1/{i}" for i in range(4)},
                           camera_start_interval_s=0.5)
    worker = Worker(config, InProcessBus(), SnapshotStore(tmp_path / "snapshots"))  # not started
    try:
        delays = [p.reader.start_delay_s for p in worker.pipelines]
        assert delays[0] == 0.0
        assert delays[1:] == pytest.approx([0.5, 1.0, 1.5], abs=0.1)
    finally:
        worker.stop()
