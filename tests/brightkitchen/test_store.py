import threading
from datetime import UTC, datetime, timedelta

import pytest

from brightkitchen.events import Box, Event, ModelRef, new_event_id
from brightkitchen.migrations import available, current_version
from brightkitchen.store import EventQuery, EventStore, StoreError

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def make_event(i: int, **kw) -> Event:
    started = T0 + timedelta(seconds=i)
    data = dict(
        id=new_event_id(started.timestamp()),
        phase="open",
        rule="no_hat",
        site="s1",
        camera="c1",
        class_name="head_bare",
        track_id=i,
        score=0.9,
        started_at=started,
        updated_at=started,
        boxes=[Box(label="head_bare", score=0.9, xyxy=(1, 2, 3, 4), track_id=i)],
        frame_size=(1280, 720),
        model=ModelRef(name="m", version="1"),
    )
    data.update(kw)
    return Event(**data)


@pytest.fixture
def store(database_url):
    s = EventStore(database_url)
    yield s
    s.close()


def test_event_ids_are_unique_and_time_ordered():
    ids = [new_event_id(1_700_000_000 + i) for i in range(100)]
    assert len(set(ids)) == 100 and ids == sorted(ids)
    assert all(len(i) == 32 and i[12] == "7" for i in ids)


def test_migrations_apply_once(database_url):
    first = EventStore(database_url)
    assert first.applied_migrations == [f"{v:04d}_{n}" for v, n, _ in available()]
    first.close()
    second = EventStore(database_url)
    assert second.applied_migrations == []
    with second.reading() as conn:
        assert current_version(conn) == available()[-1][0]
    second.close()


def test_replicas_starting_at_once_apply_each_migration_once(database_url):
    stores: list[EventStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(EventStore(database_url))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    applied = [m for s in stores for m in s.applied_migrations]
    assert sorted(applied) == [f"{v:04d}_{n}" for v, n, _ in available()]  # each once, by one of them
    with stores[0].reading() as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [v for v, _, _ in available()]
    for s in stores:
        s.close()


def test_upsert_keeps_newest_revision_and_deduplicates(store):
    e = make_event(0)
    assert store.upsert(e)
    assert not store.upsert(e)  # same revision again: duplicate
    closed = e.model_copy(update={"phase": "closed", "revision": 3, "ended_at": T0 + timedelta(seconds=9)})
    assert store.upsert(closed)
    assert not store.upsert(e.model_copy(update={"phase": "updated", "revision": 2}))  # late, older
    got = store.get(e.id)
    assert got.phase == "closed" and got.revision == 3 and got.ended_at == T0 + timedelta(seconds=9)
    assert store.count() == 1


def test_list_filters_and_cursor_pagination(store):
    events = [make_event(i, camera=f"c{i % 2}", rule="smoking" if i % 3 == 0 else "no_hat") for i in range(25)]
    for e in events:
        store.upsert(e)
    seen, cursor = [], None
    while True:
        items, cursor = store.list(EventQuery(limit=7, cursor=cursor))
        seen += items
        if cursor is None:
            break
    assert [e.id for e in seen] == [e.id for e in reversed(events)]  # newest first, each exactly once
    items, _ = store.list(EventQuery(camera="c1", rule="no_hat", limit=100))
    assert {e.id for e in items} == {e.id for e in events if e.camera == "c1" and e.rule == "no_hat"}
    items, _ = store.list(EventQuery(since=T0 + timedelta(seconds=5), until=T0 + timedelta(seconds=8)))
    assert [e.track_id for e in items] == [7, 6, 5]
    with pytest.raises(StoreError, match="malformed cursor"):
        store.list(EventQuery(cursor="!!not-a-cursor"))


def test_unsupported_database_url():
    with pytest.raises(StoreError, match="expected sqlite:///PATH or postgresql://"):
        EventStore("mysql://localhost/x")


def test_stored_hooks_share_the_transaction(store):
    seen = []
    store.on_stored.append(lambda conn, event: seen.append((event.id, event.revision)))
    e = make_event(0)
    assert store.upsert(e) and not store.upsert(e)
    assert seen == [(e.id, 1)]  # not called for a duplicate

    def failing(conn, event):
        raise RuntimeError("hook failed")

    store.on_stored.append(failing)
    other = make_event(1)
    with pytest.raises(RuntimeError):
        store.upsert(other)
    assert store.get(other.id) is None  # rolled back with the hook


def test_review_state_is_not_overwritten_by_worker_revisions(store):
    e = make_event(0)
    store.upsert(e)
    with store.transaction() as conn:
        conn.execute("UPDATE events SET review_state = 'confirmed' WHERE id = ?", (e.id,))
    store.upsert(e.model_copy(update={"phase": "closed", "revision": 2}))
    got = store.get(e.id)
    assert got.phase == "closed" and got.review_state == "confirmed"
    assert store.list(EventQuery())[0][0].review_state == "confirmed"


def test_change_seqs_become_visible_in_commit_order(database_url):
    """A change stored while an earlier one is still uncommitted must not be visible before it: readers
    take "everything after seq N", and would skip the earlier one for good."""
    from brightkitchen.changes import ChangeLog, record_change

    first, second, reader = (EventStore(database_url) for _ in range(3))
    for s in (first, second):
        s.on_stored.append(record_change)
    held, release = threading.Event(), threading.Event()

    def hold(conn, event) -> None:
        held.set()
        assert release.wait(30)

    first.on_stored.append(hold)
    a, b = make_event(0), make_event(1)
    writers = [threading.Thread(target=first.upsert, args=(a,))]
    writers[0].start()
    assert held.wait(30)
    writers.append(threading.Thread(target=second.upsert, args=(b,)))
    writers[1].start()
    writers[1].join(timeout=1.0)
    log = ChangeLog(reader)
    assert log.after(0) == []  # b must not be visible (nor committed) while a is open
    release.set()
    for w in writers:
        w.join(timeout=30)
    changes = log.after(0)
    assert [c.event_id for c in changes] == [a.id, b.id]
    assert changes[0].seq < changes[1].seq and log.last_seq() == changes[1].seq
    for s in (first, second, reader):
        s.close()


def test_a_postgresql_connection_that_broke_is_opened_again():
    import psycopg

    from tests.databases import POSTGRES, postgres_schema

    with postgres_schema() as url:
        store = EventStore(url)
        store.upsert(make_event(0))
        with store.reading() as conn:
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))  # a server restart, as the store sees it
        with pytest.raises(psycopg.OperationalError):
            store.count()
        assert store.count() == 1  # the next use opens a new connection
        assert store.upsert(make_event(1))
        store.close()
