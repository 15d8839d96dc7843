"""Detection metrics on hand-built cases with known answers, against a brute-force reference, and the
`models eval` command end to end through the service's ONNX path."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from brightkitchen.cli import main
from models.evaluate import (
    IOU_THRESHOLDS,
    RECALL_POINTS,
    DatasetError,
    MetricAccumulator,
    average_precision,
    load_dataset,
    match_detections,
    read_labels,
)
from models.synthetic import CLASSES, write_dataset
from tests.models.test_inventory import make_card

GT = np.array([[0.0, 0.0, 100.0, 100.0]])


def metrics_of(images: list[tuple], names=("a", "b"), threshold: float = 0.5):
    """images: (pred_xyxy, pred_scores, pred_classes, gt_xyxy, gt_classes) per image."""
    acc = MetricAccumulator(list(names))
    for image in images:
        acc.add(*image)
    return acc.metrics(threshold)


def by_name(metrics, name: str):
    return next(c for c in metrics.per_class if c.name == name)


def test_perfect_predictions_score_one():
    gt = np.array([[0, 0, 50, 50], [60, 60, 90, 95], [10, 60, 30, 90]], float)
    classes = np.array([0, 0, 1])
    m = metrics_of([(gt, [0.9, 0.8, 0.7], classes, gt, classes)])
    assert m.map50 == pytest.approx(1.0) and m.map50_95 == pytest.approx(1.0)
    assert m.precision == pytest.approx(1.0) and m.recall == pytest.approx(1.0)
    assert by_name(m, "a").instances == 2 and by_name(m, "b").instances == 1


def test_a_false_positive_ranked_above_the_true_positive_halves_ap():
    preds = np.array([[200, 200, 250, 250], [0, 0, 100, 100]], float)
    m = metrics_of([(preds, [0.9, 0.8], [0, 0], GT, [0])], names=("a",))
    # Precision is 1/2 when recall reaches 1, and never higher: every recall point gets 0.5.
    assert by_name(m, "a").ap50 == pytest.approx(0.5)
    assert by_name(m, "a").precision == pytest.approx(0.5) and by_name(m, "a").recall == pytest.approx(1.0)
    # Ranked below the true positive, the same false positive costs nothing.
    m = metrics_of([(preds, [0.8, 0.9], [0, 0], GT, [0])], names=("a",))
    assert by_name(m, "a").ap50 == pytest.approx(1.0)


def test_a_missed_object_gives_recall_one_half():
    gt = np.array([[0, 0, 100, 100], [200, 0, 300, 100]], float)
    m = metrics_of([(gt[:1], [0.9], [0], gt, [0, 0])], names=("a",))
    a = by_name(m, "a")
    assert a.recall == pytest.approx(0.5) and a.precision == pytest.approx(1.0)
    assert a.ap50 == pytest.approx(51 / 101)  # recall points 0, 0.01 .. 0.50 reached at precision 1


@pytest.mark.parametrize(
    ("bottom", "ap50", "ap50_95"),
    [
        (49.0, 0.0, 0.0),  # IoU 0.49: a miss at every threshold
        (50.0, 1.0, 0.1),  # IoU exactly 0.50 counts at 0.50 only
        (51.0, 1.0, 0.1),  # IoU 0.51
        (76.0, 1.0, 0.6),  # IoU 0.76: hits at 0.50 .. 0.75
    ],
)
def test_iou_around_the_thresholds(bottom, ap50, ap50_95):
    m = metrics_of([(np.array([[0, 0, 100, bottom]]), [0.9], [0], GT, [0])], names=("a",))
    assert by_name(m, "a").ap50 == pytest.approx(ap50)
    assert by_name(m, "a").ap50_95 == pytest.approx(ap50_95)


def test_matching_is_greedy_by_score_and_per_class():
    preds = np.array([[0, 0, 100, 100], [0, 0, 100, 90], [0, 0, 100, 100]], float)
    tp = match_detections(preds, [0.5, 0.9, 0.7], [0, 0, 1], GT, [0])
    # The higher-scoring, less exact box takes the ground truth; the exact one is a duplicate; class 1
    # has no ground truth at all.
    assert tp[:, 0].tolist() == [False, True, False]
    # At IoU 0.95 the higher-scoring box (IoU 0.90) misses, so the exact box gets the object.
    assert tp[:, -1].tolist() == [True, False, False]


def test_a_detection_takes_the_object_it_overlaps_most():
    gts = np.array([[0, 0, 100, 100], [10, 0, 110, 100]], float)
    # The first detection is exactly the second object (IoU 0.82 with the first); the second detection
    # overlaps only the first object enough (0.54 vs 0.43). Taking the first object reachable would
    # leave the second detection without a match.
    preds = np.array([[10, 0, 110, 100], [-30, 0, 70, 100]], float)
    tp = match_detections(preds, [0.9, 0.8], [0, 0], gts, [0, 0])
    assert tp[:, 0].tolist() == [True, True]


def test_a_class_without_ground_truth_is_left_out_of_the_mean():
    m = metrics_of([(np.array([[0, 0, 100, 100], [300, 300, 350, 350]]), [0.9, 0.9], [0, 1], GT, [0])])
    b = by_name(m, "b")
    assert b.instances == 0 and b.ap50 is None and b.recall is None and b.precision == 0.0
    assert m.map50 == pytest.approx(1.0)
    nothing = metrics_of([(np.zeros((0, 4)), [], [], GT, [0])])
    assert by_name(nothing, "b").precision is None and by_name(nothing, "a").precision == 0.0


def test_precision_and_recall_use_the_score_threshold_and_ap_does_not():
    preds = np.array([[0, 0, 100, 100], [300, 0, 400, 100]], float)
    gt = np.array([[0, 0, 100, 100], [300, 0, 400, 100]], float)
    m = metrics_of([(preds, [0.9, 0.3], [0, 0], gt, [0, 0])], names=("a",), threshold=0.5)
    a = by_name(m, "a")
    assert (a.detections, a.precision, a.recall, a.ap50) == (1, 1.0, 0.5, pytest.approx(1.0))


# ---------------------------------------------------------------------------------------------------
# Brute-force reference: plain loops, matching recomputed for every score cut-off
# ---------------------------------------------------------------------------------------------------


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _true_positives(preds: list, gts: list, t: float) -> int:
    """Greedy COCO matching of one image's detections of one class (already sorted by score)."""
    used, hits = set(), 0
    for box in preds:
        best, best_iou = None, -1.0
        for j, g in enumerate(gts):
            overlap = _iou(box, g)
            if j not in used and overlap >= t and overlap > best_iou:
                best, best_iou = j, overlap
        if best is not None:
            used.add(best)
            hits += 1
    return hits


