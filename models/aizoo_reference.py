"""Run the AIZOO face-mask detector (a reference to compare with, never shipped) on the mask-faces test sets.

AIZOOTech FaceMaskDetection (MIT): an SSD taking a 260x260 RGB image scaled to 0..1, with 5972 anchors on
feature maps 33, 17, 9, 5, 3 (sizes (0.04, 0.056), (0.08, 0.11), (0.16, 0.22), (0.32, 0.45), (0.64, 0.72),
ratios 1, 0.62, 0.42), box offsets with variances 0.1 / 0.2, and two class scores (Mask, NoMask) per
anchor; its own demo keeps anchors scoring 0.5 or more and suppresses overlaps above IoU 0.4 regardless of
class. This module reimplements that decoding on numpy.

OpenCV 5 no longer reads Caffe models: run this module with an OpenCV 4 environment that has only numpy
and opencv-python-headless<5 (it imports nothing else of the project):

    python -m venv /opt/bk-ref && /opt/bk-ref/bin/pip install "opencv-python-headless<5" numpy
    /opt/bk-ref/bin/python -m models.aizoo_reference --model ../shared/data/facemask-aizoo \\
        --crops /tmp/faces/val --gloves ../shared/data/gloves

- `--crops DIR`: DIR/face_mask/*.png, DIR/face_nomask/*.png face crops; each is put on a grey canvas with
  25% margin on every side (the face a detector would see) and the detection with the highest score
  gives the answer; no detection is a miss;
- `--gloves DIR`: the whole gloves photos, the faces labelled in face_labels/gloves-faces.csv; the answer for
  a labelled face is the class of the highest-scoring detection that overlaps it with IoU >= 0.3.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import cv2
import numpy as np

LABELS_CSV = Path(__file__).resolve().parent / "face_labels" / "gloves-faces.csv"
FEATURE_MAPS = (33, 17, 9, 5, 3)
ANCHOR_SIZES = ((0.04, 0.056), (0.08, 0.11), (0.16, 0.22), (0.32, 0.45), (0.64, 0.72))
ANCHOR_RATIOS = (1.0, 0.62, 0.42)
VARIANCES = np.array([0.1, 0.1, 0.2, 0.2])
INPUT = 260
CLASSES = ("face_mask", "face_nomask")  # its Mask, NoMask, in the project's names


def anchors() -> np.ndarray:
    """(5972, 4) x1, y1, x2, y2 normalised, in the network's output order."""
    out = []
    for size, sizes in zip(FEATURE_MAPS, ANCHOR_SIZES, strict=True):
        centres = (np.arange(size) + 0.5) / size
        cx, cy = np.meshgrid(centres, centres)
        shapes = [(s * np.sqrt(ANCHOR_RATIOS[0]), s / np.sqrt(ANCHOR_RATIOS[0])) for s in sizes]
        shapes += [(sizes[0] * np.sqrt(r), sizes[0] / np.sqrt(r)) for r in ANCHOR_RATIOS[1:]]
        boxes = [np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1) for w, h in shapes]
        out.append(np.stack(boxes, axis=2).reshape(-1, 4))
    return np.concatenate(out)


ANCHORS = anchors()


def decode(loc: np.ndarray) -> np.ndarray:
    centre = (ANCHORS[:, :2] + ANCHORS[:, 2:]) / 2
    size = ANCHORS[:, 2:] - ANCHORS[:, :2]
    scaled = loc * VARIANCES
    c = scaled[:, :2] * size + centre
    wh = np.exp(scaled[:, 2:]) * size
    return np.concatenate([c - wh / 2, c + wh / 2], axis=1)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area - inter, 1e-9)


class AizooDetector:
    def __init__(self, folder: Path, score: float = 0.5, overlap: float = 0.4) -> None:
        if not hasattr(cv2.dnn, "readNetFromCaffe"):
            raise SystemExit(f"OpenCV {cv2.__version__} cannot read Caffe models: use opencv-python-headless<5")
        self.net = cv2.dnn.readNetFromCaffe(str(folder / "face_mask_detection.prototxt"),
                                            str(folder / "face_mask_detection.caffemodel"))
        self.score, self.overlap = score, overlap

    def detect(self, image_bgr: np.ndarray) -> list[tuple[np.ndarray, float, int]]:
        """(box in pixels, score, class index into CLASSES), best first."""
        h, w = image_bgr.shape[:2]
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        self.net.setInput(cv2.dnn.blobFromImage(rgb, 1 / 255.0, (INPUT, INPUT)))
        loc, cls = self.net.forward(["loc_branch_concat", "cls_branch_concat"])
        boxes, scores = decode(loc[0]), cls[0]
        best, classes = scores.max(axis=1), scores.argmax(axis=1)
        keep = []
        for i in np.argsort(-best):
            if best[i] < self.score:
                break
            if all(iou(boxes[i], boxes[j][None])[0] <= self.overlap for j in keep):
                keep.append(i)
        scale = np.array([w, h, w, h])
        return [(boxes[i] * scale, float(best[i]), int(classes[i])) for i in keep]


def _tally(results: list[tuple[str, str | None]]) -> dict:
    per_class = {}
    for name in CLASSES:
        mine = [p for t, p in results if t == name]
        predicted = [t for t, p in results if p == name]
        per_class[name] = {
            "instances": len(mine),
            "recall": round(sum(p == name for p in mine) / len(mine), 4) if mine else None,
            "precision": round(sum(t == name for t in predicted) / len(predicted), 4) if predicted else None,
            "no_face_found": sum(p is None for p in mine),
        }
    right = sum(t == p for t, p in results)
    return {"images": len(results), "top1": round(right / max(len(results), 1), 4), "per_class": per_class}


def on_crops(detector: AizooDetector, folder: Path) -> dict:
    results = []
    for truth in CLASSES:
        for path in sorted((folder / truth).glob("*.png")):
            crop = cv2.imread(str(path))
            m = int(round(0.25 * max(crop.shape[:2])))
            canvas = cv2.copyMakeBorder(crop, m, m, m, m, cv2.BORDER_CONSTANT, value=(128, 128, 128))
            found = detector.detect(canvas)
            results.append((truth, CLASSES[found[0][2]] if found else None))
    return _tally(results)


def on_gloves(detector: AizooDetector, gloves: Path) -> dict:
    results = []
    with LABELS_CSV.open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] != "skip"]
    for row in rows:
        image = cv2.imread(str(gloves / row["split"] / "images" / row["image"]))
        box = np.array([float(row[k]) for k in ("x1", "y1", "x2", "y2")])
        found = [(b, s, c) for b, s, c in detector.detect(image) if iou(box, b[None])[0] >= 0.3]
        results.append((row["label"], CLASSES[found[0][2]] if found else None))
    return _tally(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.aizoo_reference", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="folder with the .prototxt and .caffemodel")
    parser.add_argument("--crops", type=Path, help="folder of face_mask/ and face_nomask/ crops")
    parser.add_argument("--gloves", type=Path, help="the gloves set, for the hand-labelled faces")
    args = parser.parse_args(argv)
    detector = AizooDetector(args.model)
    report = {"model": "AIZOO FaceMaskDetection (Caffe, 260x260), score 0.5, NMS 0.4"}
    if args.crops:
        report["crops"] = {"data": str(args.crops), **on_crops(detector, args.crops)}
    if args.gloves:
        report["gloves"] = {"data": str(args.gloves), **on_gloves(detector, args.gloves)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
