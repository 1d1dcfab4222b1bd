"""`adbm-service`: the reference service's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError

from reference_service.config import Settings, describe
from reference_service.db.admin import TenantNotFound, create_api_key, create_tenant
from reference_service.db.migrate import migrate

ADMIN_URL_ENV = "ADBM_ADMIN_DATABASE_URL"


def _settings() -> Settings | None:
    """Settings from the environment, or None after printing what is wrong with them."""
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "ADBM_" + "_".join(str(p) for p in error["loc"]).upper()
            print(f"error: {name}: {error['msg']}", file=sys.stderr)
        return None


def _config(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings is None:
        return 2
    print(json.dumps(describe(settings), indent=2))
    return 0


def _serve(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings is None:
        return 2
    # Imported here: the admin commands must not pay for the web stack.
    import uvicorn

    from reference_service.app import create_app

    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
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
    document = openapi_document(settings)
    if args.output is None:
        sys.stdout.write(document)
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(document)
    return 0


def _admin_url(args: argparse.Namespace) -> str | None:
    url: str | None = args.admin_url or os.environ.get(ADMIN_URL_ENV)
    if not url:
        print(f"error: set {ADMIN_URL_ENV} or pass --admin-url", file=sys.stderr)
    return url


def _connection_failed(exc: psycopg.OperationalError) -> int:
    # psycopg's message names host and database, never the password.
    print(f"error: cannot use the database as the admin: {exc}".rstrip(), file=sys.stderr)
    return 2


def _migrate(args: argparse.Namespace) -> int:
    settings = _settings()
    admin_url = _admin_url(args)
    if settings is None or admin_url is None:
        return 2
    app_role = args.app_role or conninfo_to_dict(settings.database_url.get_secret_value()).get(
        "user"
    )
    if not app_role:
        print("error: pass --app-role (ADBM_DATABASE_URL names no user)", file=sys.stderr)
        return 2
    password = None
    if args.app_password_env:
        password = os.environ.get(args.app_password_env)
        if password is None:
            print(f"error: {args.app_password_env} is not set", file=sys.stderr)
            return 2
    try:
        applied = asyncio.run(
            migrate(
                admin_url,
                app_role=str(app_role),
                app_password=password,
                tenant_setting=settings.db_tenant_setting,
                on_change=lambda change: print(f"changed: {change}"),
            )
        )
    except psycopg.OperationalError as exc:
        return _connection_failed(exc)
    for version in applied:
        print(f"applied: {version}")
    if not applied:
        print("migrations: none pending")
    return 0


def _create_tenant(args: argparse.Namespace) -> int:
    admin_url = _admin_url(args)
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
    admin_url = _admin_url(args)
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


def _logging(settings: Settings) -> None:
    import logging

    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


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
    _logging(settings)
    asyncio.run(worker.run(settings, queues, prefetch=args.prefetch, relay=not args.no_relay))
    return 0


def _relay(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings is None:
        return 2
    from reference_service.messaging import worker

    _logging(settings)
    asyncio.run(worker.run_relay(settings))
    return 0


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
        help=f"libpq URI of the admin (schema owner); default ${ADMIN_URL_ENV}",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
