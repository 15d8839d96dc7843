"""`brightkitchen models train`: train a YOLO detector or a crop classifier on a labelled set, export ONNX,
measure it through the service's own ONNX path and write its model card.

Needs the training extras (torch, ultralytics, onnx); ultralytics is imported inside the functions so that
this module imports without them. Everything runs offline: ultralytics' settings live under `--out`, a
local font stands in for the one it would fetch, and models start from random weights (or from an earlier
local run with `--init-weights`).

Datasets:
- detect: a YOLO `data.yaml` (`path`, `train`, `val`, `names`; labels beside `images/`);
- classify: a folder with `train/` and `val/` (optionally `test/`), one sub-folder per class.

`--rename OLD=NEW` gives classes the names the rules use (the dataset stays as it is: the run reads it
through its own data.yaml, or through hard links for a classify folder).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from models.cards import DataInfo, MetricSet, ModelCard, Thresholds, TrainingInfo, load_card, save_card

Task = Literal["detect", "classify"]
DEFAULT_MODELS: dict[str, str] = {"detect": "yolov8n.yaml", "classify": "yolov8n-cls.yaml"}
RUN_CARD = "card.yaml"  # a copy of the card in the run's weights folder, read by runs that continue it
FINISHED = ".trained"  # marker in the run folder: training ran to its last epoch
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
)
# ultralytics applies its own licence to the models it trains and exports (and writes it into the ONNX metadata).
ULTRALYTICS_LICENCE = (
    "AGPL-3.0 (ultralytics, which trained and exported it, applies its licence to the models it makes; the ONNX "
    "metadata says the same)"
)
# Augmentations a user may set with --aug KEY=VALUE (ultralytics' names).
AUGMENTATIONS = (
    "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective", "flipud", "fliplr",
    "mosaic", "mixup", "close_mosaic", "erasing",
)


class TrainingError(ValueError):
    """Training input a user can fix: a dataset, a class name or an option."""


@dataclass(frozen=True)
class TrainSettings:
    """One training run; the card records these."""

    epochs: int = 100
    imgsz: int = 320
    batch: int = 16
    workers: int = 2
    seed: int = 0
    model: str | None = None  # ultralytics model yaml (random weights); None: DEFAULT_MODELS[task]
    init_weights: str | None = None  # .pt of an earlier run to continue from
    val_each_epoch: bool = False  # validate after every epoch (costs time; the exported weights are the last)
    augment: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CardText:
    """What the card says that training cannot know: provenance, licence, use and limits."""

    name: str
    version: str = "0.1.0"
    data_what: str = ""
    data_where: str = ""
    data_licence: str = ""
    data_attribution: str = "none given"
    intended_use: str = ""
    limitations: tuple[str, ...] = ()
    score_threshold: float = 0.25
    iou_threshold: float = 0.5


# ---------------------------------------------------------------------------------------------------
# Offline ultralytics
# ---------------------------------------------------------------------------------------------------


def prepare_offline(config_dir: Path) -> None:
    """ultralytics would fetch a font and check for updates; point it at a local font and stay offline."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    target = config_dir / "Ultralytics" / "Arial.ttf"
    if target.is_file():
        return
    font = _find_font()
    if font is None:
        raise RuntimeError("no TTF font found; install one (apt-get install fonts-dejavu-core) and retry")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(font, target)


def _find_font() -> Path | None:
    for candidate in FONT_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    try:
        import matplotlib  # an ultralytics dependency that bundles DejaVu fonts
    except ImportError:
        return None
    bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return bundled if bundled.is_file() else None


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} (no GPU)"


def _progress_callback(total_epochs: int) -> Any:
    """One line per finished epoch with the losses and the time left, for logs without a terminal."""
    started = time.monotonic()

    def on_fit_epoch_end(trainer: Any) -> None:
        if trainer.epoch + 1 > total_epochs:  # the final validation calls back once more
            return
        done = trainer.epoch + 1 - trainer.start_epoch
        elapsed = time.monotonic() - started
        left = elapsed / max(done, 1) * (total_epochs - trainer.epoch - 1)
        losses = trainer.label_loss_items(trainer.tloss, prefix="") if trainer.tloss is not None else {}
        loss_text = " ".join(f"{k.strip('/')}={float(v):.3f}" for k, v in losses.items())
        print(f"epoch {trainer.epoch + 1}/{total_epochs} {loss_text} elapsed {elapsed / 60:.1f} min, "
              f"about {left / 60:.1f} min left", flush=True)

    return on_fit_epoch_end


