"""The violation event: the record every part of brightkitchen passes around.

An event is created once at the source (the worker) with an id that every consumer can use to
de-duplicate; each later change of the same violation (updated, closed) carries the same id and a
higher revision.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Phase = Literal["open", "updated", "closed"]
ReviewState = Literal["pending", "confirmed", "false_positive", "rectified"]


def new_event_id(now: float | None = None) -> str:
    """A time-ordered 128-bit id (UUIDv7 layout) as 32 hex digits: sortable and unique across boxes."""
    ms = int((time.time() if now is None else now) * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 4 & ((1 << 12) - 1)) << 64
    value |= 0b10 << 62 | (rand & ((1 << 62) - 1))
    return f"{value:032x}"


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Box(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str
    score: float
    xyxy: tuple[float, float, float, float] = Field(description="pixels of the camera frame")
    track_id: int = -1


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    version: str


class Event(BaseModel):
    """A violation seen by one camera, from its open to its close."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="generated once at the source; the same for every phase")
    revision: int = Field(1, description="increases with every change; (id, revision) is unique")
    phase: Phase
    review_state: ReviewState = "pending"
    rule: str
    rule_title: str = ""
    site: str
    camera: str
    camera_name: str = ""
    class_name: str
    track_id: int
    score: float = Field(description="highest score seen during the violation")
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None
    boxes: list[Box]
    frame_size: tuple[int, int] = Field(description="camera frame width, height in pixels")
    model: ModelRef
    snapshot: str | None = Field(None, description="path of the annotated JPEG in the snapshot store")
    snapshot_sha256: str | None = None
