"""The `brightkitchen` command line."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from brightkitchen.config import Config, ConfigError, json_schema, load_config
from brightkitchen.users import USER_ROLES, UserError, UserStore

if TYPE_CHECKING:
    from models.inventory import InstalledModel


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
    run_service(config, args.host or config.api.host, args.port or config.api.port, args.seconds, args.role)
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
    from brightkitchen.db import redact

    print(f"{redact(url)}: applied {', '.join(store.applied_migrations) or 'nothing (up to date)'}")
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


def cmd_models_train(args: argparse.Namespace) -> int:
    def body() -> int:
        from models.training import run

        run(args)
        return 0

    return _model_tool(body)


def _model_tool(body: Callable[[], int]) -> int:
    """Run a model command; a bad model file, card, dataset, name or folder is reported in one line."""
    try:
        return body()
    except (ValueError, LookupError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _optional_config(path: str | None) -> Config | None:
    return load_config(path) if path else None


def cmd_models_list(args: argparse.Namespace) -> int:
    from models.inventory import describe, installed_models

    def body() -> int:
        print("\n\n".join(describe(m) for m in installed_models(_optional_config(args.config))))
        return 0

    return _model_tool(body)


def cmd_models_check(args: argparse.Namespace) -> int:
    from models.inventory import check_model, installed_models

    def body() -> int:
        failed = 0
        for model in installed_models(_optional_config(args.config)):
            problems = check_model(model)
            print(f"{model.name} ({model.path}): {'OK' if not problems else 'MISMATCH'}")
            for problem in problems:
                print(f"  - {problem}")
            failed += bool(problems)
        return 1 if failed else 0

    return _model_tool(body)


def cmd_models_eval(args: argparse.Namespace) -> int:
    import json

    from models.evaluate import (
        AP_SCORE_THRESHOLD,
        evaluate,
        format_table,
        load_dataset,
        open_detector,
        report_dict,
        stderr_progress,
        write_pr_plot,
    )
    from models.inventory import find_model

    def body() -> int:
        model = find_model(args.model, _optional_config(args.config))
        if model.task == "classify":
            return _eval_classifier(model, args)
        dataset = load_dataset(args.data, args.split)
        if args.rename:
            from models.evaluate import rename_classes
            from models.training import parse_renames

            dataset = rename_classes(dataset, parse_renames(args.rename))
        detector = open_detector(model, threads=args.threads)
        metrics = evaluate(detector, dataset, model.score_threshold, progress=stderr_progress())
        data = Path(args.data).resolve()
        title = f"{model.name} {model.version} on {data.parent.name}/{data.name} ({args.split})"
        if args.plot:
            plot_title = f"{title}: precision-recall at IoU 0.50, mAP50 {metrics.map50 or 0.0:.3f}"
            print(f"precision-recall plot: {write_pr_plot(metrics, args.plot, plot_title)}", file=sys.stderr)
        if args.json:
            about = {
                "model": model.name,
                "version": model.version,
                "model_path": str(model.path),
                "data": str(data),
                "split": args.split,
                "iou_threshold": model.iou_threshold,
                "ap_score_threshold": AP_SCORE_THRESHOLD,
            }
            print(json.dumps(report_dict(metrics, **about), ensure_ascii=False))
        else:
            print(format_table(metrics, title))
        return 0

    return _model_tool(body)


def _eval_classifier(model: InstalledModel, args: argparse.Namespace) -> int:
    """`models eval` of a crop classifier: --data is a folder with <split>/<class>/ images (or <class>/)."""
    import json

    from models.evaluate import classify_folder, format_classifier_table
    from models.training import parse_renames

    if model.card is None:
        raise LookupError(f"{model.name}: a classifier needs its card (class names) to be evaluated")
    folder = Path(args.data) / args.split if (Path(args.data) / args.split).is_dir() else Path(args.data)
    metrics = classify_folder(model.path, list(model.card.classes), folder, parse_renames(args.rename),
                              threads=args.threads)
    if args.json:
        print(json.dumps({"model": model.name, "version": model.version, "model_path": str(model.path),
                          "data": str(folder.resolve()), "images": metrics.images, "top1": round(metrics.top1, 4),
                          "per_class": metrics.per_class_dict()}, ensure_ascii=False))
    else:
        print(format_classifier_table(metrics, f"{model.name} {model.version} on {folder}"))
    return 0


def _utc_time(value: str) -> datetime:
    """An ISO 8601 date or time for a command-line filter; without a zone it is UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cmd_models_export_feedback(args: argparse.Namespace) -> int:
    from brightkitchen.service import database_url
    from brightkitchen.snapshots import SnapshotStore
    from brightkitchen.store import EventStore
    from models.feedback import export_feedback
    from models.inventory import class_names, classifier_labels, find_model

    config = load_config(args.config)

    def body() -> int:
        if args.model is None and len(config.models) > 1:
            raise LookupError(f"the config has several models: choose one with --model "
                              f"({', '.join(m.name for m in config.models)})")
        name = args.model or config.models[0].name
        if name not in {m.name for m in config.models}:
            raise LookupError(f"no model {name!r} in {args.config}")
        snapshots = SnapshotStore(config.resolve_path(config.storage.snapshots_dir))
        store = EventStore(database_url(config))
        try:
            result = export_feedback(
                store,
                snapshots,
                args.out,
                model=name,
                class_names=class_names(find_model(name, config)),
                label_classes=classifier_labels(config, name),
                since=args.since,
                until=args.until,
                include_model_boxes=args.with_model_boxes,
                val_fraction=args.val_fraction,
            )
        finally:
            store.close()
        print(f"{result.data_yaml}: {result.images} images ({result.positives} confirmed, "
              f"{result.hard_negatives} false positives); manifest {result.manifest}")
        for reason, count in sorted(result.skipped.items()):
            print(f"skipped {count}: {reason}", file=sys.stderr)
        return 0

    return _model_tool(body)


