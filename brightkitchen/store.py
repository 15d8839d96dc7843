"""Event storage (SQLite or PostgreSQL): upsert by (id, revision), filtered newest-first listing with cursors."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from brightkitchen.db import MAX_INT64, Connection, Database, DatabaseError, in_list, is_postgresql, sqlite_path
from brightkitchen.events import Event
from brightkitchen.migrations import migrate

__all__ = ["EventQuery", "EventStore", "StoreError", "is_postgresql", "sqlite_path"]


class StoreError(ValueError):
    """A request the store cannot answer (for example a malformed cursor)."""


@dataclass(frozen=True)
class EventQuery:
    site: str | None = None
    camera: str | None = None
    rule: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    cursor: str | None = None
    # The sites a caller may see; None: every site.
    sites: frozenset[str] | None = None


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def encode_cursor(started_ms: int, event_id: str) -> str:
    return base64.urlsafe_b64encode(f"{started_ms}:{event_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ms, event_id = raw.split(":", 1)
        if abs(int(ms)) > MAX_INT64:
            raise ValueError("out of range")
        return int(ms), event_id
    except (ValueError, UnicodeDecodeError) as e:
        raise StoreError("malformed cursor") from e


# Runs inside the transaction that stores a new event revision (e.g. to queue deliveries atomically).
StoredHook = Callable[[Connection, Event], None]


def _event(data: str, review_state: str) -> Event:
    """The stored event; its review state is the API's, never overwritten by worker revisions."""
    event = Event.model_validate_json(data)
    event.review_state = review_state  # type: ignore[assignment]
    return event


class EventStore:
    def __init__(self, url: str) -> None:
        try:
            self.db = Database(url)
        except DatabaseError as e:
            raise StoreError(str(e)) from None
        self.on_stored: list[StoredHook] = []
        self.applied_migrations = migrate(self.db)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """The shared connection, for stores of other tables in the same database."""
        with self.db.reading() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """The shared connection inside one write transaction: committed on exit, rolled back on error."""
        with self.db.transaction() as conn:
            yield conn

    def upsert(self, event: Event) -> bool:
        """Store an event revision; False when this or a newer revision is already stored (a duplicate)."""
        row = (
            event.id,
            event.revision,
            event.phase,
            event.review_state,
            event.site,
            event.camera,
            event.rule,
            _ms(event.started_at),
            _ms(event.updated_at),
            event.model_dump_json(),
        )
        with self.transaction() as conn:
            cur = conn.execute(
                """INSERT INTO events (id, revision, phase, review_state, site, camera, rule,
                                       started_ms, updated_ms, data)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (id) DO UPDATE SET
                       revision = excluded.revision, phase = excluded.phase,
                       updated_ms = excluded.updated_ms, data = excluded.data
                   WHERE excluded.revision > events.revision""",
                row,
            )
            if cur.rowcount != 1:
                return False
            for hook in self.on_stored:
                hook(conn, event)
            return True

    def get(self, event_id: str) -> Event | None:
        with self.reading() as conn:
            row = conn.execute("SELECT data, review_state FROM events WHERE id = ?", (event_id,)).fetchone()
        return _event(*row) if row else None

    def list(self, q: EventQuery) -> tuple[list[Event], str | None]:
        where, args = [], []
        for column, value in (("site", q.site), ("camera", q.camera), ("rule", q.rule)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if q.sites is not None:
            clause, values = in_list("site", q.sites)
            where.append(clause)
            args += values
        if q.since is not None:
            where.append("started_ms >= ?")
            args.append(_ms(q.since))
        if q.until is not None:
            where.append("started_ms < ?")
            args.append(_ms(q.until))
        if q.cursor:
            ms, event_id = decode_cursor(q.cursor)
            where.append("(started_ms < ? OR (started_ms = ? AND id < ?))")
            args += [ms, ms, event_id]
        sql = "SELECT started_ms, id, data, review_state FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_ms DESC, id DESC LIMIT ?"
        args.append(q.limit + 1)
        with self.reading() as conn:
            rows = conn.execute(sql, args).fetchall()
        items = [_event(r[2], r[3]) for r in rows[: q.limit]]
        next_cursor = encode_cursor(rows[q.limit - 1][0], rows[q.limit - 1][1]) if len(rows) > q.limit else None
        return items, next_cursor

    def count(self) -> int:
        with self.reading() as conn:
            return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
