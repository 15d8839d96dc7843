"""The feedback loop: reviewed events become a labelled YOLO-format dataset for retraining.

Beside each event's annotated snapshot the worker keeps the frame without drawings, `<id>.raw.jpg` in the
snapshot store, with the boxes of that very frame in a JPEG comment: the event's own boxes and every other
detection of the frame. The stored event cannot label that frame itself, because later revisions of an
event carry the boxes of later frames.

A reviewer's verdict turns the frame into training data:
- confirmed (or rectified, which was confirmed first): the event's boxes are positives of their class;
- false_positive: the violating box is left out of the labels, so the frame teaches the detector that
  this is not an object of that class (a hard negative).
Other detections of the frame are the model's own, unreviewed; they are added only when asked
(`include_model_boxes`), so that the other objects in the frame are not learnt as background.
"""

from __future__ import annotations

import csv
import hashlib
import json
import struct
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import yaml

from brightkitchen.events import Box, Event
from brightkitchen.snapshots import SnapshotStore
from brightkitchen.store import EventQuery, EventStore
from vision.detections import Detections
from vision.nms import box_iou

RAW_SUFFIX = ".raw"
REVIEWED_STATES = ("confirmed", "rectified", "false_positive")
MANIFEST_COLUMNS = (
    "event_id",
    "rule",
    "review_state",
    "source",
    "image",
    "site",
    "camera",
    "class_name",
    "started_at",
    "labels",
    "removed",
    "status",
)
_COMMENT_PREFIX = b"brightkitchen-boxes:"
_COM = 0xFE
_MAX_SEGMENT = 65533  # a JPEG segment's payload: its 16-bit length counts the 2 length bytes too


class ExportError(ValueError):
    """An export that cannot be written (for example into a folder that already holds files)."""


# ---------------------------------------------------------------------------------------------------
# Raw frames: the frame without drawings, carrying its boxes
# ---------------------------------------------------------------------------------------------------


def raw_frame_key(event_id: str) -> str:
    """The name to save an event's raw frame under in the SnapshotStore (it adds `.jpg`)."""
    return event_id + RAW_SUFFIX


def raw_frame_path(snapshot: str) -> str:
    """The raw frame beside an annotated snapshot: `2026/09/21/<id>.jpg` -> `2026/09/21/<id>.raw.jpg`."""
    path = PurePosixPath(snapshot)
    return str(path.with_name(path.stem + RAW_SUFFIX + path.suffix))


@dataclass(frozen=True)
class FrameBoxes:
    event: list[Box]  # the event's boxes in this frame, the violation's own box first
    others: list[Box]  # every other detection of the frame (unreviewed)


def _box_row(b: Box) -> list:
    return [b.label, round(b.score, 4), *(round(v, 2) for v in b.xyxy), b.track_id]


def _box(row: list) -> Box:
    label, score, x1, y1, x2, y2, track_id = row
    return Box(label=label, score=score, xyxy=(x1, y1, x2, y2), track_id=track_id)


def frame_boxes(event_boxes: Sequence[Box], detections: Detections, names: Sequence[str]) -> FrameBoxes:
    """The event's boxes, and the frame's detections that are not among them."""
    others = []
    mine = np.asarray([b.xyxy for b in event_boxes], dtype=np.float64).reshape(-1, 4)
    same = box_iou(detections.xyxy, mine) > 0.999 if len(mine) else np.zeros((len(detections.xyxy), 0), bool)
    for i in range(len(detections.xyxy)):
        label = names[int(detections.class_ids[i])]
        if any(same[i, j] and event_boxes[j].label == label for j in range(len(event_boxes))):
            continue
        others.append(
            Box(
                label=label,
                score=float(detections.scores[i]),
                xyxy=tuple(float(v) for v in detections.xyxy[i]),
                track_id=int(detections.track_ids[i]),
            )
        )
    return FrameBoxes(list(event_boxes), others)


