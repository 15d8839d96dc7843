"""The loopback RTSP server readers are tested against: looping, sharing, and clear start-up failures."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import av
import pytest

from streams import rtsp_launcher
from streams.rtsp_launcher import RtspServerProcess, RtspServerUnavailable


def read_packets(url: str, count: int) -> list[av.Packet]:
    options = {"rtsp_transport": "tcp", "timeout": "5000000"}
    with av.open(url, options=options, timeout=(5.0, 5.0)) as container:
        stream = container.streams.video[0]
        packets = []
        for packet in container.demux(stream):
            if packet.size and packet.pts is not None:
                packets.append(packet)
            if len(packets) >= count:
                return packets
    raise AssertionError(f"the stream ended after {len(packets)} packets")


def test_server_loops_the_clip_with_increasing_timestamps(rtsp_server, clip_factory) -> None:
    clip = clip_factory(1, gop=5)  # 25 frames per pass
    server = rtsp_server({"/cam": clip})
    packets = read_packets(server.url("/cam"), 70)  # almost three passes
    pts = [packet.pts for packet in packets]
    assert all(later > earlier for earlier, later in zip(pts, pts[1:], strict=False))
    steps = {later - earlier for earlier, later in zip(pts, pts[1:], strict=False)}
    assert steps == {3600}  # 25 fps on the 90 kHz RTP clock, also across the loop
    keyframes = [index for index, packet in enumerate(packets) if packet.is_keyframe]
    assert len(keyframes) >= 13 and {b - a for a, b in zip(keyframes, keyframes[1:], strict=False)} == {5}


def test_server_sends_at_the_frame_rate_like_a_camera(rtsp_server, clip_factory) -> None:
    # The feeder queues a second of video at a time; the stream must still come at 25 fps, not in bursts.
    clip = clip_factory(1, gop=5)
    server = rtsp_server({"/cam": clip})
    options = {"rtsp_transport": "tcp", "timeout": "5000000"}
    with av.open(server.url("/cam"), options=options, timeout=(5.0, 5.0)) as container:
        arrivals = []
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                arrivals.append(time.monotonic())
            if len(arrivals) == 131:
                break
    # The first second comes at once (read while the stream was probed); the next 100 frame intervals
    # are 4 s at 25 fps, where a burst would take a fraction of a second.
    assert arrivals[-1] - arrivals[30] > 3.0


def test_clients_of_one_mount_share_it(rtsp_server, h264_clip) -> None:
    server = rtsp_server({"/cam": h264_clip})
    options = {"rtsp_transport": "tcp", "timeout": "5000000"}
    with (av.open(server.url("/cam"), options=options, timeout=5.0) as first,
          av.open(server.url("/cam"), options=options, timeout=5.0) as second):
        for container in (first, second):
            stream = container.streams.video[0]
            assert (stream.codec_context.width, stream.codec_context.height) == (640, 360)
            packets = (packet for packet in container.demux(stream) if packet.size)
            assert len([packet for _, packet in zip(range(10), packets, strict=False)]) == 10


def test_start_fails_clearly_when_the_port_is_taken(rtsp_server, h264_clip) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = RtspServerProcess({"/cam": h264_clip}, port=taken.getsockname()[1])
        with pytest.raises(RtspServerUnavailable, match="cannot listen"):
            server.start()
    assert not server.running


def test_start_refuses_files_it_cannot_serve(rtsp_server, clip_factory, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.h264"):
        RtspServerProcess({"/cam": tmp_path / "absent.h264"}).start()
    with pytest.raises(RtspServerUnavailable, match="not an H.264 Annex-B elementary stream"):
        RtspServerProcess({"/cam": clip_factory(1, suffix=".mp4")}).start()


def test_pause_resume_stop_are_safe_to_repeat(rtsp_server, h264_clip) -> None:
    server = rtsp_server({"/cam": h264_clip})
    server.pause()
    server.resume()
    server.pause()
    server.stop()  # stops a paused server too
    assert not server.running
    server.stop()
    with pytest.raises(RuntimeError, match="not running"):
        server.pause()


def test_unavailable_server_explains_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, h264_clip) -> None:
    monkeypatch.setattr(rtsp_launcher, "SYSTEM_PYTHON", tmp_path / "python3")
    ok, reason = rtsp_launcher.available.__wrapped__()
    assert not ok and "python3 not found" in reason
    monkeypatch.setattr(rtsp_launcher, "available", lambda: (False, "RTSP server unavailable: test"))
    with pytest.raises(RtspServerUnavailable, match="unavailable: test"):
        RtspServerProcess({"/cam": h264_clip}).start()
