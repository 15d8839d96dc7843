"""Detector throughput for each runtime, precision, batch size and number of inference processes, with
fp32 onnxruntime in one process as the baseline of the same run.

    python -m benchmarks.inference_bench                      # the built-in model, about 2 minutes
    python -m benchmarks.inference_bench --seconds 2 --batches 1,8 --json results.json

Each case times the whole detector call as the worker makes it (letterbox, inference, decode and NMS)
on rendered kitchen frames at model size (as the camera readers deliver them). Inference processes
(streams/inference.py) have one thread each; the in-process cases use the engine's default threads
(all cores) unless the row says 1 thread. "transfer" is the part of a pool call spent outside the
processes' detector calls: pickling, pipes, waking up. All cases are loaded first and timed in round-robin
passes, so a load that comes and goes on a shared machine falls on every case alike. "CPU ms per image"
is the CPU time this process and the pool's processes spent per image (idle spinning threads included):
what a case costs, and less disturbed by other programs than wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from models.cards import builtin_model_path, find_card
from streams.detectors import synthetic_calibration
from streams.inference import DetectorSpec, InferencePool
from vision.detector import YoloDetector
from vision.runtime import cpu_flags, cpu_name, openvino_installed, plan_runtime

RUNTIMES = (  # engine-provider, precision
    ("cpu", "fp32"),
    ("cpu", "int8"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
)
FLAGS_SHOWN = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


@dataclass
class Case:
    runtime: str
    precision: str
    processes: int
    threads: str
    batch: int
    calls: int
    ms_per_call_p50: float
    images_per_s: float
    vs_baseline: float = 0.0
    transfer_ms_p50: float | None = None
    cpu_ms_per_image: float = 0.0  # CPU time of this process and the pool's processes, per image


def machine() -> dict[str, object]:
    import onnxruntime

    info: dict[str, object] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "flags": [f for f in FLAGS_SHOWN if f in cpu_flags()],
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if openvino_installed():
        import openvino

        info["openvino"] = openvino.__version__.split("-")[0]
    return info


def machine_line() -> str:
    m = machine()
    return (f"machine: {m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags'])}; python {m['python']}, "  # type: ignore[arg-type]
            f"onnxruntime {m['onnxruntime']}, openvino {m.get('openvino', 'not installed')}; "
            f"load average {m['load_average']}")


def frames(count: int, size: int, camera: tuple[int, int] = (1280, 720)) -> list[np.ndarray]:
    """Kitchen frames of a camera of that (width, height), shrunk to model size as the readers hand them to
    the worker."""
    import cv2

    from models.synthetic import render_scene
    from streams.reader import analysis_size

    rng = np.random.default_rng(77)
    return [cv2.resize(render_scene(rng, *camera)[0], analysis_size(*camera, size)) for _ in range(count)]


def cpu_seconds(pids: list[int | None]) -> float:
    """CPU time (user + system) used so far by this process and by the given processes."""
    total = time.process_time()
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        if pid is None:
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def time_calls(call, seconds: float, pids: list[int | None], warmup: int = 2) -> tuple[list[float], float]:  # noqa: ANN001
    """Wall time of each call, and the CPU seconds all of them used."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    cpu0 = cpu_seconds(pids)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times, cpu_seconds(pids) - cpu0


@dataclass
class _Engine:
    label: str
    precision: str
    processes: int
    threads: int
    detector: YoloDetector | InferencePool


