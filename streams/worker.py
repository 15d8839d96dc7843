"""The worker loop: newest frame of every camera -> one batched detection per model -> tracks -> rules
-> events with annotated snapshots on the bus.

Each camera has its own reader thread, so a hung or dead camera only stops delivering frames; the loop
never waits for any one camera.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from brightkitchen.bus import Bus
from brightkitchen.config import MOTION_CLASS, CameraConfig, Config, RuleConfig, SiteConfig
from brightkitchen.events import Box, Event, ModelRef, new_event_id, utc
from brightkitchen.metrics import (
    BATCH_SIZE,
    CAMERA_CONNECTED,
    CAMERA_RECONNECTS,
    EVENTS_PUBLISHED,
    FRAMES_ANALYSED,
    INFERENCE_SECONDS,
    INFERENCE_SKIPPED,
)
from brightkitchen.snapshots import SnapshotStore
from models.feedback import encode_raw_frame, raw_frame_key
from streams.detectors import LoadedModel, load_models
from streams.model_watch import ModelWatcher
from streams.motion_gate import MotionGate
from streams.publisher import EventPublisher
from streams.reader import CameraReader, Frame
from vision.detections import Detections
from vision.draw import annotate
from vision.rules import Rule, RuleEngine, RuleEvent
from vision.schedule import Schedule, Window
from vision.tracker import IouTracker
from vision.zones import PolygonZone

log = logging.getLogger("streams.worker")

IDLE_SLEEP_S = 0.01
# With no frame for this long, rules are fed an empty frame so that open violations can close.
SILENT_CAMERA_S = 2.0
LOOP_THREAD_NAME = "worker-loop"
GAUGE_INTERVAL_S = 1.0


def redact_url(url: str) -> str:
    """The URL without its password, for status pages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def evidence_boxes(detections: Detections, names: list[str], rule_class: str) -> Detections:
    """What a snapshot draws: the model's boxes, and the moving blobs only for a rule about motion (for any
    other rule they are clutter over the people the reviewer needs to see)."""
    if rule_class == MOTION_CLASS or MOTION_CLASS not in names:
        return detections
    return detections.filter(detections.class_ids != names.index(MOTION_CLASS))


def build_rule(rule: RuleConfig, site: SiteConfig, camera: CameraConfig) -> Rule:
    zones = {z.name: z for z in camera.zones}
    schedule = None
    if rule.schedule:
        days = {d: i for i, d in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))}
        windows = [
            Window(days={days[d] for d in w.days}, start=w.start, end=w.end) for w in site.schedules[rule.schedule]
        ]
        schedule = Schedule(windows, tz=site.timezone)
    return Rule(
        name=rule.name,
        classes=frozenset(rule.classes),
        min_score=rule.min_score,
        min_duration_s=rule.min_duration_s,
        zones=tuple(PolygonZone(n, zones[n].points) for n in rule.zones),
        schedule=schedule,
        cooldown_s=rule.cooldown_s,
        close_after_s=rule.close_after_s,
        update_interval_s=rule.update_interval_s,
        require_no_class=frozenset(rule.require_no_class),
        min_area=rule.min_area,
        max_area=rule.max_area,
    )


@dataclass
class CameraPipeline:
    site: SiteConfig
    camera: CameraConfig
    reader: CameraReader
    trackers: dict[str, IouTracker]
    engines: dict[str, RuleEngine]
    rule_titles: dict[str, str]
    open: dict[tuple[str, int], Event] = field(default_factory=dict)
    last_frame_at: float = 0.0
    last_frame: Frame | None = None
    gate: MotionGate | None = None


class WorkerStats:
    """Bounded samples for benchmarks and status: inference latency and detection-to-event latency."""

    def __init__(self, size: int = 10_000) -> None:
        self.inference_s: deque[float] = deque(maxlen=size)
        self.batch_sizes: deque[int] = deque(maxlen=size)
        self.event_latency_s: deque[float] = deque(maxlen=size)
        self.frames_analysed: dict[str, int] = {}
        self.events_published = 0
        self.frames_dropped = 0  # by inference processes that died, hung or failed


