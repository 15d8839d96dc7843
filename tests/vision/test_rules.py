from datetime import datetime, time
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from vision.detections import Detections
from vision.rules import Rule, RuleEngine, RuleEvent
from vision.schedule import Schedule, Window
from vision.zones import PolygonZone

NAMES = ["person", "no_hat", "rat"]
W, H = 1000, 500


def frame(*objects: tuple[str, int, float, tuple[float, float, float, float]]) -> Detections:
    """Tracked detections from (class name, track id, score, box) tuples."""
    if not objects:
        return Detections.empty()
    return Detections(
        np.array([o[3] for o in objects]),
        np.array([o[2] for o in objects]),
        np.array([NAMES.index(o[0]) for o in objects]),
        np.array([o[1] for o in objects]),
    )


HEAD = (100.0, 100.0, 140.0, 140.0)
OTHER_HEAD = (600.0, 100.0, 640.0, 140.0)


def no_hat(track: int = 1, score: float = 0.9, box=HEAD):
    return ("no_hat", track, score, box)


def run(engine: RuleEngine, frames: dict[float, Detections]) -> list[RuleEvent]:
    events = []
    for t in sorted(frames):
        events += engine.process(frames[t], NAMES, t, W, H)
    return events


def phases(events: list[RuleEvent]) -> list[tuple[str, float]]:
    return [(e.phase, e.at) for e in events]


def rule(**overrides) -> Rule:
    fields = dict(name="hat", classes=frozenset({"no_hat"}), cooldown_s=60.0, close_after_s=5.0, update_interval_s=30.0)
    fields.update(overrides)
    return Rule(**fields)


def test_no_open_before_min_duration_then_exactly_one_open():
    engine = RuleEngine([rule(min_duration_s=3.0)])
    events = run(engine, {float(t): frame(no_hat()) for t in range(20)})
    assert phases(events) == [("open", 3.0)]
    assert events[0].started_at == 0.0 and events[0].ended_at is None
    assert events[0].rule == "hat" and events[0].track_id == 1 and events[0].class_name == "no_hat"


def test_dwell_tolerates_gaps_shorter_than_close_after():
    engine = RuleEngine([rule(min_duration_s=6.0, close_after_s=5.0)])
    frames = {0.0: frame(no_hat()), 4.0: frame(no_hat()), 6.0: frame(no_hat())}
    assert phases(run(engine, frames)) == [("open", 6.0)]


def test_dwell_restarts_after_a_gap_as_long_as_close_after():
    engine = RuleEngine([rule(min_duration_s=6.0, close_after_s=5.0)])
    frames = {t: frame(no_hat()) for t in (0.0, 5.0, 6.0, 10.0, 11.0)}
    events = run(engine, frames)
    # The pending violation from t=0 was dropped at t=5 (no event); the one from t=5 opens at t=11.
    assert phases(events) == [("open", 11.0)]
    assert events[0].started_at == 5.0


def test_updated_only_on_change_and_at_most_once_per_interval():
    engine = RuleEngine([rule(update_interval_s=10.0)])
    # The score creeps up every second for 25 s, then stays.
    frames = {float(t): frame(no_hat(score=0.6 + 0.01 * min(t, 25))) for t in range(60)}
    events = run(engine, frames)
    assert phases(events) == [("open", 0.0), ("updated", 10.0), ("updated", 20.0), ("updated", 30.0)]
    assert events[1].score == pytest.approx(0.70) and events[3].score == pytest.approx(0.85)


def test_updated_when_new_boxes_violate():
    engine = RuleEngine([rule(update_interval_s=10.0)])
    frames = {float(t): frame(no_hat()) for t in range(12)}
    frames.update({float(t): frame(no_hat(), no_hat(track=2, score=0.5, box=OTHER_HEAD)) for t in range(12, 25)})
    events = [e for e in run(engine, frames) if e.track_id == 1]
    assert phases(events) == [("open", 0.0), ("updated", 12.0)]
    assert [b.track_id for b in events[1].boxes] == [1, 2]  # own box first


def test_closed_after_gap_with_last_violating_time():
    engine = RuleEngine([rule(close_after_s=5.0)])
    frames = {float(t): frame(no_hat(score=0.7 + 0.05 * t)) for t in range(5)}
    frames.update({float(t): frame() for t in range(5, 12)})
    events = run(engine, frames)
    assert phases(events) == [("open", 0.0), ("closed", 9.0)]
    closed = events[1]
    assert closed.ended_at == 4.0 and closed.started_at == 0.0
    assert closed.score == pytest.approx(0.9)
    assert closed.boxes[0].xyxy == HEAD and closed.boxes[0].score == pytest.approx(0.9)


def test_cooldown_per_track():
    engine = RuleEngine([rule(cooldown_s=60.0, close_after_s=5.0)])
    frames = {0.0: frame(no_hat()), 10.0: frame(), 20.0: frame(no_hat()), 69.0: frame(no_hat()), 71.0: frame(no_hat())}
    events = run(engine, frames)
    # Closed at 10; the same track violating at 20 and 69 is inside the 60 s cooldown; at 71 it is past it.
    assert phases(events) == [("open", 0.0), ("closed", 10.0), ("open", 71.0)]
    assert events[2].started_at == 71.0


