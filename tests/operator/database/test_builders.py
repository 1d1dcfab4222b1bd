"""Pure builders of database provisioning: the Secrets, the migration Job, and DatabaseReady."""

from __future__ import annotations

import base64

import pytest

from adbm_operator import model
from adbm_operator.database import children
from adbm_operator.database.budget import Budget
from adbm_operator.database.canary import Check, IsolationResult
from adbm_operator.database.condition import Observations, database_ready
from adbm_operator.database.provision import desired_from_spec, retry_delay
from adbm_operator.database.target import admin_server
from adbm_operator.model import max_connections
from adbm_operator.specs import configmap, dbsecrets, labels, migration, pod
from reference_service.db.schema import TENANT_SCOPED
from tests.operator.specs.support import assert_valid, example

PROVEN = IsolationResult((Check("public.accounts", "tenant A sees its own row", "passed"),))
BROKEN = IsolationResult(
    (Check("public.accounts", "tenant A sees no other tenant's rows", "failed", "3 rows"),)
)
FITS = Budget(max_connections=100, reserved=8, wanted=40)


def test_the_job_is_named_per_image_and_runs_that_images_migrate() -> None:
    obj = example("minimal")
    job = migration.job(obj)
    assert_valid(job)
    assert job["metadata"]["name"] == migration.name(obj)
    assert job["metadata"]["name"].startswith("shop-migrate-")
    assert migration.name(example("minimal")) == migration.name(obj)
    other = example("minimal", {"spec.image": "registry.example/shop:2.0"})
    assert migration.name(other) != migration.name(obj)
    # Anything but the image leaves the Job alone: it has run for this image already.
    assert migration.name(example("minimal", {"spec.replicas": 5})) == migration.name(obj)

    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["image"] == obj.spec.image
    assert container["command"] == ["adbm-service"]
    assert container["args"] == ["migrate", "--app-role", labels.app_role(obj)]
    assert container["envFrom"] == [{"configMapRef": {"name": configmap.name(obj)}}]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert refs == {
        "ADBM_DATABASE_URL": {"name": labels.db_app_secret_name(obj), "key": "uri"},
        "ADBM_ADMIN_DATABASE_URL": {"name": dbsecrets.migrate_secret_name(obj), "key": "uri"},
    }
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert container["securityContext"] == pod.container_security_context()
    assert job["spec"]["backoffLimit"] == migration.BACKOFF_LIMIT


def test_job_success_is_read_from_its_complete_condition() -> None:
    assert not migration.succeeded(None)
    assert not migration.succeeded({"status": {"active": 1}})
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    assert not migration.succeeded(failed)
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert migration.succeeded(done)


def test_the_secrets_carry_their_values_base64_and_nothing_else() -> None:
    obj = example("minimal")
    password = dbsecrets.generate_password()
    assert len(password) >= 43 and password != dbsecrets.generate_password()
    keep = dbsecrets.password_secret(obj, password)
    app = dbsecrets.app_secret(
        obj, uri="postgresql://shop_app:x@h:5432/shop", password=password, host="h", port="5432"
    )
    admin = dbsecrets.migrate_secret(obj, admin_uri="postgresql://postgres:y@h:5432/shop")
    for secret in (keep, app, admin):
        assert_valid(secret)
        assert secret["metadata"]["namespace"] == obj.namespace
    assert keep["metadata"]["name"] == "shop-db-password"
    assert dbsecrets.read_password(keep) == password
    assert dbsecrets.read_password(None) is None
    assert dbsecrets.read_password({"data": {}}) is None
    assert app["metadata"]["name"] == labels.db_app_secret_name(obj) == "shop-db-app"
    decoded = {k: base64.b64decode(v).decode() for k, v in app["data"].items()}
    assert decoded == {
        "uri": "postgresql://shop_app:x@h:5432/shop",
        "username": "shop_app",
        "password": password,
        "host": "h",
        "port": "5432",
        "dbname": "shop",
    }
    # The pods read exactly the key the app Secret provides.
    (db_ref, *_) = pod.referenced_secrets(obj)
    assert (db_ref.name, db_ref.key) == (app["metadata"]["name"], dbsecrets.URI_KEY)


