"""The review workflow of events, its audit trail, and review statistics.

pending -> confirmed | false_positive (a regulator or an admin); confirmed -> rectified (the site's
manager or an admin, with a note and an optional photo). The state lives in the events table's
review_state column; every change updates it and appends an audit row in one transaction.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from brightkitchen.db import in_list
from brightkitchen.events import Event, ReviewState, utc
from brightkitchen.store import EventStore
from brightkitchen.users import Principal, Role

# For each target state: the state it must come from, and the roles that may set it.
TRANSITIONS: dict[ReviewState, tuple[ReviewState, frozenset[Role]]] = {
    "confirmed": ("pending", frozenset({"admin", "regulator"})),
    "false_positive": ("pending", frozenset({"admin", "regulator"})),
    "rectified": ("confirmed", frozenset({"admin", "site_manager"})),
}
REVIEWERS = TRANSITIONS["confirmed"][1]
RECTIFIERS = TRANSITIONS["rectified"][1]
# Every time-zone offset in use is a whole number of quarter hours, so a quarter hour of UTC never
# straddles a local midnight: events are counted per quarter hour in SQL and given their local day here.
QUARTER_MS = 15 * 60 * 1000


class ReviewConflict(Exception):
    """A transition the event's current review state does not allow."""


@dataclass(frozen=True)
class AuditEntry:
    event_id: str
    from_state: ReviewState
    to_state: ReviewState
    actor: str
    actor_role: Role
    at: datetime
    note: str
    photo: str | None  # path in the snapshot store
    photo_sha256: str | None


class Counts(BaseModel):
    """Events by current review state, and the rates derived from them (None when nothing to divide by)."""

    events: int = 0
    pending: int = 0
    confirmed: int = 0
    false_positive: int = 0
    rectified: int = 0
    confirmation_rate: float | None = None
    false_positive_rate: float | None = None
    rectification_rate: float | None = None
    mean_time_to_rectify_s: float | None = None


class SiteStats(Counts):
    site: str


class StatsRow(Counts):
    site: str
    rule: str
    day: date


class StatsReport(BaseModel):
    since: datetime | None
    until: datetime | None
    totals: Counts
    sites: list[SiteStats]
    rows: list[StatsRow]


STATS_CSV_COLUMNS = (
    "site",
    "rule",
    "day",
    "events",
    "pending",
    "confirmed",
    "false_positive",
    "rectified",
    "confirmation_rate",
    "false_positive_rate",
    "rectification_rate",
    "mean_time_to_rectify_s",
)


@dataclass
class _Tally:
    states: dict[str, int] = field(default_factory=dict)
    rectify_ms: int = 0
    rectify_n: int = 0

    def add(self, state: str, n: int, rectify_ms: int, rectify_n: int) -> None:
        self.states[state] = self.states.get(state, 0) + n
        self.rectify_ms += rectify_ms
        self.rectify_n += rectify_n

    def counts(self) -> dict[str, int | float | None]:
        s = {k: self.states.get(k, 0) for k in ("pending", "confirmed", "false_positive", "rectified")}
        reviewed = s["confirmed"] + s["false_positive"] + s["rectified"]
        ever_confirmed = s["confirmed"] + s["rectified"]
        return {
            "events": sum(s.values()),
            **s,
            "confirmation_rate": ever_confirmed / reviewed if reviewed else None,
            "false_positive_rate": s["false_positive"] / reviewed if reviewed else None,
            "rectification_rate": s["rectified"] / ever_confirmed if ever_confirmed else None,
            "mean_time_to_rectify_s": self.rectify_ms / self.rectify_n / 1000 if self.rectify_n else None,
        }


def _audit_entry(row: tuple) -> AuditEntry:
    event_id, from_state, to_state, actor, role, at_ms, note, photo, photo_sha256 = row
    return AuditEntry(
        event_id, from_state, to_state, actor, role, utc(at_ms / 1000), note, photo, photo_sha256
    )