def test_cooldown_per_rule_for_a_new_track_in_the_same_place():
    engine = RuleEngine([rule(cooldown_s=60.0)])
    shifted = (105.0, 102.0, 145.0, 142.0)
    frames = {
        0.0: frame(no_hat(track=1)),
        10.0: frame(),
        # The tracker lost track 1 and now calls it 7: same place, so still cooling down.
        20.0: frame(no_hat(track=7, box=shifted)),
        # A new track somewhere else opens at once.
        21.0: frame(no_hat(track=7, box=shifted), no_hat(track=8, box=OTHER_HEAD)),
    }
    events = run(engine, frames)
    assert [(e.phase, e.track_id, e.at) for e in events] == [("open", 1, 0.0), ("closed", 1, 10.0), ("open", 8, 21.0)]


def test_a_new_track_in_the_place_of_a_missing_one_continues_its_violation():
    engine = RuleEngine([rule(close_after_s=5.0)])
    frames = {0.0: frame(no_hat(track=1)), 1.0: frame(no_hat(track=1)), 2.0: frame()}
    # Track 1 was lost; 3 s later the tracker sees the same head as track 2.
    frames.update({float(t): frame(no_hat(track=2, box=(102, 101, 142, 141))) for t in range(4, 8)})
    frames.update({float(t): frame() for t in range(8, 14)})
    events = run(engine, frames)
    assert [(e.phase, e.track_id, e.at, e.ended_at) for e in events] == [
        ("open", 1, 0.0, None),
        ("closed", 1, 12.0, 7.0),
    ]


def test_a_returning_track_keeps_its_own_violation():
    engine = RuleEngine([rule()])
    events = run(engine, {0.0: frame(no_hat(track=1)), 1.0: frame(no_hat(track=1), no_hat(track=2, box=HEAD))})
    # Track 1 is present, so track 2 (same place) cannot take its violation: it starts its own.
    assert [(e.phase, e.track_id) for e in events] == [("open", 1), ("open", 2)]


def test_zone_filtering():
    left = PolygonZone("prep", [(0, 0), (0.5, 0), (0.5, 1), (0, 1)])
    engine = RuleEngine([rule(zones=(left,))])
    events = run(engine, {0.0: frame(no_hat(track=1, box=OTHER_HEAD)), 1.0: frame(no_hat(track=2, box=HEAD))})
    assert [(e.phase, e.track_id) for e in events] == [("open", 2)]


def test_schedule_filtering():
    shanghai = ZoneInfo("Asia/Shanghai")
    lunch = Schedule([Window({0, 1, 2, 3, 4}, time(11), time(13))], "Asia/Shanghai")
    engine = RuleEngine([rule(schedule=lunch)])
    before = datetime(2024, 1, 1, 10, 59, 58, tzinfo=shanghai).timestamp()
    events = run(engine, {before: frame(no_hat()), before + 1: frame(no_hat()), before + 2: frame(no_hat())})
    assert phases(events) == [("open", before + 2)]


def test_require_no_class():
    after_hours = rule(name="rodent", classes=frozenset({"rat"}), require_no_class=frozenset({"person"}))
    engine = RuleEngine([after_hours])
    rat = ("rat", 3, 0.8, (500, 400, 540, 420))
    person = ("person", 4, 0.3, (0, 0, 100, 300))
    events = run(engine, {0.0: frame(rat, person), 1.0: frame(rat)})
    assert [(e.phase, e.rule, e.at) for e in events] == [("open", "rodent", 1.0)]


def test_min_score_and_class_filtering():
    engine = RuleEngine([rule(min_score=0.6)])
    events = run(engine, {0.0: frame(no_hat(score=0.59)), 1.0: frame(("person", 5, 0.99, HEAD)), 2.0: frame(no_hat())})
    assert phases(events) == [("open", 2.0)]


def test_rules_are_independent():
    engine = RuleEngine([rule(name="a"), rule(name="b", min_duration_s=2.0)])
    events = run(engine, {float(t): frame(no_hat()) for t in range(3)})
    assert [(e.rule, e.phase, e.at) for e in events] == [("a", "open", 0.0), ("b", "open", 2.0)]


def test_flush_closes_open_violations_and_drops_pending_ones():
    engine = RuleEngine([rule(name="quick"), rule(name="slow", min_duration_s=100.0)])
    run(engine, {0.0: frame(no_hat()), 1.0: frame(no_hat())})
    events = engine.flush(2.5)
    assert [(e.rule, e.phase, e.at, e.ended_at) for e in events] == [("quick", "closed", 2.5, 1.0)]
    assert engine.flush(3.0) == []


def test_untracked_detections_and_bad_rules_are_rejected():
    engine = RuleEngine([rule()])
    untracked = Detections(np.array([HEAD]), np.array([0.9]), np.array([1]))
    with pytest.raises(ValueError, match="tracked"):
        engine.process(untracked, NAMES, 0.0, W, H)
    with pytest.raises(ValueError, match="unique"):
        RuleEngine([rule(), rule()])
    with pytest.raises(ValueError, match="at least one class"):
        rule(classes=frozenset())
    with pytest.raises(ValueError, match="min_score"):
        rule(min_score=1.5)
    with pytest.raises(ValueError, match="cooldown_s"):
        rule(cooldown_s=-1)