def _comment(boxes: FrameBoxes) -> bytes:
    others = sorted(boxes.others, key=lambda b: -b.score)
    while True:
        data = {"v": 1, "event": [_box_row(b) for b in boxes.event], "others": [_box_row(b) for b in others]}
        payload = _COMMENT_PREFIX + json.dumps(data, separators=(",", ":")).encode()
        if len(payload) <= _MAX_SEGMENT:
            return payload
        if not others:
            raise ValueError("the event's boxes do not fit in one JPEG comment")
        others = others[: len(others) // 2]  # keep the surest detections


def _segments(jpeg: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, start, end) of the header segments after SOI, up to the image data."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG file")
    i = 2
    while i + 4 <= len(jpeg) and jpeg[i] == 0xFF:
        marker = jpeg[i + 1]
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no more header segments
            return
        (length,) = struct.unpack(">H", jpeg[i + 2 : i + 4])
        yield marker, i, i + 2 + length
        i += 2 + length


def encode_raw_frame(
    image_bgr: np.ndarray,
    event_boxes: Sequence[Box],
    detections: Detections,
    names: Sequence[str],
    quality: int = 90,
) -> bytes:
    """The frame as JPEG with its boxes (see `frame_boxes`) in a comment after the APPn segments."""
    ok, encoded = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    jpeg = np.asarray(encoded).tobytes()
    at = 2
    for marker, _, end in _segments(jpeg):
        if not 0xE0 <= marker <= 0xEF:
            break
        at = end
    payload = _comment(frame_boxes(event_boxes, detections, names))
    segment = b"\xff" + bytes([_COM]) + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:at] + segment + jpeg[at:]


def read_frame_boxes(jpeg: bytes) -> FrameBoxes | None:
    """The boxes a raw frame carries, or None when it has none (not written by encode_raw_frame)."""
    for marker, start, end in _segments(jpeg):
        payload = jpeg[start + 4 : end]
        if marker == _COM and payload.startswith(_COMMENT_PREFIX):
            data = json.loads(payload[len(_COMMENT_PREFIX) :])
            return FrameBoxes([_box(r) for r in data["event"]], [_box(r) for r in data["others"]])
    return None


# ---------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    out_dir: Path
    data_yaml: Path
    manifest: Path
    positives: int = 0  # images from confirmed or rectified events
    hard_negatives: int = 0  # images from false positives
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def images(self) -> int:
        return self.positives + self.hard_negatives


def reviewed_events(
    store: EventStore, model: str, since: datetime | None = None, until: datetime | None = None
) -> Iterator[Event]:
    """Events of one model that reviewers confirmed, rectified or marked false positive, newest first."""
    cursor = None
    while True:
        page, cursor = store.list(EventQuery(since=since, until=until, limit=500, cursor=cursor))
        yield from (e for e in page if e.review_state in REVIEWED_STATES and e.model.name == model)
        if cursor is None:
            return


def _own_box(event: Event, boxes: list[Box]) -> Box | None:
    own = [b for b in boxes if b.track_id == event.track_id and b.label == event.class_name]
    return own[0] if own else (boxes[0] if boxes else None)


def _yolo_line(class_id: int, xyxy: tuple[float, float, float, float], width: int, height: int) -> str | None:
    x1, x2 = (min(max(v, 0.0), width) for v in (xyxy[0], xyxy[2]))
    y1, y2 = (min(max(v, 0.0), height) for v in (xyxy[1], xyxy[3]))
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None  # outside the frame
    cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
    return f"{class_id} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"


def _split(event_id: str, val_fraction: float) -> str:
    """A split that depends only on the event id, so re-exports put each event in the same split."""
    h = int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:4], "big") / 2**32
    return "val" if h < val_fraction else "train"


@dataclass(frozen=True)
class _Classes:
    names: Sequence[str]  # the detector's classes, in class-id order
    relabel: Mapping[str, str]  # a crop classifier's label -> the detector class whose boxes it relabels

    def id_of(self, label: str) -> int | None:
        name = label if label in self.names else self.relabel.get(label)
        return list(self.names).index(name) if name in self.names else None


@dataclass(frozen=True)
class _Labelled:
    lines: list[str]
    removed: int


