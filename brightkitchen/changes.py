"""The change log: every stored event revision with a global, increasing sequence number.

Each output of the feed (server-sent events, WebSocket, webhooks, a Redis stream) reads this one log,
so a client that remembers the last seq it saw can resume without a gap or a duplicate. The log is
written by `record_change`, a store hook that runs inside the transaction that stores the revision.

Readers ask for "everything after seq N", which is only right if seqs become visible in order. SQLite
has one writer at a time. On PostgreSQL a sequence value taken by one transaction can commit after a
higher one taken by another, so writers of the log take turns on an advisory lock held until commit:
seq order is commit order, across every process that stores events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from brightkitchen.db import Connection
from brightkitchen.events import Event, utc
from brightkitchen.store import EventStore


def now_ms() -> int:
    return int(time.time() * 1000)


def record_change(conn: Connection, event: Event) -> None:
    """Store hook: append the revision to the change log (inside the storing transaction)."""
    conn.serialize("changes")
    conn.notify("changes")  # other API processes' streams and senders wake up at commit
    conn.execute(
        """INSERT INTO changes (event_id, revision, site, camera, rule, phase, payload, stored_ms)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        (event.id, event.revision, event.site, event.camera, event.rule, event.phase,
         event.model_dump_json(), now_ms()),
    )


@dataclass(frozen=True)
class Change:
    seq: int
    event_id: str
    revision: int
    site: str
    camera: str
    rule: str
    phase: str
    payload: str  # the Event as JSON, exactly as stored
    stored_ms: int

    @property
    def stored_at(self) -> datetime:
        return utc(self.stored_ms / 1000)

    def event(self) -> Event:
        return Event.model_validate_json(self.payload)


COLUMNS = "seq, event_id, revision, site, camera, rule, phase, payload, stored_ms"


def changes_after(conn: Connection, seq: int, limit: int) -> list[Change]:
    rows = conn.execute(f"SELECT {COLUMNS} FROM changes WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
    return [Change(*row) for row in rows.fetchall()]


def read_cursor(conn: Connection, name: str) -> int:
    row = conn.execute("SELECT seq FROM feed_cursors WHERE name = ?", (name,)).fetchone()
    return row[0] if row else 0


def write_cursor(conn: Connection, name: str, seq: int) -> None:
    conn.execute(
        "INSERT INTO feed_cursors (name, seq) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
        (name, seq),
    )


class ChangeLog:
    """Reads the change log and keeps the cursors of pushing outputs."""

    def __init__(self, store: EventStore) -> None:
        self._store = self.store = store

    def after(self, seq: int, limit: int = 500) -> list[Change]:
        """Changes with a seq greater than `seq`, oldest first."""
        with self._store.reading() as conn:
            return changes_after(conn, seq, limit)

    def last_seq(self) -> int:
        """The newest seq ever assigned (0 for an empty log), also when its row was pruned."""
        if self._store.db.dialect.name == "postgresql":
            with self._store.transaction() as conn:
                # A change being stored holds the lock, its seq taken but not yet visible: wait for it.
                conn.serialize("changes", shared=True)
                found = conn.execute(
                    "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM changes_seq_seq"
                ).fetchone()
        else:
            with self._store.reading() as conn:
                found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return found[0] if found else 0

    def seq_before(self, when: datetime) -> int:
        """The last seq stored before `when`: replaying after it replays everything stored since."""
        with self._store.reading() as conn:
            row = conn.execute(
                "SELECT MIN(seq) FROM changes WHERE stored_ms >= ?", (int(when.timestamp() * 1000),)
            ).fetchone()
        return row[0] - 1 if row[0] is not None else self.last_seq()

    def cursor(self, name: str) -> int:
        with self._store.reading() as conn:
            return read_cursor(conn, name)

    def set_cursor(self, name: str, seq: int) -> None:
        with self._store.reading() as conn:
            write_cursor(conn, name, seq)

    def prune(self, before: datetime) -> int:
        """Forget changes stored before `before` that no delivery or pushing output still needs."""
        with self._store.reading() as conn:
            cur = conn.execute(
                """DELETE FROM changes WHERE stored_ms < ?
                   AND NOT EXISTS (SELECT 1 FROM deliveries d
                                   WHERE d.seq = changes.seq AND d.state != 'delivered')
                   AND NOT EXISTS (SELECT 1 FROM feed_cursors f WHERE f.seq < changes.seq)""",
                (int(before.timestamp() * 1000),),
            )
        return cur.rowcount