class Worker:
    def __init__(
        self,
        config: Config,
        bus: Bus,
        snapshots: SnapshotStore,
        *,
        models: dict[str, LoadedModel] | None = None,
        reader_factory: Callable[..., CameraReader] = CameraReader,
    ) -> None:
        self.config = config
        self.bus = bus
        self.snapshots = snapshots
        self.models = models if models is not None else load_models(config)
        # Models this worker loaded (or swapped in) are closed when it stops; the caller's stay open.
        self._owned_models = {id(m) for m in self.models.values()} if models is None else set()
        self.stats = WorkerStats()
        # Snapshots and bus publishing run in their own threads, so the loop never waits for them.
        # Raw frames for retraining are made at the readers' priority: after everything an event waits for.
        self.publisher = EventPublisher(bus, self._render_snapshot, self._published,
                                        background_nice=config.worker.reader_nice)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader_factory = reader_factory
        self._camera_lock = threading.Lock()  # cameras start and stop between the loop's steps
        self._held: dict[str, CameraPipeline] = {}  # configured cameras not running (see hold_cameras)
        self._next_reader_start = 0.0  # time.monotonic() at which the next camera may open (see _start_delay)
        frame_size = max(m.detector.input_size for m in self.models.values())
        self._frame_size = frame_size
        self.pipelines: list[CameraPipeline] = []
        for site, camera in config.cameras():
            rules = config.rules_for(camera)
            by_model: dict[str, list[Rule]] = {}
            gated: dict[str, list[tuple[Rule, RuleConfig]]] = {}
            for r in rules:
                names = self.models[r.model].names
                yields = set(names) | ({MOTION_CLASS} if r.source == "motion" else set())
                unknown = sorted((set(r.classes) | set(r.require_no_class)) - yields)
                if unknown:
                    raise ValueError(f"rule {r.name!r} names {unknown} but model {r.model!r} yields only {names}")
                by_model.setdefault(r.model, []).append(build_rule(r, site, camera))
                gated.setdefault(r.model, []).append((by_model[r.model][-1], r))
            reader = self._new_reader(camera, self._start_delay())
            self.pipelines.append(
                CameraPipeline(
                    site=site,
                    camera=camera,
                    reader=reader,
                    trackers={m: IouTracker() for m in by_model},
                    engines={m: RuleEngine(rs) for m, rs in by_model.items()},
                    rule_titles={r.name: r.title for r in rules},
                    gate=MotionGate(camera, gated) if gated else None,
                )
            )
        self.watcher = ModelWatcher(config, self.models, frame_size=frame_size)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.publisher.start()
        for p in self.pipelines:
            p.reader.start()
        self._thread = threading.Thread(target=self._run, name=LOOP_THREAD_NAME, daemon=True)
        self._thread.start()
        self.watcher.start()
        log.info("worker started: %d cameras, models %s", len(self.pipelines), ", ".join(self.models))

    def stop(self) -> None:
        self._stop.set()
        self.watcher.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
        now = time.time()
        for p in self.pipelines:
            for model, engine in p.engines.items():
                for rule_event in engine.flush(now):
                    self._emit(p, model, None, rule_event, now)
        readers = [p.reader for p in [*self.pipelines, *self._held.values()]]
        for reader in readers:  # nothing analyses their frames now: the snapshots left to make get the CPU
            reader.stop(timeout_s=0)
        self.publisher.stop()
        for reader in readers:
            reader.stop()
        for loaded in self.models.values():
            if id(loaded) in self._owned_models:
                loaded.close()

    def _run(self) -> None:
        gauges_at = 0.0
        while not self._stop.is_set():
            try:
                analysed = self.run_once()
                if analysed == 0:
                    time.sleep(IDLE_SLEEP_S)
                if time.monotonic() - gauges_at > GAUGE_INTERVAL_S:
                    gauges_at = time.monotonic()
                    self._update_gauges()
            except Exception:  # a bug in one tick must not end monitoring of every camera
                log.exception("worker tick failed")
                time.sleep(0.5)

    # -- one tick --------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Analyse the newest frame of every camera that has one; returns the number of frames analysed.

        Inference runs without the camera lock, so starting and stopping cameras (and with it the renewal
        of camera leases) never waits for a batch; a camera stopped meanwhile has its results dropped.
        """
        with self._camera_lock:
            self._swap_models()
            now = time.time()
            ready: list[tuple[CameraPipeline, Frame]] = []
            for p in self.pipelines:
                frame = p.reader.latest(max_age_s=self.config.worker.frame_max_age_s)
                if frame is not None:
                    ready.append((p, frame))
                elif p.open and now - p.last_frame_at > SILENT_CAMERA_S:
                    self._feed_silence(p, now)
            for p, f in ready:
                if p.gate is not None:
                    p.gate.observe(f)
            batches = {
                name: [(p, f) for p, f in ready if name in p.engines and not self._skipped(p, name, f)]
                for name in self.models
            }
        results = {name: self._detect(name, self.models[name], batch) for name, batch in batches.items() if batch}
        with self._camera_lock:
            running = {id(p) for p in self.pipelines}
            for name, detections in results.items():
                for (p, frame), found in zip(batches[name], detections, strict=True):
                    if found is not None and id(p) in running:
                        self._apply_rules(p, name, frame, found)
            ready = [(p, f) for p, f in ready if id(p) in running]
            for p, f in ready:
                p.last_frame_at = f.captured_at
                p.last_frame = f
                FRAMES_ANALYSED.labels(p.camera.id).inc()
                self.stats.frames_analysed[p.camera.id] = self.stats.frames_analysed.get(p.camera.id, 0) + 1
        return len(ready)

    def _detect(self, model_name: str, model: LoadedModel, batch: list[tuple[CameraPipeline, Frame]]
                ) -> list[Detections | None]:
        """One batched detection (and crop classification); None for a frame whose inference failed."""
        t0 = time.perf_counter()
        results = model.detect([f.image for _, f in batch], orig_sizes=[f.orig_size for _, f in batch])
        elapsed = time.perf_counter() - t0
        INFERENCE_SECONDS.labels(model_name).observe(elapsed)
        BATCH_SIZE.labels(model_name).observe(len(batch))
        self.stats.inference_s.append(elapsed)
        self.stats.batch_sizes.append(len(batch))
        found: list[Detections | None] = []
        for (_, frame), detections in zip(batch, results, strict=True):
            if detections is None:  # its inference process died or hung: counted as dropped there
                self.stats.frames_dropped += 1
            elif model.classifiers:
                detections = model.classify(detections, frame.full_bgr)
            found.append(detections)
        return found

    def _apply_rules(self, p: CameraPipeline, model_name: str, frame: Frame, detections: Detections) -> None:
        """Track one frame's detections (plus its moving blobs, for motion rules) and run the rules."""
        names = self._names(p, model_name)
        tracked = p.trackers[model_name].update(detections, frame.captured_at)
        if p.gate is not None:
            p.gate.last_detections[model_name] = detections
            tracked = Detections.concat([tracked, p.gate.blobs(model_name, frame.orig_size, len(names) - 1)])
        w, h = frame.orig_size
        for rule_event in p.engines[model_name].process(tracked, names, frame.captured_at, w, h):
            self._emit(p, model_name, (frame, tracked), rule_event, frame.captured_at)

    def _skipped(self, p: CameraPipeline, model_name: str, frame: Frame) -> bool:
        """Whether the motion gate lets this frame go without inference; if so the rules still see it."""
        reason = p.gate.skip_reason(model_name, frame.captured_at) if p.gate is not None else None
        if reason is None:
            return False
        p.gate.skipped[reason] += 1
        INFERENCE_SKIPPED.labels(p.camera.id, reason).inc()
        self._apply_rules(p, model_name, frame, p.gate.last_detections[model_name])
        return True

    def _names(self, p: CameraPipeline, model_name: str) -> list[str]:
        """Class names of what the rules of this camera see from a model: its own, then moving blobs."""
        names = self.models[model_name].names
        if p.gate is not None and model_name in p.gate.motion_models:
            return [*names, MOTION_CLASS]
        return names

    def _swap_models(self) -> None:
        """Between two batches: run the models the watcher loaded and checked instead of the old ones."""
        for name, new in self.watcher.take_ready().items():
            old = self.models[name]
            self.models[name] = new
            self._owned_models.add(id(new))
            if new.names != old.names:  # class ids of existing tracks mean other classes now
                for p in self.pipelines:
                    if name in p.trackers:
                        p.trackers[name] = IouTracker()
            self.watcher.swapped(new, old)

    def reload_models(self) -> None:
        """Check the config file and every model file now (SIGHUP); changed models swap in when checked."""
        self.watcher.request_check()

    def model_status(self) -> list[dict[str, Any]]:
        """Each model: version, file hash, runtime, processes, swaps and why the last candidate was refused."""
        return self.watcher.statuses()

    def _feed_silence(self, p: CameraPipeline, now: float) -> None:
        for model_name, engine in p.engines.items():
            w, h = p.last_frame.orig_size if p.last_frame else (0, 0)
            for rule_event in engine.process(Detections.empty(), self._names(p, model_name), now, w, h):
                self._emit(p, model_name, None, rule_event, now)

    # -- events ----------------------------------------------------------------------------------

    def _emit(
        self,
        p: CameraPipeline,
        model_name: str,
        seen: tuple[Frame, Detections] | None,
        rule_event: RuleEvent,
        frame_time: float,
    ) -> None:
        model = self.models[model_name]
        key = (rule_event.rule, rule_event.track_id)
        boxes = [Box(label=c, score=s, xyxy=tuple(b), track_id=t) for c, s, b, t in rule_event.boxes]
        previous = p.open.get(key)
        if rule_event.phase == "open" or previous is None:
            if rule_event.phase != "open":
                return  # an update for a violation this worker never opened (e.g. after a restart)
            event = Event(
                id=new_event_id(rule_event.started_at),
                phase="open",
                rule=rule_event.rule,
                rule_title=p.rule_titles.get(rule_event.rule, ""),
                site=p.site.id,
                camera=p.camera.id,
                camera_name=p.camera.display_name,
                class_name=rule_event.class_name,
                track_id=rule_event.track_id,
                score=rule_event.score,
                started_at=utc(rule_event.started_at),
                updated_at=utc(rule_event.at),
                boxes=boxes,
                frame_size=seen[0].orig_size if seen else (0, 0),
                model=ModelRef(name=model_name, version=model.version),
            )
        else:
            event = previous.model_copy(
                update={
                    "phase": rule_event.phase,
                    "revision": previous.revision + 1,
                    "score": max(previous.score, rule_event.score),
                    "updated_at": utc(rule_event.at),
                    "ended_at": utc(rule_event.ended_at) if rule_event.ended_at is not None else None,
                    "boxes": boxes or previous.boxes,
                }
            )
        if event.phase == "closed":
            p.open.pop(key, None)
        else:
            p.open[key] = event
        job = (p, seen, rule_event) if event.phase == "open" and seen is not None else None
        self.publisher.submit(event, frame_time, job)

    def _render_snapshot(self, event: Event, job: tuple[CameraPipeline, tuple[Frame, Detections], RuleEvent]
                         ) -> tuple[str, str]:
        p, seen, rule_event = job
        return self._snapshot(p, event, *seen, highlight=rule_event)

    def _published(self, event: Event, frame_time: float) -> None:
        EVENTS_PUBLISHED.labels(event.rule, event.phase).inc()
        self.stats.events_published += 1
        if event.phase == "open":
            self.stats.event_latency_s.append(time.time() - frame_time)
        log.info(
            "event %s %s rule=%s camera=%s track=%d score=%.2f",
            event.phase, event.id, event.rule, event.camera, event.track_id, event.score,
        )

    def _snapshot(
        self, p: CameraPipeline, event: Event, frame: Frame, detections: Detections, highlight: RuleEvent
    ) -> tuple[str, str]:
        names = self._names(p, event.model.name)
        if self.config.storage.keep_raw_frames:
            # Not part of the event, so the event does not wait for it: its JPEG would add about 40% to
            # each opened event's time on the way to the bus, which a burst of events adds up.
            self.publisher.in_background(self._save_raw_frame, event, frame, detections, names)
        # Full-resolution colour conversion happens only for the frames that become evidence.
        image = annotate(
            frame.full_bgr(),
            evidence_boxes(detections, names, highlight.class_name),
            names,
            title=f"{p.camera.display_name}  {event.rule}",
            highlight={highlight.class_name},
            timestamp=frame.captured_at,
        )
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return self.snapshots.save(event.id, np.asarray(jpeg).tobytes(), frame.captured_at)

    def _save_raw_frame(self, event: Event, frame: Frame, detections: Detections, names: list[str]) -> None:
        """The frame without drawings, for the retraining set (converted again rather than kept: a burst
        of events would hold a full-size copy each while they wait)."""
        raw = encode_raw_frame(frame.full_bgr(), event.boxes, detections, names)
        self.snapshots.save(raw_frame_key(event.id), raw, frame.captured_at)

    # -- cameras started and stopped at run time (assignment across worker processes) -------------

    def hold_cameras(self) -> None:
        """Call before start: run no camera until start_camera names it (another worker may have it)."""
        with self._camera_lock:
            self._held.update((p.camera.id, p) for p in self.pipelines)
            self.pipelines = []
            self._next_reader_start = 0.0  # their readers never start: start_camera's are spaced afresh

    def running_cameras(self) -> set[str]:
        return {p.camera.id for p in self.pipelines}

    def start_camera(self, camera_id: str) -> bool:
        """Start analysing a held camera, with new tracks and rule state; False when not held."""
        with self._camera_lock:
            held = self._held.pop(camera_id, None)
            if held is None:
                return False
            pipeline = CameraPipeline(
                site=held.site,
                camera=held.camera,
                reader=self._new_reader(held.camera, self._start_delay()),
                trackers={m: IouTracker() for m in held.trackers},
                engines={m: RuleEngine(e.rules) for m, e in held.engines.items()},
                rule_titles=held.rule_titles,
                gate=MotionGate(held.camera, held.gate.rules) if held.gate is not None else None,
            )
            pipeline.reader.start()
            self.pipelines = [*self.pipelines, pipeline]
        log.info("camera %s: analysing", camera_id)
        return True

    def stop_camera(self, camera_id: str) -> bool:
        """Stop analysing a camera and hold it; its open events are closed first. False when not running."""
        with self._camera_lock:
            pipeline = next((p for p in self.pipelines if p.camera.id == camera_id), None)
            if pipeline is None:
                return False
            self.pipelines = [p for p in self.pipelines if p is not pipeline]
            now = time.time()
            for model, engine in pipeline.engines.items():
                for rule_event in engine.flush(now):
                    self._emit(pipeline, model, None, rule_event, now)
            self._held[camera_id] = pipeline
        # Asked to stop, not waited for: a reader still opening its stream notices only at the open
        # timeout, and the caller (camera assignment) must meanwhile go on renewing its other leases.
        # Its frames go nowhere from now on; stop() waits for it.
        pipeline.reader.stop(timeout_s=0)
        log.info("camera %s: stopped", camera_id)
        return True

    def _start_delay(self) -> float:
        """How long the next camera's reader waits before it opens: cameras open at least
        `worker.camera_start_interval_s` apart. Cameras that start together open their violations
        together; on a full box that burst (every event's snapshot at once, and rounds of every camera's
        frame at once, each taking about a second) held events seconds late for half a minute or more."""
        now = time.monotonic()
        start_at = max(now, self._next_reader_start)
        self._next_reader_start = start_at + self.config.worker.camera_start_interval_s
        return start_at - now

    def _new_reader(self, camera: CameraConfig, start_delay_s: float) -> CameraReader:
        """A new (not started) reader for a camera: a reader thread runs only once."""
        return self._reader_factory(
            camera.id,
            camera.url,
            analysis_fps=camera.analysis_fps,
            frame_size=self._frame_size,
            open_timeout_s=self.config.worker.open_timeout_s,
            read_timeout_s=self.config.worker.read_timeout_s,
            backoff_max_s=self.config.worker.backoff_max_s,
            loop_file=not camera.url.startswith(("rtsp://", "rtsps://")),
            decode=camera.decode,
            receiver=camera.receiver,
            max_lag_s=self.config.worker.frame_max_age_s,
            nice=self.config.worker.reader_nice,
            start_delay_s=start_delay_s,
        )

    # -- status ----------------------------------------------------------------------------------

    def _update_gauges(self) -> None:
        for p in self.pipelines:
            status = p.reader.status()
            CAMERA_CONNECTED.labels(p.camera.id).set(1 if status.connected else 0)
            CAMERA_RECONNECTS.labels(p.camera.id).set(status.reconnects)

    def camera_status(self) -> list[dict[str, Any]]:
        out = []
        for p in self.pipelines:
            status = p.reader.status().to_dict()
            last = status.get("last_frame_at")
            status.update(
                id=p.camera.id,
                name=p.camera.display_name,
                site=p.site.id,
                url=redact_url(p.camera.url),
                last_frame_at=utc(last) if last else None,
                motion_gate=p.gate.description if p.gate is not None else "off: no rules",
                inference_skipped_still=p.gate.skipped["still"] if p.gate is not None else 0,
                inference_skipped_schedule=p.gate.skipped["schedule"] if p.gate is not None else 0,
            )
            out.append(status)
        return out
