"""`adbm-service`: the reference service's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import SettingsError

from reference_service.config import Settings, describe, serving_problems
from reference_service.db import role_check
from reference_service.db.admin import (
    KeyNotFound,
    TenantNotFound,
    create_api_key,
    create_tenant,
    list_api_keys,
    list_tenants,
    revoke_api_key,
)
from reference_service.db.migrate import create_database, migrate
from reference_service.observability import logging as service_logging
from reference_service.observability import metrics

ADMIN_URL_ENV = "ADBM_ADMIN_DATABASE_URL"


def _settings() -> Settings | None:
    """Settings from the environment, or None after printing what is wrong with them."""
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            print(f"error: {_setting_error(error)}", file=sys.stderr)
    except SettingsError as exc:  # a value pydantic-settings could not even decode
        print(f"error: {exc}", file=sys.stderr)
    return None


def _setting_error(error: ErrorDetails) -> str:
    """`ADBM_<FIELD>: <where inside its JSON value>: <what>`: the first part of the location
    is the variable, the rest a path into its document (`ADBM_POLICY`)."""
    field, *path = error["loc"]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    if path and isinstance(value, int | float | str | bool):
        # Inside a JSON document nothing is secret, and the value makes the line actionable.
        message += f" (got {json.dumps(value)})"
    return f"ADBM_{str(field).upper()}: " + (f"{where}: " if where else "") + message


def _config(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings is None:
        return 2
    print(json.dumps(describe(settings), indent=2))
    return 0


def _refuse_to_serve(settings: Settings) -> bool:
    """Whether serving must be refused, after printing why (one line per reason)."""
    problems = serving_problems(settings)
    database_url = settings.database_url.get_secret_value()
    try:
        if _is_conninfo(database_url):
            problems += asyncio.run(role_check.check_url(database_url))
        else:
            problems.append("ADBM_DATABASE_URL is not a libpq connection URI")
    except psycopg.OperationalError as exc:
        # Serve anyway, as when the database is down at start-up: the pool checks every
        # connection it opens, and /ready reports the role problem once there is an answer.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # A line of the serving process, so JSON like all of them (logging is configured).
        logging.getLogger("adbm.serve").warning(
            "cannot check the database role now (%s); every connection is checked when it opens",
            reason,
        )
    for problem in problems:
        print(f"error: refusing to serve: {problem}", file=sys.stderr)
    return bool(problems)


def _serve(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings is None:
        return 2
    # Before anything else writes: from here on every line of the process is JSON. A refusal
    # below stays a one-line `error:` on stderr, as for every command, and the exit code is 2.
    service_logging.configure(settings.log_level)
    if _refuse_to_serve(settings):
        return 2
    # Imported here: the admin commands must not pay for the web stack.
    import uvicorn

    from reference_service.app import ServingRefused, create_app

    try:
        app = create_app(settings)
    except ServingRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        metrics.serve(settings.metrics_port)
    except OSError as exc:  # the port is taken, or not ours to bind
        print(
            f"error: cannot listen on ADBM_METRICS_PORT {settings.metrics_port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 2
    uvicorn.run(
        app,
        host=args.host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        # Uvicorn's own dictConfig would replace our handler, and its access line knows neither
        # the route template nor the tenant: `observability.access` writes that one.
        log_config=None,
        access_log=False,
        lifespan="on",
        # Inside the pod's 30 s grace period, after the 5 s preStop sleep.
        timeout_graceful_shutdown=20,
    )
    return 0


def openapi_document(settings: Settings) -> str:
    """The app's OpenAPI document as stable JSON: sorted keys and a trailing newline, so the
    committed `openapi.json` changes only when the API does."""
    from reference_service.app import create_app

    # Building the document never enters the lifespan: no connection is opened.
    return json.dumps(create_app(settings).openapi(), indent=2, sort_keys=True) + "\n"


def _openapi(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings is None:
        return 2
    from reference_service.app import ServingRefused

    try:
        document = openapi_document(settings)
    except ServingRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(document)
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(document)
    return 0


def _admin_url(args: argparse.Namespace, settings: Settings | None) -> str | None:
    url: str | None = args.admin_url or (settings.admin_url() if settings else None)
    if not url and settings is not None:
        print(
            f"error: set {ADMIN_URL_ENV} or pass --admin-url"
            " (ADBM_ENVIRONMENT=development defaults it to the local postgres superuser)",
            file=sys.stderr,
        )
    if url and not _is_conninfo(url):
        print(
            f"error: {'--admin-url' if args.admin_url else ADMIN_URL_ENV}"
            " is not a libpq connection URI",
            file=sys.stderr,
        )
        return None
    return url


def _is_conninfo(url: str) -> bool:
    # The parser's message may quote the string, password included: only say that it failed.
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return False
    return True


def _connection_failed(exc: psycopg.OperationalError) -> int:
    # psycopg's message names host and database, never the password.
    print(f"error: cannot use the database as the admin: {exc}".rstrip(), file=sys.stderr)
    return 2


def _migrate(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings is None:
        return 2
    if not _is_conninfo(settings.database_url.get_secret_value()):
        print("error: ADBM_DATABASE_URL is not a libpq connection URI", file=sys.stderr)
        return 2
    app_url = conninfo_to_dict(settings.database_url.get_secret_value())
    app_role = args.app_role or app_url.get("user")
    if not app_role:
        print("error: pass --app-role (ADBM_DATABASE_URL names no user)", file=sys.stderr)
        return 2
    # The password the service will connect with, unless another is named explicitly.
    password = None if args.app_role else app_url.get("password")
    if args.app_password_env:
        password = os.environ.get(args.app_password_env)
        if password is None:
            print(f"error: {args.app_password_env} is not set", file=sys.stderr)
            return 2
    admin_url = _admin_url(args, settings)
    if admin_url is None:
        return 2
    try:
        if args.create_database and asyncio.run(create_database(admin_url)):
            print(f"changed: created database {conninfo_to_dict(admin_url)['dbname']}")
        applied = asyncio.run(
            migrate(
                admin_url,
                app_role=str(app_role),
                app_password=None if password is None else str(password),
                tenant_setting=settings.db_tenant_setting,
                on_change=lambda change: print(f"changed: {change}"),
            )
        )
    except psycopg.OperationalError as exc:
        return _connection_failed(exc)
    except ValueError as exc:  # the app role is the admin, or a name is not an identifier
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for version in applied:
        print(f"applied: {version}")
    if not applied:
        print("migrations: none pending")
    return 0


def _create_tenant(args: argparse.Namespace) -> int:
    admin_url = _admin_url(args, _settings())
    if admin_url is None:
        return 2
    try:
        tenant_id = asyncio.run(create_tenant(admin_url, args.name))
    except psycopg.errors.UniqueViolation:
        print(f"error: a tenant named {args.name!r} already exists", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        return _connection_failed(exc)
    print(tenant_id)
    return 0


def _create_key(args: argparse.Namespace) -> int:
    settings = _settings()
    admin_url = _admin_url(args, settings)
    if settings is None or admin_url is None:
        return 2
    try:
        issued = asyncio.run(
            create_api_key(
                admin_url,
                args.tenant,
                key_name=args.name,
                tenant_setting=settings.db_tenant_setting,
            )
        )
    except TenantNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        return _connection_failed(exc)
    print(
        f"API key {issued.name!r} ({issued.prefix}, id {issued.key_id}) for tenant"
        f" {args.tenant!r}. It is shown only this once; only its hash is stored.",
        file=sys.stderr,
    )
    print(issued.key)
    return 0


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _list_tenants(args: argparse.Namespace) -> int:
    admin_url = _admin_url(args, _settings())
    if admin_url is None:
        return 2
    try:
        tenants = asyncio.run(list_tenants(admin_url))
    except psycopg.OperationalError as exc:
        return _connection_failed(exc)
    _print_table(
        ("ID", "NAME", "LIVE KEYS", "CREATED"),
        [(str(t.tenant_id), t.name, str(t.live_keys), _timestamp(t.created_at)) for t in tenants],
    )
    return 0


def _list_keys(args: argparse.Namespace) -> int:
    admin_url = _admin_url(args, _settings())
    if admin_url is None:
        return 2
    try:
        keys = asyncio.run(list_api_keys(admin_url, args.tenant))
    except TenantNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        return _connection_failed(exc)
    _print_table(
        ("ID", "TENANT", "NAME", "PREFIX", "CREATED", "STATUS"),
        [
            (
                str(k.key_id),
                k.tenant,
                k.name,
                f"adbm_{k.prefix}",
                _timestamp(k.created_at),
                "active" if k.revoked_at is None else f"revoked {_timestamp(k.revoked_at)}",
            )
            for k in keys
        ],
    )
    return 0


def _revoke_key(args: argparse.Namespace) -> int:
    settings = _settings()
    admin_url = _admin_url(args, settings)
    if settings is None or admin_url is None:
        return 2
    try:
        revoked = asyncio.run(
            revoke_api_key(admin_url, args.key, tenant_setting=settings.db_tenant_setting)
        )
    except KeyNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        return _connection_failed(exc)
    print(
        f"revoked API key {revoked.name!r} (adbm_{revoked.prefix}, id {revoked.key_id})"
        f" of tenant {revoked.tenant!r}"
    )
    return 0


def _add_listing_commands(
    tenants_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    keys_sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    tenant_list = tenants_sub.add_parser("list", help="list the live tenants")
    _add_admin_url(tenant_list)
    tenant_list.set_defaults(func=_list_tenants)

    key_list = keys_sub.add_parser(
        "list", help="list API keys (never the keys themselves), revoked ones included"
    )
    key_list.add_argument("--tenant", help="only this tenant's keys (tenant name)")
    _add_admin_url(key_list)
    key_list.set_defaults(func=_list_keys)

    key_revoke = keys_sub.add_parser(
        "revoke", help="revoke an API key: it is refused from its next lookup on"
    )
    key_revoke.add_argument("key", help="the key's id, or its prefix (adbm_xxxxxxxx) if unique")
    _add_admin_url(key_revoke)
    key_revoke.set_defaults(func=_revoke_key)


def _run_logged(name: str, main: Coroutine[Any, Any, None]) -> int:
    """Run a worker process's main coroutine; a crash is a JSON error line too (with its
    traceback in `exception`), never Python's bare traceback on stderr, and exits 1."""
    try:
        asyncio.run(main)
    except Exception:
        logging.getLogger(name).exception("%s crashed", name)
        return 1
    return 0