def brute_force_ap(images: list[tuple], cls: int, t: float) -> float | None:
    dets = sorted(
        (
            (s, i, tuple(b))
            for i, img in enumerate(images)
            for b, s, c in zip(img[0], img[1], img[2], strict=True)
            if c == cls
        ),
        key=lambda d: -d[0],
    )
    n_gt = sum(1 for img in images for c in img[4] if c == cls)
    if n_gt == 0:
        return None
    points = []  # (recall, precision) after each cut-off
    for k in range(1, len(dets) + 1):
        top = dets[:k]
        tp = 0
        for i, img in enumerate(images):
            gts = [tuple(g) for g, c in zip(img[3], img[4], strict=True) if c == cls]
            tp += _true_positives([d[2] for d in top if d[1] == i], gts, t)
        points.append((tp / n_gt, tp / k))
    total = 0.0
    for r in RECALL_POINTS:
        total += max((p for rec, p in points if rec >= r), default=0.0)
    return total / len(RECALL_POINTS)


def random_images(rng: np.random.Generator, n_images: int, nc: int) -> list[tuple]:
    images = []
    for _ in range(n_images):
        n_gt = int(rng.integers(0, 5))
        xy = rng.uniform(0, 200, (n_gt, 2))
        gt = np.concatenate([xy, xy + rng.uniform(20, 60, (n_gt, 2))], axis=1)
        gt_classes = rng.integers(0, nc, n_gt)
        # Detections: jittered copies of some objects plus random boxes, with distinct scores.
        keep = rng.random(n_gt) < 0.8
        jittered = gt[keep] + rng.normal(0, 6, (int(keep.sum()), 4))
        n_random = int(rng.integers(0, 4))
        xy = rng.uniform(0, 200, (n_random, 2))
        noise = np.concatenate([xy, xy + rng.uniform(20, 60, (n_random, 2))], axis=1)
        preds = np.concatenate([jittered, noise])
        pred_classes = np.concatenate([gt_classes[keep], rng.integers(0, nc, n_random)])
        flip = rng.random(len(pred_classes)) < 0.1  # a few wrong classes
        pred_classes[flip] = rng.integers(0, nc, int(flip.sum()))
        images.append((preds, rng.random(len(preds)), pred_classes, gt, gt_classes))
    return images


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_agrees_with_the_brute_force_reference(seed):
    nc = 3
    images = random_images(np.random.default_rng(seed), 12, nc)
    m = metrics_of(images, names=("a", "b", "c"))
    for cls, name in enumerate("abc"):
        c = by_name(m, name)
        expected = [brute_force_ap(images, cls, float(t)) for t in IOU_THRESHOLDS]
        if expected[0] is None:
            assert c.ap50 is None
            continue
        assert c.ap50 == pytest.approx(expected[0], abs=1e-12)
        assert c.ap50_95 == pytest.approx(float(np.mean(expected)), abs=1e-12)


