"""Events leave the worker in order, with their snapshots, from the publisher's own thread."""

import os
import threading
import time

from prometheus_client import REGISTRY

from brightkitchen.bus import InProcessBus
from brightkitchen.events import Event, ModelRef, new_event_id, utc
from streams.publisher import BACKGROUND_NICE, EventPublisher


def event(event_id: str, phase: str, revision: int) -> Event:
    now = utc(time.time())
    return Event(id=event_id, revision=revision, phase=phase, rule="r", site="s", camera="c", class_name="x",
                 track_id=1, score=0.9, started_at=now, updated_at=now, boxes=[], frame_size=(4, 4),
                 model=ModelRef(name="m", version="1"))


def drain(bus: InProcessBus, n: int) -> list[Event]:
    out = []
    while len(out) < n and (e := bus.receive(5.0)) is not None:
        out.append(e)
    return out


def test_slow_snapshots_do_not_hold_the_caller_and_revisions_keep_their_order_and_snapshot():
    bus = InProcessBus()
    release = threading.Event()
    published: list[tuple[str, int]] = []

    def snapshot(e: Event, job: str) -> tuple[str, str]:
        release.wait(10)  # a slow disk
        return f"{job}.jpg", "sha"

    publisher = EventPublisher(bus, snapshot, lambda e, t: published.append((e.id, e.revision)))
    publisher.start()
    a, b = new_event_id(), new_event_id()
    started = time.monotonic()
    publisher.submit(event(a, "open", 1), 0.0, "a")
    publisher.submit(event(a, "updated", 2), 0.0)
    publisher.submit(event(b, "open", 1), 0.0, "b")
    publisher.submit(event(a, "closed", 3), 0.0)
    assert time.monotonic() - started < 1.0 and bus.receive(0.2) is None  # nothing out before its snapshot
    release.set()
    out = drain(bus, 4)
    publisher.stop()
    assert [(e.id, e.revision) for e in out] == [(a, 1), (a, 2), (b, 1), (a, 3)] == published
    assert [e.snapshot for e in out] == ["a.jpg", "a.jpg", "b.jpg", "a.jpg"]


def test_a_failed_snapshot_still_publishes_the_event_and_without_the_thread_it_publishes_at_once():
    bus = InProcessBus()

    def broken(e: Event, job: object) -> tuple[str, str]:
        raise OSError("disk full")

    publisher = EventPublisher(bus, broken, lambda e, t: None)
    publisher.submit(event(new_event_id(), "open", 1), 0.0, "job")  # not started: handled in the caller
    (out,) = drain(bus, 1)
    assert out.phase == "open" and out.snapshot is None


def test_snapshots_of_two_events_render_at_the_same_time_and_still_publish_in_order():
    bus = InProcessBus()
    both_rendering = threading.Barrier(2, timeout=10)  # broken (and the snapshot failed) if rendered one by one

    def snapshot(e: Event, job: str) -> tuple[str, str]:
        both_rendering.wait()
        return f"{job}.jpg", "sha"

    publisher = EventPublisher(bus, snapshot, lambda e, t: None, render_threads=2)
    publisher.start()
    a, b = new_event_id(), new_event_id()
    publisher.submit(event(a, "open", 1), 0.0, "a")
    publisher.submit(event(b, "open", 1), 0.0, "b")
    out = drain(bus, 2)
    publisher.stop()
    assert [(e.id, e.snapshot) for e in out] == [(a, "a.jpg"), (b, "b.jpg")]


def test_background_work_holds_up_no_snapshot_runs_at_a_lower_priority_and_finishes_before_stop(caplog):
    bus = InProcessBus()
    release = threading.Event()
    order: list[str] = []
    nice: list[int] = []
    publisher = EventPublisher(bus, lambda e, job: (order.append(job), (f"{job}.jpg", "sha"))[1],
                               lambda e, t: None, render_threads=1)

    def raw_frame(name: str) -> None:
        release.wait(10)  # a slow disk, and no event waits for it
        nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        order.append(name)

    def broken() -> None:
        raise OSError("disk full")

    publisher.start()
    a, b = new_event_id(), new_event_id()
    publisher.submit(event(a, "open", 1), 0.0, "a")
    publisher.in_background(raw_frame, "raw a")
    publisher.in_background(broken)
    publisher.submit(event(b, "open", 1), 0.0, "b")
    assert [e.id for e in drain(bus, 2)] == [a, b]  # b's snapshot did not wait for the slow raw frame
    assert order == ["a", "b"]
    release.set()
    publisher.stop()
    assert order == ["a", "b", "raw a"]
    assert nice == [min(19, os.getpriority(os.PRIO_PROCESS, 0) + BACKGROUND_NICE)]
    assert "background work broken failed" in caplog.text


def test_background_work_past_the_limit_is_skipped_and_counted(caplog):
    release = threading.Event()
    done: list[int] = []
    publisher = EventPublisher(InProcessBus(), lambda e, job: ("x.jpg", "sha"), lambda e, t: None, max_background=2)
    skipped = REGISTRY.get_sample_value("brightkitchen_background_work_skipped_total") or 0.0

    running = threading.Event()

    def slow(n: int) -> None:
        running.set()
        release.wait(10)
        done.append(n)

    publisher.start()
    publisher.in_background(slow, 0)
    assert running.wait(10)  # running, so no longer waiting
    for n in range(1, 5):  # two may wait behind it
        publisher.in_background(slow, n)
    release.set()
    publisher.stop()
    assert done == [0, 1, 2]
    assert REGISTRY.get_sample_value("brightkitchen_background_work_skipped_total") == skipped + 2
    assert "background work slow skipped: 2 jobs wait already" in caplog.text


def test_background_work_without_the_threads_runs_at_once():
    done: list[int] = []
    EventPublisher(InProcessBus(), lambda e, job: ("x.jpg", "sha"), lambda e, t: None).in_background(done.append, 1)
    assert done == [1]
