"""How closely one detector's results follow a reference's: detections matched at an IoU with the same
class, the mean IoU of the matched pairs, and what each side found that the other did not.

Used to check a faster precision or engine (int8, bf16, OpenVINO) against fp32 onnxruntime on the same
images before it is trusted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vision.detections import Detections


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of a (N, 4) with every box of b (M, 4), xyxy."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclass
class Agreement:
    reference: int = 0  # detections of the reference
    candidate: int = 0  # detections of the candidate
    matched: int = 0  # pairs of the same class at IoU >= threshold (each box used once)
    iou_sum: float = 0.0
    score_diff_sum: float = 0.0
    images: int = 0
    images_same_count: int = 0

    @property
    def missed(self) -> int:
        """Reference detections the candidate did not find."""
        return self.reference - self.matched

    @property
    def extra(self) -> int:
        """Candidate detections the reference does not have."""
        return self.candidate - self.matched

    @property
    def recall(self) -> float:
        return self.matched / self.reference if self.reference else 1.0

    @property
    def mean_iou(self) -> float:
        return self.iou_sum / self.matched if self.matched else 0.0

    @property
    def mean_score_diff(self) -> float:
        return self.score_diff_sum / self.matched if self.matched else 0.0

    def add(self, reference: Detections, candidate: Detections, iou_threshold: float = 0.5) -> None:
        """Greedy matching, highest IoU first, within each class."""
        self.images += 1
        self.reference += len(reference)
        self.candidate += len(candidate)
        self.images_same_count += len(reference) == len(candidate)
        for cls in np.union1d(reference.class_ids, candidate.class_ids):
            ra, cb = np.flatnonzero(reference.class_ids == cls), np.flatnonzero(candidate.class_ids == cls)
            if not len(ra) or not len(cb):
                continue
            ious = iou_matrix(reference.xyxy[ra], candidate.xyxy[cb])
            while True:
                i, j = np.unravel_index(int(np.argmax(ious)), ious.shape)
                best = ious[i, j]
                if best < iou_threshold:
                    break
                self.matched += 1
                self.iou_sum += float(best)
                self.score_diff_sum += abs(float(reference.scores[ra[i]]) - float(candidate.scores[cb[j]]))
                ious[i, :] = -1
                ious[:, j] = -1


def agreement(
    reference: Sequence[Detections], candidate: Sequence[Detections], iou_threshold: float = 0.5
) -> Agreement:
    result = Agreement()
    for ref, cand in zip(reference, candidate, strict=True):
        result.add(ref, cand, iou_threshold)
    return result
