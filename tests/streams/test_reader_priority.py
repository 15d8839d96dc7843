"""Camera readers run below the worker's CPU priority: the thread's own nice value, not the process's."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from brightkitchen.config import WorkerConfig
from streams.reader import CameraReader
from tests.streams.test_worker_cameras import held_worker

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")


def thread_nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


@pytest.mark.parametrize("nice", [0, 7])
def test_a_reader_lowers_its_own_thread_only(clip_factory, camera_reader, wait_until, nice: int) -> None:
    mine = thread_nice(threading.get_native_id())  # a new thread starts with its creator's value
    reader = camera_reader("file", str(clip_factory(seconds=2)), analysis_fps=1.0, frame_size=320, loop_file=True,
                           nice=nice)
    wait_until(lambda: reader.status().frames_analysed >= 1, timeout_s=20, what="a frame from the file")
    assert thread_nice(reader.native_id) == min(19, mine + nice)
    assert thread_nice(threading.get_native_id()) == mine
    assert thread_nice(os.getpid()) == mine


@pytest.mark.parametrize("nice", [-1, 20])
def test_a_nice_value_out_of_range_is_refused(nice: int) -> None:
    with pytest.raises(ValueError, match="nice must be 0..19"):
        CameraReader("cam", "rtsp://127.0.0.1:1/cam", analysis_fps=1.0, frame_size=320, nice=nice)
    with pytest.raises(ValidationError, match="reader_nice"):
        WorkerConfig(reader_nice=nice)


def test_the_worker_starts_its_readers_at_the_configured_priority(tmp_path: Path, h264_clip: Path,
                                                                  wait_until) -> None:
    assert WorkerConfig().reader_nice == 10
    mine = thread_nice(threading.get_native_id())
    worker = held_worker(tmp_path, {"cam-a": str(h264_clip)}, reader_nice=3)
    try:
        assert worker.start_camera("cam-a")
        reader = worker.pipelines[0].reader
        wait_until(lambda: reader.status().frames_analysed >= 1, timeout_s=20, what="a frame from cam-a")
        assert thread_nice(reader.native_id) == min(19, mine + 3)
        assert worker._thread is not None and thread_nice(worker._thread.native_id) == mine
    finally:
        worker.stop()


def test_a_reader_that_may_not_lower_its_priority_still_reads(clip_factory, camera_reader, wait_until, monkeypatch,
                                                              caplog) -> None:
    def refuse(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    reader = camera_reader("file", str(clip_factory(seconds=2)), analysis_fps=1.0, frame_size=320, loop_file=True,
                           nice=5)
    wait_until(lambda: reader.status().frames_analysed >= 1, timeout_s=20, what="a frame from the file")
    assert "could not lower camera reader priority by 5" in caplog.text
