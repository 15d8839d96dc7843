"""OpenVINO's own runtime on the CPU (the `openvino` package): fp32, bf16 and fp16 as inference precision
hints, int8 by running a QDQ model from vision/quantize.py.

Imported only when a plan picks OpenVINO, so the package stays optional for onnxruntime-only boxes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vision.runtime import ModelLoadError, RuntimePlan

HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


class OpenVinoModel:
    def __init__(self, path: Path, plan: RuntimePlan, *, threads: int = 0) -> None:
        import openvino as ov

        self.path = Path(path)
        self.plan = plan
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses for unreadable files
            raise ModelLoadError(f"cannot load ONNX model {self.path}: {exc}") from exc
        self.metadata = _rt_metadata(model)
        if len(model.inputs) != 1:
            raise ModelLoadError(f"{self.path}: expected one image input, the model has {len(model.inputs)}")
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.get_length() != 4:
            raise ModelLoadError(f"expected a 4-D NCHW image input, got shape {shape}")
        self.input_shape: list[int | str | None] = [d.get_length() if d.is_static else None for d in shape]
        self._core, self._model = core, model
        self._config = {
            "INFERENCE_PRECISION_HINT": HINTS[plan.precision],
            "PERFORMANCE_HINT": "LATENCY",
            # Pinned threads of several processes (or of other programs) end up on one core.
            "ENABLE_CPU_PINNING": False,
        }
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = threads
        # One compiled model per input height and width: static spatial axes let OpenVINO fold the anchor
        # arithmetic and pick its kernels once. The square (when known) is compiled now, so a model that
        # does not compile is refused at load; the canvases of other frame shapes when they first come.
        self._requests: dict[tuple[int, int], Any] = {}
        size = self.square_size = _square_size(self.input_shape, self.metadata)
        self._compiled = self._compile((size, size) if size is not None else None)
        if size is not None:
            self._requests[(size, size)] = self._compiled.create_infer_request()
        out_shape = self._compiled.outputs[0].get_partial_shape()
        self.output_shape: list[int | str | None] = [d.get_length() if d.is_static else None for d in out_shape]

    def _compile(self, spatial: tuple[int, int] | None) -> Any:
        model = self._model
        if spatial is not None and (self.input_shape[2] is None or self.input_shape[3] is None):
            model = model.clone()
            batch = self.input_shape[0] if isinstance(self.input_shape[0], int) else -1
            model.reshape([batch, 3, *spatial])
        try:
            return self._core.compile_model(model, "CPU", self._config)
        except Exception as exc:
            raise ModelLoadError(f"OpenVINO cannot compile {self.path} for input {spatial}: {exc}") from exc

    def _request_for(self, height: int, width: int) -> Any:
        request = self._requests.get((height, width))
        if request is None:
            request = self._requests[(height, width)] = self._compile((height, width)).create_infer_request()
        return request

    @property
    def providers(self) -> list[str]:
        return [f"OpenVINO CPU ({self._compiled.get_property('INFERENCE_PRECISION_HINT')})"]

    def run(self, blob: np.ndarray) -> np.ndarray:
        request = self._request_for(*blob.shape[2:])
        request.infer({0: np.ascontiguousarray(blob, dtype=np.float32)})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)


def _rt_metadata(model) -> dict[str, str]:  # noqa: ANN001 - openvino.Model
    if not model.has_rt_info(["framework"]):
        return {}
    framework = model.get_rt_info()["framework"]
    return {str(key): str(framework[key].astype(str)) for key in framework}


def _square_size(shape: list[int | str | None], meta: dict[str, str]) -> int | None:
    import ast

    h, w = shape[2], shape[3]
    if isinstance(h, int) and isinstance(w, int):
        return h if h == w else None
    if "imgsz" in meta:
        sides = {int(v) for v in ast.literal_eval(meta["imgsz"])}
        if len(sides) == 1:
            return sides.pop()
    return None
