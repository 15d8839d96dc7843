"""Reviewed events to a YOLO-format dataset: raw frames carrying their boxes, the verdicts applied to the
labels, and the worker keeping the raw frame beside the annotated snapshot."""

from __future__ import annotations

import csv
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import yaml

from brightkitchen.bus import InProcessBus
from brightkitchen.cli import main
from brightkitchen.config import load_config
from brightkitchen.events import Box, Event, ModelRef, utc
from brightkitchen.review import ReviewStore
from brightkitchen.snapshots import SnapshotStore
from brightkitchen.store import EventStore
from brightkitchen.users import Principal
from models.feedback import (
    ExportError,
    encode_raw_frame,
    export_feedback,
    raw_frame_key,
    raw_frame_path,
    read_frame_boxes,
)
from streams.reader import Frame
from streams.worker import Worker
from tests.models.test_inventory import make_card
from vision.detections import Detections

NAMES = ["person", "head_bare", "face"]
WIDTH, HEIGHT = 320, 200
REGULATOR = Principal("reg", "regulator", None, "user")
MANAGER = Principal("boss", "site_manager", frozenset({"s1"}), "user")
T0 = 1_790_000_000.0


def frame_image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((HEIGHT, WIDTH, 3), 60, np.uint8)
    for _ in range(6):
        x, y = int(rng.integers(0, WIDTH - 40)), int(rng.integers(0, HEIGHT - 40))
        cv2.rectangle(image, (x, y), (x + 40, y + 40), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    return image


class Kitchen:
    """A real SQLite event store, review store and snapshot store, filled by `add`."""

    def __init__(self, root: Path) -> None:
        self.store = EventStore(f"sqlite:///{root / 'db.sqlite'}")
        self.reviews = ReviewStore(self.store)
        self.snapshots = SnapshotStore(root / "snapshots")
        self.added = 0

    def add(
        self,
        *,
        rule: str = "no_hat",
        class_name: str = "head_bare",
        boxes: list[Box],
        others: list[Box] = (),
        at: float = T0,
        model: str = "kitchen",
        raw: bool = True,
        seed: int = 0,
    ) -> Event:
        """An event opened at `at` with its annotated snapshot and (if raw) its raw frame."""
        image = frame_image(seed)
        own = boxes[0]
        self.added += 1
        event = Event(
            # Time-ordered like new_event_id, with a counter for its random bits: the train/val split, a hash of the
            # id, is then the same on every run.
            id=f"{int(at * 1000):012x}7{self.added:019x}",
            phase="open",
            rule=rule,
            site="s1",
            camera="cam1",
            class_name=class_name,
            track_id=own.track_id,
            score=own.score,
            started_at=utc(at),
            updated_at=utc(at),
            boxes=boxes,
            frame_size=(WIDTH, HEIGHT),
            model=ModelRef(name=model, version="1"),
        )
        drawn = image.copy()
        cv2.rectangle(drawn, (0, 0), (WIDTH - 1, 20), (0, 0, 255), -1)  # the annotations
        event.snapshot, event.snapshot_sha256 = self.snapshots.save(event.id, jpeg(drawn), at)
        if raw:
            names = NAMES + sorted({b.label for b in [*boxes, *others]} - set(NAMES))
            detections = Detections(
                [b.xyxy for b in [*boxes, *others]],
                [b.score for b in [*boxes, *others]],
                [names.index(b.label) for b in [*boxes, *others]],
                [b.track_id for b in [*boxes, *others]],
            )
            self.snapshots.save(
                raw_frame_key(event.id), encode_raw_frame(image, boxes, detections, names), at
            )
        assert self.store.upsert(event)
        return event

    def review(self, event: Event, *states: str) -> None:
        for state in states:
            who = MANAGER if state == "rectified" else REGULATOR
            self.reviews.transition(self.store.get(event.id), state, who, note="seen")

    def export(self, out: Path, **options) -> object:
        options.setdefault("model", "kitchen")
        options.setdefault("class_names", NAMES)
        return export_feedback(self.store, self.snapshots, out, **options)


def jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def box(label: str, x1: float, y1: float, x2: float, y2: float, track: int, score: float = 0.8) -> Box:
    return Box(label=label, score=score, xyxy=(x1, y1, x2, y2), track_id=track)


def labels(out: Path, event: Event) -> list[list[float]]:
    (path,) = out.glob(f"labels/*/{event.id}.txt")
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines()]


