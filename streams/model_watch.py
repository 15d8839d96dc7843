"""Model hot swap: notice a replaced model file, card or config entry, load and check the new model in the
background, and hand it to the worker loop, which swaps it in between two batches.

Checked before a swap: the file loads on the configured runtime, its card describes it (classes, input
size, output), it runs on a test frame, and it still yields every class that the running rules name. A
model that fails any check is refused with a log line and a status entry; the old one keeps running.
Changes are found by polling (size and mtime, then SHA-256, so a touched but unchanged file is no
change) every `inference.watch_interval_s`, or at once on `request_check()` (SIGHUP in the service).
Replace files atomically (write a temporary file, then rename) so no half-written file is ever read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brightkitchen.config import Config, ConfigError, ModelConfig, load_config
from brightkitchen.metrics import MODEL_SWAPS
from streams.detectors import LoadedModel, files_sha256, load_model, watched_files

log = logging.getLogger("streams.model_watch")

Signature = tuple[tuple[str, int, int], ...]


@dataclass
class ModelStatus:
    name: str
    version: str
    path: str
    sha256: str
    runtime: str
    processes: int
    loaded_at: float
    swaps: int = 0
    last_checked_at: float | None = None
    last_error: str | None = None  # why the newest candidate was refused; None once one is swapped in
    last_error_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _signature(paths: list[Path]) -> Signature:
    out = []
    for path in paths:
        try:
            st = path.stat()
            out.append((str(path), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(path), -1, -1))
    return tuple(out)


def _entry_key(config: Config, name: str) -> Any:
    """What of a config says how a model is loaded: its entry and its classifiers' entries."""
    model = next((m for m in config.models if m.name == name), None)
    if model is None:
        return None
    return model.model_dump(), [c.model_dump() for c in config.classifiers if c.detector == name]


def check_candidate(candidate: LoadedModel, rules_config: Config, frame_size: int | None = None) -> list[str]:
    """What stops a freshly loaded model from replacing the running one (empty: it may)."""
    problems = []
    size = candidate.detector.input_size
    try:
        result = candidate.detect([np.full((size, size, 3), 114, np.uint8)])
        if not result or result[0] is None:
            problems.append("it gave no result for a test frame (see the inference log)")
    except Exception as exc:  # any failure on a plain frame means it cannot run here
        problems.append(f"it fails on a test frame: {type(exc).__name__}: {exc}")
    names = set(candidate.names)
    for rule in rules_config.rules:
        if rule.model == candidate.name:
            missing = sorted((set(rule.classes) | set(rule.require_no_class)) - names)
            if missing:
                problems.append(f"rule {rule.name!r} needs classes {missing} that the new model does not yield")
    if frame_size is not None and size > frame_size:
        log.warning("model %s: the new input size %d is larger than the %d px the cameras are converted to; "
                    "restart the worker to convert at the new size", candidate.name, size, frame_size)
    return problems