def test_average_precision_of_nothing_is_zero():
    assert average_precision(np.zeros(0, bool), 3) == 0.0


# ---------------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------------


def test_dataset_names_as_dict_or_list_and_labels_found_by_the_images_folder(tmp_path):
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images" / "val" / "x.jpg"), np.zeros((50, 100, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "images" / "val" / "y.png"), np.zeros((50, 100, 3), np.uint8))
    (tmp_path / "labels" / "val" / "x.txt").write_text("1 0.5 0.5 0.2 0.4\n\n0 0.1 0.1 0.3 0.1 0.3 0.3\n")
    for names in (["a", "b"], {0: "a", 1: "b"}, {"1": "b", "0": "a"}):
        (tmp_path / "data.yaml").write_text(
            yaml.safe_dump({"path": ".", "val": "images/val", "names": names})
        )
        ds = load_dataset(tmp_path / "data.yaml")
        assert ds.names == ["a", "b"] and [i.image.name for i in ds.images] == ["x.jpg", "y.png"]
    boxes, classes = read_labels(ds.images[0].labels, 100, 50, 2)
    assert classes.tolist() == [1, 0]
    np.testing.assert_allclose(boxes, [[40, 15, 60, 35], [10, 5, 30, 15]])
    assert read_labels(ds.images[1].labels, 100, 50, 2)[0].shape == (0, 4)  # no label file: no objects


def test_dataset_errors_are_clear(tmp_path):
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"val": "images", "names": {0: "a", 2: "c"}}))
    with pytest.raises(DatasetError, match="without gaps"):
        load_dataset(tmp_path / "data.yaml")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"train": "images", "names": ["a"]}))
    with pytest.raises(DatasetError, match="no 'val' split"):
        load_dataset(tmp_path / "data.yaml")
    (tmp_path / "bad.txt").write_text("3 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match="bad.txt:1: class 3 outside 0..1"):
        read_labels(tmp_path / "bad.txt", 10, 10, 2)


# ---------------------------------------------------------------------------------------------------
# `brightkitchen models eval` through the service's ONNX path
# ---------------------------------------------------------------------------------------------------


def known_detector_set(tmp_path: Path, make_detector_onnx) -> tuple[Path, Path]:
    """A tiny detector with fixed outputs and a one-image set whose answer is known: class a has one object
    that the 0.9 box finds exactly (the 0.6 box is a false positive ranked below it); class b has one
    object that is never detected."""
    base = np.zeros((6, 2), np.float32)
    base[:, 0] = [32, 32, 20, 20, 0.9, 0.0]  # cx, cy, w, h, score a, score b
    base[:, 1] = [10, 50, 8, 8, 0.6, 0.0]
    model = make_detector_onnx(base, size=64, metadata={"names": "{0: 'a', 1: 'b'}"})
    make_card(model, ["a", "b"], 64, score=0.7)
    (tmp_path / "set" / "images" / "val").mkdir(parents=True)
    (tmp_path / "set" / "labels" / "val").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "set" / "images" / "val" / "one.png"), np.full((64, 64, 3), 90, np.uint8))
    (tmp_path / "set" / "labels" / "val" / "one.txt").write_text(
        "0 0.5 0.5 0.3125 0.3125\n1 0.2 0.2 0.1 0.1\n"
    )
    data = tmp_path / "set" / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path / "set"), "val": "images/val", "names": ["a", "b"]}))
    return model, data


