"""Webhook delivery: a thread that sends the outbox's due deliveries, signed, and records the outcome.

Only the oldest pending delivery of each (subscription, camera) queue is ever sent, so a camera's later
event never overtakes an earlier one, while queues of other cameras and subscriptions go on. Every
answer other than 2xx is a failure and is retried with exponential backoff and jitter until the
delivery is `max_age_s` old (then it is dead and can be replayed); with `client_errors: dead`, a 4xx
other than 408/429 gives up at once instead.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime

import httpx
from prometheus_client import Counter, Gauge

from brightkitchen.changes import now_ms
from brightkitchen.config import WebhookDeliveryConfig
from brightkitchen.outbox import Delivery, Outbox

log = logging.getLogger("api.webhooks")

DELIVERY_ATTEMPTS = Counter(
    "brightkitchen_webhook_deliveries_total",
    "Webhook delivery attempts by result (delivered, retry, dead)",
    ["result"],
)
BACKLOG = Gauge("brightkitchen_webhook_backlog", "Webhook deliveries waiting to be delivered")

USER_AGENT = "brightkitchen-webhooks/1"
POLL_S = 5.0  # also look for work queued by another process, or a wake-up that was missed
MAX_ERROR_CHARS = 300
RETRYABLE_CLIENT_ERRORS = (408, 429)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Brightkitchen-Signature value: v1=hex(HMAC-SHA256(secret, "<timestamp>.<body>"))."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def delivery_body(delivery: Delivery) -> bytes:
    """The WebhookPayload JSON; the event is embedded exactly as stored."""
    return (
        f'{{"event":{delivery.payload},"seq":{delivery.seq},"delivery_id":{json.dumps(delivery.delivery_id)}}}'
    ).encode()


def backoff_s(
    failures: int, settings: WebhookDeliveryConfig, rand: Callable[[], float] = random.random
) -> float:
    """Wait after the `failures`-th failed attempt: doubling from the initial backoff, capped, and spread
    over 50-100% of that so that receivers coming back are not hit by every queue at once."""
    base = min(settings.max_backoff_s, settings.initial_backoff_s * 2.0 ** min(failures - 1, 60))
    return base * (0.5 + 0.5 * rand())


def retry_after_s(response: httpx.Response) -> float | None:
    """A receiver's Retry-After (seconds or an HTTP date), if it sent one."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class WebhookSender(threading.Thread):
    """Sends due deliveries with up to `senders` requests at a time, one per queue."""

    def __init__(self, outbox: Outbox, settings: WebhookDeliveryConfig,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(name="webhook-sender", daemon=True)
        self.outbox, self.settings = outbox, settings
        self._transport = transport
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._busy: set[tuple[str, str]] = set()  # (subscription, camera) queues being sent
        self._busy_lock = threading.Lock()
        # Longer than any attempt can take, so that a lease only outlives a sender that died.
        self._lease_ms = int((3 * settings.timeout_s + 30) * 1000)

    def wake(self) -> None:
        """New deliveries may be due (called after an event revision was stored, or a replay)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop sending; attempts under way finish, the rest stays queued in the database."""
        self._stopping.set()
        self._wake.set()
        self.join(timeout=3 * self.settings.timeout_s + 5)

    def run(self) -> None:
        timeout = httpx.Timeout(self.settings.timeout_s)
        client = httpx.Client(timeout=timeout, headers={"User-Agent": USER_AGENT}, transport=self._transport)
        pool = ThreadPoolExecutor(self.settings.senders, thread_name_prefix="webhook-send")
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    self._dispatch(pool, client)
                    BACKLOG.set(self.outbox.backlog())
                    wait = self._idle_s()
                except Exception:  # a database hiccup must not end deliveries for good
                    log.exception("webhook dispatch failed; retrying")
                    wait = POLL_S
                self._wake.wait(wait)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            client.close()

    def _dispatch(self, pool: ThreadPoolExecutor, client: httpx.Client) -> None:
        now = now_ms()
        for delivery in self.outbox.due(now, limit=4 * self.settings.senders):
            queue = (delivery.subscription_id, delivery.camera)
            with self._busy_lock:
                if len(self._busy) >= self.settings.senders:
                    return
                if queue in self._busy or not self.outbox.claim(delivery, now, self._lease_ms):
                    continue
                self._busy.add(queue)
            pool.submit(self._attempt, client, delivery)

    def _idle_s(self) -> float:
        with self._busy_lock:
            if len(self._busy) >= self.settings.senders:
                return POLL_S  # a finished attempt wakes the dispatcher
        due = self.outbox.next_due_ms()
        if due is None:
            return POLL_S
        return min(POLL_S, max(0.01, (due - now_ms()) / 1000))

    def _attempt(self, client: httpx.Client, delivery: Delivery) -> None:
        try:
            self._send(client, delivery)
        except Exception:  # the lease runs out and the delivery is tried again
            log.exception("webhook delivery %s: could not record the attempt", delivery.delivery_id)
        finally:
            with self._busy_lock:
                self._busy.discard((delivery.subscription_id, delivery.camera))
            self._wake.set()

    def _send(self, client: httpx.Client, delivery: Delivery) -> None:
        body = delivery_body(delivery)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Brightkitchen-Event-Id": delivery.event_id,
            "X-Brightkitchen-Event-Revision": str(delivery.revision),
            "X-Brightkitchen-Delivery": delivery.delivery_id,
            "X-Brightkitchen-Timestamp": str(timestamp),
            "X-Brightkitchen-Signature": sign(delivery.secret, timestamp, body),
        }
        try:
            response = client.post(delivery.url, content=body, headers=headers)
        except httpx.HTTPError as e:
            self._failed(delivery, f"{type(e).__name__}: {e}"[:MAX_ERROR_CHARS], None, None)
            return
        if 200 <= response.status_code < 300:
            self.outbox.delivered(delivery, response.status_code, now_ms())
            DELIVERY_ATTEMPTS.labels("delivered").inc()
            return
        detail = response.text.strip().replace("\n", " ")
        error = f"HTTP {response.status_code}" + (f": {detail}" if detail else "")
        self._failed(delivery, error[:MAX_ERROR_CHARS], response.status_code, retry_after_s(response))

    def _failed(self, delivery: Delivery, error: str, status: int | None, retry_after: float | None) -> None:
        now = now_ms()
        client_error = status is not None and 400 <= status < 500 and status not in RETRYABLE_CLIENT_ERRORS
        give_up = (client_error and self.settings.client_errors == "dead") or (
            now - delivery.created_ms >= self.settings.max_age_s * 1000
        )
        if give_up:
            self.outbox.failed(delivery, error, status, now, retry_at=None)
            DELIVERY_ATTEMPTS.labels("dead").inc()
            log.warning("webhook delivery %s (subscription %s) is dead: %s",
                        delivery.delivery_id, delivery.subscription_id, error)
            return
        wait = backoff_s(delivery.attempts + 1, self.settings)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.settings.max_backoff_s))
        self.outbox.failed(delivery, error, status, now, retry_at=now + int(wait * 1000))
        DELIVERY_ATTEMPTS.labels("retry").inc()
        log.info("webhook delivery %s failed (%s); retry in %.1f s", delivery.delivery_id, error, wait)
