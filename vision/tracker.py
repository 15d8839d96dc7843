"""A small multi-object tracker for low analysis rates (about 1 frame a second).

Per class, detections are matched to live tracks greedily by IoU; what IoU cannot match (objects that
moved more than their own size between frames) is matched greedily by centre distance measured in box
sizes. Tracks that go unmatched for max_age_s seconds end; ids increase and are never reused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vision.detections import Detections
from vision.nms import box_iou


@dataclass
class _Track:
    track_id: int
    class_id: int
    box: np.ndarray
    last_seen: float


def _greedy_pairs(score: np.ndarray, allowed: np.ndarray, *, highest_first: bool) -> list[tuple[int, int]]:
    """(row, col) pairs taken best score first, each row and column at most once."""
    rows, cols = np.nonzero(allowed)
    values = score[rows, cols]
    order = np.argsort(-values if highest_first else values, kind="stable")
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    pairs = []
    for r, c in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((r, c))
    return pairs


def _centre_distance(tracks: np.ndarray, dets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre distance in units of the larger box's long side, and the area ratio (>= 1), as (T, D)."""
    tc = (tracks[:, :2] + tracks[:, 2:]) / 2
    dc = (dets[:, :2] + dets[:, 2:]) / 2
    distance = np.linalg.norm(tc[:, None, :] - dc[None, :, :], axis=2)
    t_side = (tracks[:, 2:] - tracks[:, :2]).max(axis=1)
    d_side = (dets[:, 2:] - dets[:, :2]).max(axis=1)
    scale = np.maximum(np.maximum(t_side[:, None], d_side[None, :]), 1e-6)
    t_area = np.prod((tracks[:, 2:] - tracks[:, :2]).clip(1e-6), axis=1)
    d_area = np.prod((dets[:, 2:] - dets[:, :2]).clip(1e-6), axis=1)
    ratio = np.maximum(t_area[:, None] / d_area[None, :], d_area[None, :] / t_area[:, None])
    return distance / scale, ratio


class IouTracker:
    def __init__(
        self,
        iou_threshold: float = 0.3,
        max_age_s: float = 3.0,
        max_distance: float = 1.0,
        max_area_ratio: float = 4.0,
    ) -> None:
        """max_distance: farthest centre jump, in long sides of the larger box, still taken as the same
        object; max_area_ratio: boxes whose areas differ more than this are never the same object."""
        self.iou_threshold = iou_threshold
        self.max_age_s = max_age_s
        self.max_distance = max_distance
        self.max_area_ratio = max_area_ratio
        self._tracks: list[_Track] = []
        self._next_id = 1

    @property
    def active_tracks(self) -> int:
        return len(self._tracks)

    def update(self, detections: Detections, timestamp: float) -> Detections:
        """Assign track ids to one frame's detections (returns a new Detections)."""
        self._tracks = [t for t in self._tracks if timestamp - t.last_seen <= self.max_age_s]
        track_ids = np.full(len(detections), -1, dtype=np.int32)
        # Python sets rather than np.unique / np.setdiff1d: with a handful of boxes a frame, numpy's set
        # operations cost more in call overhead than the matching itself.
        for class_id in sorted(set(detections.class_ids.tolist())):
            rows = np.flatnonzero(detections.class_ids == class_id)
            tracks = [t for t in self._tracks if t.class_id == class_id]
            for t_idx, d_idx in self._match(tracks, detections.xyxy[rows]):
                track = tracks[t_idx]
                track.box = detections.xyxy[rows[d_idx]].copy()
                track.last_seen = timestamp
                track_ids[rows[d_idx]] = track.track_id
            for row in rows[track_ids[rows] < 0].tolist():
                track = _Track(self._next_id, class_id, detections.xyxy[row].copy(), timestamp)
                self._next_id += 1
                self._tracks.append(track)
                track_ids[row] = track.track_id
        return Detections(detections.xyxy.copy(), detections.scores.copy(), detections.class_ids.copy(), track_ids)

    def _match(self, tracks: list[_Track], boxes: np.ndarray) -> list[tuple[int, int]]:
        if not tracks or not len(boxes):
            return []
        track_boxes = np.stack([t.box for t in tracks])
        iou = box_iou(track_boxes, boxes)
        pairs = _greedy_pairs(iou, iou >= self.iou_threshold, highest_first=True)
        matched_t, matched_d = {p[0] for p in pairs}, {p[1] for p in pairs}
        free_t = np.array([i for i in range(len(tracks)) if i not in matched_t], dtype=np.intp)
        free_d = np.array([i for i in range(len(boxes)) if i not in matched_d], dtype=np.intp)
        if free_t.size and free_d.size:
            distance, ratio = _centre_distance(track_boxes[free_t], boxes[free_d])
            allowed = (distance <= self.max_distance) & (ratio <= self.max_area_ratio)
            pairs += [
                (int(free_t[r]), int(free_d[c])) for r, c in _greedy_pairs(distance, allowed, highest_first=False)
            ]
        return pairs