def run(model: str, batches: list[int], processes: list[int], seconds: float, cache_dir: Path,
        runtimes: tuple[tuple[str, str], ...] = RUNTIMES, rounds: int = 3) -> list[Case]:
    """Every case is loaded first, then timed in `rounds` round-robin passes of seconds / rounds each, so
    that a load that comes and goes on a shared machine falls on all cases alike."""
    path = builtin_model_path(model.removeprefix("builtin:")) if model.startswith("builtin:") else Path(model)
    card = find_card(path)
    names = tuple(card.classes) if card else None
    threshold = card.thresholds.score if card else 0.25
    images = frames(max(batches), card.input_size if card else 320)
    sizes = [(1280, 720)] * len(images)
    calibration = synthetic_calibration()
    if ("cpu", "fp32") not in runtimes:
        runtimes = (("cpu", "fp32"), *runtimes)  # the baseline is always measured
    engines: list[_Engine] = []
    try:
        for provider, precision in runtimes:
            if provider == "openvino" and not openvino_installed():
                continue
            plan = plan_runtime(provider, precision)
            label = plan.engine if provider == "openvino" else f"onnxruntime {provider}"
            reference = (provider, precision) == ("cpu", "fp32")
            for n in sorted({1, *processes}) if reference else processes:  # the baseline runs in one process
                baseline_row = n == 1 and reference
                for threads in [0, 1] if baseline_row else [0 if n == 1 else 1]:
                    spec = DetectorSpec(path=str(path), plan=plan, class_names=names, score_threshold=threshold,
                                        threads=threads, max_batch=max(batches), cache_dir=str(cache_dir),
                                        calibration_key=calibration.key)
                    detector: YoloDetector | InferencePool = spec.build(calibration)  # makes int8 once
                    if n > 1:
                        detector = InferencePool(spec, n, label="bench")
                    engines.append(_Engine(label, precision, n, threads, detector))
        times: dict[tuple[int, int], list[float]] = {}
        cpu: dict[tuple[int, int], float] = {}
        transfers: dict[tuple[int, int], list[float]] = {}
        for r in range(rounds):
            print(f"round {r + 1} of {rounds}", flush=True)
            for i, engine in enumerate(engines):
                for batch in batches:
                    pool = engine.detector if isinstance(engine.detector, InferencePool) else None
                    if pool is not None:
                        pool.stats.transfer_s.clear()
                    det = engine.detector
                    pids = pool.pids() if pool is not None else []
                    took, used = time_calls(lambda d=det, b=batch: d.detect(images[:b], sizes[:b]), seconds / rounds,
                                            pids)
                    times.setdefault((i, batch), []).extend(took)
                    cpu[(i, batch)] = cpu.get((i, batch), 0.0) + used
                    if pool is not None:
                        transfers.setdefault((i, batch), []).extend(pool.stats.transfer_s)
    finally:
        for engine in engines:
            if isinstance(engine.detector, InferencePool):
                engine.detector.close()
    cases = []
    for i, engine in enumerate(engines):
        for batch in batches:
            p50 = statistics.median(times[(i, batch)])
            transfer = transfers.get((i, batch))
            cases.append(Case(engine.label, engine.precision, engine.processes,
                              "default" if engine.threads == 0 else str(engine.threads), batch,
                              len(times[(i, batch)]), p50 * 1000, batch / p50,
                              transfer_ms_p50=statistics.median(transfer) * 1000 if transfer else None,
                              cpu_ms_per_image=cpu[(i, batch)] * 1000 / (batch * len(times[(i, batch)]))))
    baseline = {c.batch: c.images_per_s for c in cases
                if (c.runtime, c.precision, c.processes, c.threads) == ("onnxruntime cpu", "fp32", 1, "default")}
    for c in cases:
        c.vs_baseline = c.images_per_s / baseline[c.batch] if c.batch in baseline else float("nan")
    return cases


def table(cases: list[Case]) -> str:
    lines = ["| runtime | precision | processes | threads each | batch | ms per call (p50) | images/s "
             "| vs fp32 onnxruntime, 1 process, same batch | transfer ms (p50) | CPU ms per image |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        transfer = f"{c.transfer_ms_p50:.2f}" if c.transfer_ms_p50 is not None else "—"
        lines.append(f"| {c.runtime} | {c.precision} | {c.processes} | {c.threads} | {c.batch} "
                     f"| {c.ms_per_call_p50:.1f} | {c.images_per_s:.0f} | {c.vs_baseline:.2f}x | {transfer} "
                     f"| {c.cpu_ms_per_image:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Detector throughput per runtime, precision, batch and processes.")
    parser.add_argument("--model", default="builtin:kitchen-starter")
    parser.add_argument("--batches", default="1,4,8", help="comma-separated batch sizes")
    parser.add_argument("--processes", default=f"1,{max(2, os.cpu_count() or 1)}", help="comma-separated counts")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per case, over all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin passes over the cases")
    parser.add_argument("--cache-dir", type=Path, default=Path("var/model-cache"), help="int8 files are kept here")
    parser.add_argument("--runtimes", default=",".join(f"{p}-{q}" for p, q in RUNTIMES),
                        help="comma-separated PROVIDER-PRECISION (cpu-fp32 is always run: the baseline)")
    parser.add_argument("--json", type=Path, help="also write the machine and the cases here")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    processes = [int(p) for p in args.processes.split(",")]
    start = machine()
    print(machine_line(), flush=True)
    runtimes = tuple(tuple(r.split("-", 1)) for r in args.runtimes.split(","))
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        parser.error(f"unknown runtimes {unknown}; choose from {[f'{p}-{q}' for p, q in RUNTIMES]}")
    cases = run(args.model, batches, processes, args.seconds, args.cache_dir, runtimes,  # type: ignore[arg-type]
                args.rounds)
    end_load = [round(x, 2) for x in os.getloadavg()]
    print(f"\nmodel {args.model}; load average at start {start['load_average']}, at end {end_load}\n")
    print(table(cases))
    if args.json:
        args.json.write_text(json.dumps({"machine": start, "load_average_end": end_load, "model": args.model,
                                         "cases": [asdict(c) for c in cases]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