def manifest(out: Path) -> dict[str, dict[str, str]]:
    with (out / "manifest.csv").open(newline="") as f:
        return {row["event_id"]: row for row in csv.DictReader(f)}


@pytest.fixture
def kitchen(tmp_path: Path):
    k = Kitchen(tmp_path)
    yield k
    k.store.close()


def test_raw_frames_carry_their_boxes_and_decode_like_plain_jpegs():
    image = frame_image(1)
    mine = [box("head_bare", 10, 20, 50, 60, 7)]
    dets = Detections([[10, 20, 50, 60], [100, 50, 180, 190]], [0.8, 0.9], [1, 0], [7, 3])
    data = encode_raw_frame(image, mine, dets, NAMES)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    plain = cv2.imdecode(np.frombuffer(jpeg_at(image, 90), np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(decoded, plain)  # the comment changes nothing in the picture
    boxes = read_frame_boxes(data)
    assert boxes.event == mine
    assert [(b.label, b.xyxy, b.track_id) for b in boxes.others] == [
        ("person", (100.0, 50.0, 180.0, 190.0), 3)
    ]
    assert read_frame_boxes(jpeg_at(image, 90)) is None


def jpeg_at(image: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def test_raw_frame_path_sits_beside_the_snapshot():
    assert raw_frame_path("2026/09/21/abc.jpg") == "2026/09/21/abc.raw.jpg"


def test_confirmed_events_become_positives_and_false_positives_hard_negatives(kitchen, tmp_path):
    hatless = kitchen.add(
        boxes=[box("head_bare", 32, 20, 96, 60, 5), box("head_bare", 160, 100, 192, 140, 6)],
        others=[box("person", 20, 10, 120, 200, 1)],
    )
    wrong = kitchen.add(boxes=[box("head_bare", 200, 40, 240, 80, 9)], at=T0 + 60, seed=1)
    fixed = kitchen.add(boxes=[box("head_bare", 0, 0, 64, 40, 2)], at=T0 + 120, seed=2)
    pending = kitchen.add(boxes=[box("head_bare", 0, 0, 64, 40, 3)], at=T0 + 180)
    kitchen.review(hatless, "confirmed")
    kitchen.review(wrong, "false_positive")
    kitchen.review(fixed, "confirmed", "rectified")
    # A later revision carries the boxes of a later frame: the labels must still be the raw frame's.
    later = kitchen.store.get(hatless.id).model_copy(
        update={"revision": 2, "phase": "updated", "boxes": [box("head_bare", 250, 150, 300, 190, 5)]}
    )
    assert kitchen.store.upsert(later)

    out = tmp_path / "feedback"
    result = kitchen.export(out, val_fraction=0.0)
    assert (result.positives, result.hard_negatives, dict(result.skipped)) == (2, 1, {})

    assert labels(out, hatless) == [
        [1, 0.2, 0.2, 0.2, 0.2],  # 32..96 of 320 wide, 20..60 of 200 high
        [1, 0.55, 0.6, 0.1, 0.2],
    ]
    assert labels(out, wrong) == []  # the violating box is gone: a frame with no head_bare in it
    assert labels(out, fixed) == [[1, 0.1, 0.1, 0.2, 0.2]]
    assert not list(out.glob(f"*/*/{pending.id}.*"))
    # The image is the frame without drawings.
    (image_path,) = out.glob(f"images/*/{wrong.id}.jpg")
    image = cv2.imread(str(image_path))
    assert image.shape == (HEIGHT, WIDTH, 3) and np.abs(image.astype(int) - frame_image(1)).mean() < 3

    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data == {
        "path": str(out.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": {0: "person", 1: "head_bare", 2: "face"},
    }
    rows = manifest(out)
    assert set(rows) == {hatless.id, wrong.id, fixed.id}
    assert rows[wrong.id]["review_state"] == "false_positive" and rows[wrong.id]["removed"] == "1"
    assert rows[fixed.id]["review_state"] == "rectified" and rows[fixed.id]["status"] == "exported"
    assert rows[hatless.id]["source"] == raw_frame_path(hatless.snapshot)
    assert (
        rows[hatless.id]["rule"] == "no_hat" and rows[hatless.id]["image"] == f"images/train/{hatless.id}.jpg"
    )


def test_model_boxes_label_the_rest_of_the_frame_when_asked(kitchen, tmp_path):
    event = kitchen.add(
        boxes=[box("head_bare", 32, 20, 96, 60, 5)], others=[box("person", 0, 0, 160, 200, 1)]
    )
    kitchen.review(event, "false_positive")
    result = kitchen.export(tmp_path / "out", include_model_boxes=True, val_fraction=0.0)
    assert result.hard_negatives == 1
    assert labels(tmp_path / "out", event) == [[0, 0.25, 0.5, 0.5, 1.0]]


def test_events_that_cannot_be_used_are_listed_with_the_reason(kitchen, tmp_path):
    no_raw = kitchen.add(boxes=[box("head_bare", 0, 0, 50, 50, 1)], raw=False)
    other_model = kitchen.add(boxes=[box("head_bare", 0, 0, 50, 50, 1)], model="gloves", at=T0 + 1)
    for event in (no_raw, other_model):
        kitchen.review(event, "confirmed")
    result = kitchen.export(tmp_path / "out")
    assert result.images == 0
    assert dict(result.skipped) == {
        "no raw frame (taken while storage.keep_raw_frames was off, or removed by retention)": 1
    }
    assert set(manifest(tmp_path / "out")) == {no_raw.id}


def test_classifier_labels_map_to_their_detector_class(kitchen, tmp_path):
    confirmed = kitchen.add(
        rule="no_mask", class_name="face_nomask", boxes=[box("face_nomask", 64, 40, 96, 80, 4)]
    )
    rejected = kitchen.add(
        rule="no_mask", class_name="face_nomask", boxes=[box("face_nomask", 64, 40, 96, 80, 4)], at=T0 + 5
    )
    kitchen.review(confirmed, "confirmed")
    kitchen.review(rejected, "false_positive")
    out = tmp_path / "out"
    result = kitchen.export(out, label_classes={"face_mask": "face", "face_nomask": "face"}, val_fraction=0.0)
    assert labels(out, confirmed) == [[2, 0.25, 0.3, 0.1, 0.2]]
    # The face may well be a face: a wrong mask verdict is no hard negative for the detector.
    assert result.hard_negatives == 0 and len(result.skipped) == 1
    assert manifest(out)[rejected.id]["status"].startswith("skipped: false positive of 'face_nomask'")


def test_time_window_and_split_are_stable(kitchen, tmp_path):
    events = [kitchen.add(boxes=[box("head_bare", 0, 0, 50, 50, i)], at=T0 + 100 * i) for i in range(12)]
    for e in events:
        kitchen.review(e, "confirmed")
    since, until = datetime.fromtimestamp(T0 + 200, UTC), datetime.fromtimestamp(T0 + 900, UTC)
    first = kitchen.export(tmp_path / "a", since=since, until=until, val_fraction=0.5)
    assert first.images == 7 and set(manifest(tmp_path / "a")) == {e.id for e in events[2:9]}
    splits = {p.stem: p.parent.name for p in (tmp_path / "a" / "images").glob("*/*.jpg")}
    assert set(splits.values()) == {"train", "val"}
    kitchen.export(tmp_path / "b", val_fraction=0.5)
    again = {p.stem: p.parent.name for p in (tmp_path / "b" / "images").glob("*/*.jpg")}
    assert all(again[k] == v for k, v in splits.items())


def test_export_refuses_a_folder_with_files(kitchen, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="already holds files"):
        kitchen.export(tmp_path / "out")


def test_retention_removes_raw_frames_with_their_snapshots(tmp_path):
    store = SnapshotStore(tmp_path, retention_days=1)
    old, new = T0 - 3 * 86400, T0 - 3600
    paths = []
    for event_id, at in (("old", old), ("new", new)):
        for key in (event_id, raw_frame_key(event_id)):
            rel, _ = store.save(key, b"\xff\xd8x", at)
            os.utime(store.path(rel), (at, at))
            paths.append(store.root / rel)
    assert [p.name for p in paths] == ["old.jpg", "old.raw.jpg", "new.jpg", "new.raw.jpg"]
    assert store.prune(T0) == 2
    assert [p.exists() for p in paths] == [False, False, True, True]


def write_config(tmp_path: Path, model: Path, keep_raw: bool = True) -> Path:
    data = {
        "sites": [{"id": "s1", "cameras": [{"id": "cam1", "url": "file.mp4"}]}],
        "models": [{"name": "kitchen", "path": str(model)}],
        "rules": [{"name": "no_hat", "model": "kitchen", "classes": ["head_bare"], "min_score": 0.5}],
        "storage": {
            "database": "sqlite:///db.sqlite",
            "snapshots_dir": "snapshots",
            "keep_raw_frames": keep_raw,
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cli_exports_from_the_configured_store(tmp_path, make_detector_onnx, capsys):
    model = make_detector_onnx(np.zeros((7, 4), np.float32), size=64)
    make_card(model, NAMES, 64)
    config = write_config(tmp_path, model)
    kitchen = Kitchen(tmp_path)  # the config's database and snapshot folder
    event = kitchen.add(boxes=[box("head_bare", 32, 20, 96, 60, 5)])
    kitchen.review(event, "confirmed")
    kitchen.store.close()
    out = tmp_path / "out"
    assert (
        main(["models", "export-feedback", "-c", str(config), "--out", str(out), "--since", "2026-01-01"])
        == 0
    )
    assert "1 images (1 confirmed, 0 false positives)" in capsys.readouterr().out
    assert yaml.safe_load((out / "data.yaml").read_text())["names"] == dict(enumerate(NAMES))
    assert (
        main(
            [
                "models",
                "export-feedback",
                "-c",
                str(config),
                "--out",
                str(tmp_path / "none"),
                "--until",
                "2020-01-01T00:00:00Z",
            ]
        )
        == 0
    )
    assert "0 images" in capsys.readouterr().out


class OneFrameReader:
    """A camera that delivers one frame, then nothing."""

    def __init__(self, camera_id: str, url: str, **options: object) -> None:
        image = frame_image(3)
        self.frame: Frame | None = Frame(
            camera_id,
            image,
            (WIDTH, HEIGHT),
            time.time(),
            1,
            av.VideoFrame.from_ndarray(image, format="bgr24"),
        )

    def start(self) -> None: ...

    def stop(self, timeout_s: float | None = None) -> None: ...

    def latest(self, max_age_s: float | None = None) -> Frame | None:
        frame, self.frame = self.frame, None
        return frame


@pytest.mark.parametrize(("keep_raw", "publishing_thread"), [(True, False), (True, True), (False, False)])
def test_the_worker_keeps_the_raw_frame_beside_the_snapshot(tmp_path, make_detector_onnx, keep_raw, publishing_thread):
    base = np.zeros((7, 2), np.float32)
    base[:, 0] = [16, 16, 10, 10, 0, 0.9, 0]  # a head_bare box
    base[:, 1] = [40, 40, 16, 20, 0.8, 0, 0]  # a person
    model = make_detector_onnx(base, size=64)
    make_card(model, NAMES, 64)
    config = load_config(write_config(tmp_path, model, keep_raw))
    bus = InProcessBus()
    snapshots = SnapshotStore(tmp_path / "snapshots")
    worker = Worker(config, bus, snapshots, reader_factory=OneFrameReader)
    if publishing_thread:  # as the worker runs: the raw frame is written after the event, before stop returns
        worker.publisher.start()
    assert worker.run_once() == 1
    event = bus.receive(5.0)
    worker.publisher.stop()
    assert event is not None and event.phase == "open" and event.snapshot
    raw = snapshots.path(raw_frame_path(event.snapshot))
    if not keep_raw:
        assert raw is None
        return
    boxes = read_frame_boxes(raw.read_bytes())
    assert [b.label for b in boxes.event] == [b.label for b in event.boxes] == ["head_bare"]
    np.testing.assert_allclose(boxes.event[0].xyxy, event.boxes[0].xyxy, atol=0.01)
    assert [b.label for b in boxes.others] == ["person"]
    image = cv2.imread(str(raw))
    assert np.abs(image.astype(int) - frame_image(3)).mean() < 3  # no drawings on it
