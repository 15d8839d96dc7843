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
