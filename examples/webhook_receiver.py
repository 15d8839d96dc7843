"""A small brightkitchen webhook receiver, Python standard library only.

It checks each delivery's signature and timestamp, de-duplicates by (event id, revision), prints one
JSON line per new event revision and answers 204. Anything it rejects gets a 4xx, which brightkitchen
retries (a wrong secret shows up as failures in the subscription's delivery state).

    python examples/webhook_receiver.py --port 9000 --secret whsec_...
    (or set BRIGHTKITCHEN_WEBHOOK_SECRET instead of --secret)

A real receiver stores the event and the (id, revision) pair it has seen in its database, in one
transaction, before it answers 2xx.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOLERANCE_S = 300  # reject deliveries signed longer ago than this: a captured request cannot be replayed
MAX_BODY = 4 * 1024 * 1024


def verify(secret: str, timestamp: str, body: bytes, signature: str, now: float | None = None,
           tolerance_s: float = TOLERANCE_S) -> bool:
    """True when `signature` is v1=hex(HMAC-SHA256(secret, "<timestamp>.<body>")) of a recent timestamp."""
    if not timestamp.isascii() or not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest("v1=" + expected, signature)


def print_event(payload: dict[str, Any]) -> None:
    event = payload["event"]
    line = {k: event.get(k) for k in ("id", "revision", "phase", "site", "camera", "rule")}
    print(json.dumps({"seq": payload["seq"], **line}), flush=True)


class Receiver:
    """What the handler shares between requests: the secret and the (event id, revision) pairs seen."""

    def __init__(self, secret: str, handle: Callable[[dict[str, Any]], None] = print_event) -> None:
        self.secret = secret
        self.handle = handle
        self.seen: set[tuple[str, int]] = set()
        self.lock = threading.Lock()


def make_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class WebhookHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413, "body too large")
                return
            body = self.rfile.read(length)
            timestamp = self.headers.get("X-Brightkitchen-Timestamp", "")
            signature = self.headers.get("X-Brightkitchen-Signature", "")
            if not verify(receiver.secret, timestamp, body, signature):
                self._answer(401, "bad or missing signature, or an old timestamp")
                return
            try:
                payload = json.loads(body)
                key = (payload["event"]["id"], int(payload["event"]["revision"]))
            except (ValueError, KeyError, TypeError):
                self._answer(400, "not a brightkitchen delivery")
                return
            with receiver.lock:
                if key not in receiver.seen:  # a repeated delivery is acknowledged, not handled twice
                    receiver.handle(payload)
                    receiver.seen.add(key)
            self._answer(204)

        def _answer(self, status: int, message: str = "") -> None:
            data = message.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            print(f"{self.address_string()} {format % args}", file=sys.stderr)

    return WebhookHandler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="receive and verify brightkitchen webhooks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--secret", default=os.environ.get("BRIGHTKITCHEN_WEBHOOK_SECRET"))
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("give --secret or set BRIGHTKITCHEN_WEBHOOK_SECRET")
    server = ThreadingHTTPServer((args.host, args.port), make_handler(Receiver(args.secret)))
    print(f"listening on http://{args.host}:{server.server_port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