def _labels(
    event: Event,
    boxes: FrameBoxes,
    classes: _Classes,
    size: tuple[int, int],
    include_model_boxes: bool,
) -> _Labelled | str:
    """The label lines of the frame, or why the event cannot be used; boxes of labels the detector
    cannot learn are left out."""
    own = _own_box(event, boxes.event)
    if own is None:
        return "the raw frame carries no box of the event"
    false_positive = event.review_state == "false_positive"
    if false_positive and own.label not in classes.names:
        return (
            f"false positive of {own.label!r}, a crop classifier's label: the detector's box may be "
            "right, so it is no hard negative for the detector"
        )
    kept = [b for b in boxes.event if not (false_positive and b is own)]
    if include_model_boxes:
        kept += boxes.others
    lines = []
    for b in kept:
        class_id = classes.id_of(b.label)
        line = _yolo_line(class_id, b.xyxy, *size) if class_id is not None else None
        if line is not None:
            lines.append(line)
    return _Labelled(lines, removed=1 if false_positive else 0)


def export_feedback(
    store: EventStore,
    snapshots: SnapshotStore,
    out_dir: str | Path,
    *,
    model: str,
    class_names: Sequence[str],
    label_classes: Mapping[str, str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    include_model_boxes: bool = False,
    val_fraction: float = 0.2,
) -> ExportResult:
    """Write images/{train,val}, labels/{train,val}, data.yaml (the model's class names) and manifest.csv
    for the reviewed events of `model` started in [since, until).

    label_classes maps box labels that are not detector classes (a crop classifier's labels) to the
    detector class whose boxes they relabel (no_mask -> face)."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} already holds files: export into a new or empty folder")
    if not 0.0 <= val_fraction < 1.0:
        raise ExportError(f"val_fraction must be in [0, 1), got {val_fraction}")
    classes = _Classes(list(class_names), dict(label_classes or {}))
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    result = ExportResult(out, out / "data.yaml", out / "manifest.csv")
    with result.manifest.open("w", newline="", encoding="utf-8") as manifest_file:
        manifest = csv.DictWriter(manifest_file, MANIFEST_COLUMNS)
        manifest.writeheader()
        for event in reviewed_events(store, model, since, until):
            row = {
                "event_id": event.id,
                "rule": event.rule,
                "review_state": event.review_state,
                "site": event.site,
                "camera": event.camera,
                "class_name": event.class_name,
                "started_at": event.started_at.isoformat(),
            }
            written = _export_one(event, snapshots, out, classes, include_model_boxes, val_fraction, row)
            if written is None:
                result.skipped[row["status"].removeprefix("skipped: ")] += 1
            elif event.review_state == "false_positive":
                result.hard_negatives += 1
            else:
                result.positives += 1
            manifest.writerow(row)
    names = {i: name for i, name in enumerate(class_names)}
    data = {"path": str(out.resolve()), "train": "images/train", "val": "images/val", "names": names}
    result.data_yaml.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return result


def _export_one(
    event: Event,
    snapshots: SnapshotStore,
    out: Path,
    classes: _Classes,
    include_model_boxes: bool,
    val_fraction: float,
    row: dict[str, str],
) -> Path | None:
    """Write one event's image and labels and fill in its manifest row; None (and the reason in the
    row's status) when the event cannot be used."""

    def skip(reason: str) -> None:
        row["status"] = f"skipped: {reason}"

    if event.snapshot is None:
        return skip("the event has no snapshot")
    source = raw_frame_path(event.snapshot)
    row["source"] = source
    path = snapshots.path(source)
    if path is None:
        return skip("no raw frame (taken while storage.keep_raw_frames was off, or removed by retention)")
    jpeg = path.read_bytes()
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return skip("the raw frame is not a readable JPEG")
    try:
        boxes = read_frame_boxes(jpeg)
    except (ValueError, KeyError, TypeError) as exc:
        return skip(f"the raw frame's boxes cannot be read ({exc})")
    if boxes is None:
        return skip("the raw frame carries no boxes")
    labelled = _labels(event, boxes, classes, (image.shape[1], image.shape[0]), include_model_boxes)
    if isinstance(labelled, str):
        return skip(labelled)
    split = _split(event.id, val_fraction)
    image_path = out / "images" / split / f"{event.id}.jpg"
    image_path.write_bytes(jpeg)
    (out / "labels" / split / f"{event.id}.txt").write_text("".join(f"{line}\n" for line in labelled.lines))
    row.update(
        image=str(image_path.relative_to(out)),
        labels=str(len(labelled.lines)),
        removed=str(labelled.removed),
        status="exported",
    )
    return image_path
