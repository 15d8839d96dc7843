"""The motion measure: still frames, moving blobs where things moved, noise that does not count."""

import numpy as np
import pytest

from models.after_hours import AfterHoursScene
from vision.motion import MotionDetector


def grey_frame(value: int = 90, size: tuple[int, int] = (320, 180)) -> np.ndarray:
    return np.full((size[1], size[0], 3), value, np.uint8)


def test_first_frame_counts_as_moving_then_an_unchanged_frame_is_still() -> None:
    motion = MotionDetector()
    first = motion.update(grey_frame())
    assert not first.still and len(first.boxes) == 0
    second = motion.update(grey_frame())
    assert second.still and second.changed == 0.0 and len(second.boxes) == 0


def test_a_moving_square_is_a_blob_where_it_was_and_where_it_is() -> None:
    motion = MotionDetector(size=160)
    before, after = grey_frame(), grey_frame()
    before[40:80, 40:80] = 220  # x 0.125..0.25, y 0.22..0.44 of a 320x180 frame
    after[40:80, 200:240] = 220  # moved right to x 0.625..0.75
    motion.update(before)
    moved = motion.update(after)
    assert not moved.still and moved.changed > 0.02
    assert len(moved.boxes) == 2
    lefts = sorted(float(b[0]) for b in moved.boxes)
    assert lefts[0] == pytest.approx(0.125, abs=0.03) and lefts[1] == pytest.approx(0.625, abs=0.03)
    for box, area in zip(moved.boxes, moved.areas, strict=True):
        assert box[1] == pytest.approx(40 / 180, abs=0.04) and box[3] == pytest.approx(80 / 180, abs=0.04)
        assert area == pytest.approx((box[2] - box[0]) * (box[3] - box[1]), rel=0.01)
        assert 0.027 < area < 0.06  # the square is 0.028 of the frame; blur and growth add a rim


def test_sensor_noise_below_the_threshold_is_still() -> None:
    rng = np.random.default_rng(0)
    motion = MotionDetector(threshold=25)
    base = grey_frame()
    motion.update(base)
    for _ in range(5):
        noisy = np.clip(base.astype(int) + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8)
        assert motion.update(noisy).still


def test_a_change_over_most_of_the_frame_is_one_large_blob() -> None:
    motion = MotionDetector()
    motion.update(grey_frame(40))
    lights_on = motion.update(grey_frame(200))
    assert not lights_on.still and lights_on.changed == pytest.approx(1.0)
    assert len(lights_on.areas) == 1 and lights_on.areas[0] > 0.95


def test_reset_and_a_new_frame_size_start_over() -> None:
    motion = MotionDetector()
    motion.update(grey_frame())
    assert not motion.update(grey_frame(size=(200, 100))).still  # other size: nothing to compare with
    motion.reset()
    assert not motion.update(grey_frame(size=(200, 100))).still


def test_the_rendered_rodent_moves_in_an_otherwise_still_kitchen() -> None:
    scene = AfterHoursScene(640, 360, crossing=(2.0, 6.0), period_s=10.0)
    motion = MotionDetector()
    results = [motion.update(scene.frame(float(t))[0]) for t in range(9)]
    assert [r.still for r in results[1:]] == [True, False, False, False, False, False, True, True]
    for t in (3, 4, 5):
        (_, x1, y1, x2, y2), = scene.frame(float(t))[1]
        rodent = np.array([x1 / 640, y1 / 360, x2 / 640, y2 / 360])
        overlaps = [(min(b[2], rodent[2]) > max(b[0], rodent[0])) and (min(b[3], rodent[3]) > max(b[1], rodent[1]))
                    for b in results[t].boxes]
        assert any(overlaps), f"no blob on the rodent at t={t}"
        assert all(0.002 <= a <= 0.05 for a in results[t].areas)


@pytest.mark.parametrize("options", [{"threshold": 0}, {"threshold": 256}, {"still_below": -0.1}, {"size": 8}])
def test_bad_settings_are_refused(options) -> None:
    with pytest.raises(ValueError):
        MotionDetector(**options)
