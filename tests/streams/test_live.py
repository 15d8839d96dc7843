"""The live view's media side: H.264 access units for WebRTC, RTP time, viewers that start at keyframes
and never hold the others back, viewing hours, and privacy mode (faces blurred before anything leaves)."""

import asyncio
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from brightkitchen.config import parse_config
from streams.live import (
    RTP_CLOCK,
    VIEWER_QUEUE,
    AnnexB,
    CameraFeed,
    FaceBlurEncoder,
    FeedOptions,
    LiveCamera,
    LiveVideo,
    RtpClock,
    access_unit,
    blur_boxes,
    nal_types,
    viewing_hours,
)
from vision.detections import Detections

SPS, PPS, IDR = 7, 8, 5


def _units(path: Path) -> list[tuple[bytes, bool]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        convert = AnnexB(stream)
        return [u for packet in container.demux(stream) if packet.size for u in convert.convert(packet)]


@pytest.mark.parametrize("suffix", [".h264", ".mp4"])
def test_every_keyframe_carries_its_parameter_sets_in_annex_b(clip_factory, suffix):
    units = _units(clip_factory(seconds=3, suffix=suffix))
    assert len(units) == 75
    keyframes = [data for data, key in units if key]
    assert len(keyframes) == 3  # gop 25
    for data in keyframes:
        assert data.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01"))
        assert {SPS, PPS, IDR} <= nal_types(data)
    assert all(IDR not in nal_types(data) for data, key in units if not key)


def test_annex_b_puts_out_of_band_parameter_sets_before_keyframes(clip_factory):
    # An RTSP camera that sends SPS/PPS only in its SDP: the stream's extradata has them, the packets do not.
    path = clip_factory(seconds=2)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        first = bytes(packets[0])
    sps_pps_end = first.index(b"\x00\x00\x01\x65")  # the IDR slice's start code
    sps_pps_end -= first[sps_pps_end - 1] == 0  # a 4-byte start code
    parameter_sets, idr = first[:sps_pps_end], first[sps_pps_end:]
    assert nal_types(idr) == {IDR}

    class Stream:  # what AnnexB reads of a stream: its codec context's extradata
        class codec_context:  # noqa: N801
            extradata = parameter_sets

    packet = av.Packet(idr)
    packet.is_keyframe = True
    [(data, key)] = AnnexB(Stream()).convert(packet)
    assert key and data == parameter_sets + idr and {SPS, PPS, IDR} <= nal_types(data)


def test_rtp_clock_follows_the_source_and_the_wall_clock_across_reconnects(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("streams.live.time.monotonic", lambda: now[0])
    clock = RtpClock()
    first = clock.stamp(50.0)
    now[0] += 0.04
    assert clock.stamp(50.04) - first == round(0.04 * RTP_CLOCK)
    # The camera restarts 10 s later with timestamps from zero: the RTP time goes on by the 10 s.
    now[0] += 10.0
    clock.reconnect()
    after = clock.stamp(0.0)
    assert abs((after - first) / RTP_CLOCK - 10.04) < 0.001
    # A source jump far from the wall clock is not followed; time never goes back.
    now[0] += 0.04
    jumped = clock.stamp(5000.0)
    assert 0 < jumped - after < 0.1 * RTP_CLOCK
    assert clock.stamp(None) > jumped


def _packet(i: int) -> av.Packet:
    return access_unit(bytes([0, 0, 0, 1, 0x41, i % 256]), i * 3600)


def test_a_viewer_starts_at_a_keyframe_and_a_slow_one_skips_to_the_next():
    async def run():
        class Feed:
            def unsubscribe(self, track):
                self.gone = track

        from streams.live import ViewerTrack

        feed = Feed()
        track = ViewerTrack(feed)
        track.offer(_packet(0), False)  # undecodable without the keyframe before it: dropped
        track.offer(_packet(1), True)
        track.offer(_packet(2), False)
        assert [(await track.recv()).pts for _ in range(2)] == [3600, 7200]
        # A viewer that does not read: the backlog is dropped, and it waits for the next keyframe.
        for i in range(3, 3 + VIEWER_QUEUE + 5):
            track.offer(_packet(i), False)
        assert track.dropped == VIEWER_QUEUE and track._queue.empty()
        track.offer(_packet(100), True)
        assert (await track.recv()).pts == 360000
        track.offer(None, False)
        with pytest.raises(Exception):  # noqa: B017 - aiortc's MediaStreamError: the feed closed
            await track.recv()
        assert feed.gone is track

    asyncio.run(run())


def test_viewing_hours_come_from_the_named_schedule_in_the_sites_time_zone():
    data = {
        "sites": [
            {"id": "school", "timezone": "Asia/Shanghai", "viewing_hours": "lunch",
             "schedules": {"lunch": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "11:00", "end": "13:00"}]}},
            {"id": "other", "timezone": "UTC"},
        ],
        "models": [{"name": "m", "path": "m.onnx"}],
    }
    allowed = viewing_hours(parse_config(data, "test", Path("."), environ={}))
    monday_noon_shanghai = 1764561600.0  # 2025-12-01 04:00 UTC = 12:00 in Shanghai, a Monday
    assert allowed("school", monday_noon_shanghai)
    assert not allowed("school", monday_noon_shanghai + 2 * 3600)  # 14:00
    assert not allowed("school", monday_noon_shanghai + 5 * 86400)  # Saturday
    assert not allowed("other", monday_noon_shanghai)  # no viewing hours: parents never watch
    with pytest.raises(Exception, match="viewing_hours names no schedule"):
        data["sites"][1]["viewing_hours"] = "lunch"
        parse_config(data, "test", Path("."), environ={})