def _worker(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings is None:
        return 2
    from reference_service.messaging import worker

    try:
        queues = worker.check_queues(args.queues.split(","))
    except worker.UnknownQueue as exc:
        print(f"error: --queues: {exc}", file=sys.stderr)
        return 2
    # Before anything else writes: from here on every line of the process is JSON.
    service_logging.configure(settings.log_level)
    return _run_logged(
        "adbm.worker",
        worker.run(settings, queues, prefetch=args.prefetch, relay=not args.no_relay),
    )


def _relay(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings is None:
        return 2
    from reference_service.messaging import worker

    service_logging.configure(settings.log_level)
    return _run_logged("adbm.relay", worker.run_relay(settings))


def _prefetch(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError("must be between 1 and 65535")
    return number


def _add_worker_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser(
        "worker",
        help="consume queues, relay the outbox, serve /health and /ready on ADBM_METRICS_PORT",
    )
    worker.add_argument(
        "--queues",
        required=True,
        help="comma-separated queues, e.g. orders.place,orders.compensate",
    )
    worker.add_argument(
        "--prefetch", type=_prefetch, default=32, help="unacked messages held at most (default 32)"
    )
    worker.add_argument(
        "--no-relay",
        action="store_true",
        help="do not relay the outbox from this process (when `adbm-service relay` runs apart)",
    )
    worker.set_defaults(func=_worker)
    relay = sub.add_parser("relay", help="only relay the outbox to RabbitMQ")
    relay.set_defaults(func=_relay)


def _add_admin_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin-url",
        help=f"libpq URI of the admin (schema owner); default ${ADMIN_URL_ENV}"
        " (in development: the local postgres superuser)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adbm-service", description="ADBM reference service.")
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser(
        "config", help="print the effective settings from the environment (passwords hidden)"
    )
    config.set_defaults(func=_config)

    serve = sub.add_parser("serve", help="serve the HTTP API (port from ADBM_HTTP_PORT)")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on")
    serve.set_defaults(func=_serve)

    openapi = sub.add_parser("openapi", help="print the HTTP API's OpenAPI document as JSON")
    openapi.add_argument("-o", "--output", metavar="FILE", help="write it to FILE instead")
    openapi.set_defaults(func=_openapi)

    migrate_cmd = sub.add_parser(
        "migrate",
        help="apply schema migrations, create the app role and its grants, apply RLS",
    )
    _add_admin_url(migrate_cmd)
    migrate_cmd.add_argument(
        "--app-role", help="role the service connects as; default: the user of ADBM_DATABASE_URL"
    )
    migrate_cmd.add_argument(
        "--app-password-env",
        metavar="VAR",
        help="environment variable holding the app role's password (set on the role)",
    )
    migrate_cmd.add_argument(
        "--create-database",
        action="store_true",
        help="first create the admin URL's database if it does not exist (a developer machine)",
    )
    migrate_cmd.set_defaults(func=_migrate)

    _add_worker_commands(sub)

    tenants = sub.add_parser("tenants", help="manage tenants (as the admin)")
    tenants_sub = tenants.add_subparsers(dest="action", required=True)
    tenant_create = tenants_sub.add_parser("create", help="create a tenant; prints its id")
    tenant_create.add_argument("name")
    _add_admin_url(tenant_create)
    tenant_create.set_defaults(func=_create_tenant)

    keys = sub.add_parser("keys", help="manage API keys (as the admin)")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    key_create = keys_sub.add_parser(
        "create", help="issue an API key for a tenant; prints the key, once"
    )
    key_create.add_argument("--tenant", required=True, help="tenant name")
    key_create.add_argument("--name", default="default", help="key name (default: default)")
    _add_admin_url(key_create)
    key_create.set_defaults(func=_create_key)
    _add_listing_commands(tenants_sub, keys_sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except psycopg.errors.UndefinedTable as exc:  # any admin command before the first migrate
        print(
            f"error: {exc.diag.message_primary}: the database is not migrated yet"
            " (run adbm-service migrate)",
            file=sys.stderr,
        )
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
