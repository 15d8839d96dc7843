"""A skin-colour heuristic for bare vs gloved hands: the baseline a trained hand-glove detector must beat.

No learning beyond two numbers taken from the training labels. Per image:
- the skin mask is the pixels inside the classic YCrCb skin range (Cr 133..173, Cb 77..127), opened and
  closed to drop speckle;
- the hand box is the bounding box of the skin components that cover at least `min_skin` of the image;
  without skin (or always, with `prior_only`), it is the "prior" box: centred, of the training boxes'
  median width and height;
- the box is reported twice, as hand_bare with score = the fraction of skin pixels inside it and as
  hand_glove with score = 1 - that fraction.

It runs through the same evaluation as the ONNX models (`models.evaluate.evaluate`), so its numbers sit
beside theirs on the same images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from models.evaluate import YoloDataset, read_labels
from vision.detections import Detections

SKIN_CR = (133, 173)
SKIN_CB = (77, 127)


def skin_mask(image_bgr: np.ndarray) -> np.ndarray:
    """uint8 mask (255 = skin) of a BGR image."""
    ycrcb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2YCrCb)
    mask = cv2.inRange(ycrcb, (0, SKIN_CR[0], SKIN_CB[0]), (255, SKIN_CR[1], SKIN_CB[1]))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)


class SkinColourBaseline:
    """A detector-like object (names, detect) for models.evaluate.evaluate."""

    def __init__(self, prior_wh: tuple[float, float], names: Sequence[str] = ("hand_bare", "hand_glove"),
                 min_skin: float = 0.02, prior_only: bool = False) -> None:
        """prior_wh: box width and height as fractions of the image, for images without skin."""
        self.prior_wh = prior_wh
        self._names = list(names)
        self.min_skin = min_skin
        self.prior_only = prior_only

    @classmethod
    def from_training_labels(cls, train: YoloDataset, **kwargs: float | bool) -> SkinColourBaseline:
        """Prior box = median normalised width and height of the training set's boxes."""
        sizes = []
        for item in train.images:
            boxes, _ = read_labels(item.labels, 1, 1, len(train.names))
            sizes += [(x2 - x1, y2 - y1) for x1, y1, x2, y2 in boxes.tolist()]
        if not sizes:
            raise ValueError(f"{train.source}: the training split has no boxes to take a prior size from")
        w, h = np.median(np.asarray(sizes), axis=0).tolist()
        return cls((float(w), float(h)), **kwargs)

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        return [self._one(frame) for frame in frames]

    def _one(self, frame: np.ndarray) -> Detections:
        h, w = frame.shape[:2]
        mask = skin_mask(frame)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        big = [] if self.prior_only else [s for s in stats[1:count] if s[cv2.CC_STAT_AREA] >= self.min_skin * w * h]
        if big:
            x1 = min(s[cv2.CC_STAT_LEFT] for s in big)
            y1 = min(s[cv2.CC_STAT_TOP] for s in big)
            x2 = max(s[cv2.CC_STAT_LEFT] + s[cv2.CC_STAT_WIDTH] for s in big)
            y2 = max(s[cv2.CC_STAT_TOP] + s[cv2.CC_STAT_HEIGHT] for s in big)
        else:
            bw, bh = self.prior_wh[0] * w, self.prior_wh[1] * h
            x1, y1, x2, y2 = (w - bw) / 2, (h - bh) / 2, (w + bw) / 2, (h + bh) / 2
        box = np.array([[x1, y1, x2, y2]], dtype=np.float64)
        inside = mask[int(y1) : max(int(y2), int(y1) + 1), int(x1) : max(int(x2), int(x1) + 1)]
        skin = float((inside > 0).mean()) if inside.size else 0.0
        bare, glove = self._names.index("hand_bare"), self._names.index("hand_glove")
        return Detections(
            np.repeat(box, 2, axis=0), np.array([skin, 1.0 - skin]), np.array([bare, glove], dtype=np.int64)
        )


def main(argv: list[str] | None = None) -> int:
    """python -m models.baselines --data DATA_YAML [--split val] [--rename DATA=MODEL ...] [--json]"""
    import argparse
    import json

    from models.evaluate import evaluate, format_table, load_dataset, rename_classes, report_dict
    from models.training import parse_renames

    parser = argparse.ArgumentParser(prog="python -m models.baselines", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="YOLO data.yaml with hand_bare / hand_glove (after renames)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--rename", action="append", default=[], metavar="DATA=MODEL")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="for precision and recall")
    parser.add_argument("--prior-only", action="store_true", help="always the centred prior box, classed by skin")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    renames = parse_renames(args.rename)
    train = rename_classes(load_dataset(args.data, "train"), renames)
    dataset = rename_classes(load_dataset(args.data, args.split), renames)
    baseline = SkinColourBaseline.from_training_labels(train, prior_only=args.prior_only)
    metrics = evaluate(baseline, dataset, args.score_threshold)
    if args.json:
        about = {"model": "centre-prior baseline" if args.prior_only else "skin-colour baseline",
                 "prior_wh": [round(v, 4) for v in baseline.prior_wh],
                 "data": str(Path(args.data).resolve()), "split": args.split}
        print(json.dumps(report_dict(metrics, **about)))
    else:
        kind = "centre-prior" if args.prior_only else "skin-colour"
        print(format_table(metrics, f"{kind} baseline on {args.data} ({args.split})"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
