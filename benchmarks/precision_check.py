"""Accuracy of the faster runtimes against the fp32 onnxruntime reference, on the same images.

The reference runs each image on the model's full square input; the candidates as the service runs them,
on the smallest stride-multiple canvas that holds the image (for models with free input height and width).
For each image set and each runtime (onnxruntime fp32 and int8, OpenVINO fp32 / bf16 / int8) it counts the
reference's detections that the runtime finds again (same class, IoU >= 0.5), the mean IoU of those
pairs, the mean score difference, and what each side found that the other did not. Check a precision
this way on your own camera images before you put it in the config.

    python -m benchmarks.precision_check --images ../shared/data/gloves/valid/images --synthetic 100
    python -m benchmarks.precision_check --model my-model.onnx --images DIR --calibration OTHER_DIR

--images are real photos; --synthetic N adds N kitchen frames rendered by models/synthetic.py (the
built-in model is trained on such frames only, so on real photos it finds little). int8 calibrates on
--calibration, else on what the service would use (rendered frames for built-in models).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmarks.inference_bench import machine_line
from models.cards import builtin_model_path, find_card
from streams.detectors import synthetic_calibration
from vision.compare import Agreement, agreement
from vision.detections import Detections
from vision.detector import YoloDetector
from vision.quantize import IMAGE_SUFFIXES, Calibration, folder_calibration
from vision.runtime import openvino_installed, plan_runtime

REFERENCE = ("cpu", "fp32")  # onnxruntime's CPU provider
CANDIDATES = (("cpu", "int8"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))
SYNTHETIC_SEED = 4242  # not the calibration set's seed


@dataclass
class Row:
    images: str
    runtime: str
    result: Agreement


def load_images(folder: Path, limit: int | None) -> list[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in files]
    return [im for im in images if im is not None]


def synthetic_images(count: int) -> list[np.ndarray]:
    from models.synthetic import render_scene

    rng = np.random.default_rng(SYNTHETIC_SEED)
    return [render_scene(rng, 640, 360)[0] for _ in range(count)]


def default_calibration(model: str) -> Calibration:
    if not model.startswith("builtin:"):
        raise SystemExit("int8 of an own model needs --calibration DIR")
    return synthetic_calibration()


def detect_all(detector: YoloDetector, images: list[np.ndarray]) -> list[Detections]:
    """One image per call, as a camera's frame is seen (speed is benchmarks/inference_bench.py's job)."""
    return [detector.detect([im])[0] for im in images]


def run(model: str, sets: dict[str, list[np.ndarray]], calibration: Calibration, score: float | None,
        cache_dir: Path) -> Iterator[Row]:
    path = builtin_model_path(model.removeprefix("builtin:")) if model.startswith("builtin:") else Path(model)
    card = find_card(path)
    threshold = score if score is not None else (card.thresholds.score if card else 0.25)
    names = list(card.classes) if card else None

    def build(provider: str, precision: str, rect: bool = True) -> YoloDetector:
        plan = plan_runtime(provider, precision, openvino=provider == "openvino")
        return YoloDetector(path, class_names=names, score_threshold=threshold, threads=1, plan=plan,
                            cache_dir=cache_dir, calibration=calibration, rect=rect)

    def label(detector: YoloDetector) -> str:
        return detector.plan.describe() + (", smallest canvas" if detector.rect else ", full square")

    # The reference runs on the full square, as the model was validated; the candidates as the service
    # runs them (on the smallest canvas that holds the frame, where the model allows it).
    reference = build(*REFERENCE, rect=False)
    for set_name, images in sets.items():
        ref = detect_all(reference, images)
        yield Row(set_name, label(reference), agreement(ref, ref))
        for candidate in (REFERENCE, *CANDIDATES):
            if candidate[0] == "openvino" and not openvino_installed():
                continue
            detector = build(*candidate)
            yield Row(set_name, label(detector), agreement(ref, detect_all(detector, images)))


def table(rows: list[Row]) -> str:
    lines = [
        "| images | runtime | fp32 detections | its detections | matched (IoU>=0.5, same class) | missed | extra "
        "| mean IoU of matched | mean abs score diff | images with the same count |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r = row.result
        lines.append(
            f"| {row.images} | {row.runtime} | {r.reference} | {r.candidate} | {r.matched} ({r.recall:.1%}) "
            f"| {r.missed} | {r.extra} | {r.mean_iou:.4f} | {r.mean_score_diff:.4f} "
            f"| {r.images_same_count}/{r.images} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:kitchen-starter", help="builtin:NAME or an ONNX file")
    parser.add_argument("--images", type=Path, action="append", default=[], help="folder of real photos")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per folder")
    parser.add_argument("--synthetic", type=int, default=0, help="also this many rendered kitchen frames")
    parser.add_argument("--calibration", type=Path, help="folder of int8 calibration images")
    parser.add_argument("--score", type=float, help="score threshold (default: the card's)")
    parser.add_argument("--cache-dir", type=Path, help="where int8 files are kept (default: a temporary folder)")
    args = parser.parse_args(argv)
    sets: dict[str, list[np.ndarray]] = {}
    for folder in args.images:
        if not folder.is_dir():
            parser.error(f"no such folder: {folder}")
        sets[f"real: {folder.parent.parent.name}/{folder.parent.name} ({len(load_images(folder, args.limit))})"] = (
            load_images(folder, args.limit))
    if args.synthetic:
        sets[f"synthetic: rendered kitchen ({args.synthetic})"] = synthetic_images(args.synthetic)
    if not sets:
        parser.error("give --images DIR and/or --synthetic N")
    calibration = folder_calibration(args.calibration) if args.calibration else default_calibration(args.model)
    print(machine_line())
    print(f"model {args.model}; int8 calibrated on {args.calibration or 'the service default'} "
          f"({calibration.key}); score threshold {args.score if args.score is not None else 'from the card'}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = list(run(args.model, sets, calibration, args.score, args.cache_dir or Path(tmp)))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
