"""The reader's pure parts: stream clock, sampling, decode-mode policy, sizes, messages, rates."""

from __future__ import annotations

import av.error
import pytest

from streams.reader import (
    CameraReader,
    DecodePolicy,
    Sampler,
    SourceError,
    Timeline,
    analysis_size,
    describe_error,
    is_live_url,
    redact_url,
)
from streams.status import CameraStatus, RateMeter


def test_timeline_starts_at_zero_and_fills_missing_timestamps() -> None:
    timeline = Timeline(frame_duration_s=0.04)
    stamps = [timeline.stamp(t) for t in (100.0, 100.04, None, 100.12)]
    assert stamps == pytest.approx([0.0, 0.04, 0.08, 0.12])
    only_missing = Timeline(frame_duration_s=0.5)
    assert [only_missing.stamp(None) for _ in range(3)] == pytest.approx([0.0, 0.5, 1.0])


def test_timeline_glues_jumps_back_and_far_forward() -> None:
    timeline = Timeline(frame_duration_s=0.04)
    # The clip loops back to 0, then the camera clock jumps ahead.
    stamps = [timeline.stamp(t) for t in (0.0, 0.04, 0.08, 0.0, 0.04, 900.0, 900.04)]
    assert stamps == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16, 0.20, 0.24])


def test_sampler_keeps_the_analysis_rate_without_drift() -> None:
    sampler = Sampler(fps=10.0)
    frames = [i * 0.04 for i in range(250)]  # 10 s at 25 fps
    due = [t for t in frames if sampler.due(t)]
    assert len(due) == 100
    assert due[:4] == pytest.approx([0.0, 0.08, 0.2, 0.28])


def test_sampler_takes_every_frame_when_slower_than_analysis_and_restarts_after_a_gap() -> None:
    sampler = Sampler(fps=30.0)
    assert all(sampler.due(i * 0.04) for i in range(50))
    once_a_second = Sampler(fps=1.0)
    assert [once_a_second.due(t) for t in (0.0, 0.5, 0.995, 1.5, 7.0, 7.5, 8.0)] == [
        True, False, True, False, True, False, True]


def test_sampler_restart_makes_the_next_frame_due() -> None:
    sampler = Sampler(fps=1.0)
    assert sampler.due(0.0) and not sampler.due(0.5)
    sampler.restart()
    assert sampler.due(0.6) and not sampler.due(1.0) and sampler.due(1.6)


def test_policy_chooses_keyframes_when_analysis_is_at_most_the_keyframe_rate() -> None:
    policy = DecodePolicy(analysis_fps=1.0)
    assert policy.mode == "all_frames" and "measuring" in policy.reason
    for frame in range(51):  # two 1 s GOPs at 25 fps
        policy.observe(frame * 0.04, is_keyframe=frame % 25 == 0)
    assert policy.mode == "keyframes"
    assert policy.keyframe_interval_s == pytest.approx(1.0)
    assert policy.reason.startswith("keyframe interval 1.00 s") and "keyframes only" in policy.reason


def test_policy_decodes_all_frames_when_keyframes_are_too_rare() -> None:
    policy = DecodePolicy(analysis_fps=5.0)
    policy.observe(0.0, is_keyframe=True)
    for frame in range(1, 8):
        policy.observe(frame * 0.04, is_keyframe=False)
    assert policy.mode == "all_frames" and policy.reason.startswith("no keyframe within 0.28 s")
    policy.observe(2.0, is_keyframe=True)
    assert policy.mode == "all_frames" and policy.keyframe_interval_s == pytest.approx(2.0)
    assert "keyframe interval 2.00 s is too long" in policy.reason


def test_policy_returns_to_all_frames_when_the_gop_grows() -> None:
    policy = DecodePolicy(analysis_fps=1.0)
    for t in (0.0, 1.0, 2.0):
        policy.observe(t, is_keyframe=True)
    assert policy.mode == "keyframes"
    policy.observe(4.0, is_keyframe=True)
    assert policy.mode == "all_frames"


def test_policy_with_configured_keyframe_rate_does_not_measure() -> None:
    assert DecodePolicy(analysis_fps=1.0, keyframe_fps=1.0).mode == "keyframes"
    slow = DecodePolicy(analysis_fps=2.0, keyframe_fps=0.5)
    slow.observe(0.0, is_keyframe=True)
    slow.observe(0.5, is_keyframe=True)
    assert slow.mode == "all_frames" and "configured keyframe interval 2.00 s" in slow.reason


