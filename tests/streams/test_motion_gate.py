"""The motion gate measures motion only while a rule in its schedule uses it."""

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from brightkitchen.config import parse_config
from brightkitchen.demo import demo_config
from streams.motion_gate import MotionGate
from streams.reader import Frame
from streams.worker import build_rule

TZ = "Asia/Shanghai"  # the demo site's: opening 06:00-20:00, after hours 20:00-06:00
OPEN = datetime(2026, 12, 7, 10, 0, tzinfo=ZoneInfo(TZ)).timestamp()
AFTER_HOURS = datetime(2026, 12, 7, 23, 0, tzinfo=ZoneInfo(TZ)).timestamp()


def gate(tmp_path: Path, edit=lambda rules: rules) -> MotionGate:
    """The demo camera's gate, with the demo's rules as `edit` leaves them."""
    data = demo_config(tmp_path, "rtsp://127.0.0.1:8554/demo").model_dump(mode="json")
    data["rules"] = edit(data["rules"])
    config = parse_config(data, "motion gate test", tmp_path, environ={})
    site, camera = next(iter(config.cameras()))
    gated: dict = {}
    for rule in config.rules_for(camera):
        gated.setdefault(rule.model, []).append((build_rule(rule, site, camera), rule))
    return MotionGate(camera, gated)


def frame(t: float, square_at: int = 0) -> Frame:
    image = np.zeros((180, 320, 3), np.uint8)
    image[40:80, square_at : square_at + 40] = 255
    return Frame("kitchen-1", image, (1920, 1080), t, 0, av_frame=None)


def test_the_after_hours_rule_needs_motion_only_after_hours(tmp_path: Path) -> None:
    g = gate(tmp_path)
    assert not g.uses_motion(OPEN) and g.uses_motion(AFTER_HOURS)
    for i in range(3):  # opening hours: nothing measured, so never still and no blobs
        motion = g.observe(frame(OPEN + i))
        assert not g.detector.primed and not motion.still and len(motion.boxes) == 0
    g.observe(frame(AFTER_HOURS))
    moved = g.observe(frame(AFTER_HOURS + 1, square_at=100))
    assert g.detector.primed and len(moved.boxes) == 2  # where the square was and where it is


def test_back_in_opening_hours_the_detector_forgets_its_last_frame(tmp_path: Path) -> None:
    g = gate(tmp_path)
    g.observe(frame(AFTER_HOURS))
    assert g.observe(frame(AFTER_HOURS + 1)).still
    assert not g.observe(frame(OPEN)).still and not g.detector.primed
    # The first frame after hours again only primes the detector, however different the picture is.
    first = g.observe(frame(AFTER_HOURS + 86_400, square_at=200))
    assert not first.still and len(first.boxes) == 0 and g.detector.primed


def test_a_model_whose_rules_in_their_schedule_all_skip_still_frames_needs_motion(tmp_path: Path) -> None:
    def rules(rs: list[dict]) -> list[dict]:
        hat = next(r for r in rs if r["name"] == "no_hat")
        mask = next(r for r in rs if r["name"] == "no_mask")
        return [{**hat, "skip_when_still": True}, {**mask, "schedule": "opening"}]

    g = gate(tmp_path, rules)
    assert not g.uses_motion(OPEN)  # no_mask runs on every frame then: motion would save nothing
    assert g.uses_motion(AFTER_HOURS)  # only no_hat is in its schedule, and it skips still frames


def test_without_rules_that_could_use_it_motion_is_never_measured(tmp_path: Path) -> None:
    g = gate(tmp_path, lambda rs: [r for r in rs if r["source"] != "motion" and not r.get("skip_when_still")])
    assert not g.uses_motion(OPEN) and not g.uses_motion(AFTER_HOURS)
    g.observe(frame(AFTER_HOURS))
    assert not g.detector.primed
