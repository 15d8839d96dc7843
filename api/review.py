"""Review of events (confirm, false positive, rectification with a photo), audit trail and statistics."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser

from api.auth import Reader, WorkflowUser, no_nul, require, visible_event
from brightkitchen.events import Event, ReviewState
from brightkitchen.review import (
    PHOTO_MEDIA_TYPES,
    RECTIFIERS,
    REVIEWERS,
    STATS_CSV_COLUMNS,
    ReviewConflict,
    ReviewStore,
    StatsReport,
    photo_type,
    store_photo,
)
from brightkitchen.snapshots import SnapshotStore
from brightkitchen.store import EventStore
from brightkitchen.users import Principal

MAX_PHOTO_BYTES = 5 * 1024 * 1024
MAX_NOTE_CHARS = 2000
MAX_FIELD_BYTES = 64 * 1024
# The whole upload: the photo, the note and the multipart framing.
MAX_FORM_BYTES = MAX_PHOTO_BYTES + MAX_FIELD_BYTES

_NOTE = {"type": "string", "minLength": 1, "maxLength": MAX_NOTE_CHARS}
RECTIFICATION_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["note"],
                    "properties": {
                        "note": _NOTE,
                        "photo": {
                            "type": "string",
                            "format": "binary",
                            "description": "JPEG or PNG, at most 5 MiB",
                        },
                    },
                }
            },
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "required": ["note"], "properties": {"note": _NOTE}}
            },
        },
    }
}


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["confirmed", "false_positive"]
    note: str = Field("", max_length=MAX_NOTE_CHARS)

    _note = field_validator("note")(no_nul)


class AuditEntryOut(BaseModel):
    event_id: str
    from_state: ReviewState
    to_state: ReviewState
    actor: str = Field(description="user or API key name")
    role: str
    at: datetime
    note: str
    photo_url: str | None
    photo_sha256: str | None


def _as_utc(dt: datetime | None) -> datetime | None:
    """A time without offset means UTC, as everywhere in the API."""
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def _scope(who: Principal, site: str | None) -> frozenset[str] | None:
    """The sites a query covers: the asked site if the principal sees it, else all it sees."""
    if site is None:
        return who.sites
    return frozenset({site}) if who.sees(site) else frozenset()


def _field_error(field: str, msg: str) -> HTTPException:
    # Same shape as the API's request validation errors.
    return HTTPException(422, [{"loc": f"body.{field}", "msg": msg, "type": "value_error"}])


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise HTTPException(413, f"upload too large: the photo may be at most {MAX_PHOTO_BYTES} bytes")
        yield chunk


async def _read_form(request: Request) -> FormData:
    """The form (multipart, or url-encoded when there is no photo), refused with 413 as soon as it
    outgrows the limit, without reading the rest."""
    content_type = request.headers.get("content-type", "")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_FORM_BYTES:
        raise HTTPException(413, f"upload too large: the photo may be at most {MAX_PHOTO_BYTES} bytes")
    body = _limited(request.stream(), MAX_FORM_BYTES)
    parser: MultiPartParser | FormParser
    if content_type.startswith("multipart/form-data"):
        parser = MultiPartParser(
            request.headers, body, max_files=1, max_fields=2, max_part_size=MAX_FIELD_BYTES
        )
    elif content_type.startswith("application/x-www-form-urlencoded"):
        parser = FormParser(request.headers, body, max_fields=1, max_part_size=MAX_FIELD_BYTES)
    else:
        raise HTTPException(415, "send multipart/form-data: a note field and an optional photo file")
    try:
        return await parser.parse()
    except MultiPartException as e:
        raise HTTPException(400, f"malformed form: {e.message}") from None


async def _photo_bytes(form: FormData) -> bytes | None:
    photo = form.get("photo")
    if photo is None:
        return None
    if not isinstance(photo, UploadFile):
        raise _field_error("photo", "the photo must be a file")
    data = await photo.read(MAX_PHOTO_BYTES + 1)
    if not data and not photo.filename:  # a browser form with no file chosen
        return None
    if len(data) > MAX_PHOTO_BYTES:
        raise HTTPException(413, f"photo too large: at most {MAX_PHOTO_BYTES} bytes")
    return data


Reviewer = Annotated[Principal, Depends(require(REVIEWERS))]
Rectifier = Annotated[Principal, Depends(require(RECTIFIERS))]
Since = Annotated[datetime | None, Query(description="ISO 8601; events started at or after; no offset = UTC")]
Until = Annotated[datetime | None, Query(description="ISO 8601, exclusive")]


def review_router(
    store: EventStore, reviews: ReviewStore, snapshots: SnapshotStore, site_timezones: Mapping[str, str]
) -> APIRouter:
    router = APIRouter()
    problems = {404: {}, 409: {}}

    @router.post(
        "/api/v1/events/{event_id}/review", response_model=Event, responses=problems, tags=["review"]
    )
    def review(event_id: str, body: ReviewRequest, who: Reviewer) -> Event:
        """Confirm a pending event, or mark it a false positive (regulators of its site, admins)."""
        event = visible_event(store, who, event_id)
        try:
            reviews.transition(event, body.decision, who, body.note.strip())
        except ReviewConflict as e:
            raise HTTPException(409, str(e)) from None
        return visible_event(store, who, event_id)

    @router.post(
        "/api/v1/events/{event_id}/rectification",
        response_model=Event,
        responses={**problems, 413: {}, 415: {}},
        openapi_extra=RECTIFICATION_FORM,
        tags=["review"],
    )
    async def rectify(event_id: str, request: Request, who: Rectifier) -> Event:
        """Record the rectification (整改) of a confirmed event: a note and an optional JPEG or PNG photo
        (the site's manager, admins)."""
        event = await run_in_threadpool(visible_event, store, who, event_id)
        try:
            reviews.check(event, "rectified")
        except ReviewConflict as e:
            raise HTTPException(409, str(e)) from None
        form = await _read_form(request)
        try:
            note = form.get("note")
            if not isinstance(note, str) or not note.strip():
                raise _field_error("note", "a note saying what was done is required")
            if len(note) > MAX_NOTE_CHARS:
                raise _field_error("note", f"at most {MAX_NOTE_CHARS} characters")
            if "\x00" in note:
                raise _field_error("note", "may not contain NUL characters")
            data = await _photo_bytes(form)
        finally:
            await form.close()
        photo = None
        if data is not None:
            ext = photo_type(data)
            if ext is None:
                raise HTTPException(415, "the photo must be a JPEG or PNG image")
            photo = await run_in_threadpool(store_photo, snapshots.root, data, ext)
        try:
            await run_in_threadpool(reviews.transition, event, "rectified", who, note.strip(), photo)
        except ReviewConflict as e:
            raise HTTPException(409, str(e)) from None
        return await run_in_threadpool(visible_event, store, who, event_id)

    @router.get(
        "/api/v1/events/{event_id}/audit",
        response_model=list[AuditEntryOut],
        responses={404: {}},
        tags=["review"],
    )
    def audit(event_id: str, who: WorkflowUser) -> list[AuditEntryOut]:
        """Every review change of the event, oldest first."""
        visible_event(store, who, event_id)
        return [
            AuditEntryOut(
                event_id=a.event_id,
                from_state=a.from_state,
                to_state=a.to_state,
                actor=a.actor,
                role=a.actor_role,
                at=a.at,
                note=a.note,
                photo_url=f"/api/v1/events/{event_id}/rectification.{a.photo.rsplit('.', 1)[1]}"
                if a.photo
                else None,
                photo_sha256=a.photo_sha256,
            )
            for a in reviews.audit(event_id)
        ]

    @router.get(
        "/api/v1/events/{event_id}/rectification.{ext}",
        response_class=FileResponse,
        responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}, 404: {}},
        tags=["review"],
    )
    def rectification_photo(event_id: str, ext: Literal["jpg", "png"], who: WorkflowUser) -> FileResponse:
        """The photo recorded with the event's rectification (`X-Photo-SHA256` header)."""
        visible_event(store, who, event_id)
        found = reviews.rectification_photo(event_id)
        if found is None:
            raise HTTPException(404, f"event {event_id!r} has no rectification photo")
        rel, digest = found
        stored_ext = rel.rsplit(".", 1)[1]
        if stored_ext != ext:
            raise HTTPException(
                404, f"the rectification photo of event {event_id!r} is rectification.{stored_ext}"
            )
        path = snapshots.path(rel)
        if path is None:
            raise HTTPException(404, f"the rectification photo of event {event_id!r} is missing from storage")
        return FileResponse(path, media_type=PHOTO_MEDIA_TYPES[ext], headers={"X-Photo-SHA256": digest})

    def _stats(
        who: Principal, since: datetime | None, until: datetime | None, site: str | None
    ) -> StatsReport:
        return reviews.stats(_as_utc(since), _as_utc(until), _scope(who, site), site_timezones)

    @router.get("/api/v1/stats", response_model=StatsReport, tags=["stats"])
    def stats(who: Reader, since: Since = None, until: Until = None, site: str | None = None) -> StatsReport:
        """Events per site, rule and day (the site's local day) with confirmation, false-positive and
        rectification rates and the mean time from confirmation to rectification."""
        return _stats(who, since, until, site)

    @router.get(
        "/api/v1/stats.csv",
        response_class=Response,
        responses={200: {"content": {"text/csv": {}}}},
        tags=["stats"],
    )
    def stats_csv(who: Reader, since: Since = None, until: Until = None, site: str | None = None) -> Response:
        """The per site, rule and day rows of /api/v1/stats as CSV."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(STATS_CSV_COLUMNS)
        for row in _stats(who, since, until, site).rows:
            values = row.model_dump(mode="json")
            writer.writerow(["" if values[c] is None else values[c] for c in STATS_CSV_COLUMNS])
        headers = {"Content-Disposition": 'attachment; filename="brightkitchen-stats.csv"'}
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)

    return router
