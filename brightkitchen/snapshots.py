"""Annotated snapshot JPEGs on disk, addressed by event id, with a retention limit."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path


class SnapshotStore:
    def __init__(self, root: str | Path, retention_days: float = 30.0, max_count: int = 100_000) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.retention_s = retention_days * 86400
        self.max_count = max_count

    def save(self, event_id: str, jpeg: bytes, at: float) -> tuple[str, str]:
        """Write atomically; returns (path relative to the store, sha256 hex of the bytes)."""
        rel = time.strftime("%Y/%m/%d", time.gmtime(at)) + f"/{event_id}.jpg"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(jpeg)
        os.replace(tmp, path)
        return rel, hashlib.sha256(jpeg).hexdigest()

    def path(self, rel: str) -> Path | None:
        """The file of a stored snapshot, or None when missing or outside the store."""
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
            return None
        return path

    def prune(self, now: float | None = None) -> int:
        """Delete snapshots older than the retention, then the oldest beyond max_count."""
        now = time.time() if now is None else now
        # Only the dated snapshot folders: other folders under the root (rectification photos) are kept.
        dated = (p for p in self.root.glob("[0-9][0-9][0-9][0-9]/*/*/*.jpg"))
        files = sorted(((p.stat().st_mtime, p) for p in dated), key=lambda x: x[0])
        doomed = [p for mtime, p in files if now - mtime > self.retention_s]
        keep = [p for mtime, p in files if now - mtime <= self.retention_s]
        if len(keep) > self.max_count:
            doomed += keep[: len(keep) - self.max_count]
        for p in doomed:
            p.unlink(missing_ok=True)
        return len(doomed)
