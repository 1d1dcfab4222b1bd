"""The Secrets of database provisioning, as pure builders (values passed in, never read here).

- `<name>-db-password`: the app role's password, generated once by the operator and never
  rewritten; the source the other two are derived from.
- `<name>-db-app`: what the pods read (`uri`, a libpq URI, plus CloudNativePG-style `username`,
  `password`, `host`, `port`, `dbname`); rebuilt whenever the server or the password changes,
  which rolls the pods (their checksum annotation covers it).
- `<name>-db-migrate`: the admin's URI pointed at `database.name`, for the migration Job only
  (the admin Secret's own URI names another database, `*` for CloudNativePG).
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from adbm_operator.model import BackendService
from adbm_operator.specs import labels

PASSWORD_KEY = "password"
URI_KEY = "uri"


def password_secret_name(obj: BackendService) -> str:
    return labels.child_name(obj, "db-password")


def migrate_secret_name(obj: BackendService) -> str:
    return labels.child_name(obj, "db-migrate")


def generate_password() -> str:
    """A new app role password: 256 random bits, URL-safe (no quoting surprises anywhere)."""
    return secrets.token_urlsafe(32)


def _secret(obj: BackendService, name: str, values: dict[str, str]) -> dict[str, Any]:
    # `data` (base64) rather than `stringData`: it is what the API server returns, so the
    # rendered object compares equal to the live one when nothing changed.
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": labels.metadata(obj, name, "database"),
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def password_secret(obj: BackendService, password: str) -> dict[str, Any]:
    return _secret(obj, password_secret_name(obj), {PASSWORD_KEY: password})


def read_password(secret: dict[str, Any] | None) -> str | None:
    """The password kept in a live `<name>-db-password` Secret, if it holds one."""
    if secret is None:
        return None
    encoded = (secret.get("data") or {}).get(PASSWORD_KEY)
    return base64.b64decode(encoded).decode() if encoded else None


def app_secret(
    obj: BackendService, *, uri: str, password: str, host: str, port: str
) -> dict[str, Any]:
    return _secret(
        obj,
        labels.db_app_secret_name(obj),
        {
            URI_KEY: uri,
            "username": labels.app_role(obj),
            PASSWORD_KEY: password,
            "host": host,
            "port": port,
            "dbname": obj.spec.database.name,
        },
    )


def migrate_secret(obj: BackendService, *, admin_uri: str) -> dict[str, Any]:
    return _secret(obj, migrate_secret_name(obj), {URI_KEY: admin_uri})
