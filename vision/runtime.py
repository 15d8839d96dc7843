"""Inference runtimes: which engine, execution provider and precision run a model, and batched runs on it.

Two engines run the same ONNX file:
- onnxruntime, with the CPU, CUDA, TensorRT or OpenVINO execution provider;
- OpenVINO's own runtime (the `openvino` package, vision/openvino_backend.py) on the CPU.

`plan_runtime` turns the configured provider and precision ("auto" or a name) into a `RuntimePlan`, and
`open_model` loads a file by a plan into an `InferenceModel`. The auto rules:
- provider: TensorRT, then CUDA when this onnxruntime build offers them (a GPU box with onnxruntime-gpu),
  else OpenVINO when the `openvino` package is installed (or onnxruntime offers its OpenVINO provider),
  else onnxruntime's CPU provider;
- precision: fp16 on TensorRT, fp32 on CUDA, bf16 on OpenVINO's runtime when the CPU computes bf16
  natively (avx512_bf16 or AMX), else fp32 (also on onnxruntime's OpenVINO provider, which has no bf16).
  int8 is never automatic: it changes results with its calibration images, so it is chosen in the config
  after checking it on your own images.
fp32 on onnxruntime's CPU provider is the reference the others are checked against.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from vision.quantize import Calibration, ConversionError, converted_model

log = logging.getLogger("vision.runtime")

PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
# "auto" takes the first of these that is available.
AUTO_ORDER = ("tensorrt", "cuda", "openvino", "cpu")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# What each provider can run; int8 runs a QDQ model made by vision/quantize.py, fp16 on CUDA an fp16 copy.
SUPPORTED_PRECISIONS: dict[str, tuple[str, ...]] = {
    "cpu": ("fp32", "int8"),
    "cuda": ("fp32", "fp16"),
    "tensorrt": ("fp32", "fp16", "int8"),
    "openvino": ("fp32", "bf16", "fp16", "int8"),
}
# onnxruntime's OpenVINO provider (the onnxruntime-openvino build) takes FP32 or FP16 as its precision.
ORT_OPENVINO_PRECISIONS = ("fp32", "fp16", "int8")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


class ModelLoadError(ValueError):
    """An ONNX model file is missing, unreadable or not a valid model."""


# ---------------------------------------------------------------------------------------------------
# What the machine offers
# ---------------------------------------------------------------------------------------------------


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_CPU_FLAGS)


# ---------------------------------------------------------------------------------------------------
# Choosing engine, providers and precision
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimePlan:
    engine: str  # "onnxruntime" or "openvino"
    provider: str  # cpu, cuda, tensorrt, openvino: what actually runs it
    precision: str  # fp32, fp16, bf16, int8
    providers: tuple[str, ...] = ()  # onnxruntime's provider chain, best first (empty for openvino)

    @property
    def converted(self) -> str | None:
        """The converted file this plan runs ("int8", "fp16") or None for the source file.

        TensorRT makes its fp16 engine from the fp32 file itself; OpenVINO's bf16 and fp16 are hints."""
        if self.precision == "int8":
            return "int8"
        if self.precision == "fp16" and self.provider == "cuda":
            return "fp16"
        return None

    def describe(self) -> str:
        where = self.providers[0] if self.providers else "OpenVINO CPU"
        return f"{self.engine} {where} {self.precision}"


def resolve_providers(provider: str, available: Sequence[str] | None = None) -> list[str]:
    """ORT provider list for a provider name, best first, always ending with the CPU provider.

    A known provider that this onnxruntime build does not offer falls back to CPU with one warning.
    """
    available = list(ort.get_available_providers() if available is None else available)
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