def test_blur_leaves_nothing_of_the_face_and_everything_else_as_it_was():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    before = image.copy()
    blur_boxes(image, np.array([[100, 100, 200, 220]], np.float32), margin=0.25)
    region = (slice(70, 251), slice(75, 226))  # the box grown by a quarter on each side
    assert image[region].std() < 0.2 * before[region].std()
    outside = np.ones(image.shape[:2], bool)
    outside[region] = False
    assert np.array_equal(image[outside], before[outside])


class BoxDetector:
    """A stand-in face detector: one face at a fixed place from a given frame on."""

    names = ["face"]

    def __init__(self, box, from_call=0):
        self.box, self.from_call, self.calls = box, from_call, 0

    def detect(self, frames, orig_sizes=None):
        self.calls += 1
        found = self.calls > self.from_call
        return [Detections(np.array([self.box] if found else np.zeros((0, 4)), np.float32),
                           np.ones(int(found), np.float32), np.zeros(int(found), np.int32)) for _ in frames]


def _detail(image: np.ndarray) -> float:
    """Fine detail: the variance of the Laplacian (noise, edges, features), which blurring takes away."""
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def _blur_clip(path: Path, detector, detect_every: int) -> tuple[list, list, list]:
    """Run a clip through the privacy encoder -> (input frames, output frames, output units)."""
    encoder = FaceBlurEncoder(detector, bitrate_kbps=2000, detect_every=detect_every)
    units, originals = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        encoder.reset(stream, 25)
        for i, packet in enumerate(p for p in container.demux(stream) if p.size):
            units += encoder.process(packet, i * 3600)
    with av.open(str(path)) as container:
        originals = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    decoder = av.CodecContext.create("h264", "r")
    frames = []
    for data, _, _ in units:
        frames += [f.to_ndarray(format="bgr24") for f in decoder.decode(av.Packet(data))]
    return originals, frames, units


def test_privacy_encoder_blurs_the_detected_faces_in_every_frame(clip_factory):
    box = (300.0, 60.0, 380.0, 160.0)
    originals, frames, units = _blur_clip(clip_factory(seconds=2, pattern="noisy"), BoxDetector(box), 5)
    # Frames wait for the detection after them: those after the last one (46..49) are still held.
    assert len(frames) == 46 and len(units) == 46
    assert [t for _, _, t in units] == [i * 3600 for i in range(46)]  # each with its own time
    assert units[0][1] and sum(k for _, k, _ in units) == 2  # an IDR at once, then one a second
    face, elsewhere = (slice(60, 160), slice(300, 380)), (slice(200, 300), slice(20, 200))
    for original, out in zip(originals[:46], frames, strict=True):
        assert _detail(out[face]) < 0.2 * _detail(original[face])  # the "face" has no detail left
        assert np.abs(out[elsewhere].astype(int) - original[elsewhere]).mean() < 8  # the rest is the picture


