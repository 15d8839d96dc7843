"""CameraReader on files (looping, ending, corrupt) and the test clips themselves, with real PyAV."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from streams.reader import CameraReader
from streams.status import CameraStatus
from streams.testclip import encode_h264, make_clip, parse_bitrate, pattern_frames

# Small backoff keeps retry tests short; the behaviour is the same at production values.
DEFAULTS = {"analysis_fps": 5.0, "frame_size": 320, "backoff_initial_s": 0.2, "backoff_max_s": 1.0}


@pytest.fixture
def file_reader(camera_reader) -> Callable[..., CameraReader]:
    """start(path, **options) -> a running CameraReader on a file."""

    def start(path: Path, **options: object) -> CameraReader:
        return camera_reader("file", str(path), **{**DEFAULTS, **options})

    return start


def status_when(reader: CameraReader, wait_until, predicate: Callable[[CameraStatus], bool],
                what: str) -> CameraStatus:
    def check() -> CameraStatus | None:
        status = reader.status()
        return status if predicate(status) else None

    return wait_until(check, what=what)


def keyframe_indices(path: Path) -> tuple[int, list[int], tuple[int, int]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        flags = [packet.is_keyframe for packet in container.demux(stream) if packet.size]
        size = (stream.codec_context.width, stream.codec_context.height)
    return len(flags), [index for index, key in enumerate(flags) if key], size


@pytest.mark.parametrize("suffix", [".h264", ".mp4"])
def test_make_clip_has_fixed_gop_size_and_length(tmp_path: Path, suffix: str) -> None:
    path = make_clip(tmp_path / f"clip{suffix}", seconds=2, fps=10, gop=5, width=320, height=240)
    count, keyframes, size = keyframe_indices(path)
    assert (count, keyframes, size) == (20, [0, 5, 10, 15], (320, 240))


def test_make_clip_is_deterministic(tmp_path: Path) -> None:
    first = make_clip(tmp_path / "a.h264", seconds=1, width=160, height=96)
    second = make_clip(tmp_path / "b.h264", seconds=1, width=160, height=96)
    assert first.read_bytes() == second.read_bytes()


def test_encode_h264_takes_any_frames_and_rejects_bad_ones(tmp_path: Path) -> None:
    frames = [np.full((64, 96, 3), value, dtype=np.uint8) for value in (0, 128, 255)]
    path = encode_h264(frames, tmp_path / "grey.h264", fps=5, gop=2)
    assert keyframe_indices(path) == (3, [0, 2], (96, 64))
    with pytest.raises(ValueError, match="even"):
        encode_h264([np.zeros((63, 96, 3), np.uint8)], tmp_path / "odd.h264")
    with pytest.raises(ValueError, match="suffix"):
        encode_h264(frames, tmp_path / "clip.avi")
    with pytest.raises(ValueError, match="no frames"):
        encode_h264([], tmp_path / "empty.h264")


def test_noisy_pattern_spends_the_bitrate_like_a_camera(tmp_path: Path) -> None:
    sizes = {pattern: make_clip(tmp_path / f"{pattern}.h264", seconds=1, width=320, height=180, bitrate="1M",
                                pattern=pattern).stat().st_size for pattern in ("testsrc", "noisy")}
    assert sizes["noisy"] > 2 * sizes["testsrc"]
    assert 0.5 < sizes["noisy"] * 8 / 1_000_000 < 1.5  # bits in one second, near the 1 Mb/s asked for


def test_pattern_frames_differ_and_parse_bitrate() -> None:
    first, second = pattern_frames(2, width=320, height=180)
    assert first.shape == (180, 320, 3) and not np.array_equal(first, second)
    assert (parse_bitrate("2M"), parse_bitrate("800k"), parse_bitrate(1500)) == (2_000_000, 800_000, 1500)
    with pytest.raises(ValueError):
        parse_bitrate("fast")


def test_looping_file_plays_forever_like_a_camera(clip_factory, file_reader, wait_until) -> None:
    clip = clip_factory(1, gop=5)  # 25 packets, keyframe every 0.2 s
    reader = file_reader(clip, analysis_fps=5.0, loop_file=True)
    status = status_when(reader, wait_until, lambda s: s.frames_received > 60, "a third pass over the clip")
    assert status.decode_mode == "keyframes"
    assert status.reconnects == 0 and status.last_error is None and status.connected
    frame = wait_until(reader.latest, what="a frame")
    assert frame.image.shape == (180, 320, 3)
    assert reader.is_alive()


def test_file_without_loop_plays_once_then_ends(clip_factory, file_reader, wait_until) -> None:
    reader = file_reader(clip_factory(1), analysis_fps=5.0)
    wait_until(lambda: not reader.is_alive(), what="the reader to finish the file")
    status = reader.status()
    assert status.frames_received == 25
    assert status.frames_analysed == 5  # one second at 5 fps
    assert not status.connected and status.last_error is None and status.reconnects == 0


def test_keyframes_mode_delivers_each_keyframe_of_a_stream_with_b_frames(tmp_path: Path, file_reader,
                                                                        wait_until) -> None:
    # A reordering decoder would hand each keyframe out only after later pictures: a GOP late, or never.
    clip = make_clip(tmp_path / "bframes.h264", seconds=3, gop=25, width=320, height=180, bframes=2)
    reader = file_reader(clip, analysis_fps=1.0)
    wait_until(lambda: not reader.is_alive(), what="the reader to finish the file")
    status = reader.status()
    assert status.decode_mode == "keyframes"
    assert status.frames_analysed == 3


@pytest.mark.parametrize("suffix", [".h264", ".mp4"])
def test_corrupt_file_reports_invalid_data_and_retries(tmp_path: Path, file_reader, wait_until,
                                                       suffix: str) -> None:
    path = tmp_path / f"random{suffix}"
    path.write_bytes(np.random.default_rng(7).bytes(200_000))
    reader = file_reader(path, loop_file=True)
    status = status_when(reader, wait_until, lambda s: s.reconnects >= 2, "retries on a corrupt file")
    assert status.last_error is not None and status.last_error.startswith("invalid data")
    assert status.frames_analysed == 0 and reader.latest() is None
    assert reader.is_alive()


def test_missing_file_is_reported(tmp_path: Path, file_reader, wait_until) -> None:
    reader = file_reader(tmp_path / "absent.h264")
    status = status_when(reader, wait_until, lambda s: s.reconnects >= 1, "a retry")
    assert status.last_error == "file not found"


def test_latest_takes_the_frame_and_drops_stale_ones(clip_factory, file_reader, wait_until) -> None:
    reader = file_reader(clip_factory(1), analysis_fps=5.0)
    wait_until(lambda: not reader.is_alive(), what="the reader to finish the file")
    # The mailbox keeps only the newest frame: the last one due in the clip.
    assert reader.status().frames_analysed == 5
    frame = reader.latest(max_age_s=3600)
    assert frame is not None and frame.seq == 5
    assert reader.latest() is None  # taken

    reader = file_reader(clip_factory(1), analysis_fps=5.0)
    wait_until(lambda: not reader.is_alive(), what="the reader to finish the file")
    assert reader.latest(max_age_s=0.0) is None  # any frame is older than zero seconds by now
    assert reader.status().frames_dropped_stale == 1
    assert reader.latest() is None  # a stale frame is dropped, not kept
