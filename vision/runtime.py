"""ONNX Runtime sessions: execution provider choice, threads, model metadata and batched runs."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger("vision.runtime")

PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
# "auto" takes the first of these that this onnxruntime build offers.
AUTO_ORDER = ("tensorrt", "cuda", "openvino", "cpu")


class ModelLoadError(ValueError):
    """An ONNX model file is missing, unreadable or not a valid model."""


def resolve_providers(provider: str) -> list[str]:
    """ORT provider list for a provider name, best first, always ending with the CPU provider.

    A known provider that this onnxruntime build does not offer falls back to CPU with one warning.
    """
    available = ort.get_available_providers()
    if provider == "auto":
        for name in AUTO_ORDER:
            if PROVIDERS[name] in available:
                provider = name
                break
    if provider not in PROVIDERS:
        raise ValueError(f"unknown execution provider {provider!r}; expected auto or one of {sorted(PROVIDERS)}")
    wanted = PROVIDERS[provider]
    if wanted not in available:
        log.warning(
            "provider %s not available (available: %s); falling back to CPUExecutionProvider",
            provider,
            ", ".join(available),
        )
        return [PROVIDERS["cpu"]]
    chain = [wanted]
    # TensorRT hands the layers it cannot build to CUDA, then everything else to CPU.
    if provider == "tensorrt" and PROVIDERS["cuda"] in available:
        chain.append(PROVIDERS["cuda"])
    if wanted != PROVIDERS["cpu"]:
        chain.append(PROVIDERS["cpu"])
    return chain


def create_session(path: str | Path, provider: str = "auto", threads: int = 0) -> ort.InferenceSession:
    """Load an ONNX model on the chosen provider. threads sets intra-op threads (0 = ORT default)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    providers = resolve_providers(provider)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own exception types for bad protobufs and graphs
        raise ModelLoadError(f"cannot load ONNX model {path}: {exc}") from exc


def metadata(session: ort.InferenceSession) -> dict[str, str]:
    """The model's custom metadata (ultralytics stores names, imgsz, task and more there)."""
    return dict(session.get_modelmeta().custom_metadata_map)


def class_names_from_metadata(session: ort.InferenceSession) -> list[str] | None:
    """Class names from ultralytics' "names" metadata, a dict literal like "{0: 'person', 1: 'car'}"."""
    raw = metadata(session).get("names")
    if raw is None:
        return None
    try:
        parsed = ast.literal_eval(raw)
    except (ValueError, SyntaxError) as exc:
        raise ModelLoadError(f"model metadata 'names' is not a dict or list literal: {raw[:80]!r}") from exc
    if isinstance(parsed, dict):
        ids = sorted(int(k) for k in parsed)
        if ids != list(range(len(ids))):
            raise ModelLoadError(f"model metadata 'names' has non-contiguous class ids: {ids[:10]}")
        return [str(parsed[k] if k in parsed else parsed[str(k)]) for k in ids]
    if isinstance(parsed, list | tuple):
        return [str(n) for n in parsed]
    raise ModelLoadError(f"model metadata 'names' is not a dict or list: {raw[:80]!r}")


def square_input_size(session: ort.InferenceSession, input_size: int | None) -> int:
    """Side of the square model input: the static shape when the model has one, else input_size,
    else ultralytics' "imgsz" metadata."""
    shape = session.get_inputs()[0].shape
    if len(shape) != 4:
        raise ModelLoadError(f"expected a 4-D NCHW image input, got shape {shape}")
    h, w = shape[2], shape[3]
    if isinstance(h, int) and isinstance(w, int):
        if h != w:
            raise ModelLoadError(f"only square model inputs are supported, got {h}x{w}")
        if input_size is not None and input_size != h:
            raise ValueError(f"input_size {input_size} differs from the model's fixed input size {h}")
        return h
    if input_size is not None:
        return input_size
    imgsz = metadata(session).get("imgsz")
    if imgsz is not None:
        sides = {int(v) for v in ast.literal_eval(imgsz)}
        if len(sides) == 1:
            return sides.pop()
    raise ModelLoadError("the model's input size is dynamic and no input_size was given")


class BatchRunner:
    """Runs a session on any number of images: one call per chunk of at most max_batch for models with
    a dynamic batch axis; for models exported with a fixed batch, chunks of exactly that size (padded)."""

    def __init__(self, session: ort.InferenceSession, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        model_input = session.get_inputs()[0]
        batch_dim = model_input.shape[0]
        self.session = session
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) else None
        self.chunk = self.fixed_batch or max_batch
        self.input_name = model_input.name
        self.input_dtype = np.float16 if model_input.type == "tensor(float16)" else np.float32

    def run(self, blob: np.ndarray) -> np.ndarray:
        """First output of the model for an NCHW float32 blob of any length."""
        outputs = []
        for start in range(0, len(blob), self.chunk):
            part = blob[start : start + self.chunk]
            n = len(part)
            if self.fixed_batch is not None and n < self.fixed_batch:
                part = np.concatenate([part, np.zeros((self.fixed_batch - n, *part.shape[1:]), part.dtype)])
            result = self.session.run(None, {self.input_name: part.astype(self.input_dtype, copy=False)})[0]
            outputs.append(np.asarray(result, dtype=np.float32)[:n])
        return np.concatenate(outputs)
