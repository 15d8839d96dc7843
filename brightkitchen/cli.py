"""The `brightkitchen` command line."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from brightkitchen.config import ConfigError, json_schema, load_config


class UtcFormatter(logging.Formatter):
    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__("%(asctime)sZ %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(UtcFormatter())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)


def cmd_demo(args: argparse.Namespace) -> int:
    from brightkitchen.demo import run_demo

    run_demo(Path(args.data_dir), args.host, args.port, args.seconds)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from brightkitchen.service import run_service

    config = load_config(args.config)
    run_service(config, args.host or config.api.host, args.port or config.api.port, args.seconds)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    cameras = config.cameras()
    print(f"{args.config}: ok ({len(config.sites)} sites, {len(cameras)} cameras, {len(config.rules)} rules)")
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    print(json_schema())
    return 0


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from brightkitchen.service import database_url
    from brightkitchen.store import EventStore

    url = database_url(load_config(args.config))
    store = EventStore(url)
    print(f"{url}: applied {', '.join(store.applied_migrations) or 'nothing (up to date)'}")
    store.close()
    return 0


def cmd_models_train_starter(args: argparse.Namespace) -> int:
    from models.train import main as train_main

    return train_main(args.train_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brightkitchen", description="AI bright-kitchen monitoring (明厨亮灶)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the demo kitchen camera, worker and API on embedded defaults")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--data-dir", default="var/demo", help="where the demo keeps its video, database, snapshots")
    demo.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    demo.set_defaults(func=cmd_demo)

    serve = sub.add_parser("serve", help="run the worker and the API from a config file")
    serve.add_argument("-c", "--config", required=True)
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    serve.set_defaults(func=cmd_serve)

    config = sub.add_parser("config", help="check a config file or print its JSON schema")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file; errors name their key path")
    check.add_argument("config")
    check.set_defaults(func=cmd_config_check)
    schema = config_sub.add_parser("schema", help="print the config file's JSON schema")
    schema.set_defaults(func=cmd_config_schema)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser("migrate", help="apply schema migrations")
    migrate.add_argument("-c", "--config", required=True)
    migrate.set_defaults(func=cmd_db_migrate)

    models = sub.add_parser("models", help="model tools")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    train = models_sub.add_parser(
        "train-starter", help="generate the synthetic kitchen set and train the starter detector (needs [train])"
    )
    train.add_argument("train_args", nargs=argparse.REMAINDER, help="arguments of the training command")
    train.set_defaults(func=cmd_models_train_starter)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return args.func(args)
    except ConfigError as e:
        for path, msg in e.errors:
            print(f"{e.source}: {path or '(top level)'}: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
