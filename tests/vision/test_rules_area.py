"""Rules' size filters: a box counts only when its area, as a fraction of the frame's, is in range."""

import numpy as np
import pytest

from vision.detections import Detections
from vision.rules import Rule, RuleEngine

NAMES = ["motion"]


def frame(*boxes: tuple[float, float, float, float]) -> Detections:
    n = len(boxes)
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.ones(n), np.zeros(n), np.arange(n))


def test_only_boxes_within_the_area_range_violate() -> None:
    rule = Rule("small", classes=frozenset({"motion"}), min_area=0.01, max_area=0.05, cooldown_s=0)
    engine = RuleEngine([rule])
    # 100x100 frame: 5x5 = 0.0025 (too small), 20x20 = 0.04 (in range), 50x50 = 0.25 (too large)
    events = engine.process(frame((0, 0, 5, 5), (10, 10, 30, 30), (40, 40, 90, 90)), NAMES, 0.0, 100, 100)
    assert [(e.phase, e.track_id) for e in events] == [("open", 1)]


@pytest.mark.parametrize(("low", "high"), [(0.5, 0.5), (0.2, 0.1), (-0.1, 0.5), (0.0, 1.5)])
def test_bad_area_ranges_are_refused(low, high) -> None:
    with pytest.raises(ValueError, match="min_area"):
        Rule("r", classes=frozenset({"motion"}), min_area=low, max_area=high)
