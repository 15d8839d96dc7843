"""The one YAML config file: sites, cameras, zones, schedules, models, rules, storage, bus, api.

Validated by pydantic with extra="forbid" so a typo is an error naming the key. Environment
variables ``BRIGHTKITCHEN__A__B=value`` override ``a.b`` (value parsed as YAML, list items by index).
"""

from __future__ import annotations

import json
import os
import re
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

ENV_PREFIX = "BRIGHTKITCHEN__"
# The class name of moving blobs found by a camera's motion measure (rules with `source: motion`).
MOTION_CLASS = "motion"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ZoneConfig(Strict):
    name: Identifier
    points: list[tuple[float, float]] = Field(description="polygon, normalised (x, y) in [0, 1]")

    @field_validator("points")
    @classmethod
    def _polygon(cls, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if len(points) < 3:
            raise ValueError("a zone needs at least 3 points")
        if any(not (0.0 <= v <= 1.0) for p in points for v in p):
            raise ValueError("zone points are normalised: every coordinate must be within [0, 1]")
        return points


class MotionConfig(Strict):
    """How a camera tells a still frame from a moving one (compared with its previous analysed frame)."""

    threshold: int = Field(25, ge=1, le=255, description="grey-level change (0-255) that counts a pixel as changed")
    still_below: float = Field(
        0.002, ge=0, le=1, description="a frame with less than this fraction of its pixels changed is still"
    )
    size: int = Field(160, ge=16, le=1920, description="long side in pixels of the image motion is measured on")


class CameraConfig(Strict):
    id: Identifier
    name: str = ""
    url: str = Field(description="rtsp://... or a video file path (looped, paced like a live camera)")
    analysis_fps: float = Field(1.0, gt=0, le=30)
    zones: list[ZoneConfig] = []
    enabled: bool = True
    live_url: str | None = Field(
        None, description="stream for the live view (e.g. the camera's main stream); none = url"
    )
    privacy: Literal["none", "blur_faces"] = Field(
        "none", description="live view: blur_faces blurs every face before the video leaves the server "
        "(decodes and re-encodes the stream)"
    )
    decode: Literal["auto", "keyframes", "all_frames"] = Field(
        "auto",
        description="auto: keyframes only when the measured keyframe interval is at most the analysis period, "
        "else every frame; keyframes: always keyframes only (the analysed rate is at most the keyframe rate); "
        "all_frames: decode every frame, convert only the analysed ones",
    )
    receiver: Literal["builtin", "ffmpeg"] = Field(
        "builtin",
        description="builtin: rtsp:// H.264/H.265 cameras are read by brightkitchen's own RTSP client, which "
        "costs a fraction of FFmpeg's CPU per camera (other sources and codecs fall back to FFmpeg by "
        "themselves); ffmpeg: always read with FFmpeg, for a camera the built-in client does not get along with",
    )
    motion: MotionConfig = MotionConfig()

    @property
    def display_name(self) -> str:
        return self.name or self.id


class WindowConfig(Strict):
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = list(DAYS)
    start: time
    end: time = Field(description="an end before the start crosses midnight")


class SiteConfig(Strict):
    id: Identifier
    name: str = ""
    timezone: str = "Asia/Shanghai"
    schedules: dict[Identifier, list[WindowConfig]] = {}
    cameras: list[CameraConfig] = []
    viewing_hours: Identifier | None = Field(
        None, description="schedule of this site in which parents may watch the live view; none = parents "
        "may not watch"
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, tz: str) -> str:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {tz!r}") from e
        return tz


class ModelConfig(Strict):
    name: Identifier
    path: str = Field(description="ONNX file, relative to the config file, or builtin:NAME")
    version: str | None = None
    provider: Literal["auto", "cpu", "cuda", "tensorrt", "openvino"] = "auto"
    threads: int = Field(0, ge=0, description="intra-op threads, 0 = onnxruntime default")
    score_threshold: float | None = Field(None, ge=0, le=1)
    iou_threshold: float | None = Field(None, gt=0, le=1)
    max_batch: int = Field(8, ge=1)
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = Field(
        "auto",
        description="auto: bf16 on OpenVINO when the CPU computes bf16 natively, fp16 on TensorRT, else fp32; "
        "int8 is never chosen by auto (check its accuracy on your images first)",
    )
    processes: int = Field(
        0, ge=0, description="inference processes for this model, each with its own session; 0 = auto "
        "(one per CPU core, at most 8, on CPU providers; 1 on GPU providers)"
    )
    calibration_images: str | None = Field(
        None, description="folder of images to calibrate int8 quantisation on, relative to the config file; "
        "without it the built-in models calibrate on rendered kitchen frames and other models cannot use int8"
    )


class ClassifierConfig(Strict):
    """A crop classifier run on the boxes of one class of a detector (face -> mask / no_mask, ...).

    Its labels replace the class of the boxes it classifies, so rules can name them."""

    name: Identifier
    path: str = Field(description="ONNX classifier (ultralytics classify export), relative to the config file")
    detector: Identifier = Field(description="name of the model whose boxes it classifies")
    on_class: str = Field(description="detector class whose boxes are classified")
    version: str | None = None
    provider: Literal["auto", "cpu", "cuda", "tensorrt", "openvino"] = "auto"
    threads: int = Field(0, ge=0)
    min_score: float = Field(0.5, ge=0, le=1, description="lowest top-label probability that relabels a box")
    expand: float = Field(0.1, ge=0, le=1, description="box growth on each side before cropping")


class RuleConfig(Strict):
    name: Identifier
    title: str = ""
    model: Identifier
    classes: list[str] = Field(min_length=1, description="class names that mean a violation")
    min_score: float = Field(0.5, ge=0, le=1)
    min_duration_s: float = Field(0.0, ge=0)
    zones: list[Identifier] = Field([], description="zone names of the camera; empty = whole frame")
    schedule: Identifier | None = Field(None, description="schedule name of the site; none = always")
    cooldown_s: float = Field(60.0, ge=0)
    close_after_s: float = Field(5.0, gt=0)
    update_interval_s: float = Field(30.0, gt=0)
    require_no_class: list[str] = Field([], description="violation only when none of these is seen")
    cameras: list[Identifier] = Field([], description="camera ids; empty = every camera")
    source: Literal["detector", "motion"] = Field(
        "detector",
        description="detector: the model's boxes of `classes`; motion: moving blobs (class `motion`), with the "
        "model still run for require_no_class",
    )
    min_area: float = Field(0.0, ge=0, le=1, description="smallest box, as a fraction of the frame's area")
    max_area: float = Field(1.0, gt=0, le=1, description="largest box, as a fraction of the frame's area")
    skip_when_still: bool | None = Field(
        None,
        description="a still frame cannot start this violation, so inference may be skipped on it (the last "
        "detections stand); default: true for motion rules, false otherwise. Inference is skipped only when "
        "every rule on the camera allows it",
    )

    @model_validator(mode="before")
    @classmethod
    def _motion_classes(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("source") == "motion" and "classes" not in data:
            return {**data, "classes": [MOTION_CLASS]}
        return data

    @model_validator(mode="after")
    def _motion_rule(self) -> RuleConfig:
        if self.source == "motion" and self.classes != [MOTION_CLASS]:
            raise ValueError(f"a motion rule's classes are [{MOTION_CLASS}] (moving blobs), got {self.classes}")
        if self.min_area >= self.max_area:
            raise ValueError(f"min_area ({self.min_area}) must be below max_area ({self.max_area})")
        return self

    @property
    def skips_when_still(self) -> bool:
        return self.skip_when_still if self.skip_when_still is not None else self.source == "motion"


class StorageConfig(Strict):
    database: str = Field(
        "sqlite:///var/brightkitchen.db",
        pattern=r"^(sqlite:///|postgres(ql)?://)",
        description="sqlite:///PATH (relative to the config file) or postgresql://USER:PASSWORD@HOST:PORT/DB; "
        "a schema other than public: ?options=-csearch_path%3DSCHEMA",
    )
    snapshots_dir: str = "var/snapshots"
    snapshot_retention_days: float = Field(30.0, gt=0)
    snapshot_max_count: int = Field(100_000, ge=1)
    keep_raw_frames: bool = Field(
        True, description="also keep each event's frame without drawings (<id>.raw.jpg) for retraining"
    )


class RedisBusConfig(Strict):
    url: str = Field(pattern=r"^rediss?://", description="redis://HOST:PORT/DB")
    stream: str = Field("brightkitchen:bus", min_length=1, description="the stream workers add events to")
    group: str = Field("brightkitchen-api", min_length=1, description="the consumer group of the API replicas")
    consumer: str | None = Field(
        None, description="this process's name in the group; default HOSTNAME-PID (a stable name lets a "
        "restarted process take up its own unacknowledged entries at once)"
    )
    maxlen: int = Field(
        1_000_000, ge=1000, description="approximate number of entries the stream keeps: older ones are "
        "trimmed even when not yet stored, so keep it above the longest backlog of an API outage"
    )
    claim_idle_s: float = Field(
        30.0, gt=0, description="entries read but not acknowledged for this long (their consumer died) are "
        "taken over by another consumer"
    )
    batch: int = Field(100, ge=1, le=10_000, description="entries read at a time")
    buffer: int = Field(10_000, ge=1, description="events a worker keeps while Redis is unreachable")


class BusConfig(Strict):
    kind: Literal["inprocess", "redis"] = Field(
        "inprocess", description="inprocess: worker and API in one process; redis: Redis Streams between "
        "worker and API processes"
    )
    redis: RedisBusConfig | None = None

    @model_validator(mode="after")
    def _redis_settings(self) -> BusConfig:
        if self.kind == "redis" and self.redis is None:
            raise ValueError("bus.kind redis needs bus.redis (at least its url)")
        return self


class AssignmentConfig(Strict):
    """Which worker process analyses which camera."""

    kind: Literal["all", "redis"] = Field(
        "all", description="all: this worker analyses every camera; redis: the cameras are shared out among "
        "the live workers (membership and per-camera leases in Redis)"
    )
    url: str | None = Field(None, pattern=r"^rediss?://", description="redis://HOST:PORT/DB (kind redis)")
    prefix: str = Field("brightkitchen:assignment", min_length=1, description="prefix of the Redis keys")
    heartbeat_s: float = Field(1.0, gt=0, description="how often a worker renews its membership and leases")
    ttl_s: float = Field(
        5.0, gt=0, description="a worker unheard of this long is gone: its cameras move to the others"
    )
    worker_id: str | None = Field(None, description="this worker's name; default HOSTNAME-PID-RANDOM")

    @model_validator(mode="after")
    def _settings(self) -> AssignmentConfig:
        if self.kind == "redis" and self.url is None:
            raise ValueError("assignment.kind redis needs assignment.url")
        if self.ttl_s < 2 * self.heartbeat_s:
            raise ValueError("assignment.ttl_s must be at least twice heartbeat_s")
        return self


class AuthConfig(Strict):
    enabled: bool = Field(
        True, description="false: no login, every request acts as a local admin (only for one local user)"
    )
    token_ttl_s: float = Field(12 * 3600, gt=0, description="lifetime of a login's bearer token")
    login_max_failures: int = Field(
        5, ge=1, description="failed logins per user name and per client address in the window; then 429"
    )
    login_window_s: float = Field(300, gt=0, description="sliding window in which failed logins are counted")


class ApiConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    auth: AuthConfig = AuthConfig()


class WorkerConfig(Strict):
    frame_max_age_s: float = Field(2.0, gt=0, description="frames older than this are stale and dropped")
    open_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(5.0, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    reader_nice: int = Field(
        10, ge=0, le=19, description="how much lower than the worker's the camera readers' CPU priority is (Linux "
        "nice): on a busy box the frames already decoded are analysed first and decoding catches up between "
        "keyframes, so the detection-to-event latency holds near the box's limit; 0 = the same priority"
    )
    camera_start_interval_s: float = Field(
        0.2, ge=0, le=10, description="cameras start this far apart (at start-up, and when cameras are assigned "
        "to this worker): cameras that start together open their violations together, and on a full box that "
        "burst of snapshots, and rounds of every camera at once, delay events by seconds; 0 = all at once"
    )


class InferenceConfig(Strict):
    cache_dir: str = Field(
        "var/model-cache", description="where int8 / fp16 conversions of model files are kept, keyed by the "
        "source file's hash (relative to the config file)"
    )
    timeout_s: float = Field(
        10.0, gt=0, description="an inference process that has not answered a batch within this is restarted "
        "and the batch's frames are counted as dropped"
    )
    watch_interval_s: float = Field(
        2.0, ge=0, description="how often model files, cards and the config's model entries are checked for "
        "changes (hot swap); 0 = only on an explicit reload (SIGHUP)"
    )


class WebhookDeliveryConfig(Strict):
    timeout_s: float = Field(10.0, gt=0, description="connect and read timeout of one delivery attempt")
    initial_backoff_s: float = Field(1.0, gt=0, description="wait before the first retry; doubles after each")
    max_backoff_s: float = Field(300.0, gt=0, description="longest wait between two attempts")
    max_age_s: float = Field(7 * 86400.0, gt=0, description="a delivery still failing this long after it was "
                             "queued is given up (dead, replayable)")
    client_errors: Literal["retry", "dead"] = Field(
        "retry", description="4xx answers other than 408/429: retry like any failure, or give up at once"
    )
    senders: int = Field(4, ge=1, le=64, description="deliveries sent at the same time (different queues)")


class RedisStreamConfig(Strict):
    url: str = Field(pattern=r"^rediss?://", description="redis://HOST:PORT/DB")
    stream: str = Field("brightkitchen:events", min_length=1)
    maxlen: int = Field(100_000, ge=1, description="approximate number of entries the stream keeps")


class OutputsConfig(Strict):
    webhooks: WebhookDeliveryConfig = WebhookDeliveryConfig()
    redis_stream: RedisStreamConfig | None = None
    retention_days: float = Field(30.0, gt=0, description="how long the change log and delivered webhooks "
                                  "are kept (resume and replay reach this far back)")


class LiveConfig(Strict):
    """The live view: WebRTC from the server to browsers, one camera pull shared by its viewers."""

    enabled: bool = True
    max_viewers_per_camera: int = Field(
        8, ge=1, le=1000, description="concurrent viewers of one camera; one more gets a clear refusal"
    )
    idle_close_s: float = Field(
        10.0, ge=0, description="a camera's live pull stays open this long after its last viewer leaves"
    )
    ice_servers: list[str] = Field(
        [], description="STUN/TURN URLs (stun:host:port) for viewers behind NAT; empty: host candidates only"
    )
    ice_addresses: list[str] = Field(
        [], description="local addresses offered to viewers' browsers (ICE host candidates); empty: every "
        "interface's but loopback. [127.0.0.1] keeps the live view on this machine"
    )
    face_model: str = Field(
        "builtin:faces-retinaface", description="face detector of privacy mode: an ONNX file or builtin:NAME"
    )
    face_min_score: float = Field(
        0.5, gt=0, le=1, description="faces scoring this or more are blurred (rather too much blur than too little)"
    )
    face_threads: int = Field(1, ge=0, description="intra-op threads of the face detector, 0 = onnxruntime default")
    privacy_bitrate_kbps: int = Field(1500, ge=100, le=20000, description="bitrate of re-encoded live video")
    privacy_detect_every: int = Field(
        5, ge=1, le=25, description="run the face detector on every Nth frame; the frames in between wait for "
        "the next detection (N frames of delay) and are blurred with the boxes of both"
    )


class Config(Strict):
    sites: list[SiteConfig] = Field(min_length=1)
    models: list[ModelConfig] = Field(min_length=1)
    classifiers: list[ClassifierConfig] = []
    rules: list[RuleConfig] = []
    storage: StorageConfig = StorageConfig()
    bus: BusConfig = BusConfig()
    api: ApiConfig = ApiConfig()
    worker: WorkerConfig = WorkerConfig()
    outputs: OutputsConfig = OutputsConfig()
    live: LiveConfig = LiveConfig()
    inference: InferenceConfig = InferenceConfig()
    assignment: AssignmentConfig = AssignmentConfig()
    # Folder of the config file: relative paths in it are relative to this.
    _base_dir: Path = PrivateAttr(Path("."))
    # The file it was loaded from (None when built in code): model hot swap re-reads it.
    _source_path: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _references(self) -> Config:
        _unique("sites", [s.id for s in self.sites])
        _unique("cameras", [c.id for s in self.sites for c in s.cameras])
        _unique("models", [m.name for m in self.models])
        _unique("rules", [r.name for r in self.rules])
        models = {m.name for m in self.models}
        _unique("models and classifiers", [m.name for m in self.models] + [c.name for c in self.classifiers])
        for clf in self.classifiers:
            if clf.detector not in models:
                raise ValueError(f"classifier {clf.name!r}: unknown detector model {clf.detector!r}")
        cameras = {c.id: (s, c) for s in self.sites for c in s.cameras}
        for rule in self.rules:
            if rule.model not in models:
                raise ValueError(f"rule {rule.name!r}: unknown model {rule.model!r}")
            for cam_id in rule.cameras:
                if cam_id not in cameras:
                    raise ValueError(f"rule {rule.name!r}: unknown camera {cam_id!r}")
            for site, cam in (cameras[c] for c in (rule.cameras or cameras)):
                zones = {z.name for z in cam.zones}
                missing = [z for z in rule.zones if z not in zones]
                if missing and rule.cameras:
                    raise ValueError(f"rule {rule.name!r}: camera {cam.id!r} has no zone {missing[0]!r}")
                if rule.schedule and rule.schedule not in site.schedules:
                    raise ValueError(f"rule {rule.name!r}: site {site.id!r} has no schedule {rule.schedule!r}")
        for site in self.sites:
            if site.viewing_hours and site.viewing_hours not in site.schedules:
                raise ValueError(f"site {site.id!r}: viewing_hours names no schedule of the site "
                                 f"({site.viewing_hours!r})")
        return self

    def cameras(self) -> list[tuple[SiteConfig, CameraConfig]]:
        return [(s, c) for s in self.sites for c in s.cameras if c.enabled]

    @property
    def source_path(self) -> Path | None:
        return self._source_path

    def resolve_path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else (self._base_dir / path)

    def rules_for(self, camera: CameraConfig) -> list[RuleConfig]:
        """Rules that apply to a camera; a rule naming zones applies where the camera has them."""
        zones = {z.name for z in camera.zones}
        return [
            r
            for r in self.rules
            if (not r.cameras or camera.id in r.cameras) and all(z in zones for z in r.zones)
        ]


def _unique(what: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"duplicate id {i!r} in {what}")
        seen.add(i)


class ConfigError(Exception):
    """A config file that cannot be used; ``errors`` lists (key path, message)."""

    def __init__(self, source: str, errors: list[tuple[str, str]]):
        self.source = source
        self.errors = errors
        lines = [f"{source}: {path or '(top level)'}: {msg}" for path, msg in errors]
        super().__init__("invalid config\n" + "\n".join(lines))


def _apply_env(data: dict[str, Any], environ: dict[str, str]) -> None:
    for key, raw in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"environment {key}", [(".".join(parts[: i + 1]), "no such list item")])
                index = int(part)
                if last:
                    node[index] = yaml.safe_load(raw)
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = yaml.safe_load(raw)
                else:
                    node = node.setdefault(part, {})
            else:
                raise ConfigError(f"environment {key}", [(".".join(parts[:i]), "is not a mapping or list")])


def _error_path(loc: tuple[Any, ...]) -> str:
    return re.sub(r"\.(\d+)", r"[\1]", ".".join(str(p) for p in loc))


def parse_config(data: Any, source: str, base_dir: Path, environ: dict[str, str] | None = None) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(source, [("", "the config must be a YAML mapping")])
    _apply_env(data, dict(os.environ) if environ is None else environ)
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        errors = []
        for err in e.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (not allowed here)"
            errors.append((_error_path(err["loc"]), msg))
        raise ConfigError(source, errors) from None
    config._base_dir = base_dir
    return config


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(path), [("", f"cannot read file: {e.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), [("", f"{where}not valid YAML ({getattr(e, 'problem', e)})")]) from None
    config = parse_config(data, str(path), path.resolve().parent, environ)
    config._source_path = path.resolve()
    return config


def json_schema() -> str:
    schema = Config.model_json_schema()
    return json.dumps(schema, indent=2, ensure_ascii=False)