class ReviewStore:
    """Review transitions, audit trail and statistics over the events database (same connection and lock)."""

    def __init__(self, store: EventStore, clock: Callable[[], float] = time.time) -> None:
        self._db = store
        self._clock = clock

    def check(self, event: Event, to_state: ReviewState) -> None:
        """Raise ReviewConflict when the event's current state does not lead to to_state."""
        required, _ = TRANSITIONS[to_state]
        if event.review_state != required:
            raise ReviewConflict(
                f"event {event.id!r} is {event.review_state}: only a {required} event can become {to_state}"
            )

    def transition(
        self,
        event: Event,
        to_state: ReviewState,
        who: Principal,
        note: str = "",
        photo: tuple[str, str] | None = None,
    ) -> AuditEntry:
        """Move the event to to_state and record who did it; photo is (store path, sha256)."""
        self.check(event, to_state)
        required, _ = TRANSITIONS[to_state]
        at_ms = int(self._clock() * 1000)
        row = (event.id, required, to_state, who.name, who.role, at_ms, note, *(photo or (None, None)))
        with self._db.transaction() as conn:
            cur = conn.execute(
                "UPDATE events SET review_state = ? WHERE id = ? AND review_state = ?",
                (to_state, event.id, required),
            )
            if cur.rowcount != 1:  # reviewed by someone else since it was read
                found = conn.execute("SELECT review_state FROM events WHERE id = ?", (event.id,)).fetchone()
                state = found[0] if found else "gone"
                raise ReviewConflict(
                    f"event {event.id!r} is {state}: only a {required} event can become {to_state}"
                )
            conn.execute(
                """INSERT INTO event_reviews (event_id, from_state, to_state, actor, actor_role, at_ms, note,
                                              photo, photo_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                row,
            )
        return _audit_entry(row)

    def audit(self, event_id: str) -> list[AuditEntry]:
        with self._db.reading() as conn:
            rows = conn.execute(
                """SELECT event_id, from_state, to_state, actor, actor_role, at_ms, note, photo, photo_sha256
                   FROM event_reviews WHERE event_id = ? ORDER BY seq""",
                (event_id,),
            ).fetchall()
        return [_audit_entry(r) for r in rows]

    def rectification_photo(self, event_id: str) -> tuple[str, str] | None:
        """(store path, sha256) of the photo recorded with the event's rectification, if any."""
        with self._db.reading() as conn:
            row = conn.execute(
                """SELECT photo, photo_sha256 FROM event_reviews
                   WHERE event_id = ? AND to_state = 'rectified' AND photo IS NOT NULL ORDER BY seq DESC""",
                (event_id,),
            ).fetchone()
        return (row[0], row[1]) if row else None

    def stats(
        self,
        since: datetime | None,
        until: datetime | None,
        sites: frozenset[str] | None,
        timezones: Mapping[str, str],
    ) -> StatsReport:
        """Counts per site, rule and local day of the events started in [since, until), with rates;
        time to rectify runs from the confirmation to the rectification."""
        where, args = [], []
        if sites is not None:
            clause, values = in_list("e.site", sites)
            where.append(clause)
            args += values
        if since is not None:
            where.append("e.started_ms >= ?")
            args.append(int(since.timestamp() * 1000))
        if until is not None:
            where.append("e.started_ms < ?")
            args.append(int(until.timestamp() * 1000))
        sql = f"""
            SELECT e.site, e.rule, e.started_ms / {QUARTER_MS}, e.review_state, COUNT(*),
                   CAST(COALESCE(SUM(rect.at_ms - conf.at_ms), 0) AS BIGINT),
                   COUNT(rect.at_ms - conf.at_ms)
            FROM events e
            LEFT JOIN event_reviews conf ON conf.event_id = e.id AND conf.to_state = 'confirmed'
            LEFT JOIN event_reviews rect ON rect.event_id = e.id AND rect.to_state = 'rectified'
            {"WHERE " + " AND ".join(where) if where else ""}
            GROUP BY 1, 2, 3, 4"""
        with self._db.reading() as conn:
            rows = conn.execute(sql, args).fetchall()
        zones: dict[str, ZoneInfo] = {}
        per_row: dict[tuple[str, str, date], _Tally] = {}
        per_site: dict[str, _Tally] = {}
        total = _Tally()
        for site, rule, quarter, state, n, rectify_ms, rectify_n in rows:
            zone = zones.setdefault(site, ZoneInfo(timezones.get(site, "UTC")))
            day = datetime.fromtimestamp(quarter * QUARTER_MS / 1000, zone).date()
            for tally in (
                per_row.setdefault((site, rule, day), _Tally()),
                per_site.setdefault(site, _Tally()),
                total,
            ):
                tally.add(state, n, rectify_ms, rectify_n)
        return StatsReport(
            since=since,
            until=until,
            totals=Counts(**total.counts()),
            sites=[SiteStats(site=s, **t.counts()) for s, t in sorted(per_site.items())],
            rows=[StatsRow(site=s, rule=r, day=d, **t.counts()) for (s, r, d), t in sorted(per_row.items())],
        )


# Rectification photos: JPEG or PNG, told by their first bytes, stored beside the snapshots under their hash.
RECTIFICATIONS_DIR = "rectifications"
PHOTO_TYPES = {b"\xff\xd8\xff": ("jpg", "image/jpeg"), b"\x89PNG\r\n\x1a\n": ("png", "image/png")}
PHOTO_MEDIA_TYPES = dict(PHOTO_TYPES.values())


def photo_type(data: bytes) -> str | None:
    """The file extension of a JPEG or PNG image, from its magic bytes; None for anything else."""
    return next((ext for magic, (ext, _) in PHOTO_TYPES.items() if data.startswith(magic)), None)


def store_photo(root: Path, data: bytes, ext: str) -> tuple[str, str]:
    """Write a photo atomically under root; returns (path relative to root, sha256 hex)."""
    digest = hashlib.sha256(data).hexdigest()
    rel = f"{RECTIFICATIONS_DIR}/{digest}.{ext}"
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")  # concurrent uploads of one photo
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return rel, digest
