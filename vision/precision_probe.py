"""`auto` precision on OpenVINO's CPU runtime, decided by timing the model on this CPU.

A CPU flag says whether bf16 is computed natively, not whether it is faster. On an AMD EPYC with
avx512_bf16, OpenVINO ran the starter model 1.7 times faster in bf16 than in fp32; on an Intel Xeon with
avx512_bf16 whose AMX its hypervisor hides, bf16 was 1.2–1.5 times slower (benchmarks/RESULTS.md). So, where the
flags allow bf16, both precisions are timed once on the model (one thread, as an inference process runs it),
and bf16 is kept only if it is clearly faster: it costs a little accuracy (see benchmarks/precision_check.py),
so it has to earn it. The decision is kept in the model cache, keyed by the model file, the CPU and the
OpenVINO version, so the service starts without timing again.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from hashlib import sha256
from pathlib import Path

import numpy as np

from vision.quantize import file_sha256
from vision.runtime import RuntimePlan, cpu_flags, cpu_name, plan_runtime

log = logging.getLogger("vision.precision_probe")

BF16_MIN_SPEEDUP = 1.1  # bf16 must be at least this much faster than fp32 to be chosen
PROBE_BATCH = 4
PROBE_RUNS = 5
PROBE_SIZE = 320  # the input side when the model does not say


def probe_key(path: Path) -> str:
    import openvino as ov

    text = "|".join([file_sha256(path), cpu_name(), ",".join(sorted(cpu_flags())), ov.get_version()])
    return sha256(text.encode()).hexdigest()[:24]


def time_precisions(path: Path, precisions: tuple[str, ...], *, batch: int = PROBE_BATCH,
                    runs: int = PROBE_RUNS) -> dict[str, float]:
    """Milliseconds per image of the model in each precision (best of `runs` batches, taken in turns)."""
    from vision.openvino_backend import OpenVinoModel

    models = {p: OpenVinoModel(path, RuntimePlan("openvino", "openvino", p), threads=1) for p in precisions}
    first = next(iter(models.values()))
    side = first.square_size or PROBE_SIZE
    batch = first.input_shape[0] if isinstance(first.input_shape[0], int) else batch  # a model fixed to its batch
    blob = np.random.default_rng(0).random((batch, 3, side, side), dtype=np.float32)
    for model in models.values():
        model.run(blob)  # compiles the shape and warms the caches
    best = {p: float("inf") for p in precisions}
    for _ in range(runs):
        for p, model in models.items():  # in turns, so a burst of other load hits both
            t0 = time.perf_counter()
            model.run(blob)
            best[p] = min(best[p], (time.perf_counter() - t0) * 1000 / batch)
    return best


def model_plan(path: Path, provider: str, precision: str, cache_dir: Path | None) -> RuntimePlan:
    """plan_runtime's plan for a model file, with `auto`'s bf16 on OpenVINO checked by timing this model."""
    plan = plan_runtime(provider, precision)
    if precision == "auto" and plan.engine == "openvino" and plan.precision == "bf16":
        return replace(plan, precision=auto_openvino_precision(path, cache_dir))
    return plan


def auto_openvino_precision(path: Path, cache_dir: Path | None) -> str:
    """bf16 or fp32, whichever the timing (or the cached decision for this file, CPU and OpenVINO) picks."""
    path = Path(path)
    cached = Path(cache_dir) / f"precision-{probe_key(path)}.json" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        try:
            return str(json.loads(cached.read_text())["precision"])
        except (OSError, ValueError, KeyError):
            log.warning("ignoring an unreadable precision decision %s", cached)
    # In a process of its own, like the inference processes: OpenVINO's thread pool, once made in the
    # service's process, crashed it on exit (SIGSEGV after a graceful stop).
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            ms = pool.submit(time_precisions, path, ("fp32", "bf16")).result()
    except BrokenProcessPool:
        log.warning("timing %s in fp32 and bf16 crashed its process; using fp32 (not kept)", path.name)
        return "fp32"
    chosen = "bf16" if ms["fp32"] >= BF16_MIN_SPEEDUP * ms["bf16"] else "fp32"
    log.info("auto precision for %s on this CPU: %s (fp32 %.1f ms, bf16 %.1f ms per image, one thread)",
             path.name, chosen, ms["fp32"], ms["bf16"])
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps({"precision": chosen, "ms_per_image": ms, "cpu": cpu_name()}))
        except OSError as exc:
            log.warning("cannot keep the precision decision in %s: %s", cached, exc)
    return chosen
