"""The `brightkitchen` command line."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from brightkitchen.config import Config, ConfigError, json_schema, load_config
from brightkitchen.users import USER_ROLES, UserError, UserStore


class UtcFormatter(logging.Formatter):
    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__("%(asctime)sZ %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(UtcFormatter())
    # Without force: when something (a test runner) already set up logging, its handlers are kept.
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


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


@contextmanager
def _user_store(config: Config) -> Iterator[UserStore]:
    from brightkitchen.service import database_url
    from brightkitchen.store import EventStore

    store = EventStore(database_url(config))
    try:
        yield UserStore(store)
    finally:
        store.close()


def _sites(value: str | None, config: Config) -> list[str]:
    """Site ids from a comma-separated list, each checked against the config."""
    sites = [s.strip() for s in (value or "").split(",") if s.strip()]
    known = [s.id for s in config.sites]
    for site in sites:
        if site not in known:
            raise UserError(f"unknown site {site!r}: the config has {', '.join(known)}")
    return sites


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("password: ")
    if getpass.getpass("again: ") != password:
        raise UserError("the passwords do not match")
    return password


def _sites_text(sites: tuple[str, ...]) -> str:
    return ",".join(sites) or "(all sites)"


def cmd_users_add(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    sites = _sites(args.sites, config)
    password = _password(args.password_stdin)
    with _user_store(config) as users:
        user = users.add_user(args.name, args.role, sites, password)
    print(f"added user {user.name} ({user.role}, {_sites_text(user.sites)})")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    with _user_store(load_config(args.config)) as users:
        for user in users.users():
            created = f"{user.created_at:%Y-%m-%dT%H:%M:%SZ}"
            print(f"{user.name}\t{user.role}\t{_sites_text(user.sites)}\tcreated {created}")
    return 0


def cmd_users_remove(args: argparse.Namespace) -> int:
    with _user_store(load_config(args.config)) as users:
        users.remove_user(args.name)
    print(f"removed user {args.name} and ended its sessions")
    return 0


def cmd_users_passwd(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    password = _password(args.password_stdin)
    with _user_store(config) as users:
        users.set_password(args.name, password)
    print(f"changed the password of {args.name} and ended its sessions")
    return 0


def cmd_keys_add(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    sites = _sites(args.sites, config)
    with _user_store(config) as users:
        key, secret = users.add_key(args.name, sites)
    # The notice on stderr, the key alone on stdout: `KEY=$(brightkitchen keys add ...)` works.
    print(f"added API key {key.name} ({_sites_text(key.sites)}), shown only this once:", file=sys.stderr)
    print(secret)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    with _user_store(load_config(args.config)) as users:
        for key in users.keys():
            state = f"revoked {key.revoked_at:%Y-%m-%dT%H:%M:%SZ}" if key.revoked_at else "active"
            created = f"{key.created_at:%Y-%m-%dT%H:%M:%SZ}"
            print(f"{key.name}\t{key.hint}...\t{_sites_text(key.sites)}\tcreated {created}\t{state}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    with _user_store(load_config(args.config)) as users:
        users.revoke_key(args.name)
    print(f"revoked API key {args.name}")
    return 0


PASSWORD_STDIN_HELP = "read the password from the first line of stdin"


def _add_users_and_keys(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("users", help="people who log in: regulators, site managers, parents, admins")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    add = users_sub.add_parser("add", help="add a user (password from --password-stdin, or prompted)")
    add.add_argument("-c", "--config", required=True)
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=USER_ROLES)
    add.add_argument(
        "--sites",
        help="comma-separated site ids: a regulator's jurisdiction, the site of a site_manager or parent; "
        "none for an admin",
    )
    add.add_argument("--password-stdin", action="store_true", help=PASSWORD_STDIN_HELP)
    add.set_defaults(func=cmd_users_add)
    listing = users_sub.add_parser("list", help="list users")
    listing.add_argument("-c", "--config", required=True)
    listing.set_defaults(func=cmd_users_list)
    remove = users_sub.add_parser("remove", help="remove a user and end its sessions")
    remove.add_argument("-c", "--config", required=True)
    remove.add_argument("name")
    remove.set_defaults(func=cmd_users_remove)
    passwd = users_sub.add_parser("passwd", help="change a user's password and end its sessions")
    passwd.add_argument("-c", "--config", required=True)
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help=PASSWORD_STDIN_HELP)
    passwd.set_defaults(func=cmd_users_passwd)

    keys = sub.add_parser("keys", help="API keys of supervision platforms (machines)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    key_add = keys_sub.add_parser("add", help="add a platform key; prints the key once")
    key_add.add_argument("-c", "--config", required=True)
    key_add.add_argument("name")
    key_add.add_argument("--sites", help="comma-separated site ids the key may read; none: every site")
    key_add.set_defaults(func=cmd_keys_add)
    key_list = keys_sub.add_parser("list", help="list keys (never the keys themselves)")
    key_list.add_argument("-c", "--config", required=True)
    key_list.set_defaults(func=cmd_keys_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("-c", "--config", required=True)
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_keys_revoke)


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

    _add_users_and_keys(sub)
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
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
