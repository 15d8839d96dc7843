"""Inference processes: N processes, each with its own copy of one detector, sharing the batches of a worker.

Two single-thread processes beat one process with two threads on the same cores (no intra-op barriers
between layers), so a model with `processes: N` runs in N spawned processes. Each batch from the worker
loop is split into N contiguous parts, sent over a pipe (frames are already at model size, ~170 kB each),
letterboxed, run and decoded in the processes, and the boxes come back.

A process that dies, or does not answer within the timeout (it is killed), is restarted in the background
with a growing back-off; the frames it held are **dropped**, not retried: a frame that crashed a process
could crash its replacement too, and by the time it would be retried a newer frame of the same camera is
waiting. Dropped frames are counted (`brightkitchen_inference_frames_dropped_total`) and come back as
None. While a process restarts, the other processes take the whole batch.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from brightkitchen.metrics import INFERENCE_DROPPED, INFERENCE_RESTARTS
from vision.detections import Detections
from vision.detector import YoloDetector
from vision.quantize import Calibration
from vision.runtime import ModelLoadError, RuntimePlan

log = logging.getLogger("streams.inference")

START_TIMEOUT_S = 120.0  # spawning, imports, model load (int8 files are made by the parent beforehand)
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_CONTEXT = mp.get_context("spawn")  # never fork a process that runs reader threads


@dataclass(frozen=True)
class DetectorSpec:
    """Everything needed to build the same YoloDetector in another process (picklable)."""

    path: str
    plan: RuntimePlan
    class_names: tuple[str, ...] | None = None
    input_size: int | None = None
    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    threads: int = 0
    max_batch: int = 8
    cache_dir: str | None = None
    calibration_key: str | None = None  # names the int8 file in the cache (the parent makes it first)

    def build(self, calibration: Calibration | None = None) -> YoloDetector:
        """The detector; calibration is needed only to make an int8 file the cache does not have yet."""
        if calibration is None and self.calibration_key is not None:
            calibration = Calibration(self.calibration_key, _no_calibration_images)
        return YoloDetector(
            self.path,
            class_names=list(self.class_names) if self.class_names is not None else None,
            input_size=self.input_size,
            score_threshold=self.score_threshold,
            iou_threshold=self.iou_threshold,
            threads=self.threads,
            max_batch=self.max_batch,
            plan=self.plan,
            cache_dir=self.cache_dir,
            calibration=calibration,
        )


def _no_calibration_images() -> list[np.ndarray]:
    raise ModelLoadError("the int8 file is missing from the cache: it is made before the processes start")


def _serve(spec: DetectorSpec, conn: Connection) -> None:
    """A process's life: build the detector, say ready, then answer (job, frames, sizes) until None."""
    try:
        detector = spec.build()
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", {"names": detector.names, "input_size": detector.input_size,
                         "providers": detector.providers, "loaded_path": str(detector.loaded_path)}))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent went away
        if message is None:
            return
        job, frames, sizes = message
        t0 = time.perf_counter()
        try:
            results = detector.detect(frames, sizes)
            payload: Any = [(d.xyxy, d.scores, d.class_ids) for d in results]
            error = None
        except Exception as exc:  # a bad frame fails its part of the batch, not the process
            payload, error = None, f"{type(exc).__name__}: {exc}"
        conn.send((job, payload, error, time.perf_counter() - t0))


def _send_quietly(conn: Connection, message: Any) -> None:
    try:
        conn.send(message)
    except (OSError, EOFError, ValueError):
        pass  # the process is gone: the reader side sees it and counts the frames


@dataclass
class _Slot:
    index: int
    process: Any = None  # multiprocessing.Process
    conn: Connection | None = None
    sender: threading.Thread | None = None  # the thread writing the current batch into the pipe
    ready: bool = False
    failures: int = 0
    restarting: bool = False


@dataclass
class PoolStats:
    calls: int = 0
    frames_dropped: int = 0
    restarts: int = 0
    # Round-trip time minus the time the processes spent detecting: pickling, pipes, scheduling.
    transfer_s: list[float] = field(default_factory=list)


