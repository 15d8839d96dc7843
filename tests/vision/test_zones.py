import numpy as np
import pytest

from vision.zones import PolygonZone

# Left half of the frame, below the top quarter.
LEFT = PolygonZone("prep", [(0.0, 0.25), (0.5, 0.25), (0.5, 1.0), (0.0, 1.0)])


def test_inside_and_outside_by_bottom_centre():
    boxes = np.array(
        [
            [100, 300, 200, 400],  # bottom centre (150, 400): inside
            [700, 300, 800, 400],  # right half: outside
            [100, 10, 200, 50],  # above the zone: outside
        ]
    )
    assert LEFT.contains(boxes, 1000, 500).tolist() == [True, False, False]


def test_anchor_changes_the_answer_for_boxes_crossing_the_edge():
    # On a 500-px high frame the centre (y 90 -> 0.18) is above the zone, the bottom (160 -> 0.32) in it.
    box = np.array([[100, 20, 200, 160]])
    assert LEFT.contains(box, 1000, 500, anchor="bottom_center").tolist() == [True]
    assert LEFT.contains(box, 1000, 500, anchor="center").tolist() == [False]


def test_concave_polygon():
    # A "U": the notch in the middle is outside.
    u = PolygonZone("u", [(0, 0), (0.3, 0), (0.3, 0.7), (0.7, 0.7), (0.7, 0), (1, 0), (1, 1), (0, 1)])
    centres = np.array([[0.15, 0.5], [0.5, 0.3], [0.5, 0.9], [0.85, 0.2]]) * 100
    boxes = np.hstack([centres - 1, centres + 1])
    assert u.contains(boxes, 100, 100, anchor="center").tolist() == [True, False, True, True]


def test_empty_input_gives_empty_mask():
    assert LEFT.contains(np.zeros((0, 4)), 10, 10).shape == (0,)


@pytest.mark.parametrize(
    "points,message",
    [
        ([(0, 0), (1, 1)], "at least 3 points"),
        ([(0, 0), (1.5, 0), (1, 1)], "within \\[0, 1\\]"),
        ([(0, 0), (0.5, float("nan")), (1, 1)], "within \\[0, 1\\]"),
        ([(0, 0), (0.5, 0.5), (1, 1)], "no area"),
        ([(0, 0), (1, 0, 0), (1, 1)], "must be \\(x, y\\)"),
    ],
)
def test_invalid_points_are_rejected_clearly(points, message):
    with pytest.raises(ValueError, match=message):
        PolygonZone("bad", points)


def test_unknown_anchor_is_rejected():
    with pytest.raises(ValueError, match="anchor"):
        LEFT.contains(np.zeros((1, 4)), 10, 10, anchor="top")  # type: ignore[arg-type]
