"""Detector accuracy on a labelled YOLO-format set, measured through the service's own ONNX path.

The model runs in the service's detector (`vision.backends.detector_class`), exactly as the worker runs it, so
the numbers cover the real pre- and post-processing (letterbox, decode, NMS), not a training framework's.

Metrics follow COCO: detections of every image are matched greedily to ground truth of the same class in
descending score order, a detection taking the unmatched box it overlaps most if that IoU is at least the
threshold. AP is the 101-point interpolated area under the precision-recall curve, at IoU 0.50 (AP50) and
averaged over IoU 0.50:0.05:0.95 (AP50-95); mAP averages over the classes that have ground truth.
Precision and recall are reported at the score threshold the service runs the model with (the config's,
else the card's), AP over all detections down to a low threshold.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import yaml

from brightkitchen.config import ModelConfig
from models.inventory import InstalledModel
from vision.backends import Detector as ServiceDetector
from vision.backends import detector_class
from vision.detections import Detections
from vision.nms import box_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
# AP needs the whole score range: ultralytics and COCO evaluations keep detections down to this score.
AP_SCORE_THRESHOLD = 0.001
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class DatasetError(ValueError):
    """A dataset description or label file that cannot be used."""


# ---------------------------------------------------------------------------------------------------
# YOLO-format datasets
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledImage:
    image: Path
    labels: Path  # may not exist: an image without a label file has no objects


@dataclass(frozen=True)
class YoloDataset:
    source: Path  # the data.yaml
    split: str
    names: list[str]
    images: list[LabelledImage]


def _names(raw: Any, source: Path) -> list[str]:
    if isinstance(raw, list) and raw:
        return [str(n) for n in raw]
    if isinstance(raw, dict) and raw:
        try:
            ids = sorted(int(k) for k in raw)
        except (TypeError, ValueError):
            raise DatasetError(f"{source}: names keys must be class ids 0..n-1") from None
        if ids != list(range(len(ids))):
            raise DatasetError(f"{source}: names must number the classes 0..n-1 without gaps, got {ids[:10]}")
        by_id = {int(k): str(v) for k, v in raw.items()}
        return [by_id[i] for i in ids]
    raise DatasetError(f"{source}: names must be a non-empty list or a mapping of class id -> name")


def label_path(image: Path) -> Path:
    """ultralytics' convention: .../images/.../x.jpg -> .../labels/.../x.txt (the last `images` folder)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _images_of(entry: Path, source: Path) -> list[Path]:
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if entry.is_file() and entry.suffix == ".txt":  # a list of image paths, relative to the list's folder
        lines = [line.strip() for line in entry.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [p if p.is_absolute() else (entry.parent / p) for p in map(Path, lines)]
    raise DatasetError(f"{source}: {entry} is neither an image folder nor a .txt list of images")


def load_dataset(data_yaml: str | Path, split: str = "val") -> YoloDataset:
    """The images of one split of a data.yaml (`path`, `train`/`val`/`test`, `names` as list or dict)."""
    source = Path(data_yaml)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(f"{source}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise DatasetError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"{source}: a data.yaml must be a mapping")
    names = _names(raw.get("names"), source)
    root = Path(str(raw.get("path") or "."))
    root = root if root.is_absolute() else (source.resolve().parent / root)
    entries = raw.get(split)
    if not entries:
        raise DatasetError(f"{source}: no {split!r} split (it has {sorted(k for k in raw if k != 'names')})")
    images: list[Path] = []
    for entry in entries if isinstance(entries, list) else [entries]:
        path = Path(str(entry))
        images += _images_of(path if path.is_absolute() else root / path, source)
    if not images:
        raise DatasetError(f"{source}: the {split!r} split has no images")
    return YoloDataset(source, split, names, [LabelledImage(p, label_path(p)) for p in images])


def read_labels(path: Path, width: int, height: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) xyxy in pixels and class ids (N,) of a YOLO label file (normalised `c cx cy w h`;
    a polygon `c x1 y1 x2 y2 ...` counts as its bounding box). A missing file means no objects."""
    if not path.is_file():
        return np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    boxes, classes = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        values = line.split()
        if not values:
            continue
        try:
            cls, coords = int(values[0]), [float(v) for v in values[1:]]
        except ValueError:
            raise DatasetError(f"{path}:{number}: expected `class cx cy w h`, got {line!r}") from None
        if not 0 <= cls < num_classes:
            raise DatasetError(f"{path}:{number}: class {cls} outside 0..{num_classes - 1}")
        if len(coords) == 4:
            cx, cy, w, h = coords
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        elif len(coords) >= 6 and len(coords) % 2 == 0:
            xs, ys = coords[0::2], coords[1::2]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        else:
            raise DatasetError(f"{path}:{number}: expected `class cx cy w h`, got {line!r}")
        boxes.append((x1 * width, y1 * height, x2 * width, y2 * height))
        classes.append(cls)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(classes, dtype=np.int64)


# ---------------------------------------------------------------------------------------------------
# Metrics (numpy only)
# ---------------------------------------------------------------------------------------------------


def match_detections(
    pred_xyxy: np.ndarray,
    pred_scores: np.ndarray,
    pred_classes: np.ndarray,
    gt_xyxy: np.ndarray,
    gt_classes: np.ndarray,
    iou_thresholds: np.ndarray = IOU_THRESHOLDS,
) -> np.ndarray:
    """(N, T) bool: whether each detection of one image is a true positive at each IoU threshold.

    Per class, in descending score order, a detection takes the still unmatched ground-truth box it
    overlaps most among those with IoU >= the threshold (COCO's greedy matching)."""
    pred_xyxy = np.asarray(pred_xyxy, dtype=np.float64).reshape(-1, 4)
    pred_classes = np.asarray(pred_classes).reshape(-1)
    gt_classes = np.asarray(gt_classes).reshape(-1)
    thresholds = np.asarray(iou_thresholds, dtype=np.float64)
    tp = np.zeros((len(pred_xyxy), len(thresholds)), dtype=bool)
    if not len(pred_xyxy) or not len(gt_classes):
        return tp
    ious = box_iou(pred_xyxy, gt_xyxy)
    order = np.argsort(-np.asarray(pred_scores, dtype=np.float64).reshape(-1), kind="stable")
    columns = np.arange(len(thresholds))
    for cls in np.intersect1d(pred_classes, gt_classes):
        gts = np.flatnonzero(gt_classes == cls)
        taken = np.zeros((len(gts), len(thresholds)), dtype=bool)
        for p in order[pred_classes[order] == cls]:
            overlap = ious[p, gts][:, None]
            # -1 marks boxes out of reach at a threshold: taken, or overlapping too little.
            candidates = np.where(~taken & (overlap >= thresholds[None, :]), overlap, -1.0)
            best = candidates.argmax(axis=0)
            hit = candidates[best, columns] >= 0
            taken[best[hit], columns[hit]] = True
            tp[p] = hit
    return tp


def interpolated_precision(tp_sorted: np.ndarray, num_gt: int) -> np.ndarray:
    """Precision at the 101 recall points 0, 0.01 .. 1 for detections already sorted by descending score:
    at each point, the highest precision reached at that recall or beyond (0 where it is never reached)."""
    tp_sorted = np.asarray(tp_sorted, dtype=bool).reshape(-1)
    out = np.zeros(len(RECALL_POINTS))
    if num_gt <= 0 or not tp_sorted.size:
        return out
    tps = np.cumsum(tp_sorted)
    recall = tps / num_gt
    precision = tps / np.arange(1, tp_sorted.size + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    reached = idx < recall.size
    out[reached] = envelope[idx[reached]]
    return out


def average_precision(tp_sorted: np.ndarray, num_gt: int) -> float:
    """COCO's 101-point interpolated average precision of score-sorted detections of one class."""
    return float(interpolated_precision(tp_sorted, num_gt).mean())


@dataclass(frozen=True)
class ClassMetrics:
    name: str
    instances: int  # ground-truth boxes
    detections: int  # detections at or above the score threshold
    precision: float | None  # None: no detections at the threshold and no ground truth
    recall: float | None  # None: no ground truth
    ap50: float | None  # None: no ground truth
    ap50_95: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "ap50": self.ap50,
            "ap50_95": self.ap50_95,
            "instances": self.instances,
            "detections": self.detections,
        }


@dataclass(frozen=True)
class Metrics:
    score_threshold: float
    images: int
    per_class: list[ClassMetrics]
    # class -> precision at RECALL_POINTS at IoU 0.50, for the classes with ground truth
    pr_curves: dict[str, np.ndarray]

    def _with_truth(self) -> list[ClassMetrics]:
        return [c for c in self.per_class if c.instances]

    def _mean(self, values: list[float | None]) -> float | None:
        return float(np.mean([v or 0.0 for v in values])) if values else None

    @property
    def map50(self) -> float | None:
        return self._mean([c.ap50 for c in self._with_truth()])

    @property
    def map50_95(self) -> float | None:
        return self._mean([c.ap50_95 for c in self._with_truth()])

    @property
    def precision(self) -> float | None:
        """Mean precision over classes with ground truth (a class never detected counts 0)."""
        return self._mean([c.precision for c in self._with_truth()])

    @property
    def recall(self) -> float | None:
        return self._mean([c.recall for c in self._with_truth()])

    @property
    def instances(self) -> int:
        return sum(c.instances for c in self.per_class)


@dataclass
class MetricAccumulator:
    """Collects detections and ground truth image by image; `metrics()` computes the numbers."""

    names: list[str]
    iou_thresholds: np.ndarray = field(default_factory=lambda: IOU_THRESHOLDS.copy())
    _scores: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    _classes: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    _tp: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    _gt_counts: np.ndarray | None = field(default=None, init=False, repr=False)
    images: int = field(default=0, init=False)

    def add(
        self,
        pred_xyxy: np.ndarray,
        pred_scores: np.ndarray,
        pred_classes: np.ndarray,
        gt_xyxy: np.ndarray,
        gt_classes: np.ndarray,
    ) -> None:
        """One image: its detections and its ground truth (class ids index `names`)."""
        nc = len(self.names)
        pred_classes = np.asarray(pred_classes, dtype=np.int64).reshape(-1)
        gt_classes = np.asarray(gt_classes, dtype=np.int64).reshape(-1)
        if pred_classes.size and (pred_classes.min() < 0 or pred_classes.max() >= nc):
            raise ValueError(f"detection class ids must be within 0..{nc - 1}")
        if gt_classes.size and (gt_classes.min() < 0 or gt_classes.max() >= nc):
            raise ValueError(f"ground-truth class ids must be within 0..{nc - 1}")
        if self._gt_counts is None:
            self._gt_counts = np.zeros(nc, dtype=np.int64)
        self._gt_counts += np.bincount(gt_classes, minlength=nc)
        self._tp.append(
            match_detections(pred_xyxy, pred_scores, pred_classes, gt_xyxy, gt_classes, self.iou_thresholds)
        )
        self._scores.append(np.asarray(pred_scores, dtype=np.float64).reshape(-1))
        self._classes.append(pred_classes)
        self.images += 1

    def metrics(self, score_threshold: float) -> Metrics:
        nc = len(self.names)
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        classes = np.concatenate(self._classes) if self._classes else np.zeros(0, dtype=np.int64)
        tp = np.concatenate(self._tp) if self._tp else np.zeros((0, len(self.iou_thresholds)), dtype=bool)
        gt_counts = self._gt_counts if self._gt_counts is not None else np.zeros(nc, dtype=np.int64)
        # One stable order for every class: ties keep the order images were added in.
        order = np.argsort(-scores, kind="stable")
        scores, classes, tp = scores[order], classes[order], tp[order]
        per_class, curves = [], {}
        for c, name in enumerate(self.names):
            mine = classes == c
            c_scores, c_tp, n_gt = scores[mine], tp[mine], int(gt_counts[c])
            kept = c_scores >= score_threshold
            n_kept = int(kept.sum())
            hits = int(c_tp[kept, 0].sum()) if n_kept else 0
            precision = hits / n_kept if n_kept else (0.0 if n_gt else None)
            if n_gt:
                aps = [average_precision(c_tp[:, t], n_gt) for t in range(tp.shape[1])]
                curves[name] = interpolated_precision(c_tp[:, 0], n_gt)
                ap50, ap50_95, recall = aps[0], float(np.mean(aps)), hits / n_gt
            else:
                ap50 = ap50_95 = recall = None
            per_class.append(ClassMetrics(name, n_gt, n_kept, precision, recall, ap50, ap50_95))
        return Metrics(score_threshold, self.images, per_class, curves)


# ---------------------------------------------------------------------------------------------------
# Running a detector on a dataset
# ---------------------------------------------------------------------------------------------------


class Detector(Protocol):
    """What evaluation needs of a detector; vision.backends gives the ones the service runs."""

    @property
    def names(self) -> list[str]: ...

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]: ...


def class_mapping(dataset_names: list[str], model_names: list[str]) -> np.ndarray:
    """Model class id of every dataset class id, matched by name."""
    missing = [n for n in dataset_names if n not in model_names]
    if missing:
        raise DatasetError(f"dataset classes {missing} are not classes of the model (it has {model_names})")
    return np.asarray([model_names.index(n) for n in dataset_names], dtype=np.int64)


Progress = Callable[[int, int], None]


def open_detector(model: InstalledModel, threads: int = 0, max_batch: int = 8) -> ServiceDetector:
    """The model as the service loads it (card classes and input size, the configured NMS overlap),
    keeping every detection down to AP_SCORE_THRESHOLD."""
    if model.task not in (None, "detect"):
        raise ValueError(f"{model.name} is a {model.task} model: only detectors can be evaluated on boxes")
    if model.card_problem:
        raise ValueError(model.card_problem)
    card = model.card
    return detector_class(card.output_format if card else None)(
        model.path,
        class_names=list(card.classes) if card else None,
        input_size=card.input_size if card else None,
        score_threshold=AP_SCORE_THRESHOLD,
        iou_threshold=model.iou_threshold,
        provider=model.entry.provider if isinstance(model.entry, ModelConfig) else "auto",
        threads=threads,
        max_batch=max_batch,
    )


def evaluate(
    detector: Detector,
    dataset: YoloDataset,
    score_threshold: float,
    *,
    batch: int = 4,
    progress: Progress | None = None,
) -> Metrics:
    """Run `detector` (its own score threshold should be AP_SCORE_THRESHOLD) over the dataset's images;
    precision and recall are counted at `score_threshold`."""
    names = list(detector.names)
    to_model = class_mapping(dataset.names, names)
    acc = MetricAccumulator(names)
    total = len(dataset.images)
    for start in range(0, total, batch):
        chunk = dataset.images[start : start + batch]
        frames = []
        for item in chunk:
            image = cv2.imread(str(item.image), cv2.IMREAD_COLOR)
            if image is None:
                raise DatasetError(f"cannot read image {item.image}")
            frames.append(image)
        for item, image, found in zip(chunk, frames, detector.detect(frames), strict=True):
            h, w = image.shape[:2]
            gt_xyxy, gt_classes = read_labels(item.labels, w, h, len(dataset.names))
            acc.add(found.xyxy, found.scores, found.class_ids, gt_xyxy, to_model[gt_classes])
        if progress is not None:
            progress(min(start + batch, total), total)
    return acc.metrics(score_threshold)


def stderr_progress(every_s: float = 2.0) -> Progress:
    """Prints `images done/total` to stderr at most every `every_s` seconds, and at the end."""
    last = [time.monotonic()]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= every_s:
            last[0] = now
            print(f"eval: {done}/{total} images", file=sys.stderr, flush=True)

    return report


# ---------------------------------------------------------------------------------------------------
# Reports: JSON, a text table, a precision-recall plot drawn with OpenCV
# ---------------------------------------------------------------------------------------------------


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def report_dict(metrics: Metrics, **about: Any) -> dict[str, Any]:
    """One JSON-ready object: `about` (model, data...) then the summary and per-class numbers."""
    return {
        **about,
        "images": metrics.images,
        "instances": metrics.instances,
        "score_threshold": metrics.score_threshold,
        "map50": _round(metrics.map50),
        "map50_95": _round(metrics.map50_95),
        "precision": _round(metrics.precision),
        "recall": _round(metrics.recall),
        "per_class": {
            c.name: {k: _round(v) if isinstance(v, float) else v for k, v in c.as_dict().items()}
            for c in metrics.per_class
        },
    }


def format_table(metrics: Metrics, title: str) -> str:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    width = max([len("all")] + [len(c.name) for c in metrics.per_class])
    header = f"{'class':<{width}}  {'instances':>9}  {'P':>6}  {'R':>6}  {'AP50':>6}  {'AP50-95':>7}"
    lines = [title, header, "-" * len(header)]
    for c in metrics.per_class:
        lines.append(
            f"{c.name:<{width}}  {c.instances:>9}  {cell(c.precision):>6}  {cell(c.recall):>6}  "
            f"{cell(c.ap50):>6}  {cell(c.ap50_95):>7}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"{'all':<{width}}  {metrics.instances:>9}  {cell(metrics.precision):>6}  {cell(metrics.recall):>6}  "
        f"{cell(metrics.map50):>6}  {cell(metrics.map50_95):>7}"
    )
    lines.append(
        f"{metrics.images} images; P and R at score >= {metrics.score_threshold:g}, IoU 0.50; "
        "mAP over classes with instances"
    )
    return "\n".join(lines)


def _colour(i: int) -> tuple[int, int, int]:
    """Distinct BGR colours around the hue circle."""
    hsv = np.uint8([[[int(i * 0.618034 * 180) % 180, 200, 210]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_pr_curves(metrics: Metrics, title: str, size: tuple[int, int] = (900, 640)) -> np.ndarray:
    """A BGR image of the precision-recall curve of every class with ground truth at IoU 0.50, and their
    mean (bold) whose area is mAP50."""
    width, height = size
    left, right, top, bottom = 70, 260, 50, 60
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    x0, y0, x1, y1 = left, top, width - right, height - bottom

    def point(r: float, p: float) -> tuple[int, int]:
        return int(round(x0 + r * (x1 - x0))), int(round(y1 - p * (y1 - y0)))

    font = cv2.FONT_HERSHEY_SIMPLEX
    for k in range(6):
        v = k / 5
        cv2.line(img, point(v, 0), point(v, 1), (225, 225, 225), 1)
        cv2.line(img, point(0, v), point(1, v), (225, 225, 225), 1)
        cv2.putText(img, f"{v:.1f}", (point(v, 0)[0] - 12, y1 + 20), font, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
        cv2.putText(img, f"{v:.1f}", (x0 - 38, point(0, v)[1] + 5), font, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.rectangle(img, (x0, y0), (x1, y1), (80, 80, 80), 1)
    cv2.putText(img, "recall", ((x0 + x1) // 2 - 25, height - 18), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "precision", (8, y0 - 10), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, title[:90], (x0 + 60, 22), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)

    legend_y = y0 + 10
    legend_rows = (y1 - y0) // 20 - 1  # room for the mean line plus this many classes
    curves = list(metrics.pr_curves.items())
    for i, (name, precision) in enumerate(curves):
        colour = _colour(i)
        pts = np.array([point(r, p) for r, p in zip(RECALL_POINTS, precision, strict=True)], dtype=np.int32)
        cv2.polylines(img, [pts], False, colour, 1, cv2.LINE_AA)
        if i < legend_rows:
            ap = next(c.ap50 for c in metrics.per_class if c.name == name) or 0.0
            y = legend_y + 20 * (i + 1)
            cv2.line(img, (x1 + 15, y - 4), (x1 + 40, y - 4), colour, 2, cv2.LINE_AA)
            label = f"{name[:18]} {ap:.3f}"
            cv2.putText(img, label, (x1 + 48, y), font, 0.45, (30, 30, 30), 1, cv2.LINE_AA)
    if curves:
        mean = np.mean([p for _, p in curves], axis=0)
        pts = np.array([point(r, p) for r, p in zip(RECALL_POINTS, mean, strict=True)], dtype=np.int32)
        cv2.polylines(img, [pts], False, (120, 40, 0), 3, cv2.LINE_AA)
        cv2.line(img, (x1 + 15, legend_y - 4), (x1 + 40, legend_y - 4), (120, 40, 0), 3, cv2.LINE_AA)
        label = f"all classes {metrics.map50 or 0.0:.3f}"
        cv2.putText(img, label, (x1 + 48, legend_y), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    else:
        cv2.putText(img, "no ground truth", point(0.35, 0.5), font, 0.7, (0, 0, 200), 1, cv2.LINE_AA)
    return img


def write_pr_plot(metrics: Metrics, path: str | Path, title: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", draw_pr_curves(metrics, title))
    if not ok:
        raise OSError(f"cannot encode the plot as PNG for {path}")
    path.write_bytes(np.asarray(png).tobytes())
    return path


# ---------------------------------------------------------------------------------------------------
# Renamed dataset classes, and crop classifiers on a folder of crops
# ---------------------------------------------------------------------------------------------------


def rename_classes(dataset: YoloDataset, renames: dict[str, str]) -> YoloDataset:
    """The dataset with classes renamed to the model's names (e.g. Hand -> hand_bare)."""
    unknown = sorted(set(renames) - set(dataset.names))
    if unknown:
        raise DatasetError(f"{dataset.source}: no classes {unknown} to rename (it has {dataset.names})")
    return replace(dataset, names=[renames.get(n, n) for n in dataset.names])


@dataclass(frozen=True)
class ClassifierMetrics:
    """Top-1 accuracy of a crop classifier and, per class, precision and recall of its top label."""

    names: list[str]
    confusion: np.ndarray  # (true, predicted) counts; rows follow the folder classes mapped onto `names`

    @property
    def images(self) -> int:
        return int(self.confusion.sum())

    @property
    def top1(self) -> float:
        return float(np.trace(self.confusion) / max(self.images, 1))

    def per_class_dict(self) -> dict[str, dict[str, float]]:
        out = {}
        for i, name in enumerate(self.names):
            truth, predicted = int(self.confusion[i].sum()), int(self.confusion[:, i].sum())
            if not truth:
                continue
            hits = int(self.confusion[i, i])
            out[name] = {
                "precision": round(hits / predicted, 4) if predicted else 0.0,
                "recall": round(hits / truth, 4),
                "instances": truth,
            }
        return out


def classify_folder(
    model: str | Path, names: list[str], folder: str | Path, renames: dict[str, str] | None = None,
    threads: int = 0,
) -> ClassifierMetrics:
    """Runs a crop classifier through the service's CropClassifier on every image of `folder/<class>/`,
    each image taken whole as the crop (expand 0). Folder classes map onto `names` by name (after renames)."""
    from vision.classifier import CropClassifier

    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder of class folders")
    renames = renames or {}
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"{folder}: no class folders")
    missing = [c for c in classes if renames.get(c, c) not in names]
    if missing:
        raise DatasetError(f"{folder}: classes {missing} are not classes of the model (it has {names})")
    classifier = CropClassifier(model, on_class="crop", class_names=names, expand=0.0, threads=threads)
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    for cls in classes:
        truth = names.index(renames.get(cls, cls))
        for path in sorted(p for p in (folder / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise DatasetError(f"cannot read image {path}")
            h, w = image.shape[:2]
            whole = Detections(np.array([[0.0, 0.0, w, h]]), np.ones(1), np.zeros(1, dtype=np.int64))
            (label,) = classifier.classify(image, whole, ["crop"])
            confusion[truth, names.index(label.label)] += 1
    return ClassifierMetrics(list(names), confusion)


def format_classifier_table(metrics: ClassifierMetrics, title: str) -> str:
    width = max(len("all"), *(len(n) for n in metrics.names))
    lines = [title, f"{'class':<{width}}  {'images':>6}  {'P':>6}  {'R':>6}"]
    for name, values in metrics.per_class_dict().items():
        lines.append(f"{name:<{width}}  {values['instances']:>6}  {values['precision']:>6.3f}  "
                     f"{values['recall']:>6.3f}")
    lines.append(f"{'all':<{width}}  {metrics.images:>6}  top-1 accuracy {metrics.top1:.3f}")
    return "\n".join(lines)
