import numpy as np

from vision.detections import Detections
from vision.tracker import IouTracker


def dets(boxes, classes=None, scores=None) -> Detections:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    n = len(boxes)
    return Detections(
        boxes,
        np.full(n, 0.9) if scores is None else scores,
        np.zeros(n, int) if classes is None else classes,
    )


def box_at(x: float, y: float, w: float = 40, h: float = 80) -> list[float]:
    return [x, y, x + w, y + h]


def test_ids_stay_with_objects_moving_a_little_each_frame():
    tracker = IouTracker()
    ids_a, ids_b = set(), set()
    for step in range(10):
        x = 5.0 * step
        out = tracker.update(dets([box_at(100 + x, 100), box_at(400 - x, 100)]), float(step))
        ids_a.add(int(out.track_ids[0]))
        ids_b.add(int(out.track_ids[1]))
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b


def test_detection_order_does_not_matter():
    tracker = IouTracker()
    first = tracker.update(dets([box_at(100, 100), box_at(400, 100)]), 0.0)
    second = tracker.update(dets([box_at(405, 100), box_at(102, 100)]), 1.0)
    assert second.track_ids.tolist() == first.track_ids[::-1].tolist()


def test_low_fps_jump_bigger_than_the_box_keeps_the_id():
    # At 1 analysed frame per second a walking person moves more than their own width: IoU is 0.
    tracker = IouTracker()
    a = tracker.update(dets([box_at(100, 100)]), 0.0).track_ids[0]
    b = tracker.update(dets([box_at(160, 110)]), 1.0).track_ids[0]
    c = tracker.update(dets([box_at(220, 100)]), 2.0).track_ids[0]
    assert a == b == c


def test_far_jumps_and_very_different_sizes_start_new_tracks():
    tracker = IouTracker()
    a = tracker.update(dets([box_at(100, 100)]), 0.0).track_ids[0]
    far = tracker.update(dets([box_at(600, 100)]), 1.0).track_ids[0]
    assert far != a
    tracker = IouTracker()
    a = tracker.update(dets([box_at(100, 100)]), 0.0).track_ids[0]
    huge = tracker.update(dets([box_at(100, 100, w=200, h=400)]), 1.0).track_ids[0]
    assert huge != a


def test_classes_are_matched_separately():
    tracker = IouTracker()
    first = tracker.update(dets([box_at(100, 100)], classes=[0]), 0.0)
    second = tracker.update(dets([box_at(100, 100)], classes=[1]), 1.0)
    assert first.track_ids[0] != second.track_ids[0]


def test_tracks_expire_after_max_age_and_ids_are_never_reused():
    tracker = IouTracker(max_age_s=3.0)
    a = tracker.update(dets([box_at(100, 100)]), 0.0).track_ids[0]
    tracker.update(Detections.empty(), 1.0)
    assert tracker.update(dets([box_at(100, 100)]), 3.0).track_ids[0] == a  # 3 s unseen: still alive
    tracker.update(Detections.empty(), 5.0)
    later = tracker.update(dets([box_at(100, 100)]), 6.5).track_ids[0]  # 3.5 s unseen: expired
    assert later > a
    assert tracker.update(dets([box_at(300, 300), box_at(100, 100)]), 7.0).track_ids.tolist() == [later + 1, later]


def test_update_returns_a_new_tracked_copy():
    tracker = IouTracker()
    d = dets([box_at(0, 0), box_at(200, 0)])
    out = tracker.update(d, 0.0)
    assert d.track_ids.tolist() == [-1, -1]
    assert out.track_ids.tolist() == [1, 2]
    np.testing.assert_array_equal(out.xyxy, d.xyxy)
    assert len(tracker.update(Detections.empty(), 1.0)) == 0
