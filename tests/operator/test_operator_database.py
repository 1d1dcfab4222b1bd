"""The running operator provisions the real PostgreSQL: from the three Secrets a platform team
provides to DatabaseReady and Ready, a new image held back until its migration ran, drift
repaired by the verification timer, deletion policy `Delete`, and an unreachable server.

The test plays the Job controller by running the migration Job's container command as a real
local process, its environment resolved from the live objects as the kubelet would
(`database/kubelet.py`), then marking the Job complete. That two Jobs' pods (or two operators'
provisioning passes) at once migrate exactly once is shown in `database/test_migration_job.py`
and `database/test_provision.py`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from adbm_operator import model
from adbm_operator.database import provision
from adbm_operator.handlers import deletion
from adbm_operator.specs import configmap, dbsecrets, labels, migration
from reference_service.db import rls
from reference_service.db.migrate import migrate
from reference_service.db.schema import SCHEMA
from tests.operator import test_operator as base
from tests.operator.database import kubelet
from tests.operator.emulator import AdbmEmulator
from tests.operator.test_operator import (
    ADMIN_SECRET,
    BACKENDS,
    NS,
    backend,
    call,
    condition,
    condition_is,
    create_secrets,
    free_port,
    get,
    mark_available,
    mark_job,
    names,
    running,
    until,
    url,
)
from tests.reference_service.conftest import SERVER_URL, conninfo

# The fixtures of the operator tests, by name.
cluster = base.cluster
database_names = base.database_names
kmock_options = base.kmock_options
kubeconfig = base.kubeconfig

PLATFORM_SECRETS = {ADMIN_SECRET, "shop-redis", "shop-rabbitmq"}
NEW_IMAGE = "adbm/reference-service:0.2.0"


@pytest.fixture
async def operator(cluster: AdbmEmulator, kubeconfig: None) -> AsyncIterator[AdbmEmulator]:
    await create_secrets(cluster)
    async with running():
        yield cluster


async def run_job_pod(cluster: AdbmEmulator, job_name: str) -> tuple[int, str]:
    """The Job's container as the kubelet would start it: env from the live ConfigMap and
    Secrets, the rendered command, as a real process against the real server."""
    job = await until(lambda: get(cluster, "Job", job_name), what=f"Job {job_name}")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    objects = []
    for kind, name in (
        ("ConfigMap", configmap.name(model.parse(backend()))),
        ("Secret", "shop-db-app"),
        ("Secret", dbsecrets.migrate_secret_name(model.parse(backend()))),
    ):
        live = await get(cluster, kind, name)
        assert live is not None, name
        objects.append(live)
    env = kubelet.environment(container, objects)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.defpath  # the image's PATH
    process = await asyncio.create_subprocess_exec(
        *kubelet.argv(container, env),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return await process.wait(), out.decode()


async def events(cluster: AdbmEmulator, reason: str) -> list[dict[str, Any]]:
    listed = await call(cluster, "GET", f"/api/v1/namespaces/{NS}/events")
    return [e for e in listed.get("items", []) if e.get("reason") == reason]


def b64decode(value: str) -> str:
    return base64.b64decode(value).decode()


async def admin_execute(query: sql.Composed) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(
        conninfo(names().database), autocommit=True
    ) as conn:
        cur = await conn.execute(query)
        return await cur.fetchall() if cur.description else []


async def role_exists(role: str) -> bool:
    async with await psycopg.AsyncConnection.connect(SERVER_URL, autocommit=True) as conn:
        cur = await conn.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (role,))
        return await cur.fetchone() is not None


async def provision_and_roll_out(cluster: AdbmEmulator, body: dict[str, Any]) -> str:
    await call(cluster, "POST", BACKENDS, body)
    job = migration.name(model.parse(body))
    code, out = await run_job_pod(cluster, job)
    assert code == 0, out
    await mark_job(cluster, job)
    await condition_is(cluster, "DatabaseReady", "True", "Provisioned")
    for name in ("shop-api", "shop-worker-orders"):
        await until(lambda n=name: get(cluster, "Deployment", n))
        await mark_available(cluster, name)
    await condition_is(cluster, "Ready", "True")
    return job


async def test_from_the_platform_secrets_to_ready(operator: AdbmEmulator) -> None:
    body = backend()
    await call(operator, "POST", BACKENDS, body)
    job = migration.name(model.parse(body))
    await until(lambda: get(operator, "Job", job), what="the migration Job")
    migrating = await condition_is(operator, "DatabaseReady", "False", "Migrating")
    assert "migration Job" in migrating["message"]
    ready = condition(await get(operator, "BackendService", "shop"), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Migrating")
    # No image has migrated yet: no pod may start against a schema that is not there.
    assert await get(operator, "Deployment", "shop-api") is None

    code, out = await run_job_pod(operator, job)
    assert code == 0, out
    assert "applied: 0001_core" in out
    await mark_job(operator, job)
    provisioned = await condition_is(operator, "DatabaseReady", "True", "Provisioned")
    assert "isolation" in provisioned["message"]
    for name in ("shop-api", "shop-worker-orders"):
        await until(lambda n=name: get(operator, "Deployment", n))
        await mark_available(operator, name)
    await condition_is(operator, "Ready", "True")

    shop = await get(operator, "BackendService", "shop")
    assert shop is not None
    database = shop["status"]["database"]
    assert database["migratedImage"] == model.parse(body).spec.image
    assert database["schemaVersion"]
    assert database["lastVerified"]
    assert not shop["metadata"].get("finalizers"), "Retain: no finalizer"
    # Every Secret beyond the platform's was created by the operator, owned by the object.
    created = {
        c.object["metadata"]["name"]
        for c in operator.changelog
        if c.type == "ADDED" and c.object.get("kind") == "Secret"
    }
    assert created - PLATFORM_SECRETS == {
        "shop-cursor",
        "shop-db-password",
        "shop-db-app",
        "shop-db-migrate",
    }
    for name in created - PLATFORM_SECRETS:
        secret = await get(operator, "Secret", name)
        assert secret is not None
        (ref,) = secret["metadata"]["ownerReferences"]
        assert ref["uid"] == shop["metadata"]["uid"]
    app = await get(operator, "Secret", "shop-db-app")
    password = await get(operator, "Secret", "shop-db-password")
    assert app is not None and password is not None
    assert b64decode(app["data"]["password"]) == b64decode(password["data"]["password"])
    # The pods' URI logs in as the app role, which sees nothing without a tenant.
    async with await psycopg.AsyncConnection.connect(b64decode(app["data"]["uri"])) as conn:
        orders = sql.Identifier(SCHEMA, "orders")
        cur = await conn.execute(sql.SQL("SELECT current_user, count(*) FROM {}").format(orders))
        assert await cur.fetchone() == (names().role, 0)
    assert await until(lambda: events(operator, "DatabaseProvisioned"))
    # The password is in no status and no Event.
    secret_text = b64decode(password["data"]["password"])
    assert secret_text not in str(shop["status"])
    assert all(secret_text not in str(e) for e in await events(operator, "DatabaseProvisioned"))


async def test_a_new_image_serves_only_after_its_migration(operator: AdbmEmulator) -> None:
    body = backend()
    await provision_and_roll_out(operator, body)
    old = model.parse(body).spec.image
    await call(operator, "PATCH", url("BackendService", "shop"), {"spec": {"image": NEW_IMAGE}})
    new_job = migration.name(model.parse(backend(image=NEW_IMAGE)))
    await until(lambda: get(operator, "Job", new_job), what="the new image's Job")
    await condition_is(operator, "DatabaseReady", "False", "Migrating")
    for name in ("shop-api", "shop-worker-orders"):
        live = await get(operator, "Deployment", name)
        assert live is not None
        assert live["spec"]["template"]["spec"]["containers"][0]["image"] == old
    await migrate(conninfo(names().database), app_role=names().role)
    await mark_job(operator, new_job)

    async def rolled(name: str) -> bool:
        live = await get(operator, "Deployment", name)
        return bool(
            live and live["spec"]["template"]["spec"]["containers"][0]["image"] == NEW_IMAGE
        )

    await until(lambda: rolled("shop-api"))
    await until(lambda: rolled("shop-worker-orders"))
    shop = await condition_is(operator, "DatabaseReady", "True", "Provisioned")
    assert shop


async def test_jobs_of_images_no_longer_deployed_are_deleted_once_the_new_one_succeeded(
    operator: AdbmEmulator,
) -> None:
    body = backend()
    old_job = await provision_and_roll_out(operator, body)
    shop = await get(operator, "BackendService", "shop")
    assert shop is not None
    # Someone else's Job with the same labels: not the operator's to delete.
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "shop-migrate-by-hand",
            "labels": {labels.OWNER_LABEL: "shop", labels.COMPONENT_LABEL: migration.COMPONENT},
        },
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": []}}},
    }
    await call(operator, "POST", f"/apis/batch/v1/namespaces/{NS}/jobs", foreign)
    await call(operator, "PATCH", url("BackendService", "shop"), {"spec": {"image": NEW_IMAGE}})
    new_job = migration.name(model.parse(backend(image=NEW_IMAGE)))
    await until(lambda: get(operator, "Job", new_job), what="the new image's Job")
    await condition_is(operator, "DatabaseReady", "False", "Migrating")
    # The old image still serves: its Job stays while the new one runs.
    assert await get(operator, "Job", old_job) is not None
    await migrate(conninfo(names().database), app_role=names().role)
    await mark_job(operator, new_job)
    await until(
        lambda: _absent(operator, "Job", old_job), timeout=30, what="the old image's Job deleted"
    )
    assert await get(operator, "Job", new_job) is not None, "the deployed image's Job is kept"
    assert await get(operator, "Job", "shop-migrate-by-hand") is not None

    # A third image whose migration fails, then the spec goes back to the deployed image: the
    # failed Job is of an image no longer asked for.
    third = "adbm/reference-service:0.3.0"
    await call(operator, "PATCH", url("BackendService", "shop"), {"spec": {"image": third}})
    third_job = migration.name(model.parse(backend(image=third)))
    await until(lambda: get(operator, "Job", third_job), what="the third image's Job")
    await mark_job(operator, third_job, "Failed")
    await condition_is(operator, "DatabaseReady", "False", "MigrationFailed")
    assert await get(operator, "Job", new_job) is not None, "still deployed: kept"
    await call(operator, "PATCH", url("BackendService", "shop"), {"spec": {"image": NEW_IMAGE}})
    await until(
        lambda: _absent(operator, "Job", third_job), timeout=30, what="the failed Job deleted"
    )
    await condition_is(operator, "DatabaseReady", "True", "Provisioned")
    assert await get(operator, "Job", new_job) is not None


async def _absent(cluster: AdbmEmulator, kind: str, name: str) -> bool:
    return await get(cluster, kind, name) is None


async def test_a_failed_migration_says_so_and_keeps_the_pods(operator: AdbmEmulator) -> None:
    body = backend()
    await provision_and_roll_out(operator, body)
    await call(operator, "PATCH", url("BackendService", "shop"), {"spec": {"image": NEW_IMAGE}})
    new_job = migration.name(model.parse(backend(image=NEW_IMAGE)))
    await until(lambda: get(operator, "Job", new_job), what="the new image's Job")
    await mark_job(operator, new_job, "Failed")
    failed = await condition_is(operator, "DatabaseReady", "False", "MigrationFailed")
    assert new_job in failed["message"]
    await condition_is(operator, "Degraded", "True", "MigrationFailed")
    live = await get(operator, "Deployment", "shop-api")
    assert live is not None
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] != NEW_IMAGE


async def test_drift_is_repaired_by_the_verification_timer(
    cluster: AdbmEmulator, kubeconfig: None
) -> None:
    await create_secrets(cluster)
    async with running(verify_interval=0.5):
        await provision_and_roll_out(cluster, backend())
        before = len(await events(cluster, "DatabaseDriftRepaired"))
        # Nothing in the cluster changes: only the timer's pass can notice.
        await admin_execute(
            sql.SQL("DROP POLICY {} ON {}").format(
                sql.Identifier(rls.POLICY), sql.Identifier(SCHEMA, "orders")
            )
        )

        async def repaired() -> list[dict[str, Any]] | None:
            found = await events(cluster, "DatabaseDriftRepaired")
            return found[before:] or None

        (event, *_) = await until(repaired, timeout=20, what="the drift repair Event")
        assert "orders" in event["message"]
        assert event["type"] == "Warning"
        policies = await admin_execute(
            sql.SQL(
                "SELECT policyname FROM pg_catalog.pg_policies"
                " WHERE schemaname = {} AND tablename = 'orders'"
            ).format(sql.Literal(SCHEMA))
        )
        assert (rls.POLICY,) in policies
        await condition_is(cluster, "DatabaseReady", "True", "Provisioned")


async def test_deletion_policy_delete_drops_the_role_and_the_database(
    operator: AdbmEmulator,
) -> None:
    body = backend()
    body["spec"]["database"]["deletionPolicy"] = "Delete"
    await provision_and_roll_out(operator, body)
    shop = await get(operator, "BackendService", "shop")
    assert shop is not None and shop["metadata"].get("finalizers")
    assert await role_exists(names().role)
    await call(operator, "DELETE", url("BackendService", "shop"))

    async def gone() -> bool:
        return await get(operator, "BackendService", "shop") is None

    await until(gone, timeout=20, what="the BackendService deleted")
    assert not await role_exists(names().role)
    async with await psycopg.AsyncConnection.connect(SERVER_URL, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (names().database,)
        )
        assert await cur.fetchone() is None
    (event,) = await until(lambda: events(operator, "DatabaseDeprovisioned"))
    assert names().role in event["message"]


async def test_switching_to_retain_removes_the_finalizer(operator: AdbmEmulator) -> None:
    body = backend()
    body["spec"]["database"]["deletionPolicy"] = "Delete"
    await call(operator, "POST", BACKENDS, body)

    async def finalizers() -> list[str]:
        live = await get(operator, "BackendService", "shop")
        return list((live or {}).get("metadata", {}).get("finalizers") or [])

    await until(finalizers, what="the finalizer")
    change = {"spec": {"database": {"deletionPolicy": "Retain"}}}
    await call(operator, "PATCH", url("BackendService", "shop"), change)

    async def released() -> bool:
        return not await finalizers()

    await until(released, what="the finalizer removed")
    await call(operator, "DELETE", url("BackendService", "shop"))
    await until(lambda: _gone(operator))
    assert await role_exists(names().role), "Retain keeps the role"


async def _gone(cluster: AdbmEmulator) -> bool:
    return await get(cluster, "BackendService", "shop") is None


async def test_an_unreachable_server_is_reported_backed_off_and_the_rest_applied(
    cluster: AdbmEmulator, kubeconfig: None
) -> None:
    await create_secrets(cluster, admin_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    async with running():
        await call(cluster, "POST", BACKENDS, backend())
        down = await condition_is(cluster, "DatabaseReady", "False", "Unreachable")
        assert "cannot connect" in down["message"]
        ready = await condition_is(cluster, "Ready", "False", "Unreachable")
        assert ready["message"] == down["message"]
        # The rest of the reconcile went on: configuration, Service and the app's Secret exist.
        for kind, name in (("ConfigMap", "shop-config"), ("Service", "shop")):
            assert await get(cluster, kind, name) is not None, name
        assert await get(cluster, "Secret", "shop-db-app") is not None
        # The pass never reached the server, so no migration Job was started against it.
        job = migration.name(model.parse(backend()))
        assert await get(cluster, "Job", job) is None
        # Backed off: the next pass waits retry_delay(1) = 5 s, with no write meanwhile.
        await asyncio.sleep(0.5)
        settled = dict(cluster.requests_by_verb)
        await asyncio.sleep(1.5)
        assert dict(cluster.requests_by_verb) == settled
        # New credentials are tried at once, backoff or not: the admin Secret is watched.
        fixed = {"data": {"uri": base64.b64encode(SERVER_URL.encode()).decode()}}
        await call(cluster, "PATCH", url("Secret", ADMIN_SECRET), fixed)
        await condition_is(cluster, "DatabaseReady", "False", "Migrating")
        await until(lambda: get(cluster, "Job", job), what="the migration Job")


async def test_a_held_creation_lock_starts_no_job_and_is_retried(
    cluster: AdbmEmulator, kubeconfig: None
) -> None:
    # Another provisioner holds the lock around creating this database and its role (a slow
    # CREATE DATABASE): the pass gives up after its lock wait, the database may not exist, so
    # no migration Job may run against it; the pass is retried, not left to the verify timer.
    await create_secrets(cluster)
    async with await psycopg.AsyncConnection.connect(SERVER_URL, autocommit=True) as holder:
        await holder.execute(
            "SELECT pg_advisory_lock(%s::integer, hashtext(%s))",
            (provision.CREATION_LOCK_CLASS, names().database),
        )
        async with running():
            await call(cluster, "POST", BACKENDS, backend())
            busy = await condition_is(cluster, "DatabaseReady", "False", "Migrating")
            assert "is locked by a migration or another provisioner" in busy["message"]
            job = migration.name(model.parse(backend()))
            assert await get(cluster, "Job", job) is None
            await holder.execute(
                "SELECT pg_advisory_unlock(%s::integer, hashtext(%s))",
                (provision.CREATION_LOCK_CLASS, names().database),
            )
            await until(lambda: get(cluster, "Job", job), timeout=60, what="the migration Job")


async def test_a_deletion_that_cannot_reach_the_server_gives_up_and_says_what_is_left(
    operator: AdbmEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deletion, "MAX_ATTEMPTS", 2)  # one retry, after retry_delay(1)
    body = backend()
    body["spec"]["database"]["deletionPolicy"] = "Delete"
    await provision_and_roll_out(operator, body)
    # The platform team removed the admin's Secret first: the server cannot be reached.
    await call(operator, "DELETE", url("Secret", ADMIN_SECRET))
    await call(operator, "DELETE", url("BackendService", "shop"))
    await until(lambda: _gone(operator), timeout=30, what="the finalizer removed anyway")
    (event,) = await until(lambda: events(operator, "DeprovisionAbandoned"))
    assert event["type"] == "Warning"
    assert "gave up after 2 attempts" in event["message"]
    assert f"database {names().database} and role {names().role}" in event["message"]
    assert await role_exists(names().role), "left behind, as the Event says"


async def test_a_spec_the_server_cannot_hold_is_refused_as_a_condition(
    operator: AdbmEmulator,
) -> None:
    body = backend(replicas=50)
    body["spec"]["database"].update(pool={"maxSize": 100}, connectionBudget=100_000)
    await call(operator, "POST", BACKENDS, body)
    refused = await condition_is(operator, "DatabaseReady", "False", "ConnectionBudgetExceeded")
    assert "max_connections" in refused["message"]
    await condition_is(operator, "Degraded", "True", "ConnectionBudgetExceeded")
    # Refused, not crashed: the other children are applied, and the reconcile goes on.
    for kind, name in (("ConfigMap", "shop-config"), ("Service", "shop")):
        assert await get(operator, kind, name) is not None, name
    shop = await get(operator, "BackendService", "shop")
    assert shop is not None
    assert condition(shop, "ResourcesApplied")["status"] == "True"


async def test_a_changed_admin_server_rewrites_the_app_secret_and_rolls_the_pods(
    operator: AdbmEmulator,
) -> None:
    await provision_and_roll_out(operator, backend())
    app = await get(operator, "Secret", "shop-db-app")
    assert app is not None
    checksum = await base.template_annotation(operator, "shop-api", "checksum/secrets")
    # The platform team pins TLS off in the admin's URI: the app's URI carries it too.
    pinned = SERVER_URL + ("&" if "?" in SERVER_URL else "?") + "sslmode=disable"
    await call(
        operator,
        "PATCH",
        url("Secret", ADMIN_SECRET),
        {"data": {"uri": base64.b64encode(pinned.encode()).decode()}},
    )
    await base.until_rolled(
        operator, "checksum/secrets", checksum, "shop-api", "shop-worker-orders"
    )
    rewritten = await get(operator, "Secret", "shop-db-app")
    assert rewritten is not None
    assert b64decode(rewritten["data"]["uri"]).endswith("?sslmode=disable")
    password = await get(operator, "Secret", "shop-db-password")
    assert password is not None
    # The password is the one generated once: only the server's part changed.
    kept = b64decode(password["data"]["password"])
    assert b64decode(rewritten["data"]["password"]) == kept == b64decode(app["data"]["password"])