def test_a_face_appearing_between_detections_is_blurred_from_its_first_frame(clip_factory):
    # The detector first sees the face at its 3rd call (frame 10). Frames 6..9 wait for that detection and
    # are blurred with its boxes, so a face that walked in at any of them is hidden from its first frame.
    box = (300.0, 60.0, 380.0, 160.0)
    originals, frames, _ = _blur_clip(clip_factory(seconds=2, pattern="noisy"), BoxDetector(box, from_call=2), 5)
    face = (slice(60, 160), slice(300, 380))
    pairs = zip(originals[:46], frames, strict=True)
    blurred = [_detail(out[face]) < 0.2 * _detail(original[face]) for original, out in pairs]
    assert blurred == [False] * 6 + [True] * 40


def test_privacy_with_the_real_face_detector_leaves_no_face_to_find(demo_clip):
    from models.cards import builtin_model_path
    from vision.faces import RetinaFaceDetector

    detector = RetinaFaceDetector(builtin_model_path("faces-retinaface"), score_threshold=0.5, threads=1)
    originals, frames, _ = _blur_clip(_head(demo_clip, 150), detector, 1)
    assert len(frames) == len(originals) == 150
    step = 10
    before = sum(len(detector.detect([f])[0]) for f in originals[::step])
    after = sum(len(detector.detect([f])[0]) for f in frames[::step])
    assert before >= 10, "the demo's faces are found in the camera's frames"
    assert after == 0, f"{after} faces still found in what leaves the server"


def _head(path: Path, frames: int) -> Path:
    """The first `frames` frames of an Annex-B clip, as a new clip."""
    from streams.testclip import encode_h264

    out = path.with_name(f"{path.stem}-{frames}.h264")
    if not out.exists():
        with av.open(str(path)) as container:
            decoded = container.decode(video=0)
            images = [next(decoded).to_ndarray(format="bgr24") for _ in range(frames)]
        encode_h264(images, out, fps=25, gop=25, bitrate="1M")
    return out


def test_privacy_without_a_face_detector_sends_nothing(rtsp_server, h264_clip):
    camera = rtsp_server({"/cam": h264_clip})

    async def run():
        live = LiveVideo([LiveCamera("cam", "s", camera.url("/cam"), "blur_faces")], FeedOptions(idle_close_s=0))
        track = live.subscribe("cam")
        await asyncio.sleep(2)
        status = live.status("cam")
        received = track._queue.qsize()
        track.stop()
        live.close()
        return status, received

    status, received = asyncio.run(run())
    assert status["state"] == "offline" and "face detector" in status["last_error"]
    assert received == 0


def test_a_file_camera_plays_at_its_frame_rate_and_loops(clip_factory):
    path = clip_factory(seconds=1, suffix=".mp4")

    async def run():
        feed = CameraFeed(LiveCamera("f", "s", str(path)), asyncio.get_running_loop(), FeedOptions(idle_close_s=0))
        track = feed.subscribe()
        got = []
        loop = asyncio.get_running_loop()
        started = loop.time()
        while len(got) < 60:
            got.append(await asyncio.wait_for(track.recv(), 5))
        elapsed = loop.time() - started
        track.stop()
        feed.stop()
        return got, elapsed

    got, elapsed = asyncio.run(run())
    assert 60 / 25 - 0.6 < elapsed < 60 / 25 + 1.0  # paced like a camera, across the loop at 25 frames
    ticks = [p.pts for p in got]
    assert ticks == sorted(set(ticks)) and all(p.time_base == Fraction(1, RTP_CLOCK) for p in got)