def plan_runtime(
    provider: str = "auto",
    precision: str = "auto",
    *,
    available: Sequence[str] | None = None,
    openvino: bool | None = None,
    flags: frozenset[str] | None = None,
) -> RuntimePlan:
    """The engine, providers and precision for a configured provider and precision (see the module doc).

    available, openvino and flags default to this machine (onnxruntime's providers, whether the openvino
    package is installed, the CPU's flags); tests pass them."""
    available = list(ort.get_available_providers() if available is None else available)
    openvino = openvino_installed() if openvino is None else openvino
    if precision != "auto" and precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected auto or one of {list(PRECISIONS)}")
    if provider not in ("auto", *PROVIDERS):
        raise ValueError(f"unknown execution provider {provider!r}; expected auto or one of {sorted(PROVIDERS)}")

    if provider == "auto":
        gpu = next((p for p in ("tensorrt", "cuda") if PROVIDERS[p] in available), None)
        if gpu:
            plan = RuntimePlan("onnxruntime", gpu, "fp32", tuple(resolve_providers(gpu, available)))
        elif openvino:
            plan = RuntimePlan("openvino", "openvino", "fp32")
        else:
            chain = resolve_providers("auto", available)
            name = next(k for k, v in PROVIDERS.items() if v == chain[0])
            plan = RuntimePlan("onnxruntime", name, "fp32", tuple(chain))
    elif provider == "openvino" and openvino:
        plan = RuntimePlan("openvino", "openvino", "fp32")
    else:
        chain = resolve_providers(provider, available)
        name = next(k for k, v in PROVIDERS.items() if v == chain[0])
        plan = RuntimePlan("onnxruntime", name, "fp32", tuple(chain))

    if precision == "auto":
        chosen = {"tensorrt": "fp16", "cuda": "fp32", "cpu": "fp32"}.get(plan.provider)
        if plan.engine == "openvino":
            chosen = "bf16" if native_bf16(flags) else "fp32"
        return RuntimePlan(plan.engine, plan.provider, chosen or "fp32", plan.providers)
    supported = SUPPORTED_PRECISIONS[plan.provider]
    if plan.provider == "openvino" and plan.engine == "onnxruntime":
        supported = ORT_OPENVINO_PRECISIONS
    if precision not in supported:
        if plan.provider != provider and provider != "auto":
            # The configured provider is missing here (already warned): keep the model running in fp32.
            log.warning("precision %s is not available on the fallback provider %s; using fp32", precision,
                        plan.provider)
            return RuntimePlan(plan.engine, plan.provider, "fp32", plan.providers)
        raise ValueError(
            f"precision {precision} is not supported on provider {plan.provider} (it supports "
            f"{', '.join(supported)}); bf16 needs OpenVINO, fp16 a GPU or OpenVINO"
        )
    if precision == "bf16" and not native_bf16(flags):
        log.warning("this CPU has no native bf16 (%s): OpenVINO will emulate it, slower than fp32",
                    " or ".join(BF16_CPU_FLAGS))
    return RuntimePlan(plan.engine, plan.provider, precision, plan.providers)


# ---------------------------------------------------------------------------------------------------
# Loaded models
# ---------------------------------------------------------------------------------------------------


class InferenceModel(Protocol):
    """A loaded model, whatever engine runs it."""

    plan: RuntimePlan
    path: Path  # the file actually loaded (a converted one for int8 / CUDA fp16)
    input_shape: list[int | str | None]
    output_shape: list[int | str | None]
    metadata: dict[str, str]

    @property
    def providers(self) -> list[str]: ...

    def run(self, blob: np.ndarray) -> np.ndarray:
        """The first output for an NCHW float32 batch (any length the model accepts)."""
        ...


class OrtModel:
    def __init__(self, session: ort.InferenceSession, plan: RuntimePlan, path: Path) -> None:
        self.session = session
        self.plan = plan
        self.path = path
        model_input = session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_shape = list(model_input.shape)
        self.output_shape = list(session.get_outputs()[0].shape)
        self.metadata = dict(session.get_modelmeta().custom_metadata_map)
        self._dtype = np.float16 if model_input.type == "tensor(float16)" else np.float32

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, blob: np.ndarray) -> np.ndarray:
        result = self.session.run(None, {self.input_name: blob.astype(self._dtype, copy=False)})[0]
        return np.asarray(result, dtype=np.float32)


def provider_options(plan: RuntimePlan, cache_dir: Path | None) -> list[dict[str, Any]]:
    """Options for each provider of the plan's chain: TensorRT builds fp16 / int8 engines and caches them."""
    options: list[dict[str, Any]] = []
    for name in plan.providers:
        if name == PROVIDERS["tensorrt"]:
            trt: dict[str, Any] = {
                "trt_fp16_enable": plan.precision in ("fp16", "int8"),
                "trt_int8_enable": plan.precision == "int8",
            }
            if cache_dir is not None:
                trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir / "tensorrt"))
            options.append(trt)
        elif name == PROVIDERS["openvino"]:
            options.append({"device_type": "CPU", "precision": "FP16" if plan.precision == "fp16" else "FP32"})
        else:
            options.append({})
    return options


