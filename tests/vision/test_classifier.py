import numpy as np
import pytest

from vision.classifier import CropClassifier
from vision.detections import Detections

NAMES = ["person", "head"]


def scene() -> tuple[np.ndarray, Detections]:
    """A dark frame with a white head (hat), a black head (no hat), a grey head (unsure) and a person."""
    frame = np.zeros((200, 200, 3), dtype=np.uint8)
    frame[20:60, 20:60] = 255
    frame[20:60, 120:160] = 127
    boxes = [[0, 0, 200, 200], [20, 20, 60, 60], [120, 140, 160, 180], [120, 20, 160, 60]]
    dets = Detections(np.array(boxes), np.array([0.9, 0.8, 0.5, 0.6]), np.array([0, 1, 1, 1]), np.array([1, 2, 3, 4]))
    return frame, dets


@pytest.mark.parametrize("batch", [1, "batch"])
def test_classifies_crops_of_the_chosen_class(make_classifier_onnx, batch):
    clf = CropClassifier(make_classifier_onnx(batch=batch), on_class="head", expand=0.0, provider="cpu", threads=1)
    assert clf.names == ["hat", "no_hat"] and clf.input_size == 32
    frame, dets = scene()
    labels = clf.classify(frame, dets, NAMES)
    assert [(lab.index, lab.label) for lab in labels] == [(1, "hat"), (2, "no_hat"), (3, "no_hat")]
    assert labels[0].prob > 0.99 and labels[1].prob > 0.99
    assert 0.5 < labels[2].prob < 0.6  # grey: barely no_hat


def test_min_score_leaves_unsure_boxes_alone(make_classifier_onnx):
    clf = CropClassifier(make_classifier_onnx(), on_class="head", expand=0.0, min_score=0.6, provider="cpu", threads=1)
    frame, dets = scene()
    assert [lab.index for lab in clf.classify(frame, dets, NAMES)] == [1, 2]


def test_relabel_extends_names_and_rewrites_classes(make_classifier_onnx):
    clf = CropClassifier(make_classifier_onnx(), on_class="head", expand=0.1, provider="cpu", threads=1)
    frame, dets = scene()
    labels = clf.classify(frame, dets, NAMES)
    relabelled, names = clf.relabel(dets, NAMES, labels)
    assert names == ["person", "head", "hat", "no_hat"] == clf.output_names(NAMES)
    assert relabelled.labels(names) == ["person", "hat", "no_hat", "no_hat"]
    np.testing.assert_allclose(relabelled.scores[:2], [0.9, 0.8 * labels[0].prob], rtol=1e-6)
    np.testing.assert_array_equal(relabelled.track_ids, dets.track_ids)
    assert dets.labels(NAMES) == ["person", "head", "head", "head"]  # the input is left as it was


def test_no_boxes_of_the_class_and_unknown_class(make_classifier_onnx):
    clf = CropClassifier(make_classifier_onnx(), on_class="head", provider="cpu", threads=1)
    frame, dets = scene()
    only_person = dets.filter(dets.class_ids == 0)
    assert clf.classify(frame, only_person, NAMES) == []
    with pytest.raises(ValueError, match="not among"):
        clf.classify(frame, dets, ["person", "face"])
