"""Tenants and API keys: issuing them (as the admin, from the command line) and resolving a key
to its tenant (as the app role, on every request).

A key looks like `adbm_<8 hex prefix>_<32 URL-safe random characters>`. Only its SHA-256 is
stored, with the prefix in clear so a key can be recognised in a list without being usable. The
random part carries 192 bits, so a fast unsalted hash is enough: there is nothing to guess.
"""

from __future__ import annotations

import getpass
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from reference_service.db import repository
from reference_service.db.pool import Database, Statement
from reference_service.db.rls import DEFAULT_TENANT_SETTING
from reference_service.db.schema import check_setting

KEY_PATTERN = re.compile(r"^adbm_([0-9a-f]{8})_[A-Za-z0-9_-]{32}$")
"""Shape of every key this module issues."""


def generate_key() -> tuple[str, str]:
    """A new random key and its prefix."""
    prefix = secrets.token_hex(4)
    return f"adbm_{prefix}_{secrets.token_urlsafe(24)}", prefix


def hash_key(key: str) -> bytes:
    """What is stored for (and looked up by) a key: its SHA-256, 32 bytes."""
    return hashlib.sha256(key.encode()).digest()


def cli_actor() -> str:
    """Who the audit columns name for changes made from the command line."""
    try:
        user = getpass.getuser()
    except OSError:  # no login name (e.g. a container with an unnamed uid)
        user = "unknown"
    return f"cli:{user}"


@dataclass(frozen=True)
class IssuedKey:
    """A key just created. `key` is shown once and cannot be recovered later."""

    key: str
    key_id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    prefix: str


@dataclass(frozen=True)
class Principal:
    """The tenant and key an API key resolves to."""

    tenant_id: uuid.UUID
    key_id: uuid.UUID


class TenantNotFound(LookupError):
    pass


async def create_tenant(admin_url: str, name: str, *, actor: str | None = None) -> uuid.UUID:
    """Create a tenant as the admin; returns its id. A duplicate name raises
    psycopg.errors.UniqueViolation."""
    async with await psycopg.AsyncConnection.connect(admin_url) as conn:
        row = await repository.insert(conn, "tenants", {"name": name}, actor=actor or cli_actor())
        await conn.commit()
    tenant_id: uuid.UUID = row["id"]
    return tenant_id


async def create_api_key(
    admin_url: str,
    tenant_name: str,
    *,
    key_name: str = "default",
    actor: str | None = None,
    tenant_setting: str = DEFAULT_TENANT_SETTING,
) -> IssuedKey:
    """Issue a key for the tenant named `tenant_name` as the admin (TenantNotFound if none)."""
    key, prefix = generate_key()
    async with await psycopg.AsyncConnection.connect(admin_url) as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT id FROM public.tenants WHERE name = %s AND NOT is_deleted", (tenant_name,)
            )
            tenant = await cur.fetchone()
            if tenant is None:
                raise TenantNotFound(f"no tenant named {tenant_name!r}")
            # api_keys is under FORCEd RLS, which binds the admin too unless it is a superuser:
            # write as that tenant, like the service would.
            await cur.execute(
                "SELECT pg_catalog.set_config(%s, %s, true)",
                (check_setting(tenant_setting), str(tenant["id"])),
            )
        row = await repository.insert(
            conn,
            "api_keys",
            {
                "tenant_id": tenant["id"],
                "name": key_name,
                "key_hash": hash_key(key),
                "prefix": prefix,
            },
            actor=actor or cli_actor(),
        )
        await conn.commit()
    return IssuedKey(
        key=key, key_id=row["id"], tenant_id=tenant["id"], name=key_name, prefix=prefix
    )


def authenticate_statement(key: str) -> Statement:
    """The lookup `authenticate` runs (zero or one row of tenant_id, key_id)."""
    return Statement(
        sql.SQL("SELECT tenant_id, key_id FROM public.adbm_authenticate(%s)"),
        (hash_key(key),),
    )


async def authenticate(database: Database, key: str) -> Principal | None:
    """The tenant and key for an API key, or None for an unknown, revoked or malformed key.

    One round trip, with no tenant set: `adbm_authenticate` is a SECURITY DEFINER function, so
    the app role can resolve a key without being able to read other tenants' keys.
    """
    if not KEY_PATTERN.match(key):
        return None
    rows = await database.read(None, authenticate_statement(key))
    if not rows:
        return None
    return Principal(tenant_id=rows[0]["tenant_id"], key_id=rows[0]["key_id"])