def create_session(
    path: str | Path,
    provider: str = "auto",
    threads: int = 0,
    *,
    providers: Sequence[str] | None = None,
    options: Sequence[dict[str, Any]] | None = None,
) -> ort.InferenceSession:
    """Load an ONNX model on onnxruntime. threads sets intra-op threads (0 = ORT default); providers (a
    resolved chain) overrides provider."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    chain = list(providers) if providers is not None else resolve_providers(provider)
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = threads
    session_options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            str(path),
            sess_options=session_options,
            providers=chain,
            provider_options=list(options) if options is not None else None,
        )
    except Exception as exc:  # ORT raises its own exception types for bad protobufs and graphs
        raise ModelLoadError(f"cannot load ONNX model {path}: {exc}") from exc


def open_model(
    path: str | Path,
    plan: RuntimePlan | None = None,
    *,
    threads: int = 0,
    cache_dir: str | Path | None = None,
    calibration: Calibration | None = None,
) -> InferenceModel:
    """Load a model file by a plan (default: the auto plan of this machine). Converted files (int8, CUDA
    fp16) and TensorRT engines are kept in cache_dir; int8 calibrates on calibration on a cache miss."""
    path = Path(path)
    plan = plan or plan_runtime()
    cache = Path(cache_dir) if cache_dir is not None else None
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    loaded = path
    if plan.converted:
        if cache is None:
            raise ModelLoadError(f"{path.name}: precision {plan.precision} needs a cache folder for its converted file")
        try:
            loaded = converted_model(path, plan.converted, cache, calibration)
        except ConversionError as exc:
            raise ModelLoadError(str(exc)) from exc
        except Exception as exc:  # onnx and the quantiser raise many types for graphs they cannot handle
            raise ModelLoadError(f"{path.name}: cannot make its {plan.converted} version: {exc}") from exc
    if plan.engine == "openvino":
        from vision.openvino_backend import OpenVinoModel

        return OpenVinoModel(loaded, plan, threads=threads)
    session = create_session(loaded, threads=threads, providers=plan.providers, options=provider_options(plan, cache))
    return OrtModel(session, plan, loaded)


# ---------------------------------------------------------------------------------------------------
# Model metadata (onnxruntime sessions and loaded models alike)
# ---------------------------------------------------------------------------------------------------


def metadata(model: ort.InferenceSession | InferenceModel) -> dict[str, str]:
    """The model's custom metadata (ultralytics stores names, imgsz, task and more there)."""
    if isinstance(model, ort.InferenceSession):
        return dict(model.get_modelmeta().custom_metadata_map)
    return dict(model.metadata)


def _input_shape(model: ort.InferenceSession | InferenceModel) -> list[Any]:
    if isinstance(model, ort.InferenceSession):
        return list(model.get_inputs()[0].shape)
    return list(model.input_shape)


def class_names_from_metadata(model: ort.InferenceSession | InferenceModel) -> list[str] | None:
    """Class names from ultralytics' "names" metadata, a dict literal like "{0: 'person', 1: 'car'}"."""
    raw = metadata(model).get("names")
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


def square_input_size(model: ort.InferenceSession | InferenceModel, input_size: int | None) -> int:
    """Side of the square model input: the static shape when the model has one, else input_size,
    else ultralytics' "imgsz" metadata."""
    shape = _input_shape(model)
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
    imgsz = metadata(model).get("imgsz")
    if imgsz is not None:
        sides = {int(v) for v in ast.literal_eval(imgsz)}
        if len(sides) == 1:
            return sides.pop()
    raise ModelLoadError("the model's input size is dynamic and no input_size was given")


class BatchRunner:
    """Runs a model on any number of images: one call per chunk of at most max_batch for models with
    a dynamic batch axis; for models exported with a fixed batch, chunks of exactly that size (padded)."""

    def __init__(self, model: InferenceModel, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        batch_dim = model.input_shape[0]
        self.model = model
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) else None
        self.chunk = self.fixed_batch or max_batch

    def run(self, blob: np.ndarray) -> np.ndarray:
        """First output of the model for an NCHW float32 blob of any length."""
        outputs = []
        for start in range(0, len(blob), self.chunk):
            part = blob[start : start + self.chunk]
            n = len(part)
            if self.fixed_batch is not None and n < self.fixed_batch:
                part = np.concatenate([part, np.zeros((self.fixed_batch - n, *part.shape[1:]), part.dtype)])
            outputs.append(self.model.run(part)[:n])
        return np.concatenate(outputs)
