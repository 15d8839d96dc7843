"""Measure the packaged face detector through the service's path (vision.faces.RetinaFaceDetector).

    python -m models.measure_faces [--lfw PATH/lfw_subset.npy]

- rendered faces: every face of the demo scenario's loop (models/synthetic.py), found when a detection
  overlaps it with IoU >= 0.3 (drawn faces are boxed differently from real ones), and detections on no face;
- real faces (optional): scikit-image's `data/lfw_subset.npy` (100 tight 25x25 LFW face crops, then 100
  crops without a face), each enlarged to a given side and centred on a grey 320x320 canvas: the share of
  face crops with a detection and of non-face crops with one.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from models.cards import builtin_model_path, find_card
from models.synthetic import CLASSES, DEMO_PERIOD_S, DemoScene
from vision.faces import RetinaFaceDetector
from vision.nms import box_iou

FACE_CLASSES = {"face_mask", "face_nomask"}
LFW_SIDES = (50, 100, 150)


def open_face_detector(input_size: int | None = None) -> RetinaFaceDetector:
    path = builtin_model_path("faces-retinaface")
    card = find_card(path)
    assert card is not None
    return RetinaFaceDetector(path, input_size=input_size or card.input_size, score_threshold=card.thresholds.score,
                              iou_threshold=card.thresholds.iou or 0.4, provider="cpu", threads=1)


def rendered_faces(detector: RetinaFaceDetector) -> dict[str, int]:
    scene = DemoScene()
    faces = found = false_alarms = 0
    for k in range(int(DEMO_PERIOD_S)):
        frame, truth = scene.frame(0.25 + k)
        boxes = np.array([b[1:] for b in truth if CLASSES[b[0]] in FACE_CLASSES], np.float32).reshape(-1, 4)
        detections = detector.detect([frame])[0]
        faces += len(boxes)
        if len(boxes) and len(detections):
            iou = box_iou(boxes, detections.xyxy)
            found += int((iou.max(axis=1) >= 0.3).sum())
            false_alarms += int((iou.max(axis=0) < 0.3).sum())
        else:
            false_alarms += len(detections)
    return {"faces": faces, "found": found, "false_alarms": false_alarms}


def lfw_canvas(crop: np.ndarray, side: int, canvas: int = 320) -> np.ndarray:
    grey = cv2.resize((crop * 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_CUBIC)
    image = np.full((canvas, canvas), 128, np.uint8)
    at = (canvas - side) // 2
    image[at : at + side, at : at + side] = grey
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)


def lfw_faces(detector: RetinaFaceDetector, crops: np.ndarray) -> dict[int, tuple[int, int]]:
    """side -> (face crops with a detection, non-face crops with a detection), of 100 each."""
    out = {}
    for side in LFW_SIDES:
        hits = [len(d) > 0 for d in detector.detect([lfw_canvas(c, side) for c in crops])]
        out[side] = (sum(hits[:100]), sum(hits[100:]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", help="path of scikit-image's data/lfw_subset.npy")
    args = parser.parse_args()
    detector = open_face_detector()
    print(f"rendered demo faces at {detector.input_size} px: {rendered_faces(detector)}")
    if args.lfw:
        small = open_face_detector(320)
        for side, (faces, non_faces) in lfw_faces(small, np.load(args.lfw)).items():
            print(f"LFW crops at {side} px on 320 px: faces found {faces}/100, "
                  f"non-faces with a detection {non_faces}/100")


if __name__ == "__main__":
    main()