class ModelWatcher:
    """Watches the models of one worker. The worker calls take_ready() between batches and swapped() after."""

    def __init__(
        self,
        config: Config,
        models: dict[str, LoadedModel],
        *,
        interval_s: float | None = None,
        frame_size: int | None = None,
        loader: Callable[[Config, ModelConfig], LoadedModel] = load_model,
    ) -> None:
        self.rules_config = config  # the running rules; they change only with a restart
        self.config = config  # the newest valid config file: model entries come from it
        self.interval_s = config.inference.watch_interval_s if interval_s is None else interval_s
        self.frame_size = frame_size
        self.loader = loader
        self._lock = threading.Lock()
        self._check_now = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready: dict[str, LoadedModel] = {}
        self._config_signature = self._config_file_signature()
        self._entries = {name: _entry_key(config, name) for name in models}
        self._signatures: dict[str, Signature] = {}
        self._known_sha: dict[str, str] = {}
        self.status: dict[str, ModelStatus] = {}
        self.config_error: str | None = None
        for name, model in models.items():
            self._signatures[name] = _signature(self._files(name))
            self._known_sha[name] = model.sha256
            self.status[name] = self._status_of(model)

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._check_now.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            pending, self._ready = self._ready, {}
        for model in pending.values():
            model.close()

    def request_check(self) -> None:
        """Re-read the config file and check every model file now (SIGHUP, or an operator's reload)."""
        self._config_signature = None
        self._check_now.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._check_now.wait(self.interval_s if self.interval_s > 0 else None)
            self._check_now.clear()
            if self._stop.is_set():
                return
            try:
                self.check()
            except Exception:  # a bug here must not stop the watching, nor the worker
                log.exception("model check failed")

    # -- the worker's side --------------------------------------------------------------------------

    def take_ready(self) -> dict[str, LoadedModel]:
        """Checked models waiting to be swapped in (each is handed out once)."""
        with self._lock:
            ready, self._ready = self._ready, {}
        return ready

    def swapped(self, new: LoadedModel, old: LoadedModel) -> None:
        """The worker runs new instead of old now: record it and release old off the loop's thread."""
        status = self._status_of(new)
        status.swaps = self.status[new.name].swaps + 1
        self.status[new.name] = status
        MODEL_SWAPS.labels(new.name, "swapped").inc()
        log.info("model %s swapped in: %s (sha256 %s, was %s %s)", new.name, new.version, new.sha256[:12],
                 old.version, old.sha256[:12])
        threading.Thread(target=old.close, name=f"close-{old.name}", daemon=True).start()

    def statuses(self) -> list[dict[str, Any]]:
        out = [s.to_dict() for s in self.status.values()]
        if self.config_error:
            for s in out:
                s["config_error"] = self.config_error
        return out

    # -- checking -----------------------------------------------------------------------------------

    def check(self) -> list[str]:
        """One look at the config file and the model files; loads and checks what changed. Returns the
        names of the models that are now waiting to be swapped in."""
        self._reload_config()
        accepted = []
        for name in list(self.status):
            if self._stop.is_set():
                break
            entry = _entry_key(self.config, name)
            signature = _signature(self._files(name))
            changed_entry = entry != self._entries.get(name)
            changed_files = signature != self._signatures.get(name)
            self.status[name].last_checked_at = time.time()
            if not changed_entry and not changed_files:
                continue
            self._signatures[name] = signature
            if entry is None:
                log.warning("model %s is no longer in the config; it keeps running until the worker restarts", name)
                self._entries[name] = None
                continue
            if not changed_entry:
                sha = files_sha256(self._files(name))
                if sha == self._known_sha.get(name):
                    continue  # touched, not changed
                self._known_sha[name] = sha
            self._entries[name] = entry
            if self._load_and_check(name):
                accepted.append(name)
        return accepted

    def _files(self, name: str) -> list[Path]:
        model = next((m for m in self.config.models if m.name == name), None)
        return watched_files(self.config, model) if model is not None else []

    def _config_file_signature(self) -> Signature | None:
        path = self.config.source_path
        return _signature([path]) if path is not None else None

    def _reload_config(self) -> None:
        path = self.config.source_path
        if path is None:
            return
        signature = _signature([path])
        if signature == self._config_signature:
            return
        self._config_signature = signature
        try:
            config = load_config(path)
        except ConfigError as exc:
            self.config_error = str(exc)
            log.error("config file changed but cannot be used; models keep running as they are: %s", exc)
            return
        self.config_error = None
        added = sorted({m.name for m in config.models} - set(self.status))
        if added:
            log.warning("models %s were added to the config; they start with the next restart", ", ".join(added))
        self.config = config

    def _load_and_check(self, name: str) -> bool:
        model = next(m for m in self.config.models if m.name == name)
        t0 = time.monotonic()
        try:
            candidate = self.loader(self.config, model)
        except Exception as exc:  # ModelLoadError, CardError, ValueError, OSError: all refuse it
            self._refuse(name, f"{type(exc).__name__}: {exc}")
            return False
        problems = check_candidate(candidate, self.rules_config, self.frame_size)
        if problems:
            candidate.close()
            self._refuse(name, "; ".join(problems))
            return False
        self._known_sha[name] = candidate.sha256
        log.info("model %s: new version %s loaded and checked in %.1f s; swapping it in", name, candidate.version,
                 time.monotonic() - t0)
        with self._lock:
            previous = self._ready.pop(name, None)
            self._ready[name] = candidate
        if previous is not None:
            previous.close()
        return True

    def _refuse(self, name: str, reason: str) -> None:
        status = self.status[name]
        status.last_error, status.last_error_at = reason, time.time()
        MODEL_SWAPS.labels(name, "refused").inc()
        log.error("model %s: new version refused, keeping %s (sha256 %s) running: %s", name, status.version,
                  status.sha256[:12], reason)

    @staticmethod
    def _status_of(model: LoadedModel) -> ModelStatus:
        return ModelStatus(
            name=model.name,
            version=model.version,
            path=str(model.path),
            sha256=model.sha256,
            runtime=model.runtime,
            processes=model.processes,
            loaded_at=model.loaded_at,
        )