def _add_train_tool(models_sub: argparse._SubParsersAction) -> None:
    from models.training import add_arguments

    train = models_sub.add_parser(
        "train", help="train a detector or crop classifier on a labelled set; ONNX + model card (needs [train])"
    )
    add_arguments(train)
    train.set_defaults(func=cmd_models_train)


def _add_model_tools(models_sub: argparse._SubParsersAction) -> None:
    config_help = "config file whose models are included (names resolve there first)"
    listing = models_sub.add_parser(
        "list", help="installed models: built-in ones and the config's, with the rules using them"
    )
    listing.add_argument("-c", "--config", help=config_help)
    listing.set_defaults(func=cmd_models_list)
    check = models_sub.add_parser(
        "check", help="compare every model's ONNX file with its card; non-zero exit on a mismatch"
    )
    check.add_argument("-c", "--config", help=config_help)
    check.set_defaults(func=cmd_models_check)

    ev = models_sub.add_parser(
        "eval", help="per-class precision, recall, mAP50, mAP50-95 on a YOLO set, through the service's path"
    )
    ev.add_argument("--model", required=True, help="built-in model, config model (-c) or .onnx path")
    ev.add_argument("--data", required=True, help="data.yaml of a YOLO-format set (path, train/val, names)")
    ev.add_argument("--split", default="val", help="split of data.yaml to evaluate on (default: val)")
    ev.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ev.add_argument("--plot", metavar="PNG", help="write the precision-recall curves (IoU 0.50) to this PNG")
    ev.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    ev.add_argument("--rename", action="append", default=[], metavar="DATA=MODEL",
                    help="read a dataset class as the model's class of another name (repeatable)")
    ev.add_argument("-c", "--config", help=config_help)
    ev.set_defaults(func=cmd_models_eval)

    fb = models_sub.add_parser(
        "export-feedback", help="reviewed events (confirmed, false positive) as a YOLO set to retrain on"
    )
    fb.add_argument("-c", "--config", required=True)
    fb.add_argument("--out", required=True, help="new or empty folder for the dataset")
    fb.add_argument("--model", help="the config's detector whose events to export (if it has several)")
    fb.add_argument("--since", type=_utc_time, help="events started at or after this ISO 8601 time (UTC)")
    fb.add_argument("--until", type=_utc_time, help="events started before this ISO 8601 time")
    fb.add_argument(
        "--with-model-boxes",
        action="store_true",
        help="also label the frame's other detections (unreviewed) so that they are not learnt as background",
    )
    fb.add_argument("--val-fraction", type=float, default=0.2, help="share of events in val (by event id)")
    fb.set_defaults(func=cmd_models_export_feedback)


def cmd_models_prepare(args: argparse.Namespace) -> int:
    from streams.detectors import prepare_model

    def body() -> int:
        config = load_config(args.config)
        for model in config.models:
            plan, made = prepare_model(config, model)
            print(f"{model.name}: {plan.describe()}: " + (f"converted file {made}" if made else "runs its own file"))
        return 0

    return _model_tool(body)


def _add_model_prepare(models_sub: argparse._SubParsersAction) -> None:
    prepare = models_sub.add_parser(
        "prepare", help="make the int8 / fp16 files the config's models run (else made at their first start)"
    )
    prepare.add_argument("-c", "--config", required=True)
    prepare.set_defaults(func=cmd_models_prepare)

def cmd_bench_capacity(args: argparse.Namespace) -> int:
    from benchmarks.capacity import run

    return run(args, sys.argv[1:])


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from benchmarks.capacity import build_parser as capacity_parser

    bench = sub.add_parser("bench", help="benchmarks of this box")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    parent = capacity_parser(add_help=False)
    capacity = bench_sub.add_parser(
        "capacity", parents=[parent], description=parent.description, formatter_class=parent.formatter_class,
        help="how many cameras this box analyses on target, per configuration, with a progress bar",
    )
    capacity.set_defaults(func=cmd_bench_capacity)


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
    serve.add_argument(
        "--role",
        choices=("all", "api", "worker"),
        default="all",
        help="all: worker and API; api: store events from the bus and serve the API; worker: analyse cameras "
        "and publish events (api and worker need bus.kind: redis)",
    )
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
    _add_model_tools(models_sub)
    _add_train_tool(models_sub)
    _add_model_prepare(models_sub)

    _add_users_and_keys(sub)
    _add_bench(sub)
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
