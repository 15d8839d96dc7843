import io

import pytest

from brightkitchen.cli import main
from brightkitchen.store import EventStore
from brightkitchen.users import (
    LOCAL_ADMIN,
    Principal,
    UserError,
    UserStore,
    can_watch,
    check_sites,
    hash_password,
    verify_password,
)


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def db(database_url):
    store = EventStore(database_url)
    yield store
    store.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def users(db, clock):
    return UserStore(db, clock)


def all_stored_text(store: EventStore) -> str:
    """Every value of every table, to check that no secret is stored in the clear."""
    with store.reading() as conn:
        if conn.dialect.name == "sqlite":
            listing = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            listing = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        tables = [r[0] for r in conn.execute(listing).fetchall()]
        assert "users" in tables and "sessions" in tables and "api_keys" in tables
        return "\n".join(repr(row) for t in tables for row in conn.execute(f"SELECT * FROM {t}").fetchall())


def test_password_hash_is_salted_scrypt_and_verifies():
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("scrypt$16384$8$1$") and first != second  # random salt
    assert verify_password("correct horse", first) and verify_password("correct horse", second)
    assert not verify_password("correct horsE", first)
    assert not verify_password("correct horse", "scrypt$16384$8$1$not-base64!$AAAA")
    assert not verify_password("correct horse", "md5$abc")


def test_sites_follow_the_role():
    assert check_sites("regulator", ["a", "b", "a", " "]) == ("a", "b")
    assert check_sites("platform", []) == ()
    with pytest.raises(UserError, match="jurisdiction"):
        check_sites("regulator", [])
    with pytest.raises(UserError, match="exactly one site"):
        check_sites("site_manager", ["a", "b"])
    with pytest.raises(UserError, match="exactly one site"):
        check_sites("parent", [])
    with pytest.raises(UserError, match="every site"):
        check_sites("admin", ["a"])
    with pytest.raises(UserError, match="unknown role"):
        check_sites("chef", ["a"])  # type: ignore[arg-type]


def test_who_may_watch_which_live_view():
    parent = Principal("p", "parent", frozenset({"school-a"}), "user")
    regulator = Principal("r", "regulator", frozenset({"school-a", "school-b"}), "user")
    platform = Principal("k", "platform", None, "api_key")
    assert can_watch(parent, "school-a") and not can_watch(parent, "school-b")
    assert can_watch(regulator, "school-b") and not can_watch(regulator, "school-c")
    assert not can_watch(platform, "school-a")
    assert can_watch(LOCAL_ADMIN, "anything")


def test_users_are_added_listed_and_removed(users):
    users.add_user("reg", "regulator", ["a", "b"], "password-1")
    users.add_user("admin", "admin", [], "password-2")
    assert [(u.name, u.role, u.sites) for u in users.users()] == [
        ("admin", "admin", ()),
        ("reg", "regulator", ("a", "b")),
    ]
    with pytest.raises(UserError, match="already exists"):
        users.add_user("reg", "regulator", ["a"], "password-3")
    with pytest.raises(UserError, match="too short"):
        users.add_user("short", "admin", [], "1234567")
    with pytest.raises(UserError, match="API keys"):
        users.add_user("machine", "platform", [], "password-4")
    with pytest.raises(UserError, match="invalid name"):
        users.add_user("bad name", "admin", [], "password-5")
    users.remove_user("reg")
    assert [u.name for u in users.users()] == ["admin"]
    with pytest.raises(UserError, match="no user 'reg'"):
        users.remove_user("reg")


def test_sessions_expire_and_end(users, clock, db):
    users.add_user("mgr", "site_manager", ["a"], "password-1")
    assert users.login("mgr", "wrong-password", 60) is None
    assert users.login("nobody", "password-1", 60) is None
    session = users.login("mgr", "password-1", 60)
    assert session.principal == Principal("mgr", "site_manager", frozenset({"a"}), "user")
    assert session.expires_at.timestamp() == clock.t + 60
    assert users.session(session.token) == session.principal
    assert session.token not in all_stored_text(db) and "password-1" not in all_stored_text(db)
    clock.t += 59.9
    assert users.session(session.token) is not None
    clock.t += 0.1
    assert users.session(session.token) is None  # expired

    second = users.login("mgr", "password-1", 60)
    assert users.logout(second.token) and users.session(second.token) is None
    assert not users.logout(second.token)

    third = users.login("mgr", "password-1", 60)
    users.set_password("mgr", "password-2")
    assert users.session(third.token) is None  # a new password ends the sessions
    assert users.login("mgr", "password-1", 60) is None
    fourth = users.login("mgr", "password-2", 60)
    users.remove_user("mgr")
    assert users.session(fourth.token) is None


