"""What the migrations create, as data: the allow-list that every dynamically composed statement
is checked against. A test compares it with `information_schema` after migrating, so it cannot
drift from the SQL files."""

from __future__ import annotations

import re
from collections.abc import Mapping

SCHEMA = "public"
"""Schema the migrations create their objects in."""

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
"""Names accepted for tables, columns and roles (same rule as the operator's model)."""

CUSTOM_SETTING = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")
"""Names accepted for the tenant setting: a two-part custom setting such as `app.tenant_id`."""

AUDIT_COLUMNS: tuple[str, ...] = (
    "id",
    "created_at",
    "updated_at",
    "created_by",
    "updated_by",
    "is_deleted",
    "version",
)
"""Columns every table has. Only the repository writes them; callers never pass them."""

MANAGED_COLUMNS = frozenset(AUDIT_COLUMNS) - {"id"}
"""Audit columns a caller may not set in an insert or an update."""

_AUDIT = AUDIT_COLUMNS[1:]  # after the id (and the tenant), as the migration lays them out
_SCOPED = ("id", "tenant_id", *_AUDIT)

TABLES: Mapping[str, tuple[str, ...]] = {
    "tenants": ("id", *_AUDIT, "name"),
    "api_keys": (*_SCOPED, "name", "key_hash", "prefix"),
    "accounts": (*_SCOPED, "name", "currency", "balance_minor"),
    "products": (*_SCOPED, "sku", "name", "price_minor", "currency"),
    "orders": (
        *_SCOPED,
        "account_id",
        "product_id",
        "quantity",
        "total_minor",
        "currency",
        "status",
        "status_reason",
    ),
    "outbox": (*_SCOPED, "topic", "payload", "published_at", "traceparent", "tracestate"),
    "inbox": (*_SCOPED, "consumer", "message_id"),
    "sagas": (
        *_SCOPED,
        "kind",
        "order_id",
        "account_id",
        "amount_minor",
        "currency",
        "state",
        "reason",
        "charge_attempted",
        "charge_id",
        "deadline_at",
    ),
    "saga_steps": (*_SCOPED, "saga_id", "step", "outcome", "detail"),
    "account_entries": (*_SCOPED, "account_id", "saga_id", "kind", "amount_minor"),
    "notifications": (*_SCOPED, "order_id", "channel", "event", "subject", "body"),
}
"""Every table and its columns, in the order the migrations create them."""

TENANT_SCOPED: tuple[str, ...] = (
    "api_keys",
    "accounts",
    "products",
    "orders",
    "outbox",
    "inbox",
    "sagas",
    "saga_steps",
    "account_entries",
    "notifications",
)
"""Tables with a tenant_id column: the app role's tables, and the default RLS tables."""

APP_PRIVILEGES: tuple[str, ...] = ("SELECT", "INSERT", "UPDATE")
"""The app role's privileges on the tenant-scoped tables. Never DELETE: rows are soft-deleted.
Never TRUNCATE: it is not subject to row-level security."""

AUTHENTICATE_FUNCTION = "adbm_authenticate(bytea)"
"""Signature of the SECURITY DEFINER function resolving an API key hash to its tenant."""

DEFINER_FUNCTIONS: tuple[str, ...] = (
    AUTHENTICATE_FUNCTION,
    "adbm_outbox_claim(integer)",
    "adbm_outbox_mark_published(uuid[])",
    "adbm_sagas_claim_stale(interval, integer)",
    "adbm_outbox_prune(interval, integer)",
    "adbm_inbox_prune(interval, integer)",
)
"""The SECURITY DEFINER functions the app role may execute: the only ways it reaches rows of
more than one tenant (API key lookup, the outbox relay, the stuck-saga sweep), and the only
ways it deletes rows (pruning the outbox and the inbox past their retention)."""


def check_identifier(name: str, what: str) -> str:
    """`name` if it is a plain lower-case SQL identifier, else ValueError."""
    if not IDENTIFIER.match(name):
        raise ValueError(f"{what} {name!r} is not a plain SQL identifier")
    return name


def check_setting(name: str) -> str:
    """`name` if it is a two-part custom setting name, else ValueError."""
    if not CUSTOM_SETTING.match(name) or len(name) > 63:
        raise ValueError(f"tenant setting {name!r} is not a custom setting such as app.tenant_id")
    return name
