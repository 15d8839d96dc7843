import hashlib
import os

from brightkitchen.snapshots import SnapshotStore

DAY = 86400.0


def test_save_is_addressed_by_day_and_hashed(tmp_path):
    store = SnapshotStore(tmp_path)
    rel, digest = store.save("abc", b"\xff\xd8jpeg", at=1_790_000_000.0)
    assert rel == "2026/09/21/abc.jpg"
    assert digest == hashlib.sha256(b"\xff\xd8jpeg").hexdigest()
    assert store.path(rel).read_bytes() == b"\xff\xd8jpeg"
    assert store.path("../../etc/passwd") is None and store.path("2026/09/21/missing.jpg") is None


def test_retention_by_age_then_by_count(tmp_path):
    store = SnapshotStore(tmp_path, retention_days=2, max_count=3)
    now = 1_790_000_000.0
    paths = []
    for i, age_days in enumerate([5, 3, 1.5, 1, 0.5, 0.1]):
        rel, _ = store.save(f"e{i}", b"x", at=now - age_days * DAY)
        path = store.path(rel)
        os.utime(path, (now - age_days * DAY, now - age_days * DAY))
        paths.append(path)
    other = tmp_path / "rectifications" / "photo.jpg"
    other.parent.mkdir()
    other.write_bytes(b"x")
    os.utime(other, (now - 9 * DAY, now - 9 * DAY))
    assert store.prune(now) == 3  # two too old, then the oldest of the four young ones
    assert [p.exists() for p in paths] == [False, False, False, True, True, True]
    assert other.exists()  # rectification photos are evidence, not subject to snapshot retention
