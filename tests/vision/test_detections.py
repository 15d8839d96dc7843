import numpy as np
import pytest

from vision.detections import Detections


def make(n: int, class_id: int = 0) -> Detections:
    xyxy = np.arange(n * 4, dtype=np.float64).reshape(n, 4)
    return Detections(xyxy, np.linspace(0.1, 0.9, n), np.full(n, class_id))


def test_normalises_dtypes_and_defaults_track_ids_to_untracked():
    d = make(3)
    assert d.xyxy.dtype == np.float32 and d.scores.dtype == np.float32
    assert d.class_ids.dtype == np.int32 and d.track_ids.dtype == np.int32
    assert d.track_ids.tolist() == [-1, -1, -1]
    assert len(d) == 3


def test_rejects_arrays_of_different_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        Detections(np.zeros((2, 4)), np.zeros(3), np.zeros(2))


def test_empty_filter_concat_and_labels():
    assert len(Detections.empty()) == 0
    d = Detections.concat([make(2, class_id=0), make(3, class_id=1)])
    assert len(d) == 5
    assert d.labels(["person", "rat"]) == ["person", "person", "rat", "rat", "rat"]
    picked = d.filter(d.class_ids == 1)
    assert len(picked) == 3 and set(picked.class_ids.tolist()) == {1}
    assert d.filter(np.array([4, 0])).scores.tolist() == [d.scores[4], d.scores[0]]
    assert len(Detections.concat([])) == 0
    assert len(d.filter([])) == 0


def test_filter_rejects_a_mask_of_the_wrong_length():
    with pytest.raises(ValueError, match="mask has shape"):
        make(3).filter(np.array([True, False]))
