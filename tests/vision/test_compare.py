import numpy as np

from vision.compare import agreement, iou_matrix
from vision.detections import Detections


def dets(boxes, classes, scores=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.full(len(boxes), 0.9, np.float32) if scores is None else np.asarray(scores, np.float32)
    return Detections(boxes, scores, np.asarray(classes, np.int32))


def test_iou_matrix():
    ious = iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]))
    assert np.allclose(ious, [[1.0, 50 / 150, 0.0]])


def test_matching_needs_the_same_class_and_iou_and_uses_each_box_once():
    ref = dets([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], [0, 0, 1], [0.9, 0.8, 0.7])
    cand = dets([[1, 0, 11, 10], [50, 50, 60, 60], [100, 100, 110, 110]], [0, 2, 1], [0.8, 0.7, 0.6])
    result = agreement([ref], [cand])
    assert (result.reference, result.candidate, result.matched) == (3, 3, 1)
    assert (result.missed, result.extra) == (2, 2)
    assert abs(result.mean_iou - 90 / 110) < 1e-6
    assert abs(result.mean_score_diff - 0.1) < 1e-6
    assert result.images_same_count == 1


def test_identical_results_agree_fully_and_empty_is_not_a_division_by_zero():
    ref = dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0, 1])
    result = agreement([ref, Detections.empty()], [ref, Detections.empty()])
    assert result.recall == 1.0 and result.mean_iou == 1.0 and result.extra == 0
    assert agreement([Detections.empty()], [Detections.empty()]).recall == 1.0