def test_api_keys_are_shown_once_stored_hashed_and_revocable(users, db):
    key, secret = users.add_key("city-platform", ["b"])
    assert secret.startswith("bk_") and len(secret) > 40 and secret.startswith(key.hint)
    assert secret not in all_stored_text(db)
    assert users.key(secret) == Principal("city-platform", "platform", frozenset({"b"}), "api_key")
    _, everything = users.add_key("province", [])
    assert users.key(everything).sites is None
    assert users.key(secret + "x") is None
    with pytest.raises(UserError, match="already exists"):
        users.add_key("city-platform", [])
    users.revoke_key("city-platform")
    assert users.key(secret) is None
    assert [(k.name, k.revoked_at is not None) for k in users.keys()] == [
        ("city-platform", True),
        ("province", False),
    ]
    with pytest.raises(UserError, match="already revoked"):
        users.revoke_key("city-platform")
    with pytest.raises(UserError, match="no API key"):
        users.revoke_key("nothing")


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "bk.yaml"
    path.write_text(
        """
sites:
  - id: school-a
  - id: school-b
models:
  - name: m
    path: m.onnx
storage:
  database: sqlite:///data/bk.db
""",
        encoding="utf-8",
    )
    return path


def run_cli(monkeypatch, args: list[str], stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(args)


def test_cli_manages_users(monkeypatch, capsys, config_file, tmp_path):
    c = str(config_file)
    assert (
        run_cli(
            monkeypatch,
            [
                "users",
                "add",
                "-c",
                c,
                "wang",
                "--role",
                "regulator",
                "--sites",
                "school-a,school-b",
                "--password-stdin",
            ],
            "s3cret-pass\n",
        )
        == 0
    )
    assert (
        run_cli(
            monkeypatch,
            ["users", "add", "-c", c, "li", "--role", "parent", "--sites", "school-b", "--password-stdin"],
            "another-pass\n",
        )
        == 0
    )
    assert "added user wang (regulator, school-a,school-b)" in capsys.readouterr().out
    assert run_cli(monkeypatch, ["users", "list", "-c", c]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:3] for line in lines] == [
        ["li", "parent", "school-b"],
        ["wang", "regulator", "school-a,school-b"],
    ]

    assert (
        run_cli(
            monkeypatch,
            [
                "users",
                "add",
                "-c",
                c,
                "zhao",
                "--role",
                "site_manager",
                "--sites",
                "school-x",
                "--password-stdin",
            ],
            "s3cret-pass\n",
        )
        == 1
    )
    assert "unknown site 'school-x'" in capsys.readouterr().err

    assert (
        run_cli(monkeypatch, ["users", "passwd", "-c", c, "wang", "--password-stdin"], "changed-pass\n") == 0
    )
    store = EventStore(f"sqlite:///{tmp_path}/data/bk.db")
    try:
        users = UserStore(store)
        assert users.login("wang", "changed-pass", 60) is not None
        assert users.login("wang", "s3cret-pass", 60) is None
    finally:
        store.close()

    assert run_cli(monkeypatch, ["users", "remove", "-c", c, "wang"]) == 0
    assert run_cli(monkeypatch, ["users", "remove", "-c", c, "wang"]) == 1
    assert "no user 'wang'" in capsys.readouterr().err
    run_cli(monkeypatch, ["users", "list", "-c", c])
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == ["li"]


def test_cli_manages_api_keys(monkeypatch, capsys, config_file, tmp_path):
    c = str(config_file)
    assert run_cli(monkeypatch, ["keys", "add", "-c", c, "city", "--sites", "school-b"]) == 0
    out = capsys.readouterr()
    secret = out.out.strip()
    assert secret.startswith("bk_") and "shown only this once" in out.err and secret not in out.err
    assert run_cli(monkeypatch, ["keys", "list", "-c", c]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith("city\tbk_") and "active" in listed and secret not in listed

    store = EventStore(f"sqlite:///{tmp_path}/data/bk.db")
    try:
        assert UserStore(store).key(secret).sites == frozenset({"school-b"})
        assert run_cli(monkeypatch, ["keys", "revoke", "-c", c, "city"]) == 0
        assert UserStore(store).key(secret) is None
    finally:
        store.close()
    assert run_cli(monkeypatch, ["keys", "revoke", "-c", c, "city"]) == 1
    assert "already revoked" in capsys.readouterr().err