def test_eval_of_a_model_with_known_outputs(tmp_path, make_detector_onnx, capsys):
    model, data = known_detector_set(tmp_path, make_detector_onnx)
    assert (
        main(["models", "eval", "--model", str(model), "--data", str(data), "--json", "--threads", "1"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "det" and report["images"] == 1 and report["score_threshold"] == 0.7
    assert report["map50"] == 0.5 and report["map50_95"] == 0.5
    assert report["per_class"]["a"] == {
        "precision": 1.0,
        "recall": 1.0,
        "ap50": 1.0,
        "ap50_95": 1.0,
        "instances": 1,
        "detections": 1,
    }
    assert report["per_class"]["b"] == {
        "precision": 0.0,
        "recall": 0.0,
        "ap50": 0.0,
        "ap50_95": 0.0,
        "instances": 1,
        "detections": 0,
    }


def test_eval_by_config_name_uses_the_configured_threshold(tmp_path, make_detector_onnx, capsys):
    model, data = known_detector_set(tmp_path, make_detector_onnx)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sites": [{"id": "s1"}],
                "models": [{"name": "kitchen", "path": str(model), "score_threshold": 0.5}],
            }
        )
    )
    assert main(["models", "eval", "--model", "kitchen", "-c", str(config), "--data", str(data)]) == 0
    table = capsys.readouterr().out.splitlines()
    # At 0.5 the false positive counts too: precision 1/2.
    assert table[3].split() == ["a", "1", "0.500", "1.000", "1.000", "1.000"]
    assert table[-2].split() == ["all", "2", "0.250", "0.500", "0.500", "0.500"]


def test_eval_refuses_a_dataset_class_the_model_lacks(tmp_path, make_detector_onnx, capsys):
    model, data = known_detector_set(tmp_path, make_detector_onnx)
    data.write_text(yaml.safe_dump({"path": str(data.parent), "val": "images/val", "names": ["a", "rat"]}))
    assert main(["models", "eval", "--model", str(model), "--data", str(data)]) == 1
    assert "dataset classes ['rat'] are not classes of the model" in capsys.readouterr().err


def test_eval_of_the_builtin_starter_on_a_small_synthetic_set(tmp_path, capsys):
    data = write_dataset(tmp_path / "set", n_train=0, n_val=6, size=(320, 180), seed=7)
    plot = tmp_path / "pr.png"
    argv = [
        "models",
        "eval",
        "--model",
        "kitchen-starter",
        "--data",
        str(data),
        "--json",
        "--plot",
        str(plot),
        "--threads",
        "1",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["model"] == "kitchen-starter" and report["images"] == 6
    assert set(report["per_class"]) == set(CLASSES)
    instances = sum(
        len(p.read_text().splitlines()) for p in (tmp_path / "set" / "labels" / "val").glob("*.txt")
    )
    assert report["instances"] == instances == sum(c["instances"] for c in report["per_class"].values())
    for values in report["per_class"].values():
        for key in ("precision", "recall", "ap50", "ap50_95"):
            assert values[key] is None or 0.0 <= values[key] <= 1.0
        if values["instances"]:
            assert values["ap50_95"] <= values["ap50"]
    with_truth = [c for c in report["per_class"].values() if c["instances"]]
    assert report["map50"] == pytest.approx(np.mean([c["ap50"] for c in with_truth]), abs=1e-3)
    assert report["map50_95"] == pytest.approx(np.mean([c["ap50_95"] for c in with_truth]), abs=1e-3)
    assert "eval: 6/6 images" in captured.err
    image = cv2.imread(str(plot))
    assert image is not None and image.shape == (640, 900, 3)
    assert (image < 200).any()  # something is drawn on the white canvas