@pytest.mark.parametrize(
    ("size", "long_side", "expected"),
    [((1920, 1080), 320, (320, 180)), ((1080, 1920), 640, (360, 640)), ((640, 360), 0, (640, 360)),
     ((640, 360), 1280, (640, 360)), ((2560, 1440), 416, (416, 234))],
)
def test_analysis_size_keeps_aspect_and_never_upscales(size, long_side, expected) -> None:
    assert analysis_size(*size, long_side) == expected


@pytest.mark.parametrize(
    ("error", "phase", "elapsed", "expected"),
    [
        (av.error.ExitError(1414092869, "Immediate exit requested"), "read", 1.5,
         "read timed out after 1.5 s"),
        (av.error.InvalidDataError(1094995529, "Invalid data found when processing input"), "open", 1.5,
         "open timed out after 1.5 s"),
        (av.error.InvalidDataError(1094995529, "Invalid data found when processing input"), "open", 0.1,
         "invalid data: Invalid data found when processing input"),
        (ConnectionRefusedError(111, "Connection refused"), "open", 0.0, "connection refused"),
        (FileNotFoundError(2, "No such file or directory"), "open", 0.0, "file not found"),
        (SourceError("end of stream"), "read", 0.0, "end of stream"),
        (RuntimeError("boom"), "read", 0.0, "read failed: boom"),
    ],
)
def test_describe_error(error, phase, elapsed, expected) -> None:
    assert describe_error(error, phase=phase, timeout_s=1.5, elapsed_s=elapsed) == expected


def test_urls() -> None:
    assert redact_url("rtsp://admin:secret@10.0.0.5:554/ch1") == "rtsp://admin:***@10.0.0.5:554/ch1"
    assert redact_url("rtsp://10.0.0.5/ch1") == "rtsp://10.0.0.5/ch1"
    assert is_live_url("RTSP://cam/1") and not is_live_url("/videos/kitchen.mp4")


def test_rate_meter_counts_a_sliding_window() -> None:
    start = 1000.0
    meter = RateMeter(window_s=10.0, now=start)
    for i in range(50):
        meter.record(start + i * 0.1)  # 10 events/s for 5 s
    assert meter.rate(start + 5.0) == pytest.approx(10.0)  # younger than its window: divided by its age
    assert meter.rate(start + 12.0) == pytest.approx(3.0)  # events from 2.0 s to 4.9 s remain
    assert meter.rate(start + 30.0) == 0.0


def test_status_to_dict_is_plain_data() -> None:
    status = CameraStatus(
        camera_id="c1", url="rtsp://x/1", connected=True, decode_mode="keyframes", decode_mode_reason="r",
        input_fps=25.0, analysed_fps=1.0, last_frame_at=1.0, reconnects=0, last_error=None,
        last_error_at=None, frames_received=10, frames_decoded=1, frames_analysed=1, frames_dropped_stale=0,
        keyframe_interval_s=1.0, source_size=(640, 360),
    )
    data = status.to_dict()
    assert data["source_size"] == [640, 360] and data["decode_mode"] == "keyframes"


@pytest.mark.parametrize(
    "options",
    [{"analysis_fps": 0.0}, {"frame_size": -1}, {"read_timeout_s": 0.0}, {"backoff_max_s": 0.1},
     {"keyframe_fps": 0.0}],
)
def test_reader_rejects_bad_settings(options) -> None:
    settings = {"analysis_fps": 1.0, "frame_size": 320, **options}
    with pytest.raises(ValueError):
        CameraReader("c1", "rtsp://127.0.0.1/x", **settings)


def test_policy_with_decode_set_in_config_keeps_its_mode_and_says_what_it_costs() -> None:
    keyframes = DecodePolicy(analysis_fps=1.0, decode="keyframes")
    assert keyframes.mode == "keyframes" and "decode: keyframes set in the camera's config" in keyframes.reason
    for t in (0.0, 2.0, 4.0):  # a 2 s GOP: keyframes only give 0.5 fps of the 1 fps asked
        keyframes.observe(t, is_keyframe=True)
    assert keyframes.mode == "keyframes" and "allows at most 0.5 fps of the 1 asked" in keyframes.reason
    every = DecodePolicy(analysis_fps=1.0, decode="all_frames")
    for frame in range(51):
        every.observe(frame * 0.04, is_keyframe=frame % 25 == 0)
    assert every.mode == "all_frames" and every.keyframe_interval_s == pytest.approx(1.0)
    assert "decoding all frames" in every.reason and "would allow keyframes only" in every.reason
    with pytest.raises(ValueError, match="decode must be one of"):
        DecodePolicy(analysis_fps=1.0, decode="sometimes")
