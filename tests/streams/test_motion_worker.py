"""The after-hours rodent rule and the motion gate through the real RTSP server, reader, model and worker."""

import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest

from brightkitchen.bus import InProcessBus
from brightkitchen.config import parse_config
from brightkitchen.demo import demo_config
from brightkitchen.snapshots import SnapshotStore
from models.after_hours import AfterHoursScene, render_after_hours_frames
from streams.testclip import encode_h264
from streams.worker import Worker, evidence_boxes
from vision.detections import Detections

TZ = "Asia/Shanghai"
# The rodent crosses the empty kitchen from 4 s to 10 s of a 20 s loop.
CROSSING = (4.0, 10.0)


@pytest.fixture(scope="module")
def after_hours_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scene = AfterHoursScene(640, 360, crossing=CROSSING, period_s=20.0)
    path = tmp_path_factory.mktemp("after-hours") / "after-hours-640x360.h264"
    return encode_h264(render_after_hours_frames(20, 25, scene), path, fps=25, gop=25, bitrate="1M")


def schedule_excluding_now() -> list[dict]:
    """A one-hour window that starts two hours from now, local time: inactive for the whole test."""
    start = datetime.now(ZoneInfo(TZ)) + timedelta(hours=2)
    end = start + timedelta(hours=1)
    return [{"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}]


def motion_config(tmp_path: Path, empty_url: str, closed_url: str, staffed_url: str):
    """Three cameras with the demo's rules: an empty kitchen after hours, the same kitchen while the rule's
    schedule is off, and the demo kitchen with people in it after hours."""
    data = demo_config(tmp_path, empty_url).model_dump(mode="json")
    site = data["sites"][0]
    site["timezone"] = TZ
    site["schedules"]["after_hours"] = [{"start": "00:00", "end": "00:00"}]  # 24 hours: always after hours
    site["schedules"]["closed_later"] = schedule_excluding_now()
    camera = site["cameras"][0]
    site["cameras"] = [
        {**camera, "id": "empty", "url": empty_url, "zones": []},
        {**camera, "id": "closed", "url": closed_url, "zones": []},
        {**camera, "id": "staffed", "url": staffed_url},
    ]
    rodent = next(r for r in data["rules"] if r["name"] == "rodent_after_hours")
    assert rodent["source"] == "motion" and rodent["require_no_class"] == ["person"]
    later = {**rodent, "name": "rodent_closed_later", "schedule": "closed_later", "cameras": ["closed"]}
    rodent["cameras"] = ["empty", "staffed"]
    # Only the motion rules: every rule on the empty cameras allows skipping still frames.
    data["rules"] = [rodent, later]
    return parse_config(data, "motion test config", tmp_path, environ={})


def drain(bus: InProcessBus) -> list:
    events = []
    while (event := bus.receive(0.01)) is not None:
        events.append(event)
    return events


def test_rodent_in_an_empty_kitchen_after_hours(tmp_path, after_hours_clip, demo_clip, rtsp_server, wait_until):
    server = rtsp_server({"/empty": after_hours_clip, "/closed": after_hours_clip, "/staffed": demo_clip})
    config = motion_config(tmp_path, server.url("/empty"), server.url("/closed"), server.url("/staffed"))
    bus = InProcessBus()
    snapshots = SnapshotStore(tmp_path / "snapshots")
    worker = Worker(config, bus, snapshots)
    events: list = []
    worker.start()
    try:
        def rodent_opened():
            events.extend(drain(bus))
            return [e for e in events if e.phase == "open" and e.camera == "empty"]

        opened = wait_until(rodent_opened, timeout_s=60, what="a rodent_after_hours event on the empty camera")
        # Let the staffed camera see a whole loop of the demo clip's people at work.
        time.sleep(12)
        events.extend(drain(bus))
        status = {c["id"]: c for c in worker.camera_status()}
    finally:
        worker.stop()
    events.extend(drain(bus))

    event = opened[0]
    assert event.rule == "rodent_after_hours" and event.class_name == "motion" and event.track_id == 0  # one track
    assert event.model.name == "kitchen-starter" and event.frame_size == (640, 360)
    x1, y1, x2, y2 = event.boxes[0].xyxy
    area = (x2 - x1) * (y2 - y1) / (640 * 360)
    assert 0.002 <= area <= 0.05 and y1 > 0.6 * 360  # a small blob on the floor, where the rodent runs
    # The annotated snapshot shows the moving blob.
    path = snapshots.path(event.snapshot)
    assert path is not None
    image = cv2.imread(str(path))
    assert image.shape == (360, 640, 3)
    raw = AfterHoursScene(640, 360, crossing=CROSSING).frame(0.0)[0]  # the kitchen without the rodent
    drawn = np.abs(image.astype(int) - raw.astype(int)).max(axis=2) > 60
    bx1, by1, bx2, by2 = (int(v) for v in (x1, y1, x2, y2))
    assert drawn[max(0, by1 - 3) : by1 + 4, bx1:bx2].mean() > 0.5, "no box drawn along the blob's top edge"

    # No motion event where the schedule is off, nor in a kitchen with people in it.
    assert {e.camera for e in events if e.rule.startswith("rodent")} == {"empty"}
    empty, closed, staffed = status["empty"], status["closed"], status["staffed"]
    # Still frames of the empty kitchen skip inference; out of schedule, every frame after the first does.
    assert empty["motion_gate"].startswith("on") and empty["inference_skipped_still"] > 0
    assert closed["inference_skipped_schedule"] >= closed["frames_analysed"] - 2 > 0
    assert staffed["inference_skipped_still"] < staffed["frames_analysed"] / 2  # people keep moving
    for s in status.values():
        assert s["decode_mode"] == "keyframes" and s["frames_analysed"] > 10


def test_snapshots_draw_moving_blobs_only_for_motion_rules() -> None:
    names = ["person", "head_bare", "motion"]
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=np.float32)
    seen = Detections(boxes, np.array([0.9, 0.8, 1.0], dtype=np.float32), np.array([0, 2, 1]))
    assert evidence_boxes(seen, names, "head_bare").labels(names) == ["person", "head_bare"]
    assert evidence_boxes(seen, names, "motion").labels(names) == ["person", "motion", "head_bare"]
    assert evidence_boxes(seen, names[:2], "head_bare") is seen  # a camera without motion rules
