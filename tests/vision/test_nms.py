import numpy as np

from vision.nms import batched_nms, box_iou, nms


def random_boxes(rng: np.random.Generator, n: int, span: float = 100.0) -> np.ndarray:
    xy = rng.uniform(0, span, (n, 2))
    wh = rng.uniform(5, span / 2, (n, 2))
    return np.hstack([xy, xy + wh])


def reference_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def reference_nms(boxes, scores, threshold) -> list[int]:
    """Brute force: visit boxes by score; keep one unless a kept box overlaps it too much."""
    keep: list[int] = []
    for i in sorted(range(len(boxes)), key=lambda k: (-scores[k], k)):
        if all(reference_iou(boxes[i], boxes[j]) <= threshold for j in keep):
            keep.append(i)
    return keep


def test_box_iou_matches_reference():
    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 7), random_boxes(rng, 5)
    expected = [[reference_iou(x, y) for y in b] for x in a]
    np.testing.assert_allclose(box_iou(a, b), expected, rtol=1e-9)
    assert box_iou(a, b[:0]).shape == (7, 0)


def test_nms_matches_brute_force_on_random_boxes():
    rng = np.random.default_rng(2)
    for trial in range(20):
        boxes = random_boxes(rng, 60)
        scores = rng.uniform(0, 1, 60).astype(np.float32)
        threshold = [0.3, 0.45, 0.7][trial % 3]
        assert nms(boxes, scores, threshold).tolist() == reference_nms(boxes, scores, threshold)


def test_nms_of_nothing_is_nothing():
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_batched_nms_keeps_overlapping_boxes_of_different_classes():
    boxes = np.array([[10, 10, 50, 50], [12, 12, 52, 52], [11, 11, 51, 51]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7], dtype=np.float32)
    classes = np.array([0, 0, 1])
    assert sorted(batched_nms(boxes, scores, classes, 0.5).tolist()) == [0, 2]
    assert nms(boxes, scores, 0.5).tolist() == [0]


def test_batched_nms_equals_nms_per_class():
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 120, span=640)
    scores = rng.uniform(0, 1, 120).astype(np.float32)
    classes = rng.integers(0, 80, 120)
    expected = []
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        expected += idx[reference_nms(boxes[idx], scores[idx], 0.45)].tolist()
    assert sorted(batched_nms(boxes, scores, classes, 0.45).tolist()) == sorted(expected)


def test_a_box_overlapping_exactly_at_the_threshold_is_kept():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], dtype=np.float32)  # IoU exactly 0.5
    scores = np.array([0.9, 0.8], dtype=np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49).tolist() == [0]