def run_training(YOLO: Any, model: str, run_dir: Path, resume: bool, init_weights: str | None = None,
                 **train_args: Any) -> float:
    """Trains (or resumes) into run_dir; returns the wall-clock seconds it took (0 when an earlier run of
    the same folder already finished). init_weights starts from a local checkpoint instead of random weights."""
    started = time.monotonic()
    last = run_dir / "weights" / "last.pt"
    if resume and (run_dir / FINISHED).is_file():
        print(f"{run_dir}: training already finished; exporting its weights", flush=True)
        return 0.0
    if resume and last.is_file():
        yolo = YOLO(str(last))
        yolo.add_callback("on_fit_epoch_end", _progress_callback(int(train_args.get("epochs", 0))))
        yolo.train(resume=True)
    else:
        common = dict(
            pretrained=init_weights or False, amp=False, plots=False, device="cpu", exist_ok=True, deterministic=True
        )
        yolo = YOLO(model)
        yolo.add_callback("on_fit_epoch_end", _progress_callback(int(train_args.get("epochs", 0))))
        yolo.train(project=str(run_dir.parent), name=run_dir.name, **common, **train_args)
    (run_dir / FINISHED).write_text("")
    return time.monotonic() - started


def export_onnx(weights: Path, imgsz: int, dest: str | Path | None, name: str) -> Path:
    """ONNX export (opset 17, dynamic batch, simplified) of a .pt; copied to dest/<name>.onnx when dest is given."""
    from ultralytics import YOLO

    exported = Path(YOLO(str(weights)).export(format="onnx", opset=17, dynamic=True, simplify=True, imgsz=imgsz))
    if dest is None:
        return exported
    Path(dest).mkdir(parents=True, exist_ok=True)
    target = Path(dest) / f"{name}.onnx"
    shutil.copyfile(exported, target)
    return target


def continued_training(previous: TrainingInfo, current: TrainingInfo) -> TrainingInfo:
    """Training record of a run that started from an earlier run's weights: both commands, in order."""
    minutes = float(previous.time.split()[0]) + float(current.time.split()[0])
    return TrainingInfo(
        command=f"{previous.command} && {current.command}",
        settings={**current.settings, "continued_from": previous.settings},
        epochs=previous.epochs + current.epochs,
        time=f"{minutes:.1f} min ({previous.time} + {current.time})",
        machine=current.machine,
    )


def with_previous_runs(training: TrainingInfo, init_weights: str | None) -> TrainingInfo:
    """Folds the record of the run whose weights this one started from (its card sits beside them)."""
    previous_card = Path(init_weights).parent / RUN_CARD if init_weights else None
    if previous_card is None or not previous_card.is_file():
        return training
    return continued_training(load_card(previous_card).training, training)


# ---------------------------------------------------------------------------------------------------
# Datasets seen through the run's own view (absolute paths, renamed classes)
# ---------------------------------------------------------------------------------------------------


def parse_renames(pairs: list[str]) -> dict[str, str]:
    renames: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise TrainingError(f"--rename takes OLD=NEW, got {pair!r}")
        renames[old.strip()] = new.strip()
    return renames


def renamed(names: list[str], renames: dict[str, str]) -> list[str]:
    unknown = sorted(set(renames) - set(names))
    if unknown:
        raise TrainingError(f"--rename names classes the dataset does not have: {unknown} (it has {names})")
    out = [renames.get(n, n) for n in names]
    if len(set(out)) != len(out):
        raise TrainingError(f"after renaming, class names repeat: {out}")
    return out


def detection_view(data_yaml: Path, target: Path, renames: dict[str, str], val_split: str) -> tuple[Path, list[str]]:
    """A data.yaml in the run folder with absolute image paths and the renamed classes; returns it and the names."""
    from models.evaluate import load_dataset

    train = load_dataset(data_yaml, "train")
    val = load_dataset(data_yaml, val_split)
    names = renamed(train.names, renames)
    raw = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    root = Path(str(raw.get("path") or "."))
    root = root if root.is_absolute() else (data_yaml.resolve().parent / root)

    def absolute(entry: Any) -> Any:
        if isinstance(entry, list):
            return [absolute(e) for e in entry]
        path = Path(str(entry))
        return str(path if path.is_absolute() else (root / path).resolve())

    view = {"path": str(root.resolve()), "train": absolute(raw["train"]), "val": absolute(raw[val_split]),
            "names": dict(enumerate(names))}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(view, sort_keys=False, allow_unicode=True), encoding="utf-8")
    print(f"dataset: {len(train.images)} training images, {len(val.images)} {val_split} images, classes {names}",
          flush=True)
    return target, names


