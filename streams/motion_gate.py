"""The motion gate of one camera: the motion of its analysed frames, whether a model's inference can be
skipped on a frame, and the moving blobs that rules with `source: motion` see."""

from __future__ import annotations

import numpy as np

from brightkitchen.config import CameraConfig, RuleConfig
from streams.reader import Frame
from vision.detections import Detections
from vision.motion import Motion, MotionDetector
from vision.rules import Rule

# The track id of a camera's moving blobs (tracker ids start at 1).
MOTION_TRACK_ID = 0


class MotionGate:
    """Motion of one camera's analysed frames, and whether a model's inference can be skipped on a frame.

    A model's inference is skipped for a frame when every rule of that model on the camera is outside
    its schedule, or allows skipping still frames and the frame is still. The last detections then stand
    (nothing moved, so what was seen is still there). Moving blobs feed the rules with `source: motion`.
    """

    def __init__(self, camera: CameraConfig, rules: dict[str, list[tuple[Rule, RuleConfig]]]) -> None:
        m = camera.motion
        self.detector = MotionDetector(threshold=m.threshold, still_below=m.still_below, size=m.size)
        self.rules = rules
        self.motion_models = {name for name, rs in rules.items() if any(c.source == "motion" for _, c in rs)}
        blocking = sorted(c.name for rs in rules.values() for _, c in rs if not c.skips_when_still)
        # Only a model with a rule that watches motion or may skip still frames can use motion.
        self._may_use_motion = [
            name for name, rs in rules.items() if any(c.source == "motion" or c.skips_when_still for _, c in rs)
        ]
        self.description = (
            "on: every rule allows skipping inference on still frames" if not blocking
            else f"still frames analysed while these rules are in their schedule: {', '.join(blocking)}"
        )
        self.motion = Motion.unknown()
        self.last_detections: dict[str, Detections] = {}
        self.skipped = {"still": 0, "schedule": 0}
        self._schedule_t: float | None = None
        self._schedule: dict[str, list[RuleConfig]] = {}

    def observe(self, frame: Frame) -> Motion:
        if self.uses_motion(frame.captured_at):
            self.motion = self.detector.update(frame.image)
        elif self.detector.primed:
            # Not measured while nothing uses it (a kitchen's opening hours, for an after-hours rule). The
            # first frame measured again only primes the detector: compared with one from hours before, the
            # whole picture would look like it moved.
            self.detector.reset()
            self.motion = Motion.unknown()
        return self.motion

    def uses_motion(self, t: float) -> bool:
        """Whether a rule uses motion at time t: a motion rule in its schedule, or a model whose rules in their
        schedule all let still frames go without inference."""
        for name in self._may_use_motion:
            scheduled = self._in_schedule(name, t)
            if any(c.source == "motion" for c in scheduled) or (
                scheduled and all(c.skips_when_still for c in scheduled)
            ):
                return True
        return False

    def skip_reason(self, model_name: str, t: float) -> str | None:
        """Why inference of this model can be skipped for the frame just observed, or None to run it."""
        rules = self.rules.get(model_name, [])
        if model_name not in self.last_detections or not rules:
            return None
        scheduled = self._in_schedule(model_name, t)
        if not scheduled:
            return "schedule"
        if self.motion.still and all(c.skips_when_still for c in scheduled):
            return "still"
        return None

    def _in_schedule(self, model_name: str, t: float) -> list[RuleConfig]:
        """The model's rules in their schedule at t, worked out once per frame (the gate and the skip both ask)."""
        if t != self._schedule_t:
            self._schedule_t, self._schedule = t, {}
        if model_name not in self._schedule:
            self._schedule[model_name] = [c for r, c in self.rules[model_name]
                                          if r.schedule is None or r.schedule.is_active(t)]
        return self._schedule[model_name]

    def blobs(self, model_name: str, frame_size: tuple[int, int], class_id: int) -> Detections:
        """The moving blobs of the frame just observed, as tracked detections of class `class_id` in pixels.

        Blobs are not tracked one by one: at one frame a second a small animal moves more than its own
        length, leaving a blob where it was and one where it is, so no blob lives for long. All of a
        camera's blobs are one track, MOTION_TRACK_ID ("something moves here"): a motion rule's dwell is
        how long something keeps moving, its cooldown how long the camera stays quiet after."""
        if model_name not in self.motion_models or not len(self.motion.boxes):
            return Detections.empty()
        w, h = frame_size
        xyxy = self.motion.boxes * np.array([w, h, w, h], np.float32)
        n = len(xyxy)
        return Detections(xyxy, np.ones(n, np.float32), np.full(n, class_id, np.int32),
                          np.full(n, MOTION_TRACK_ID, np.int32))
