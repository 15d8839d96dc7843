"""The committed mask-starter crop classifier, run through the service's CropClassifier on demo faces."""

from __future__ import annotations

import numpy as np
import pytest

from models.cards import builtin_model_path, find_card
from models.synthetic import CLASSES, DEMO_PERIOD_S, DemoScene
from vision.classifier import CropClassifier
from vision.detections import Detections

FACE_IDS = [CLASSES.index("face_mask"), CLASSES.index("face_nomask")]
# Measured: 86 of 86 demo faces right, on ground-truth boxes and on boxes shifted by 10%.
MIN_ACCURACY = 0.9


@pytest.fixture(scope="module")
def classifier() -> CropClassifier:
    path = builtin_model_path("mask-starter")
    card = find_card(path)
    assert card is not None and card.task == "classify"
    return CropClassifier(
        path, on_class="face_mask", class_names=card.classes, min_score=0.0, provider="cpu", threads=1
    )


def _accuracy(classifier: CropClassifier, shift: float) -> tuple[int, int]:
    """Faces of the demo loop, every boxed face sent to the classifier as if the detector called it a face,
    with the box moved right and down by `shift` of its size (detector boxes are never exact)."""
    scene, right, total = DemoScene(), 0, 0
    for k in range(int(DEMO_PERIOD_S)):
        frame, truth = scene.frame(0.25 + k)
        faces = [b for b in truth if b[0] in FACE_IDS]
        if not faces:
            continue
        xyxy = np.array([b[1:] for b in faces], dtype=np.float32)
        size = np.concatenate([xyxy[:, 2:] - xyxy[:, :2]] * 2, axis=1)
        boxes = xyxy + shift * size
        detections = Detections(boxes, np.ones(len(faces)), np.full(len(faces), CLASSES.index("face_mask")))
        for label in classifier.classify(frame, detections, CLASSES):
            total += 1
            right += label.label == CLASSES[faces[label.index][0]]
    return right, total


def test_card_and_model_agree(classifier: CropClassifier) -> None:
    assert classifier.names == ["face_mask", "face_nomask"] and classifier.input_size == 64


@pytest.mark.parametrize("shift", [0.0, 0.1])
def test_demo_faces_are_classified(classifier: CropClassifier, shift: float) -> None:
    right, total = _accuracy(classifier, shift)
    print(f"\nmask-starter on demo faces (shift {shift}): {right} of {total}")
    assert total >= 80
    assert right >= MIN_ACCURACY * total
