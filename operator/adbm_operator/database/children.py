"""The Kubernetes objects database provisioning needs, from the spec, the admin's server and the
app role's password (pure): what the reconcile applies before it calls `provision`.

The password comes from the live `<name>-db-password` (`specs.dbsecrets.read_password`) or,
the first time only, `specs.dbsecrets.generate_password()`. The Secrets are applied (with the
BackendService as owner); the migration Job is created if absent and never patched.
"""

from __future__ import annotations

from typing import Any

from adbm_operator.database.target import Server, admin_uri, app_uri
from adbm_operator.model import BackendService
from adbm_operator.specs import dbsecrets, labels, migration


def secrets(obj: BackendService, server: Server, password: str) -> list[dict[str, Any]]:
    """`<name>-db-password`, `<name>-db-app` and `<name>-db-migrate`."""
    database = obj.spec.database.name
    return [
        dbsecrets.password_secret(obj, password),
        dbsecrets.app_secret(
            obj,
            uri=app_uri(server, dbname=database, role=labels.app_role(obj), password=password),
            password=password,
            host=server.host,
            port=server.port,
        ),
        dbsecrets.migrate_secret(obj, admin_uri=admin_uri(server, dbname=database)),
    ]


def migration_job(obj: BackendService) -> dict[str, Any]:
    """The Job that migrates the schema for `obj.spec.image`."""
    return migration.job(obj)