def classify_classes(folder: Path, split: str) -> list[str]:
    split_dir = folder / split
    if not split_dir.is_dir():
        raise TrainingError(f"{folder}: a classify set needs a {split}/ folder with one sub-folder per class")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise TrainingError(f"{split_dir}: needs at least two class folders, found {classes}")
    return classes


def classify_view(folder: Path, target: Path, renames: dict[str, str], val_split: str) -> tuple[Path, list[str]]:
    """The classify set seen as train/ and val/ with renamed class folders (files linked, not copied where
    possible); returns it and the class names in ultralytics' order (sorted folder names)."""
    source = classify_classes(folder, "train")
    if classify_classes(folder, val_split) != source:
        raise TrainingError(f"{folder}: {val_split}/ and train/ have different class folders")
    names = renamed(source, renames)
    if names != sorted(names):
        raise TrainingError(f"renamed classes {names} must keep the sorted order of the folders {source} "
                            "(ultralytics numbers classify classes by sorted folder name)")
    if target.exists():
        shutil.rmtree(target)
    for split, out_split in (("train", "train"), (val_split, "val")):
        for old, new in zip(source, names, strict=True):
            (target / out_split / new).mkdir(parents=True)
            for image in sorted((folder / split / old).iterdir()):
                if image.is_file():
                    _link_or_copy(image, target / out_split / new / image.name)
    return target, names


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows it (ultralytics does not follow linked folders), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


# ---------------------------------------------------------------------------------------------------
# Measuring through the service's ONNX path
# ---------------------------------------------------------------------------------------------------


def measure_detector(onnx_path: Path, names: list[str], imgsz: int, data: Path, split: str,
                     renames: dict[str, str], text: CardText) -> MetricSet:
    """The exported model as the worker runs it (YoloDetector) on one split of the source data.yaml."""
    from models.evaluate import AP_SCORE_THRESHOLD, evaluate, load_dataset, rename_classes
    from vision.detector import YoloDetector

    detector = YoloDetector(onnx_path, class_names=names, input_size=imgsz, score_threshold=AP_SCORE_THRESHOLD,
                            iou_threshold=text.iou_threshold)
    dataset = rename_classes(load_dataset(data, split), renames)
    metrics = evaluate(detector, dataset, text.score_threshold)
    values = {k: round(v, 4) for k, v in (("map50", metrics.map50), ("map50_95", metrics.map50_95),
                                          ("precision", metrics.precision), ("recall", metrics.recall))
              if v is not None}
    per_class = {
        c.name: {k: round(v, 4) for k, v in (("ap50", c.ap50), ("ap50_95", c.ap50_95), ("precision", c.precision),
                                              ("recall", c.recall)) if v is not None} | {"instances": c.instances}
        for c in metrics.per_class
    }
    return MetricSet(
        dataset=f"{split} split of {data} ({metrics.images} images, {metrics.instances} boxes)",
        how="brightkitchen models eval: the exported ONNX in the service's YoloDetector (letterbox, decode, NMS "
        f"IoU {text.iou_threshold}), COCO 101-point AP; precision and recall at the card's score "
        f"{text.score_threshold}, IoU 0.50",
        values=values,
        per_class=per_class,
    )


def measure_classifier(onnx_path: Path, names: list[str], data: Path, split: str, renames: dict[str, str],
                       text: CardText) -> MetricSet:
    """The exported model in the service's CropClassifier on every image of data/<split>/<class>/."""
    from models.evaluate import classify_folder

    result = classify_folder(onnx_path, names, data / split, renames)
    return MetricSet(
        dataset=f"{split} split of {data} ({result.images} images)",
        how="brightkitchen models eval: the exported ONNX in the service's CropClassifier on each whole image "
        "(short side resized, centre crop)",
        values={"top1": round(result.top1, 4)},
        per_class=result.per_class_dict(),
    )


