"""The synthetic kitchen renderer: determinism, label validity, class coverage and the demo scenario."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from models.synthetic import (
    CLASSES,
    DEMO_PERIOD_S,
    DEMO_TIMELINE,
    DEMO_ZONES,
    DemoScene,
    render_demo_frames,
    render_scene,
    write_dataset,
)

CLASS_ID = {name: i for i, name in enumerate(CLASSES)}


def test_class_contract_order() -> None:
    assert CLASSES == [
        "person", "head_hat", "head_bare", "face_mask", "face_nomask",
        "hand_glove", "hand_bare", "cigarette", "rodent", "phone",
    ]  # fmt: skip


def test_same_seed_renders_the_same_scene() -> None:
    a_img, a_boxes = render_scene(np.random.default_rng(42), 320, 180)
    b_img, b_boxes = render_scene(np.random.default_rng(42), 320, 180)
    c_img, _ = render_scene(np.random.default_rng(43), 320, 180)
    assert a_img.shape == (180, 320, 3) and a_img.dtype == np.uint8
    assert np.array_equal(a_img, b_img)
    assert a_boxes == b_boxes
    assert not np.array_equal(a_img, c_img)


def test_boxes_lie_inside_the_image_and_all_classes_appear() -> None:
    width, height = 320, 180
    seen: Counter[str] = Counter()
    for seed in range(250):
        _, boxes = render_scene(np.random.default_rng(seed), width, height)
        for cls, x1, y1, x2, y2 in boxes:
            assert 0 <= cls < len(CLASSES)
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            seen[CLASSES[cls]] += 1
    assert set(seen) == set(CLASSES), f"missing classes: {set(CLASSES) - set(seen)}"
    # The rare classes still need enough examples to be learnt.
    assert min(seen.values()) >= 20, seen


def test_parts_sit_inside_their_person() -> None:
    """Heads, faces and hands belong to some person box (no floating parts in the labels)."""
    for seed in range(40):
        _, boxes = render_scene(np.random.default_rng(seed), 320, 180)
        persons = [b[1:] for b in boxes if b[0] == CLASS_ID["person"]]
        for cls, x1, y1, x2, y2 in boxes:
            if CLASSES[cls] in ("person", "rodent"):
                continue
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            assert any(px1 <= cx <= px2 and py1 <= cy <= py2 for px1, py1, px2, py2 in persons), (seed, cls)


def test_write_dataset_produces_yolo_labels(tmp_path: Path) -> None:
    data_yaml = write_dataset(tmp_path / "ds", n_train=4, n_val=2, size=(160, 90), seed=3)
    spec = yaml.safe_load(data_yaml.read_text())
    assert spec["names"] == dict(enumerate(CLASSES))
    root = Path(spec["path"])
    for split, count in (("train", 4), ("val", 2)):
        images = sorted((root / spec[split]).glob("*.jpg"))
        labels = sorted((root / "labels" / split).glob("*.txt"))
        assert len(images) == count and [p.stem for p in images] == [p.stem for p in labels]
        for label in labels:
            for line in label.read_text().splitlines():
                fields = line.split()
                assert len(fields) == 5
                cls = int(fields[0])
                cx, cy, w, h = (float(v) for v in fields[1:])
                assert 0 <= cls < len(CLASSES)
                assert 0 < w <= 1 and 0 < h <= 1
                assert 0 <= cx - w / 2 + 1e-6 and cx + w / 2 <= 1 + 1e-6
                assert 0 <= cy - h / 2 + 1e-6 and cy + h / 2 <= 1 + 1e-6
    # Same seed, same files.
    again = write_dataset(tmp_path / "again", n_train=4, n_val=2, size=(160, 90), seed=3)
    first = (root / "labels" / "train").glob("*.txt")
    for label in first:
        assert label.read_text() == (again.parent / "labels" / "train" / label.name).read_text()


@pytest.fixture(scope="module")
def demo() -> DemoScene:
    return DemoScene()


def _classes_at(scene: DemoScene, t: float) -> Counter[str]:
    _, boxes = scene.frame(t)
    return Counter(CLASSES[b[0]] for b in boxes)


def test_demo_frame_is_deterministic_and_loops(demo: DemoScene) -> None:
    img, boxes = demo.frame(12.3)
    assert img.shape == (720, 1280, 3)
    again, again_boxes = DemoScene().frame(12.3)
    assert np.array_equal(img, again) and boxes == again_boxes
    _, looped_boxes = demo.frame(12.3 + DEMO_PERIOD_S)
    assert [b[0] for b in looped_boxes] == [b[0] for b in boxes]
    assert np.allclose([b[1:] for b in looped_boxes], [b[1:] for b in boxes], atol=1e-6)


def test_demo_timeline_matches_ground_truth(demo: DemoScene) -> None:
    hatless = DEMO_TIMELINE["hatless_worker"]
    for t in np.arange(0.0, DEMO_PERIOD_S, 0.5):
        seen = _classes_at(demo, float(t))
        # The compliant worker is there all the time.
        assert seen["head_hat"] >= 1 and seen["face_mask"] >= 1 and seen["hand_glove"] >= 2, t
        if hatless[0] + 1.5 <= t <= hatless[1] - 3.0:
            assert seen["head_bare"] == 1, t
        if t < hatless[0] or t > hatless[1]:
            assert seen["head_bare"] == 0 and seen["hand_bare"] == 0, t
        for name, cls in (("phone", "phone"), ("smoking", "cigarette"), ("rodent", "rodent")):
            start, end = DEMO_TIMELINE[name]
            if start + 0.5 <= t <= end - 1.0:
                assert seen[cls] == 1, (name, t)
            if t < start - 1.0 or t > end + 1.0:
                assert seen[cls] == 0, (name, t)


def test_demo_bare_hands_are_in_the_food_prep_zone(demo: DemoScene) -> None:
    zone = np.array(DEMO_ZONES["food_prep"]) * [1280, 720]
    x1, y1 = zone.min(axis=0)
    x2, y2 = zone.max(axis=0)
    start, end = DEMO_TIMELINE["bare_hands_on_prep"]
    for t in (start + 0.5, (start + end) / 2, end - 0.5):
        _, boxes = demo.frame(t)
        hands = [b for b in boxes if CLASSES[b[0]] == "hand_bare"]
        assert len(hands) == 2
        for _, hx1, hy1, hx2, hy2 in hands:
            assert x1 <= (hx1 + hx2) / 2 <= x2
            assert y1 <= (hy1 + hy2) / 2 <= y2 and y1 <= hy2 <= y2  # centre and bottom centre
    # Outside that window no bare hand is anywhere near the counter.
    _, boxes = demo.frame(start - 2.0)
    assert not [b for b in boxes if CLASSES[b[0]] == "hand_bare"]


def test_demo_heads_are_big_enough_for_a_320px_model(demo: DemoScene) -> None:
    _, boxes = demo.frame(10.0)
    heads = [b for b in boxes if CLASSES[b[0]] in ("head_hat", "head_bare")]
    assert heads and all(y2 - y1 >= 90 for _, _, y1, _, y2 in heads)


def test_demo_scales_to_other_sizes() -> None:
    small = DemoScene(640, 360)
    img, boxes = small.frame(10.0)
    _, full = DemoScene().frame(10.0)
    assert img.shape == (360, 640, 3)
    assert [b[0] for b in boxes] == [b[0] for b in full]
    assert boxes[0][1:] == pytest.approx(tuple(v / 2 for v in full[0][1:]))


def test_render_demo_frames_counts_frames(demo: DemoScene) -> None:
    frames = list(render_demo_frames(2.0, 2.0, scene=demo))
    assert len(frames) == 4
    assert np.array_equal(frames[1], demo.frame(0.5)[0])
