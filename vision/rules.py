"""The rules engine: tracked detections in, violation lifecycle events (open / updated / closed) out.

Rules are data. A track violates a rule in a frame when its class is one of the rule's classes, its
score reaches min_score, its box's area (a fraction of the frame's) is within min_area..max_area, its
box is in one of the rule's zones, the schedule is active and none of the
require_no_class classes is in the frame. A violation opens once the track has violated for
min_duration_s (gaps shorter than close_after_s do not break it) and closes after close_after_s without
violating. One engine holds the state of one camera.

Two things keep one real violation from becoming many events when the tracker loses an object:
- a new track that appears where an open (or pending) violation of the same rule and class was last
  seen, while that violation's track is missing, continues that violation instead of starting one;
- after a close, the rule stays quiet for cooldown_s for the same track and for any new track of the
  same class whose box overlaps the closed violation's last box.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np

from vision.detections import Detections
from vision.nms import box_iou
from vision.schedule import Schedule
from vision.zones import Anchor, PolygonZone

# Boxes overlapping more than this are taken to be the same object seen again.
SAME_PLACE_IOU = 0.3

Box = tuple[float, float, float, float]


class EventBox(NamedTuple):
    class_name: str
    score: float
    xyxy: Box
    track_id: int


@dataclass(frozen=True)
class Rule:
    name: str
    classes: frozenset[str]
    min_score: float = 0.5
    min_duration_s: float = 0.0
    zones: tuple[PolygonZone, ...] = ()  # empty: the whole frame
    schedule: Schedule | None = None  # None: always
    cooldown_s: float = 60.0
    close_after_s: float = 5.0
    update_interval_s: float = 30.0
    require_no_class: frozenset[str] = frozenset()
    zone_anchor: Anchor = "center"  # point of a box that must be in a zone; rule classes are mostly small
    min_area: float = 0.0  # box area as a fraction of the frame's: size filters, e.g. for moving blobs
    max_area: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", frozenset(self.classes))
        object.__setattr__(self, "require_no_class", frozenset(self.require_no_class))
        object.__setattr__(self, "zones", tuple(self.zones))
        if not self.name:
            raise ValueError("a rule needs a name")
        if not self.classes:
            raise ValueError(f"rule {self.name!r} needs at least one class")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"rule {self.name!r}: min_score must be within [0, 1], got {self.min_score}")
        for key in ("min_duration_s", "cooldown_s", "close_after_s", "update_interval_s"):
            if getattr(self, key) < 0:
                raise ValueError(f"rule {self.name!r}: {key} must be >= 0, got {getattr(self, key)}")
        if self.close_after_s == 0:
            raise ValueError(f"rule {self.name!r}: close_after_s must be > 0")
        if not 0.0 <= self.min_area < self.max_area <= 1.0:
            raise ValueError(f"rule {self.name!r}: need 0 <= min_area < max_area <= 1")
        if self.zone_anchor not in ("bottom_center", "center"):
            raise ValueError(f"rule {self.name!r}: zone_anchor must be 'bottom_center' or 'center'")


@dataclass
class RuleEvent:
    phase: Literal["open", "updated", "closed"]
    rule: str
    track_id: int  # the track that started the violation
    class_name: str
    score: float  # highest score seen during the violation
    started_at: float
    at: float
    ended_at: float | None
    boxes: list[EventBox]  # the violation's own box first, then other boxes violating the rule


@dataclass
class _Violation:
    rule: Rule
    track_id: int
    class_name: str
    started_at: float
    last_violating_at: float
    max_score: float
    last_box: Box
    last_boxes: list[EventBox]
    track_ids: set[int] = field(default_factory=set)
    opened: bool = False
    last_emitted_at: float = 0.0
    reported_score: float = 0.0
    reported_tracks: frozenset[int] = frozenset()

    def event(self, phase: Literal["open", "updated", "closed"], at: float) -> RuleEvent:
        return RuleEvent(
            phase=phase,
            rule=self.rule.name,
            track_id=self.track_id,
            class_name=self.class_name,
            score=self.max_score,
            started_at=self.started_at,
            at=at,
            ended_at=self.last_violating_at if phase == "closed" else None,
            boxes=list(self.last_boxes),
        )


class _Closure(NamedTuple):
    closed_at: float
    class_name: str
    box: Box
    track_ids: frozenset[int]


class RuleEngine:
    def __init__(self, rules: list[Rule]) -> None:
        names = [r.name for r in rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique; repeated: {duplicates}")
        self.rules = list(rules)
        # (rule name, track id) -> violation; a violation continued by a new track has several keys.
        self._violations: dict[tuple[str, int], _Violation] = {}
        self._closures: dict[str, list[_Closure]] = {r.name: [] for r in rules}

    def process(
        self, detections: Detections, names: list[str], timestamp: float, frame_w: int, frame_h: int
    ) -> list[RuleEvent]:
        """Advance every rule by one tracked frame; returns the events it caused, closes first."""
        if np.any(detections.track_ids < 0):
            raise ValueError("RuleEngine.process needs tracked detections (every track_id >= 0)")
        labels = detections.labels(names)
        present = set(labels)
        events: list[RuleEvent] = []
        for rule in self.rules:
            events += self._close_stale(rule, timestamp)
            rows = self._violating_rows(rule, detections, labels, present, timestamp, frame_w, frame_h)
            events += self._advance(rule, detections, labels, rows, timestamp)
        return events

    def flush(self, timestamp: float) -> list[RuleEvent]:
        """Close every open violation now (the worker is stopping); pending ones are dropped."""
        events = []
        for violation in self._unique(self._violations.values()):
            events += self._close(violation, timestamp)
        return events

    def _violating_rows(
        self,
        rule: Rule,
        detections: Detections,
        labels: list[str],
        present: set[str],
        timestamp: float,
        frame_w: int,
        frame_h: int,
    ) -> np.ndarray:
        if rule.require_no_class & present:
            return np.zeros(0, dtype=np.int64)
        if rule.schedule is not None and not rule.schedule.is_active(timestamp):
            return np.zeros(0, dtype=np.int64)
        mask = np.array([label in rule.classes for label in labels], dtype=bool)
        mask &= detections.scores >= rule.min_score
        if (rule.min_area > 0.0 or rule.max_area < 1.0) and mask.any() and frame_w > 0 and frame_h > 0:
            sides = (detections.xyxy[:, 2:] - detections.xyxy[:, :2]).clip(0)
            area = sides[:, 0] * sides[:, 1] / float(frame_w * frame_h)
            mask &= (area >= rule.min_area) & (area <= rule.max_area)
        if rule.zones and mask.any():
            in_zone = np.zeros(len(detections), dtype=bool)
            for zone in rule.zones:
                in_zone |= zone.contains(detections.xyxy, frame_w, frame_h, rule.zone_anchor)
            mask &= in_zone
        return np.flatnonzero(mask)

    def _advance(
        self, rule: Rule, detections: Detections, labels: list[str], rows: np.ndarray, t: float
    ) -> list[RuleEvent]:
        frame_boxes = {
            row: EventBox(
                labels[row], float(detections.scores[row]), _box(detections.xyxy[row]), int(detections.track_ids[row])
            )
            for row in rows.tolist()
        }
        # Tracks that already have a violation go first, so a returning track keeps its own violation
        # before any new track can take it over.
        touched: dict[int, tuple[_Violation, EventBox]] = {}
        known = [r for r in frame_boxes if (rule.name, frame_boxes[r].track_id) in self._violations]
        unknown = [r for r in frame_boxes if r not in known]
        for row in known:
            violation = self._violations[(rule.name, frame_boxes[row].track_id)]
            touched[id(violation)] = (violation, frame_boxes[row])
        for row in unknown:
            own = frame_boxes[row]
            violation = self._take_over(rule, own, touched)
            if violation is None:
                if self._cooling_down(rule, own, t):
                    continue
                violation = _Violation(rule, own.track_id, own.class_name, t, t, own.score, own.xyxy, [own])
            violation.track_ids.add(own.track_id)
            self._violations[(rule.name, own.track_id)] = violation
            touched[id(violation)] = (violation, own)

        events = []
        others = sorted(frame_boxes.values(), key=lambda b: -b.score)
        for violation, own in touched.values():
            violation.last_violating_at = t
            violation.max_score = max(violation.max_score, own.score)
            violation.last_box = own.xyxy
            violation.last_boxes = [own] + [b for b in others if b is not own]
            tracks_now = frozenset(b.track_id for b in violation.last_boxes)
            if not violation.opened:
                if t - violation.started_at >= rule.min_duration_s:
                    violation.opened = True
                    events.append(self._report(violation, "open", t, tracks_now))
            elif t - violation.last_emitted_at >= rule.update_interval_s and (
                violation.max_score > violation.reported_score or not tracks_now <= violation.reported_tracks
            ):
                events.append(self._report(violation, "updated", t, tracks_now))
        return events

    @staticmethod
    def _report(
        violation: _Violation, phase: Literal["open", "updated"], t: float, tracks: frozenset[int]
    ) -> RuleEvent:
        violation.last_emitted_at = t
        violation.reported_score = violation.max_score
        violation.reported_tracks = tracks
        return violation.event(phase, t)

    def _take_over(
        self, rule: Rule, own: EventBox, touched: dict[int, tuple[_Violation, EventBox]]
    ) -> _Violation | None:
        """The unseen violation of this rule and class whose last box overlaps own most, if any."""
        candidates = [
            v
            for v in self._unique(self._violations.values())
            if v.rule is rule and v.class_name == own.class_name and id(v) not in touched
        ]
        if not candidates:
            return None
        iou = box_iou(np.asarray([own.xyxy]), np.asarray([v.last_box for v in candidates]))[0]
        best = int(iou.argmax())
        return candidates[best] if iou[best] > SAME_PLACE_IOU else None

    def _cooling_down(self, rule: Rule, own: EventBox, t: float) -> bool:
        closures = [c for c in self._closures[rule.name] if t - c.closed_at < rule.cooldown_s]
        for closure in closures:
            if own.track_id in closure.track_ids:
                return True
        same_class = [c.box for c in closures if c.class_name == own.class_name]
        return bool(same_class) and bool(
            (box_iou(np.asarray([own.xyxy]), np.asarray(same_class)) > SAME_PLACE_IOU).any()
        )

    def _close_stale(self, rule: Rule, t: float) -> list[RuleEvent]:
        self._closures[rule.name] = [c for c in self._closures[rule.name] if t - c.closed_at < rule.cooldown_s]
        stale = [
            v
            for v in self._unique(self._violations.values())
            if v.rule is rule and t - v.last_violating_at >= rule.close_after_s
        ]
        events = []
        for violation in stale:
            events += self._close(violation, t)
        return events

    def _close(self, violation: _Violation, t: float) -> list[RuleEvent]:
        name = violation.rule.name
        for track_id in violation.track_ids:
            self._violations.pop((name, track_id), None)
        if not violation.opened:
            return []
        self._closures[name].append(
            _Closure(t, violation.class_name, violation.last_box, frozenset(violation.track_ids))
        )
        return [violation.event("closed", t)]

    @staticmethod
    def _unique(violations: Iterable[_Violation]) -> list[_Violation]:
        seen: dict[int, _Violation] = {}
        for v in violations:
            seen.setdefault(id(v), v)
        return list(seen.values())


def _box(xyxy: np.ndarray) -> Box:
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return (x1, y1, x2, y2)