# ---------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------


def train(
    task: Task,
    data: str | Path,
    out_dir: str | Path,
    text: CardText,
    *,
    settings: TrainSettings = TrainSettings(),
    renames: dict[str, str] | None = None,
    val_split: str = "val",
    measure_splits: tuple[str, ...] = (),
    resume: bool = False,
    dest: str | Path | None = None,
    command: str = "",
) -> Path:
    """Train, export ONNX, measure it through the service's path, write the card beside it; returns the ONNX path."""
    s = settings
    if not text.data_licence:
        raise TrainingError("say under which licence the training data may be used (--data-licence)")
    data = Path(data).resolve()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    renames = renames or {}
    if task == "detect":
        view, names = detection_view(data, out / "data.yaml", renames, val_split)
    else:
        view, names = classify_view(data, out / "dataset", renames, val_split)
    unknown = sorted(set(s.augment) - set(AUGMENTATIONS))
    if unknown:
        raise TrainingError(f"unknown augmentation {unknown}; known: {', '.join(AUGMENTATIONS)}")

    try:
        from ultralytics import YOLO  # heavy, optional: only needed for training
    except ImportError as exc:
        raise TrainingError(f"training needs torch and the train extra (models/README.md, Retraining): {exc}") from None
    prepare_offline(out / "config")

    model = s.model or DEFAULT_MODELS[task]
    run_dir = out / "runs" / text.name
    seconds = run_training(
        YOLO, model, run_dir, resume, init_weights=s.init_weights, data=str(view), epochs=s.epochs,
        imgsz=s.imgsz, batch=s.batch, workers=s.workers, seed=s.seed, val=s.val_each_epoch, verbose=True,
        **s.augment,
    )
    # The last epoch's weights: picking the best epoch on the split the card reports would flatter it.
    onnx_path = export_onnx(run_dir / "weights" / "last.pt", s.imgsz, dest, text.name)
    print(f"measuring {onnx_path.name} on the val split through the service's ONNX path", flush=True)
    metrics = [
        measure_detector(onnx_path, names, s.imgsz, data, split, renames, text) if task == "detect"
        else measure_classifier(onnx_path, names, data, split, renames, text)
        for split in (val_split, *measure_splits)
    ]
    previous_time = _previous_time(run_dir) if seconds == 0 else None
    training = TrainingInfo(
        command=command or f"brightkitchen models train --task {task} --data {data} --out {out}",
        settings={"task": task, "data": str(data), "val_split": val_split, "renames": renames,
                  **{k: v for k, v in asdict(s).items() if k != "augment"}, "model": model,
                  "augment": dict(s.augment), "pretrained": False, "amp": False},
        epochs=s.epochs,
        time=previous_time or f"{seconds / 60:.1f} min",
        machine=machine(),
    )
    training = with_previous_runs(training, s.init_weights)
    card = ModelCard(
        name=text.name,
        version=text.version,
        task=task,
        file=onnx_path.name,
        classes=names,
        input_size=s.imgsz,
        normalisation="rgb, 0..1, letterbox pad 114" if task == "detect"
        else "rgb, 0..1; crop = box grown by the config's expand, short side resized, centre-cropped",
        output_format="ultralytics-yolov8: (B, 4+nc, anchors), cx,cy,w,h in input pixels, sigmoid class scores"
        if task == "detect" else "ultralytics-cls: (B, nc) softmax probabilities",
        thresholds=Thresholds(score=text.score_threshold, iou=text.iou_threshold if task == "detect" else None),
        licence=f"{ULTRALYTICS_LICENCE}. Training data: {text.data_licence}",
        data=DataInfo(
            what=text.data_what or f"{task} set {data}",
            where=text.data_where or str(data),
            licence=text.data_licence,
            attribution=text.data_attribution,
        ),
        training=training,
        metrics=metrics,
        intended_use=text.intended_use or "not stated",
        limitations=list(text.limitations)
        or [f"Trained from scratch for {training.epochs} epochs; measured only on the set named under metrics."],
    )
    save_card(card, onnx_path.with_suffix(".yaml"))
    save_card(card, run_dir / "weights" / RUN_CARD)
    print(f"model: {onnx_path}\ncard: {onnx_path.with_suffix('.yaml')}", flush=True)
    return onnx_path


