"""Webhook subscriptions and their durable outbox.

`queue_deliveries` is a store hook: it runs inside the transaction that stores an event revision (after
`record_change`), so a revision is never stored without its deliveries queued, even across a crash.
A delivery is pending until a receiver answers 2xx (delivered) or it grows older than the maximum age
(dead); dead deliveries can be replayed. Each (subscription, camera) is a queue: only its oldest
pending delivery is ever due, so a camera's events reach a receiver in the order they were stored.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

from brightkitchen.changes import now_ms
from brightkitchen.db import Connection, Dialect
from brightkitchen.events import Event, new_event_id
from brightkitchen.store import EventStore

# Filter name -> the change's column it filters on.
FILTERS = {"sites": "site", "cameras": "camera", "rules": "rule", "phases": "phase"}


@cache
def _queue_sql(dialect: Dialect) -> str:
    """INSERT of one pending delivery per (matching subscription, change); callers add the WHERE."""
    # A change matches a subscription when each of its filters is empty or names the change's value.
    matches = " AND ".join(
        f"(s.{f} = '[]' OR c.{col} IN ({dialect.json_values(f's.{f}')}))" for f, col in FILTERS.items()
    )
    return f"""INSERT INTO deliveries
                   (delivery_id, subscription_id, seq, camera, state, created_ms, next_attempt_ms)
               SELECT {dialect.random_id}, s.id, c.seq, c.camera, 'pending', :now, :now
               FROM changes c JOIN subscriptions s ON {matches}"""


def queue_deliveries(conn: Connection, event: Event) -> None:
    """Store hook: queue one delivery per matching subscription; needs the change `record_change` wrote."""
    conn.execute(f"{_queue_sql(conn.dialect)} WHERE c.event_id = :id AND c.revision = :revision",
                 {"now": now_ms(), "id": event.id, "revision": event.revision})


@dataclass(frozen=True)
class Filters:
    sites: list[str] = field(default_factory=list)
    cameras: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Subscription:
    id: str
    owner: str  # the principal that created it
    url: str
    filters: Filters
    created_ms: int
    backlog: int = 0  # pending deliveries
    dead: int = 0
    last_success_ms: int | None = None
    last_attempt_ms: int | None = None
    last_error: str | None = None
    last_error_ms: int | None = None
    consecutive_failures: int = 0


@dataclass(frozen=True)
class Delivery:
    """One pending delivery with what it takes to send it."""

    row: int
    delivery_id: str
    subscription_id: str
    url: str
    secret: str
    seq: int
    camera: str
    event_id: str
    revision: int
    payload: str  # the Event JSON as stored
    attempts: int
    created_ms: int


SUBSCRIPTION = """SELECT s.id, s.owner, s.url, s.sites, s.cameras, s.rules, s.phases, s.created_ms,
       (SELECT COUNT(*) FROM deliveries d WHERE d.subscription_id = s.id AND d.state = 'pending'),
       (SELECT COUNT(*) FROM deliveries d WHERE d.subscription_id = s.id AND d.state = 'dead'),
       s.last_success_ms, s.last_attempt_ms, s.last_error, s.last_error_ms, s.consecutive_failures
   FROM subscriptions s"""

# The oldest pending delivery of every (subscription, camera) queue: the only one that may be sent.
HEADS = """(SELECT subscription_id, camera, MIN(seq) AS seq FROM deliveries
            WHERE state = 'pending' GROUP BY subscription_id, camera) h
           JOIN deliveries d ON d.subscription_id = h.subscription_id AND d.seq = h.seq"""
# Heads that are due and not leased by a sender.
DUE = f"""SELECT d.id, d.delivery_id, d.subscription_id, s.url, s.secret, d.seq, d.camera, c.event_id,
                c.revision, c.payload, d.attempts, d.created_ms
         FROM {HEADS}
         JOIN subscriptions s ON s.id = d.subscription_id
         JOIN changes c ON c.seq = d.seq
         WHERE d.next_attempt_ms <= :now AND d.lease_until_ms <= :now
         ORDER BY d.next_attempt_ms LIMIT :limit"""


def _subscription(row: Sequence) -> Subscription:
    filters = Filters(*(json.loads(v) for v in row[3:7]))
    return Subscription(row[0], row[1], row[2], filters, *row[7:])


class Outbox:
    def __init__(self, store: EventStore) -> None:
        self._store = store

    # Subscriptions

    def create(self, owner: str, url: str, secret: str, filters: Filters) -> Subscription:
        sub_id = "sub_" + new_event_id()
        with self._store.reading() as conn:
            conn.execute(
                """INSERT INTO subscriptions
                       (id, owner, url, secret, sites, cameras, rules, phases, created_ms)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (sub_id, owner, url, secret, *(json.dumps(getattr(filters, f)) for f in FILTERS), now_ms()),
            )
        created = self.get(sub_id)
        assert created is not None
        return created

    def list(self, owner: str | None = None) -> list[Subscription]:
        """Every subscription, or those of one owner."""
        sql, args = SUBSCRIPTION, ()
        if owner is not None:
            sql, args = sql + " WHERE s.owner = ?", (owner,)
        with self._store.reading() as conn:
            rows = conn.execute(sql + " ORDER BY s.created_ms, s.id", args).fetchall()
        return [_subscription(r) for r in rows]

    def get(self, sub_id: str) -> Subscription | None:
        with self._store.reading() as conn:
            row = conn.execute(SUBSCRIPTION + " WHERE s.id = ?", (sub_id,)).fetchone()
        return _subscription(row) if row else None

    def delete(self, sub_id: str) -> bool:
        with self._store.transaction() as conn:
            conn.execute("DELETE FROM deliveries WHERE subscription_id = ?", (sub_id,))
            return conn.execute("DELETE FROM subscriptions WHERE id = ?", (sub_id,)).rowcount == 1

    def replay(self, sub_id: str, after_seq: int | None = None) -> int:
        """Queue again: with `after_seq`, every matching change after it (delivered or not, including
        changes from before the subscription existed); without, the dead deliveries, and the failing
        ones at once instead of after their backoff. Returns how many deliveries were queued."""
        now = now_ms()
        with self._store.transaction() as conn:
            # A new delivery id: a result still in flight for the old one must not settle the replay.
            requeue = f"""UPDATE deliveries SET state = 'pending', attempts = 0, created_ms = :now,
                             next_attempt_ms = :now, lease_until_ms = 0, delivery_id = {conn.dialect.random_id}"""
            if after_seq is None:
                dead = conn.execute(f"{requeue} WHERE subscription_id = :sub AND state = 'dead'",
                                          {"now": now, "sub": sub_id}).rowcount
                failing = conn.execute(
                    """UPDATE deliveries SET next_attempt_ms = :now WHERE subscription_id = :sub
                       AND state = 'pending' AND attempts > 0""",
                    {"now": now, "sub": sub_id},
                ).rowcount
                return dead + failing
            args = {"now": now, "sub": sub_id, "after": after_seq}
            again = conn.execute(f"{requeue} WHERE subscription_id = :sub AND seq > :after", args).rowcount
            new = conn.execute(
                f"""{_queue_sql(conn.dialect)} WHERE s.id = :sub AND c.seq > :after
                    AND NOT EXISTS (SELECT 1 FROM deliveries x
                                    WHERE x.subscription_id = s.id AND x.seq = c.seq)""",
                args,
            ).rowcount
            return again + new

    # Delivery

    def due(self, now: int, limit: int = 100) -> list[Delivery]:
        with self._store.reading() as conn:
            rows = conn.execute(DUE, {"now": now, "limit": limit}).fetchall()
        return [Delivery(*r) for r in rows]

    def claim(self, delivery: Delivery, now: int, lease_ms: int) -> bool:
        """Lease a due delivery so that no other sender (another API process) sends it meanwhile."""
        with self._store.reading() as conn:
            cur = conn.execute(
                """UPDATE deliveries SET lease_until_ms = ?
                   WHERE id = ? AND delivery_id = ? AND state = 'pending' AND lease_until_ms <= ?""",
                (now + lease_ms, delivery.row, delivery.delivery_id, now),
            )
        return cur.rowcount == 1

    def delivered(self, delivery: Delivery, status: int, now: int) -> None:
        with self._store.transaction() as conn:
            cur = conn.execute(
                """UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, delivered_ms = ?,
                       last_attempt_ms = ?, last_status = ?, last_error = NULL, lease_until_ms = 0
                   WHERE id = ? AND delivery_id = ?""",
                (now, now, status, delivery.row, delivery.delivery_id),
            )
            if cur.rowcount:
                conn.execute(
                    """UPDATE subscriptions SET last_success_ms = ?, last_attempt_ms = ?,
                       consecutive_failures = 0 WHERE id = ?""",
                    (now, now, delivery.subscription_id),
                )

    def failed(
        self, delivery: Delivery, error: str, status: int | None, now: int, retry_at: int | None
    ) -> None:
        """Record a failed attempt: retry at `retry_at`, or, when it is None, give up (dead)."""
        with self._store.transaction() as conn:
            cur = conn.execute(
                """UPDATE deliveries SET state = ?, attempts = attempts + 1, next_attempt_ms = ?,
                       last_attempt_ms = ?, last_status = ?, last_error = ?, lease_until_ms = 0
                   WHERE id = ? AND delivery_id = ?""",
                ("pending" if retry_at is not None else "dead", retry_at or now, now, status, error,
                 delivery.row, delivery.delivery_id),
            )
            if cur.rowcount:
                conn.execute(
                    """UPDATE subscriptions SET last_attempt_ms = ?, last_error = ?, last_error_ms = ?,
                       consecutive_failures = consecutive_failures + 1 WHERE id = ?""",
                    (now, error, now, delivery.subscription_id),
                )

    def next_due_ms(self) -> int | None:
        """When the next delivery will be due (None: nothing pending)."""
        with self._store.reading() as conn:
            row = conn.execute(
                "SELECT MIN(CASE WHEN d.next_attempt_ms > d.lease_until_ms THEN d.next_attempt_ms"
                f" ELSE d.lease_until_ms END) FROM {HEADS}"
            )
            return row.fetchone()[0]

    def backlog(self) -> int:
        with self._store.reading() as conn:
            return conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'").fetchone()[0]

    def prune(self, before_ms: int) -> int:
        """Forget deliveries that succeeded before `before_ms`."""
        with self._store.reading() as conn:
            cur = conn.execute(
                "DELETE FROM deliveries WHERE state = 'delivered' AND delivered_ms < ?", (before_ms,)
            )
        return cur.rowcount


def generate_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)