@pytest.mark.parametrize(
    ("obs", "expected"),
    [
        (Observations(unreachable="cannot connect"), ("False", "Unreachable")),
        (
            Observations(budget=Budget(100, 8, 500), migrated=True, isolation=PROVEN),
            ("False", "ConnectionBudgetExceeded"),
        ),
        (Observations(budget=FITS, migrated=False), ("False", "Migrating")),
        (
            Observations(budget=FITS, migrated=True, isolation=BROKEN, remaining_drift=("x",)),
            ("False", "IsolationBroken"),
        ),
        (
            Observations(budget=FITS, migrated=True, isolation=PROVEN, remaining_drift=("x",)),
            ("False", "PolicyDrift"),
        ),
        (Observations(budget=FITS, migrated=True, isolation=PROVEN), ("True", "Provisioned")),
    ],
)
def test_database_ready_reasons_in_order_of_urgency(
    obs: Observations, expected: tuple[str, str]
) -> None:
    assert database_ready(obs)[:2] == expected


def test_database_ready_messages() -> None:
    assert database_ready(Observations(unreachable="cannot connect to x: refused"))[2] == (
        "cannot connect to x: refused"
    )
    over = Budget(max_connections=100, reserved=8, wanted=500)
    assert database_ready(Observations(budget=over))[2] == (
        "500 connections at the autoscaling maximum exceed the 92 the server allows"
        " (max_connections 100 minus 8 reserved)"
    )
    assert database_ready(Observations(budget=FITS, migrated=True, isolation=BROKEN))[2] == (
        "public.accounts: tenant A sees no other tenant's rows: 3 rows"
    )
    drift = Observations(budget=FITS, migrated=True, isolation=PROVEN, remaining_drift=("a", "b"))
    assert database_ready(drift)[2] == "a; b"
    assert database_ready(Observations(budget=FITS, migrated=False))[2] == (
        "waiting for the schema migration"
    )
    assert (
        "isolation proven: 1 checks passed"
        in database_ready(Observations(budget=FITS, migrated=True, isolation=PROVEN))[2]
    )


def test_desired_from_spec_reads_the_database_fields() -> None:
    obj = example(
        "minimal",
        {
            "spec.database.appRole": "shop_rw",
            "spec.database.rowLevelSecurity": {
                "tenantSetting": "shop.tenant",
                "tenantColumn": "org_id",
                "tables": ["orders", "invoices"],
            },
        },
    )
    desired = desired_from_spec(obj, app_password="pw", migrated=True)
    assert (desired.owner, desired.database, desired.app_role) == ("shop/shop", "shop", "shop_rw")
    assert desired.tables == ("orders", "invoices")
    assert (desired.tenant_setting, desired.tenant_column) == ("shop.tenant", "org_id")
    assert desired.wanted_connections == max_connections(obj.spec)
    assert desired.migrated and "pw" not in repr(desired)
    assert desired_from_spec(example("minimal"), app_password="x", migrated=False).app_role == (
        "shop_app"
    )


def test_retries_back_off_and_stay_bounded() -> None:
    delays = [retry_delay(n) for n in range(1, 10)]
    assert delays == sorted(delays) and delays[0] == 5 and max(delays) == 300


def test_children_are_the_three_secrets_and_the_job() -> None:
    obj = example("minimal")
    server = admin_server(
        {"uri": base64.b64encode(b"postgresql://postgres:pw@pg-rw.shop:5432/*").decode()}, "uri"
    )
    objects = children.secrets(obj, server, "app-pw")
    assert [o["metadata"]["name"] for o in objects] == [
        "shop-db-password",
        "shop-db-app",
        "shop-db-migrate",
    ]
    uris = [base64.b64decode(o["data"]["uri"]).decode() for o in objects[1:]]
    assert uris == [
        "postgresql://shop_app:app-pw@pg-rw.shop:5432/shop",
        "postgresql://postgres:pw@pg-rw.shop:5432/shop",
    ]
    assert children.migration_job(obj) == migration.job(obj)


@pytest.mark.parametrize("name", ["minimal", "full"])
def test_examples_of_the_reference_image_govern_every_tenant_table(name: str) -> None:
    """The operator's canary proves isolation, and its verification repairs drift, only in the
    tables `rowLevelSecurity.tables` lists: an example running the reference service's image
    must list every table that image keeps per tenant (a real run showed full.yaml proving 5 of
    10: the saga, inbox, ledger and notification rows went unchecked)."""
    obj = example(name)
    assert obj.spec.image == model.DEFAULT_IMAGE
    governed = set(obj.spec.database.row_level_security.tables)
    assert governed == set(TENANT_SCOPED), set(TENANT_SCOPED) ^ governed