def _previous_time(run_dir: Path) -> str | None:
    card = run_dir / "weights" / RUN_CARD
    return load_card(card).training.time if card.is_file() else None


def _aug(pairs: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise TrainingError(f"--aug takes KEY=NUMBER, got {pair!r}") from None
        if not sep:
            raise TrainingError(f"--aug takes KEY=NUMBER, got {pair!r}")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainSettings()
    parser.add_argument("--task", choices=("detect", "classify"), required=True)
    parser.add_argument("--data", required=True, help="detect: a YOLO data.yaml; classify: a folder with train/ "
                        "and val/ holding one folder per class")
    parser.add_argument("--name", required=True, help="model name: the ONNX file, its card and the run folder")
    parser.add_argument("--out", required=True, help="working folder for the run (resumable)")
    parser.add_argument("--dest", help="folder to copy the ONNX model and its card into")
    parser.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                        help="give a dataset class the name the rules use (repeatable)")
    parser.add_argument("--val-split", default="val", help="split to measure on (default: val)")
    parser.add_argument("--measure-split", action="append", default=[], metavar="SPLIT",
                        help="another split of the data to measure on and record in the card (repeatable)")
    for name in ("epochs", "imgsz", "batch", "workers", "seed"):
        parser.add_argument(f"--{name}", type=int, default=getattr(d, name))
    parser.add_argument("--model", help="ultralytics model yaml, trained from random weights "
                        "(default yolov8n.yaml / yolov8n-cls.yaml)")
    parser.add_argument("--init-weights", help="start from the weights (.pt) of an earlier local run")
    parser.add_argument("--aug", action="append", default=[], metavar="KEY=VALUE",
                        help=f"augmentation setting of ultralytics ({', '.join(AUGMENTATIONS)})")
    parser.add_argument("--val-each-epoch", action="store_true", help="validate after every epoch (slower)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--version", default="0.1.0", help="model version for the card")
    parser.add_argument("--data-what", default="", help="card: what the training data shows")
    parser.add_argument("--data-where", default="", help="card: where the data came from (source, URL, owner)")
    parser.add_argument("--data-licence", required=True, help="card: the data's licence, e.g. 'CC BY 4.0' or "
                        "'own footage, all rights reserved'")
    parser.add_argument("--data-attribution", default="none given", help="card: attribution the licence requires")
    parser.add_argument("--intended-use", default="", help="card: what the model is for")
    parser.add_argument("--limitation", action="append", default=[], help="card: a known limitation (repeatable)")
    parser.add_argument("--score-threshold", type=float, default=0.25, help="card: score the service runs it at")
    parser.add_argument("--iou-threshold", type=float, default=0.5, help="card: NMS overlap (detectors)")


# Options that change what is trained or measured, in the order the recorded command lists them (not --resume:
# a resumed run is the same run).
COMMAND_OPTIONS = ("task", "data", "name", "out", "dest", "rename", "val_split", "measure_split", "epochs", "imgsz",
                   "batch", "workers", "seed", "model", "init_weights", "aug", "val_each_epoch")


def command_line(args: argparse.Namespace) -> str:
    """The command as the card records it (the card's own texts are left out: the card shows them)."""
    parts = ["brightkitchen", "models", "train"]
    for key in COMMAND_OPTIONS:
        value = getattr(args, key)
        flag = "--" + key.replace("_", "-")
        if value is None or value is False or value == []:
            continue
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            for item in value:
                parts += [flag, str(item)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> Path:
    settings = TrainSettings(
        epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, workers=args.workers, seed=args.seed,
        model=args.model, init_weights=args.init_weights, val_each_epoch=args.val_each_epoch,
        augment=_aug(args.aug),
    )
    text = CardText(
        name=args.name, version=args.version, data_what=args.data_what, data_where=args.data_where,
        data_licence=args.data_licence, data_attribution=args.data_attribution, intended_use=args.intended_use,
        limitations=tuple(args.limitation), score_threshold=args.score_threshold, iou_threshold=args.iou_threshold,
    )
    return train(args.task, args.data, args.out, text, settings=settings, renames=parse_renames(args.rename),
                 val_split=args.val_split, measure_splits=tuple(args.measure_split), resume=args.resume,
                 dest=args.dest, command=command_line(args))
