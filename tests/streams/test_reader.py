"""CameraReader against a real RTSP server (GStreamer) and real decoding (PyAV): modes, failures, recovery."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streams.reader import CameraReader, Frame
from streams.rtsp_launcher import free_port
from streams.status import CameraStatus

# Small timeouts and backoff keep failure tests short; the behaviour is the same at production values.
FAST = {"analysis_fps": 2.0, "frame_size": 320, "open_timeout_s": 1.5, "read_timeout_s": 1.5,
        "backoff_initial_s": 0.2, "backoff_max_s": 1.0}


def next_frame(reader: CameraReader, wait_until, after_seq: int = 0, timeout_s: float = 10.0) -> Frame:
    """The next frame newer than `after_seq` (polling the mailbox)."""

    def newer() -> Frame | None:
        frame = reader.latest()
        return frame if frame is not None and frame.seq > after_seq else None

    return wait_until(newer, timeout_s, f"a frame from {reader.camera_id} after seq {after_seq}")


def status_when(reader: CameraReader, wait_until, predicate: Callable[[CameraStatus], bool],
                what: str) -> CameraStatus:
    """The first status snapshot for which `predicate` holds."""

    def check() -> CameraStatus | None:
        status = reader.status()
        return status if predicate(status) else None

    return wait_until(check, what=what)


def test_decode_mode_follows_keyframe_rate(rtsp_server, clip_factory, camera_reader, wait_until) -> None:
    server = rtsp_server({"/gop25": clip_factory(gop=25), "/gop50": clip_factory(gop=50)})
    keyframes = camera_reader("gop25", server.url("/gop25"), **{**FAST, "analysis_fps": 1.0})
    all_frames = camera_reader("gop50", server.url("/gop50"),
                               **{**FAST, "analysis_fps": 5.0, "frame_size": 0})

    before = status_when(keyframes, wait_until, lambda s: s.decode_mode == "keyframes",
                         "keyframes mode at 1 fps with a 1 s GOP")
    status_when(all_frames, wait_until, lambda s: s.keyframe_interval_s is not None, "GOP measured on gop50")
    first = next_frame(keyframes, wait_until, after_seq=before.frames_analysed)
    second = next_frame(keyframes, wait_until, after_seq=first.seq)
    after = keyframes.status()
    assert "keyframe interval 1.00 s" in after.decode_mode_reason
    assert "decoding keyframes only" in after.decode_mode_reason
    assert after.keyframe_interval_s == pytest.approx(1.0, abs=0.01)
    # Only the analysed keyframes were decoded, while every packet still arrived.
    analysed = after.frames_analysed - before.frames_analysed
    decoded = after.frames_decoded - before.frames_decoded
    assert 2 <= analysed and decoded <= analysed + 1
    assert after.frames_received - before.frames_received > decoded
    for frame in (first, second):
        assert frame.image.shape == (180, 320, 3)  # long side 320, aspect of 640x360 kept
        assert frame.orig_size == (640, 360)
        assert frame.full_bgr().shape == (360, 640, 3)
        assert frame.camera_id == "gop25"

    status = all_frames.status()
    assert status.decode_mode == "all_frames"
    assert status.keyframe_interval_s == pytest.approx(2.0, abs=0.01)
    assert "keyframe interval 2.00 s is too long" in status.decode_mode_reason
    assert "decoding all frames, converting only those analysed" in status.decode_mode_reason
    frame = next_frame(all_frames, wait_until)
    assert frame.image.shape == (360, 640, 3)  # frame_size=0 keeps the native size
    later = all_frames.status()
    # All frames decoded, only the due ones converted.
    assert later.frames_decoded > later.frames_analysed > 0
    assert later.connected and later.last_error is None and later.reconnects == 0


def test_server_restart_reconnects_on_same_url(rtsp_server, h264_clip, camera_reader, wait_until) -> None:
    server = rtsp_server({"/cam": h264_clip})
    reader = camera_reader("cam", server.url("/cam"), **FAST)
    next_frame(reader, wait_until)

    server.stop()
    status_when(reader, wait_until, lambda s: not s.connected, "the disconnect noticed")
    down = status_when(reader, wait_until,
                       lambda s: s.reconnects >= 2 and s.last_error == "connection refused",
                       "reconnect attempts refused while the server is down")
    assert not down.connected
    assert reader.is_alive()

    server.start()  # same port, so the same URL
    frame = next_frame(reader, wait_until, after_seq=down.frames_analysed, timeout_s=15)
    assert frame.orig_size == (640, 360)
    assert reader.status().connected


def test_hung_server_times_out_and_other_camera_keeps_flowing(rtsp_server, h264_clip, camera_reader,
                                                              wait_until) -> None:
    hung_server = rtsp_server({"/cam": h264_clip})
    healthy_server = rtsp_server({"/cam": h264_clip})
    hung = camera_reader("hung", hung_server.url("/cam"), **FAST)
    healthy = camera_reader("healthy", healthy_server.url("/cam"), **FAST)
    next_frame(hung, wait_until)
    healthy_frame = next_frame(healthy, wait_until)

    hung_server.pause()
    status = status_when(hung, wait_until, lambda s: "timed out after 1.5 s" in (s.last_error or ""),
                         "the hung camera's timeout")
    assert status.last_error in ("read timed out after 1.5 s", "open timed out after 1.5 s")
    status_when(hung, wait_until, lambda s: not s.connected, "the hung camera shown disconnected")
    # While one camera hangs, the other keeps delivering.
    for _ in range(3):
        healthy_frame = next_frame(healthy, wait_until, after_seq=healthy_frame.seq)
    assert healthy.status().last_error is None

    hung_server.resume()
    next_frame(hung, wait_until, after_seq=hung.status().frames_analysed, timeout_s=15)
    assert hung.status().connected
    assert hung.status().reconnects >= 1


def test_unreachable_camera_reports_refused_and_keeps_retrying(camera_reader, wait_until) -> None:
    reader = camera_reader("nowhere", f"rtsp://127.0.0.1:{free_port()}/cam", **FAST)
    status = status_when(reader, wait_until, lambda s: s.reconnects >= 2, "two reconnect attempts")
    assert status.last_error == "connection refused"
    assert not status.connected
    assert status.frames_received == 0 and reader.latest() is None
    assert reader.is_alive()


def test_wrong_path_reports_the_server_answer(rtsp_server, h264_clip, camera_reader, wait_until) -> None:
    server = rtsp_server({"/cam": h264_clip})
    reader = camera_reader("typo", server.url("/no-such-camera"), **FAST)
    status = status_when(reader, wait_until, lambda s: s.last_error is not None, "an error for a wrong path")
    assert "404" in status.last_error
    assert reader.is_alive()
