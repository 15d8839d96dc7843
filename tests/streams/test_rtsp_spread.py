"""Mounts of one file can start at different keyframes, so cameras fed from one clip are not in step."""

from streams.rtsp_launcher import RtspServerProcess
from tests.streams.test_reader_rtsp_server import read_packets


def first_pictures(server: RtspServerProcess, mounts: list[str]) -> list[bytes]:
    out = []
    for mount in mounts:
        packets = read_packets(server.url(mount), 30)
        keyframe = next(p for p in packets if p.is_keyframe)  # the second keyframe of its loop
        out.append(bytes(keyframe))
    return out


def test_spread_mounts_start_at_other_keyframes(rtsp_server, clip_factory) -> None:
    clip = clip_factory(4, gop=25, pattern="noisy")  # four keyframes, each picture different
    mounts = {"/a": clip, "/b": clip, "/c": clip}
    with RtspServerProcess(mounts, spread=True) as spread:
        assert len(set(first_pictures(spread, list(mounts)))) == 3
    in_step = rtsp_server(mounts)
    assert len(set(first_pictures(in_step, list(mounts)))) == 1