@dataclass(frozen=True)
class TenantInfo:
    """A tenant as `tenants list` shows it."""

    tenant_id: uuid.UUID
    name: str
    created_at: datetime
    live_keys: int


@dataclass(frozen=True)
class KeyInfo:
    """An API key as `keys list` shows it: never the key, which is not stored."""

    key_id: uuid.UUID
    tenant: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class KeyNotFound(LookupError):
    pass


async def list_tenants(admin_url: str) -> list[TenantInfo]:
    """Every live tenant as the admin, oldest first, with its number of live keys."""
    async with (
        await psycopg.AsyncConnection.connect(admin_url) as conn,
        conn.cursor(row_factory=dict_row) as cur,
    ):
        # A superuser or the owner (policy owner_authenticate) sees every tenant's keys.
        await cur.execute(
            "SELECT t.id, t.name, t.created_at,"
            " (SELECT count(*) FROM public.api_keys k"
            "  WHERE k.tenant_id = t.id AND NOT k.is_deleted) AS live_keys"
            " FROM public.tenants t WHERE NOT t.is_deleted ORDER BY t.created_at, t.id"
        )
        rows = await cur.fetchall()
    return [TenantInfo(r["id"], r["name"], r["created_at"], int(r["live_keys"])) for r in rows]


async def list_api_keys(admin_url: str, tenant_name: str | None = None) -> list[KeyInfo]:
    """The keys of live tenants (of `tenant_name` only, if given), revoked ones included, by
    tenant then age. TenantNotFound when `tenant_name` names no live tenant."""
    async with (
        await psycopg.AsyncConnection.connect(admin_url) as conn,
        conn.cursor(row_factory=dict_row) as cur,
    ):
        if tenant_name is not None:
            await cur.execute(
                "SELECT 1 FROM public.tenants WHERE name = %s AND NOT is_deleted", (tenant_name,)
            )
            if await cur.fetchone() is None:
                raise TenantNotFound(f"no tenant named {tenant_name!r}")
        await cur.execute(
            "SELECT k.id, t.name AS tenant, k.name, k.prefix, k.created_at,"
            " CASE WHEN k.is_deleted THEN k.updated_at END AS revoked_at"
            " FROM public.api_keys k JOIN public.tenants t ON t.id = k.tenant_id"
            " WHERE NOT t.is_deleted AND (%(tenant)s::text IS NULL OR t.name = %(tenant)s)"
            " ORDER BY t.name, k.created_at, k.id",
            {"tenant": tenant_name},
        )
        rows = await cur.fetchall()
    return [
        KeyInfo(r["id"], r["tenant"], r["name"], r["prefix"], r["created_at"], r["revoked_at"])
        for r in rows
    ]


async def revoke_api_key(
    admin_url: str,
    key: str,
    *,
    actor: str | None = None,
    tenant_setting: str = DEFAULT_TENANT_SETTING,
) -> KeyInfo:
    """Revoke the live key whose id is `key`, or whose prefix is `key` (`adbm_<prefix>` or the
    8 hex digits) when exactly one live key has it; returns it as revoked. The next lookup of
    the key finds nothing: `adbm_authenticate` skips revoked keys. KeyNotFound when no live key
    matches, or a prefix matches several."""
    key_id = _as_uuid(key)
    prefix = key.removeprefix("adbm_")
    async with await psycopg.AsyncConnection.connect(admin_url) as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT k.id, k.tenant_id, t.name AS tenant"
                " FROM public.api_keys k JOIN public.tenants t ON t.id = k.tenant_id"
                " WHERE NOT k.is_deleted AND (k.id = %s OR k.prefix = %s) LIMIT 2",
                (key_id, prefix),
            )
            found = await cur.fetchall()
            if not found:
                raise KeyNotFound(f"no live API key with id or prefix {key!r}")
            if len(found) > 1:
                raise KeyNotFound(f"several live API keys have the prefix {key!r}; use the key id")
            # Writing api_keys is under the tenant policy (see create_api_key).
            await cur.execute(
                "SELECT pg_catalog.set_config(%s, %s, true)",
                (check_setting(tenant_setting), str(found[0]["tenant_id"])),
            )
        row = await repository.soft_delete(
            conn, "api_keys", found[0]["id"], expected_version=None, actor=actor or cli_actor()
        )
        await conn.commit()
    return KeyInfo(
        row["id"],
        found[0]["tenant"],
        row["name"],
        row["prefix"],
        row["created_at"],
        row["updated_at"],
    )


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