class InferencePool:
    """A detector run by N processes; detect() has YoloDetector's signature, with None for dropped frames."""

    def __init__(self, spec: DetectorSpec, processes: int, *, timeout_s: float = 10.0, label: str = "model") -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.spec = spec
        self.timeout_s = timeout_s
        self.label = label
        self.stats = PoolStats()
        self._lock = threading.Lock()
        self._call_lock = threading.Lock()  # one batch at a time: callers in several threads take turns
        self._closed = False
        self._job = 0
        self._slots = [_Slot(i) for i in range(processes)]
        info: dict[str, Any] | None = None
        try:
            for slot in self._slots:
                self._spawn(slot)
            for slot in self._slots:
                info = self._await_ready(slot, START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise
        assert info is not None
        self._names: list[str] = list(info["names"])
        self._input_size: int = int(info["input_size"])
        self._providers: list[str] = list(info["providers"])
        self._loaded_path = Path(info["loaded_path"])
        self.plan = spec.plan
        self.path = Path(spec.path)
        self.score_threshold = spec.score_threshold
        self.iou_threshold = spec.iou_threshold

    # -- what YoloDetector offers ------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self._names)

    @property
    def input_size(self) -> int:
        return self._input_size

    @property
    def providers(self) -> list[str]:
        return list(self._providers)

    @property
    def loaded_path(self) -> Path:
        return self._loaded_path

    @property
    def processes(self) -> int:
        return len(self._slots)

    def live_processes(self) -> int:
        return sum(1 for s in self._slots if s.ready)

    def pids(self) -> list[int | None]:
        return [s.process.pid if s.process is not None and s.ready else None for s in self._slots]

    def detect(
        self, frames: Sequence[np.ndarray], orig_sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[Detections | None]:
        """Boxes for each frame, or None for a frame whose process died, hung or failed on it."""
        if not frames:
            return []
        with self._call_lock:
            return self._detect(frames, orig_sizes)

    def _detect(
        self, frames: Sequence[np.ndarray], orig_sizes: Sequence[tuple[int, int]] | None
    ) -> list[Detections | None]:
        sizes = list(orig_sizes) if orig_sizes is not None else [(f.shape[1], f.shape[0]) for f in frames]
        if len(sizes) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(sizes)} original sizes")
        results: list[Detections | None] = [None] * len(frames)
        live = [s for s in self._slots if s.ready]
        if not live:
            self._drop(len(frames), "no_process")
            return results
        t0 = time.perf_counter()
        self._job += 1
        parts = np.array_split(np.arange(len(frames)), min(len(live), len(frames)))
        pending: dict[Connection, tuple[_Slot, np.ndarray]] = {}
        for slot, rows in zip(live, parts, strict=False):
            assert slot.conn is not None
            # A batch is larger than a pipe's buffer: written by a thread, a hung process cannot block the
            # loop (the write ends when the process is killed).
            message = (self._job, [frames[i] for i in rows], [sizes[i] for i in rows])
            slot.sender = threading.Thread(target=_send_quietly, args=(slot.conn, message), daemon=True)
            slot.sender.start()
            pending[slot.conn] = (slot, rows)
        busy_s = 0.0
        deadline = time.monotonic() + self.timeout_s
        while pending:
            ready = wait(list(pending), timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                for slot, rows in pending.values():
                    log.error("%s: inference process %d gave no answer in %.1f s; killing it, %d frames dropped",
                              self.label, slot.index, self.timeout_s, len(rows))
                    self._lost(slot, len(rows), "timeout")
                break
            for conn in ready:
                slot, rows = pending.pop(conn)  # type: ignore[arg-type]
                try:
                    job, payload, error, spent = conn.recv()  # type: ignore[union-attr]
                except (OSError, EOFError):
                    log.error("%s: inference process %d died; %d frames dropped", self.label, slot.index, len(rows))
                    self._lost(slot, len(rows), "died")
                    continue
                if job != self._job:  # cannot happen: a slot gets one job at a time
                    self._lost(slot, len(rows), "protocol")
                    continue
                busy_s = max(busy_s, spent)
                slot.failures = 0
                if error is not None:
                    log.error("%s: inference failed on %d frames: %s", self.label, len(rows), error)
                    self._drop(len(rows), "error")
                    continue
                for i, (xyxy, scores, class_ids) in zip(rows.tolist(), payload, strict=True):
                    results[i] = Detections(xyxy, scores, class_ids)
        self.stats.calls += 1
        self.stats.transfer_s.append(max(0.0, time.perf_counter() - t0 - busy_s))
        del self.stats.transfer_s[:-1000]
        return results

    def close(self) -> None:
        """Stop every process (politely, then by force) and wait for them."""
        with self._lock:
            self._closed = True
        for slot in self._slots:
            if slot.conn is not None and slot.ready:
                threading.Thread(target=_send_quietly, args=(slot.conn, None), daemon=True).start()
            slot.ready = False
        for slot in self._slots:
            self._end(slot, grace_s=2.0)

    # -- processes ---------------------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        parent, child = _CONTEXT.Pipe(duplex=True)
        process = _CONTEXT.Process(
            target=_serve, args=(self.spec, child), name=f"inference-{self.label}-{slot.index}", daemon=True
        )
        process.start()
        child.close()
        slot.process, slot.conn, slot.ready = process, parent, False

    def _await_ready(self, slot: _Slot, timeout_s: float) -> dict[str, Any]:
        assert slot.conn is not None
        if not slot.conn.poll(timeout_s):
            raise ModelLoadError(f"{self.label}: inference process did not load the model in {timeout_s:.0f} s")
        try:
            kind, info = slot.conn.recv()
        except (EOFError, OSError):
            raise ModelLoadError(f"{self.label}: inference process exited while loading the model") from None
        if kind != "ready":
            raise ModelLoadError(f"{self.label}: {info}")
        slot.ready = True
        return info

    def _drop(self, count: int, reason: str) -> None:
        self.stats.frames_dropped += count
        INFERENCE_DROPPED.labels(self.label, reason).inc(count)

    def _end(self, slot: _Slot, grace_s: float = 0.0) -> None:
        """Stop a slot's process (killed after grace_s) and release its pipe once no thread writes to it."""
        if slot.process is not None:
            slot.process.join(timeout=grace_s)
            if slot.process.is_alive():
                slot.process.kill()
            slot.process.join(timeout=5)
        if slot.sender is not None:
            slot.sender.join(timeout=5)  # its write fails as soon as the process is gone
            slot.sender = None
        if slot.conn is not None:
            slot.conn.close()
            slot.conn = None

    def _lost(self, slot: _Slot, frames: int, reason: str) -> None:
        """A process that died or hung: count its frames; it is killed and restarted off the loop's thread."""
        self._drop(frames, reason)
        slot.ready = False
        with self._lock:
            if self._closed or slot.restarting:
                return
            slot.restarting = True
        threading.Thread(target=self._restart, args=(slot,), name=f"restart-{self.label}", daemon=True).start()

    def _restart(self, slot: _Slot) -> None:
        self._end(slot)
        while True:
            delay = RESTART_BACKOFF_S[min(slot.failures, len(RESTART_BACKOFF_S) - 1)]
            slot.failures += 1
            time.sleep(delay)
            with self._lock:
                if self._closed:
                    slot.restarting = False
                    return
                self._spawn(slot)
            try:
                self._await_ready(slot, START_TIMEOUT_S)
            except ModelLoadError as exc:
                log.error("%s: inference process %d did not restart: %s", self.label, slot.index, exc)
                self._end(slot)
                continue
            with self._lock:
                closed = self._closed
                slot.restarting = False
            self.stats.restarts += 1
            INFERENCE_RESTARTS.labels(self.label).inc()
            log.warning("%s: inference process %d restarted (pid %s)", self.label, slot.index, slot.process.pid)
            if closed:  # closed while it was starting: stop it again
                self.close()
            return
