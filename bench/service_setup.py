"""A scratch database for the reference service, made the way an operator would make one: with
the service's own command line (`adbm-service migrate`, `tenants create`, `keys create`), as
tests/reference_service/conftest.py does through the same functions."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from bench.local_servers import Postgres

APP_PASSWORD = "bench-app-password"
CLI = str(Path(sys.executable).with_name("adbm-service"))


@dataclass(frozen=True)
class Scratch:
    dbname: str
    admin_url: str
    app_url: str
    tenant: str
    tenant_id: uuid.UUID
    api_key: str


def _cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([CLI, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"adbm-service {args[0]} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def create(pg: Postgres, tenant: str = "bench") -> Scratch:
    """A new database, migrated, with one tenant and one API key for it."""
    suffix = uuid.uuid4().hex[:12]
    dbname, role = f"adbm_bench_{suffix}", f"adbm_app_{suffix}"
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    admin_url = pg.url(dbname)
    app_url = f"postgresql://{role}:{APP_PASSWORD}@127.0.0.1:{pg.port}/{dbname}"
    env = {
        **os.environ,
        "ADBM_DATABASE_URL": app_url,
        "ADBM_ADMIN_DATABASE_URL": admin_url,
        "BENCH_APP_PASSWORD": APP_PASSWORD,
    }
    _cli("migrate", "--app-role", role, "--app-password-env", "BENCH_APP_PASSWORD", env=env)
    tenant_id = uuid.UUID(_cli("tenants", "create", tenant, env=env).splitlines()[-1])
    key = _cli("keys", "create", "--tenant", tenant, "--name", "bench", env=env).splitlines()[-1]
    return Scratch(dbname, admin_url, app_url, tenant, tenant_id, key)


def seed_products(admin_url: str, tenant_id: uuid.UUID, count: int, sku_prefix: str) -> None:
    """`count` products for the tenant in one INSERT ... SELECT, as the owner (no RLS, no round
    trip per row). created_at is spread 1 ms apart so the keyset order is the insert order, as
    for rows created one request at a time. Ids ascend with it (the layout of the UUIDv7s the
    service makes), which keeps the primary-key index appending; the foreign key to the tenant
    is not re-checked per row (`session_replication_role = replica` skips its trigger: every
    row names the one tenant that exists)."""
    with psycopg.connect(admin_url) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            "INSERT INTO public.products"
            " (id, tenant_id, created_at, updated_at, created_by, updated_by,"
            "  sku, name, price_minor, currency)"
            " SELECT (lpad(to_hex(%(base)s), 12, '0') || '-7000-8000-'"
            "   || lpad(to_hex(g), 12, '0'))::uuid,"
            "  %(tenant)s, t, t, 'bench', 'bench',"
            "  %(prefix)s || g, 'Product ' || g, 100 + g %% 1000, 'EUR'"
            " FROM generate_series(1, %(count)s) g,"
            " LATERAL (SELECT now() - make_interval(secs => (%(count)s - g) / 1000.0)"
            "   - interval '1 day' AS t) ts",
            {
                "tenant": tenant_id,
                "prefix": sku_prefix,
                "count": count,
                # Distinct per call, so two seedings never share an id.
                "base": int.from_bytes(uuid.uuid4().bytes[:6], "big"),
            },
        )
        conn.execute("ANALYZE public.products")


def seed_account(admin_url: str, tenant_id: uuid.UUID, name: str = "bench") -> uuid.UUID:
    """One account of the tenant (a resource the service does not cache: its GET reads
    Postgres every time), as the owner; returns its id."""
    with psycopg.connect(admin_url) as conn:
        row = conn.execute(
            "INSERT INTO public.accounts"
            " (id, tenant_id, created_by, updated_by, name, currency, balance_minor)"
            " VALUES (gen_random_uuid(), %s, 'bench', 'bench', %s, 'EUR', 0) RETURNING id",
            (tenant_id, name),
        ).fetchone()
    assert row is not None
    account_id: uuid.UUID = row[0]
    return account_id
