"""docker/ holds what the tests run: the compose file's processes are `brightkitchen serve` with the roles
the CLI has and the README shows, over a config that validates with the compose environment."""

from __future__ import annotations

from pathlib import Path

import yaml

from brightkitchen.cli import build_parser
from brightkitchen.config import load_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text(encoding="utf-8"))


def brightkitchen_services() -> dict[str, dict]:
    return {name: s for name, s in COMPOSE["services"].items() if s.get("image") == "brightkitchen"}


def test_compose_runs_api_replicas_workers_redis_and_postgresql():
    services = brightkitchen_services()
    roles = sorted(s["command"][-1] for s in services.values())
    assert roles == ["api", "api", "worker"] and services["worker"]["deploy"]["replicas"] >= 2
    assert {"postgres", "redis"} <= set(COMPOSE["services"])
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8")
    assert 'ENTRYPOINT ["brightkitchen"]' in dockerfile
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for service in services.values():
        args = build_parser().parse_args(service["command"])  # the real CLI takes it
        assert args.role in ("api", "worker") and args.config == "/config/config.yaml"
        assert f"brightkitchen serve -c CONFIG --role {args.role}" in readme
        assert "./brightkitchen.yaml:/config/config.yaml:ro" in service["volumes"]


def test_the_compose_config_validates_with_the_compose_environment():
    environment = brightkitchen_services()["worker"]["environment"]
    config = load_config(ROOT / "docker" / "brightkitchen.yaml", environ=environment)
    assert config.storage.database.startswith("postgresql://") and config.bus.kind == "redis"
    assert config.bus.redis.url == environment["BRIGHTKITCHEN__BUS__REDIS__URL"]
    assert config.assignment.kind == "redis" and config.storage.snapshots_dir == "/data/snapshots"
    assert config.api.auth.enabled  # a deployment keeps login on


def _config(tmp_path: Path, **sections) -> Path:
    data = {"sites": [{"id": "s1"}], "models": [{"name": "m", "path": "builtin:kitchen-starter"}], **sections}
    path = tmp_path / "bk.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_single_role_without_the_redis_bus_is_a_clear_error(tmp_path, capsys):
    from brightkitchen.cli import main

    assert main(["serve", "-c", str(_config(tmp_path)), "--role", "worker"]) == 2
    err = capsys.readouterr().err
    assert "--role worker: bus.kind: a process of role worker reaches the other processes through Redis" in err


def test_db_migrate_on_postgresql(tmp_path, capsys):
    from brightkitchen.cli import main
    from tests.databases import postgres_schema

    with postgres_schema() as database:
        config = _config(tmp_path, storage={"database": database})
        assert main(["db", "migrate", "-c", str(config)]) == 0
        assert "applied 0001_events, 0002_users_review, 0003_feed" in capsys.readouterr().out
        assert main(["db", "migrate", "-c", str(config)]) == 0
        assert "nothing (up to date)" in capsys.readouterr().out
