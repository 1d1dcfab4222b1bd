"""The running operator against the emulated API server: create, change, drift, rotation, pause,
optional CRDs, pruning, deletion, and the promise that an unchanged object costs no writes.

Kopf runs in the test's event loop with the product's own registry, settings and login (through
a kubeconfig that points at the emulator); the test plays the Deployment and Job controllers by
writing their status, as kube-controller-manager would. The database is the real PostgreSQL:
each test gets its own database and app role (random names, dropped afterwards), and the admin
Secret a platform team would provide; the operator provisions the rest.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import re
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kmock as kmock_lib
import kopf
import psycopg
import pytest
import yaml
from prometheus_client import REGISTRY
from psycopg import sql

from adbm_operator import model, specs
from adbm_operator.handlers import lifecycle, registry, runtime
from adbm_operator.specs import migration
from reference_service.db.migrate import migrate
from tests.operator.emulator import AdbmEmulator, register_standard_resources, vendored_crd
from tests.operator.specs.support import example_body
from tests.reference_service.conftest import SERVER_URL, conninfo

NS = "shop"
BACKENDS = f"/apis/adbm.io/v1alpha1/namespaces/{NS}/backendservices"
MERGE = {"Content-Type": "application/merge-patch+json"}
SERVICE_MONITOR_CRD = "monitoring.coreos.com_servicemonitors.yaml"

RESOURCES = {
    "ConfigMap": "v1/configmaps",
    "Secret": "v1/secrets",
    "Service": "v1/services",
    "Deployment": "apps/v1/deployments",
    "Job": "batch/v1/jobs",
    "Event": "v1/events",
    "HorizontalPodAutoscaler": "autoscaling/v2/horizontalpodautoscalers",
    "PodDisruptionBudget": "policy/v1/poddisruptionbudgets",
    "NetworkPolicy": "networking.k8s.io/v1/networkpolicies",
    "ServiceMonitor": "monitoring.coreos.com/v1/servicemonitors",
    "BackendService": "adbm.io/v1alpha1/backendservices",
}


def url(kind: str, name: str | None = None) -> str:
    group_version, plural = RESOURCES[kind].rsplit("/", 1)
    prefix = "/api" if "/" not in group_version else "/apis"
    path = f"{prefix}/{group_version}/namespaces/{NS}/{plural}"
    return f"{path}/{name}" if name else path


@pytest.fixture
def kmock_options() -> dict[str, Any]:
    return {"cls": AdbmEmulator}


@pytest.fixture
def cluster(kmock: kmock_lib.RawHandler) -> AdbmEmulator:
    assert isinstance(kmock, AdbmEmulator)
    register_standard_resources(kmock)
    return kmock


async def call(cluster: AdbmEmulator, method: str, path: str, body: Any = None) -> Any:
    headers = MERGE if method == "PATCH" else {}
    async with cluster.request(method, path, json=body, headers=headers) as response:
        assert response.status < 400, f"{method} {path}: {response.status} {await response.text()}"
        return await response.json()


async def get(cluster: AdbmEmulator, kind: str, name: str) -> dict[str, Any] | None:
    async with cluster.get(url(kind, name)) as response:
        if response.status == 404:
            return None
        body: dict[str, Any] = await response.json()
        return body


async def until(check: Callable[[], Any], *, timeout: float = 30, what: str = "condition") -> Any:
    """Poll an async or sync check until it returns something truthy.

    The bound is for a stuck operator, not a speed claim: on a loaded 2-core CI machine a
    reconcile that takes 1 s alone has been seen to take over 10 s."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(0.02)


ADMIN_SECRET = "shop-db-superuser"
# The Secrets the operator derives for the database and applies with the other children.
DATABASE_SECRETS = ("shop-db-app", "shop-db-migrate")


@dataclass(frozen=True)
class Names:
    database: str
    role: str


_names: Names | None = None


@pytest.fixture(autouse=True)
async def database_names() -> AsyncIterator[Names]:
    """This test's database and app role on the real server, whatever the operator or the test
    left of them dropped afterwards."""
    global _names
    suffix = uuid.uuid4().hex[:12]
    names = Names(database=f"adbm_e2e_{suffix}", role=f"adbm_e2e_app_{suffix}")
    _names = names
    try:
        yield names
    finally:
        _names = None
        async with await psycopg.AsyncConnection.connect(SERVER_URL, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(names.database)
                )
            )
            await conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(names.role)))


def names() -> Names:
    assert _names is not None, "the database_names fixture sets them"
    return _names


def backend(**spec_changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(example_body("minimal"))
    body["spec"]["database"].update(name=names().database, appRole=names().role)
    body["spec"]["queue"] = {
        "secretRef": {"name": "shop-rabbitmq"},
        "workers": [{"name": "orders", "queues": ["orders.place"], "replicas": 1}],
    }
    body["spec"].update(spec_changes)
    return body


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def create_secrets(cluster: AdbmEmulator, admin_url: str = SERVER_URL) -> None:
    """What a platform team provides: the database admin's, Redis' and RabbitMQ's Secrets."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    await call(cluster, "POST", "/api/v1/namespaces", namespace)
    admin = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": ADMIN_SECRET}}
    await call(cluster, "POST", url("Secret"), {**admin, "data": {"uri": b64(admin_url)}})
    for name in ("shop-redis", "shop-rabbitmq"):
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}
        await call(cluster, "POST", url("Secret"), {**secret, "data": {"uri": "eA=="}})


async def mark_job(cluster: AdbmEmulator, name: str, outcome: str = "Complete") -> None:
    """Play the Job controller: the Job finished (`Complete`) or gave up (`Failed`)."""
    counts = {"succeeded": 1} if outcome == "Complete" else {"failed": migration.BACKOFF_LIMIT + 1}
    condition = {"type": outcome, "status": "True", "reason": outcome, "message": outcome}
    await call(
        cluster,
        "PATCH",
        url("Job", name) + "/status",
        {"status": {**counts, "conditions": [condition]}},
    )


async def run_migration_job(
    cluster: AdbmEmulator, body: dict[str, Any], *, timeout: float = 10
) -> str:
    """Once the operator created the migration Job of `body`'s image: migrate as its pod would
    (in process here; `test_operator_database` runs the container's command as a process), and
    mark the Job complete. The Job's name."""
    name = migration.name(model.parse(body))
    await until(lambda: get(cluster, "Job", name), timeout=timeout, what=f"Job {name}")
    await migrate(conninfo(names().database), app_role=names().role)
    await mark_job(cluster, name)
    return name


@pytest.fixture
def kubeconfig(cluster: AdbmEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The current context points at the emulator: the operator's own login path finds it."""
    path = tmp_path / "kubeconfig"
    server = str(cluster.url).rstrip("/")
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": server}}],
                "users": [{"name": "test", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "emulator", "context": {"cluster": "emulator", "user": "test"}}
                ],
                "current-context": "emulator",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(path))


@contextlib.asynccontextmanager
async def running(*, verify_interval: float | None = None) -> AsyncIterator[None]:
    """The operator, with the product's registry, settings and login, until the block ends;
    `verify_interval` replaces every object's database verification interval."""
    stop = asyncio.Event()
    # Kopf cancels, when it stops, every task born after it started: the fixture's teardown
    # is such a task, so it joins the ignored ones before the stop.
    ignored = set(asyncio.all_tasks())
    tasks = await kopf.spawn_tasks(
        registry=registry,
        settings=lifecycle.settings(fast=True),
        memo=runtime.new_memo(verify_interval=verify_interval),
        standalone=True,
        namespaces=[NS],
        stop_flag=stop,
    )
    task = asyncio.create_task(kopf.run_tasks(tasks, ignored=ignored))
    try:
        yield
    finally:
        current = asyncio.current_task()
        if current is not None:
            ignored.add(current)
        stop.set()
        async with asyncio.timeout(5):
            await task


@pytest.fixture
async def operator(cluster: AdbmEmulator, kubeconfig: None) -> AsyncIterator[AdbmEmulator]:
    await create_secrets(cluster)
    async with running():
        yield cluster


def rendered(body: dict[str, Any]) -> list[dict[str, Any]]:
    return specs.render(model.parse(body))


async def mark_available(cluster: AdbmEmulator, name: str) -> None:
    """Play the Deployment controller: every replica of the current generation available."""
    live = await get(cluster, "Deployment", name)
    assert live is not None
    replicas = live["spec"].get("replicas", 1)
    await call(
        cluster,
        "PATCH",
        url("Deployment", name) + "/status",
        {
            "status": {
                "observedGeneration": live["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [{"type": "Available", "status": "True"}],
            }
        },
    )


def condition(body: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for c in ((body or {}).get("status") or {}).get("conditions", []):
        if c["type"] == kind:
            return dict(c)
    return {}


async def template_annotation(cluster: AdbmEmulator, deployment: str, key: str) -> str:
    live = await get(cluster, "Deployment", deployment)
    assert live is not None, deployment
    value: str = live["spec"]["template"]["metadata"]["annotations"][key]
    return value


async def until_rolled(cluster: AdbmEmulator, key: str, before: str, *deployments: str) -> None:
    """Wait until the pod-template annotation `key` of each Deployment is no longer `before`."""
    for name in deployments:

        async def rolled(n: str = name) -> bool:
            return await template_annotation(cluster, n, key) != before

        await until(rolled, what=f"{name} rolled")


async def condition_is(
    cluster: AdbmEmulator, kind: str, status: str, reason: str | None = None
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        c = condition(await get(cluster, "BackendService", "shop"), kind)
        ok = c.get("status") == status and (reason is None or c.get("reason") == reason)
        return c if ok else None

    result: dict[str, Any] = await until(check, what=f"{kind}={status}")
    return result


def applies(cluster: AdbmEmulator) -> int:
    return cluster.requests_by_verb["apply"]


def expected_children(body: dict[str, Any], monitoring: bool = False) -> list[dict[str, Any]]:
    """What the operator applies here: all it renders, less the ServiceMonitor while its CRD is
    not installed."""
    return [c for c in rendered(body) if monitoring or c["kind"] != "ServiceMonitor"]


async def create_and_roll_out(cluster: AdbmEmulator, body: dict[str, Any]) -> dict[str, Any]:
    await call(cluster, "POST", BACKENDS, body)
    await run_migration_job(cluster, body)
    expected = expected_children(body)
    for child in expected:
        await until(lambda c=child: get(cluster, c["kind"], c["metadata"]["name"]))
    for child in expected:
        if child["kind"] == "Deployment":
            await mark_available(cluster, child["metadata"]["name"])
    return await condition_is(cluster, "Ready", "True")


async def test_create_applies_every_child_once_and_becomes_ready(operator: AdbmEmulator) -> None:
    body = backend()
    ready = await create_and_roll_out(operator, body)
    expected = expected_children(body)
    # Every rendered child once, the two Secrets derived for the database once.
    assert applies(operator) == len(expected) + len(DATABASE_SECRETS)
    for name in DATABASE_SECRETS:
        expected.append({"kind": "Secret", "metadata": {"name": name}})
    shop = await get(operator, "BackendService", "shop")
    assert shop is not None
    uid = shop["metadata"]["uid"]
    for child in expected:
        live = await get(operator, child["kind"], child["metadata"]["name"])
        assert live is not None
        (ref,) = live["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("BackendService", uid, True)
    st = shop["status"]
    assert st["observedGeneration"] == shop["metadata"]["generation"]
    assert ready["observedGeneration"] == shop["metadata"]["generation"]
    assert st["replicaSummary"] == "2/2"
    assert condition(shop, "Degraded")["status"] == "False"
    # No ServiceMonitor CRD in this cluster: said, not hidden.
    monitoring = condition(shop, "MonitoringReady")
    assert (monitoring["status"], monitoring["reason"]) == ("False", "CRDNotInstalled")
    skipped = [c for c in st["children"] if c["state"] == "Skipped"]
    assert [c["kind"] for c in skipped] == ["ServiceMonitor"]
    assert st["maxConnections"] == (2 + 1) * 10
    assert not shop["metadata"].get("finalizers"), "no external state, so no finalizer"


async def test_ready_waits_for_every_deployment(operator: AdbmEmulator) -> None:
    body = backend()
    await call(operator, "POST", BACKENDS, body)
    await run_migration_job(operator, body)
    await until(lambda: get(operator, "Deployment", "shop-worker-orders"))
    await until(lambda: get(operator, "Deployment", "shop-api"))
    await mark_available(operator, "shop-api")
    rolling = await condition_is(operator, "Progressing", "True", "RollingOut")
    assert "shop-worker-orders" in rolling["message"]
    assert condition(await get(operator, "BackendService", "shop"), "Ready")["status"] == "False"
    await mark_available(operator, "shop-worker-orders")
    await condition_is(operator, "Ready", "True")


async def test_spec_change_reapplies_only_what_changed_and_rolls_the_pods(
    operator: AdbmEmulator,
) -> None:
    await create_and_roll_out(operator, backend())
    before = await get(operator, "Deployment", "shop-api")
    assert before is not None
    old_checksum = before["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    mark = len(operator.changelog)
    await call(
        operator, "PATCH", url("BackendService", "shop"), {"spec": {"rateLimit": {"requests": 7}}}
    )

    async def rolled() -> bool:
        live = await get(operator, "Deployment", "shop-api")
        annotations = (live or {})["spec"]["template"]["metadata"]["annotations"]
        return bool(annotations["checksum/config"] != old_checksum)

    await until(rolled)
    await condition_is(operator, "Ready", "False", "RollingOut")
    changed = {
        (str(c.resource), c.object["metadata"]["name"])
        for c in operator.changelog[mark:]
        if c.type == "MODIFIED" and "backendservices" not in str(c.resource)
    }
    names = {name for _, name in changed}
    # The ConfigMap and the pods that read it; nothing else.
    assert names == {"shop-config", "shop-api", "shop-worker-orders"}, changed
    config = await get(operator, "ConfigMap", "shop-config")
    assert config is not None and '"requests":7' in config["data"]["ADBM_POLICY"]


async def test_manual_edit_of_a_child_is_reverted(operator: AdbmEmulator) -> None:
    await create_and_roll_out(operator, backend())
    # Someone points the Service at other pods: a value of a field the operator owns.
    hijack = {"spec": {"selector": {"app.kubernetes.io/component": "other"}}}
    await call(operator, "PATCH", url("Service", "shop"), hijack)

    async def reverted() -> bool:
        live = await get(operator, "Service", "shop")
        return bool(live and live["spec"]["selector"]["app.kubernetes.io/component"] == "api")

    await until(reverted)
    deployment = await get(operator, "Deployment", "shop-api")
    assert deployment is not None
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    edited = copy.deepcopy(deployment["spec"]["template"]["spec"]["containers"])
    edited[0]["image"] = "attacker/image:latest"
    change = {"spec": {"template": {"spec": {"containers": edited}}}}
    await call(operator, "PATCH", url("Deployment", "shop-api"), change)

    async def image_restored() -> bool:
        live = await get(operator, "Deployment", "shop-api")
        return bool(live and live["spec"]["template"]["spec"]["containers"][0]["image"] == image)

    await until(image_restored)


async def test_deleted_child_is_recreated(operator: AdbmEmulator) -> None:
    await create_and_roll_out(operator, backend())
    await call(operator, "DELETE", url("PodDisruptionBudget", "shop-api"))
    recreated = await until(lambda: get(operator, "PodDisruptionBudget", "shop-api"))
    assert recreated["spec"]["maxUnavailable"] == 1


async def test_autoscaler_owned_replicas_are_left_alone(operator: AdbmEmulator) -> None:
    body = backend(autoscaling={"minReplicas": 2, "maxReplicas": 4})
    await create_and_roll_out(operator, body)
    writes = applies(operator)
    # The HPA scales the Deployment: not drift, since the operator renders no replicas.
    await call(operator, "PATCH", url("Deployment", "shop-api"), {"spec": {"replicas": 4}})
    await mark_available(operator, "shop-api")
    await condition_is(operator, "Ready", "True")
    await asyncio.sleep(0.3)
    live = await get(operator, "Deployment", "shop-api")
    assert live is not None and live["spec"]["replicas"] == 4
    assert applies(operator) == writes


async def test_service_monitor_appears_when_its_crd_is_installed(operator: AdbmEmulator) -> None:
    await create_and_roll_out(operator, backend())
    await condition_is(operator, "MonitoringReady", "False", "CRDNotInstalled")
    assert await get(operator, "ServiceMonitor", "shop-api") is None
    await operator.install_crd(vendored_crd(SERVICE_MONITOR_CRD))
    monitor = await until(lambda: get(operator, "ServiceMonitor", "shop-api"))
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    await condition_is(operator, "MonitoringReady", "True", "ServiceMonitorApplied")


async def test_rotated_secret_rolls_the_pods(operator: AdbmEmulator) -> None:
    await create_and_roll_out(operator, backend())
    checksum = await template_annotation(operator, "shop-api", "checksum/secrets")
    await call(operator, "PATCH", url("Secret", "shop-redis"), {"data": {"uri": "eQ=="}})
    await until_rolled(operator, "checksum/secrets", checksum, "shop-api", "shop-worker-orders")


async def test_missing_secret_is_reported_and_healed_by_its_creation(
    operator: AdbmEmulator,
) -> None:
    await call(operator, "DELETE", url("Secret", "shop-rabbitmq"))
    await call(operator, "POST", BACKENDS, backend())
    degraded = await condition_is(operator, "Degraded", "True", "SecretNotFound")
    assert "shop-rabbitmq" in degraded["message"]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-rabbitmq"}}
    await call(operator, "POST", url("Secret"), secret)
    await condition_is(operator, "Degraded", "False")


async def test_paused_object_gets_no_writes(operator: AdbmEmulator) -> None:
    await create_and_roll_out(operator, backend())
    await call(operator, "PATCH", url("BackendService", "shop"), {"spec": {"paused": True}})
    await condition_is(operator, "Paused", "True")
    writes = applies(operator)
    deletes = operator.requests_by_verb["delete"]
    await call(
        operator,
        "PATCH",
        url("BackendService", "shop"),
        {"spec": {"replicas": 3, "queue": None}},
    )

    async def seen() -> bool:
        shop = await get(operator, "BackendService", "shop")
        return bool(shop and shop["status"]["observedGeneration"] == shop["metadata"]["generation"])

    await until(seen)
    await asyncio.sleep(0.3)
    assert applies(operator) == writes
    assert operator.requests_by_verb["delete"] == deletes
    live = await get(operator, "Deployment", "shop-api")
    assert live is not None and live["spec"]["replicas"] == 2
    assert await get(operator, "Deployment", "shop-worker-orders") is not None
    # Unpausing converges to the spec as it is now.
    await call(operator, "PATCH", url("BackendService", "shop"), {"spec": {"paused": False}})

    async def scaled() -> bool:
        api = await get(operator, "Deployment", "shop-api")
        return bool(api and api["spec"]["replicas"] == 3)

    await until(scaled)
    await until(lambda: _gone(operator, "Deployment", "shop-worker-orders"))


async def _gone(cluster: AdbmEmulator, kind: str, name: str) -> bool:
    return await get(cluster, kind, name) is None


async def test_removed_worker_group_is_pruned(operator: AdbmEmulator) -> None:
    body = backend()
    body["spec"]["queue"]["workers"].append(
        {
            "name": "mail",
            "queues": ["mail"],
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        }
    )
    await create_and_roll_out(operator, body)
    assert await get(operator, "HorizontalPodAutoscaler", "shop-worker-mail") is not None
    workers = [body["spec"]["queue"]["workers"][0]]
    await call(
        operator,
        "PATCH",
        url("BackendService", "shop"),
        {"spec": {"queue": {"secretRef": {"name": "shop-rabbitmq"}, "workers": workers}}},
    )
    await until(lambda: _gone(operator, "Deployment", "shop-worker-mail"))
    await until(lambda: _gone(operator, "HorizontalPodAutoscaler", "shop-worker-mail"))
    assert await get(operator, "Deployment", "shop-worker-orders") is not None


async def test_collector_turned_off_removes_its_configmap_and_sidecar(
    operator: AdbmEmulator,
) -> None:
    await create_and_roll_out(operator, backend())
    assert await get(operator, "ConfigMap", "shop-otel") is not None
    await call(
        operator,
        "PATCH",
        url("BackendService", "shop"),
        {"spec": {"observability": {"otelCollector": {"enabled": False}}}},
    )
    await until(lambda: _gone(operator, "ConfigMap", "shop-otel"))

    async def no_sidecar() -> bool:
        live = await get(operator, "Deployment", "shop-api")
        return bool(live and not live["spec"]["template"]["spec"].get("initContainers"))

    await until(no_sidecar)


async def test_unchanged_object_costs_no_writes_idle_or_on_restart(
    cluster: AdbmEmulator, kubeconfig: None
) -> None:
    await create_secrets(cluster)
    async with running():
        await create_and_roll_out(cluster, backend())
        await asyncio.sleep(0.5)  # the Events of the last transitions are posted asynchronously
        settled = dict(cluster.requests_by_verb)
        await asyncio.sleep(1.0)
        assert dict(cluster.requests_by_verb) == settled, "an idle operator wrote"
    before = dict(cluster.requests_by_verb)
    # A restart: resume handlers reconcile everything again and find nothing to do.
    async with running():
        await asyncio.sleep(1.0)
    new = {verb: n - before.get(verb, 0) for verb, n in cluster.requests_by_verb.items()}
    assert {verb: n for verb, n in new.items() if n} == {}, new


async def test_deleting_the_backend_service_collects_its_children(
    operator: AdbmEmulator,
) -> None:
    body = backend()
    await create_and_roll_out(operator, body)
    await call(operator, "DELETE", url("BackendService", "shop"))
    for child in expected_children(body):
        await until(lambda c=child: _gone(operator, c["kind"], c["metadata"]["name"]))


def cursor_secret_changes(cluster: AdbmEmulator) -> list[str]:
    """Every change the API server saw to the cursor-signing Secret, as watch event types."""
    return [
        c.type
        for c in cluster.changelog
        if c.object.get("kind") == "Secret" and c.object["metadata"]["name"] == "shop-cursor"
    ]


def env_of(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = next(e for e in container["env"] if e["name"] == name)
    return found


async def test_cursor_secret_is_generated_once_owned_and_read_by_every_pod(
    cluster: AdbmEmulator, kubeconfig: None
) -> None:
    await create_secrets(cluster)
    async with running():
        await create_and_roll_out(cluster, backend())
        secret = await get(cluster, "Secret", "shop-cursor")
        assert secret is not None
        key = base64.b64decode(secret["data"]["secret"])
        # 48 random bytes as URL-safe base64 text: 64 characters, far past the 32 bytes needed.
        assert len(key) == 64 and re.fullmatch(rb"[A-Za-z0-9_-]+", key)
        shop = await get(cluster, "BackendService", "shop")
        assert shop is not None
        (ref,) = secret["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == (
            "BackendService",
            shop["metadata"]["uid"],
            True,
        )
        for name in ("shop-api", "shop-worker-orders"):
            live = await get(cluster, "Deployment", name)
            assert live is not None
            assert env_of(live, "ADBM_CURSOR_SECRET")["valueFrom"] == {
                "secretKeyRef": {"name": "shop-cursor", "key": "secret"}
            }
        # A spec change reconciles again: the key stays.
        await call(
            cluster,
            "PATCH",
            url("BackendService", "shop"),
            {"spec": {"rateLimit": {"requests": 7}}},
        )
        await condition_is(cluster, "Ready", "False", "RollingOut")
    # A restart reconciles everything again: the key stays.
    async with running():
        await asyncio.sleep(1.0)
    after = await get(cluster, "Secret", "shop-cursor")
    assert after is not None and after["data"] == secret["data"]
    assert after["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
    assert cursor_secret_changes(cluster) == ["ADDED"]


async def test_a_cursor_secret_the_user_replaced_is_kept_and_rolls_the_pods(
    operator: AdbmEmulator,
) -> None:
    await create_and_roll_out(operator, backend())
    checksum = await template_annotation(operator, "shop-api", "checksum/secrets")
    theirs = base64.b64encode(b"a key the user chose, long enough to sign cursors").decode()
    await call(operator, "PATCH", url("Secret", "shop-cursor"), {"data": {"secret": theirs}})
    await until_rolled(operator, "checksum/secrets", checksum, "shop-api", "shop-worker-orders")
    await mark_available(operator, "shop-api")
    await mark_available(operator, "shop-worker-orders")
    await condition_is(operator, "Ready", "True")
    live = await get(operator, "Secret", "shop-cursor")
    assert live is not None and live["data"] == {"secret": theirs}
    assert cursor_secret_changes(operator) == ["ADDED", "MODIFIED"]


async def test_a_deleted_cursor_secret_is_created_anew(operator: AdbmEmulator) -> None:
    await create_and_roll_out(operator, backend())
    first = await get(operator, "Secret", "shop-cursor")
    assert first is not None
    await call(operator, "DELETE", url("Secret", "shop-cursor"))
    again = await until(lambda: get(operator, "Secret", "shop-cursor"))
    assert again["data"]["secret"] != first["data"]["secret"]
    assert cursor_secret_changes(operator) == ["ADDED", "DELETED", "ADDED"]


async def test_telemetry_and_monitoring_are_observed_on_the_live_objects(
    operator: AdbmEmulator,
) -> None:
    await operator.install_crd(vendored_crd(SERVICE_MONITOR_CRD))
    await create_and_roll_out(operator, backend())
    await condition_is(operator, "TelemetryReady", "True", "CollectorSidecar")
    await condition_is(operator, "MonitoringReady", "True", "ServiceMonitorApplied")
    # Paused, nothing is corrected, so what the status says can only come from looking.
    await call(operator, "PATCH", url("BackendService", "shop"), {"spec": {"paused": True}})
    await condition_is(operator, "Paused", "True")
    no_sidecar = {"spec": {"template": {"spec": {"initContainers": []}}}}
    await call(operator, "PATCH", url("Deployment", "shop-api"), no_sidecar)
    telemetry = await condition_is(operator, "TelemetryReady", "False", "CollectorMissing")
    assert "shop-api" in telemetry["message"]
    # Rolled out without the sidecar: the pods run, without telemetry.
    await mark_available(operator, "shop-api")
    ready = await condition_is(operator, "Ready", "False", "CollectorMissing")
    assert ready["message"] == telemetry["message"]
    wrong_port = {"spec": {"endpoints": [{"port": "http", "path": "/metrics"}]}}
    await call(operator, "PATCH", url("ServiceMonitor", "shop-api"), wrong_port)
    await condition_is(operator, "MonitoringReady", "False", "MetricsPortNotSelected")
    # Unpaused, both are put back and observed so.
    await call(operator, "PATCH", url("BackendService", "shop"), {"spec": {"paused": False}})
    await condition_is(operator, "MonitoringReady", "True", "ServiceMonitorApplied")
    await condition_is(operator, "TelemetryReady", "True", "CollectorSidecar")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_temporary_api_failure_degrades_then_retries_to_ready(
    operator: AdbmEmulator,
) -> None:
    # The API server refuses the first two writes of the Service.
    operator[kmock_lib.action.UPDATE, kmock_lib.resource("v1/services")][:2] << 503
    errors_before = metric("adbm_operator_reconcile_total", result="error")
    body = backend()
    await call(operator, "POST", BACKENDS, body)
    degraded = await condition_is(operator, "Degraded", "True")
    assert degraded["reason"] in ("ReconcileError", "ApplyFailed")
    assert "Service/shop" in degraded["message"] or "services" in degraded["message"]
    await run_migration_job(operator, body, timeout=15)
    await until(lambda: get(operator, "Service", "shop"), timeout=15)
    for name in ("shop-api", "shop-worker-orders"):
        await until(lambda n=name: get(operator, "Deployment", n))
        await mark_available(operator, name)
    await condition_is(operator, "Ready", "True")
    assert (await condition_is(operator, "Degraded", "False"))["reason"] == "AsExpected"
    assert metric("adbm_operator_reconcile_total", result="error") > errors_before


async def test_invalid_spec_is_reported_once_without_a_hot_loop(operator: AdbmEmulator) -> None:
    # The emulator does not validate against the CRD; a cluster with an outdated CRD would not.
    body = backend(replicas=0)
    await call(operator, "POST", BACKENDS, body)
    degraded = await condition_is(operator, "Degraded", "True", "InvalidSpec")
    assert "spec.replicas" in degraded["message"]
    status_writes = operator.requests_by_verb["patch/status"]
    await asyncio.sleep(1.5)
    assert operator.requests_by_verb["patch/status"] == status_writes
    assert operator.requests_by_verb["apply"] == 0
    assert await get(operator, "Deployment", "shop-api") is None


async def test_metrics_count_reconciles_applies_and_drift(operator: AdbmEmulator) -> None:
    ok = metric("adbm_operator_reconcile_total", result="ok")
    applied = metric("adbm_operator_children_applied_total", kind="Deployment")
    drift = metric("adbm_operator_drift_corrections_total", kind="PodDisruptionBudget")
    await create_and_roll_out(operator, backend())
    assert metric("adbm_operator_reconcile_total", result="ok") > ok
    assert metric("adbm_operator_children_applied_total", kind="Deployment") == applied + 2
    assert metric("adbm_operator_last_success_timestamp_seconds") > 0
    await call(operator, "DELETE", url("PodDisruptionBudget", "shop-api"))
    await until(
        lambda: (
            metric("adbm_operator_drift_corrections_total", kind="PodDisruptionBudget") == drift + 1
        )
    )
    assert await get(operator, "PodDisruptionBudget", "shop-api") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def http_get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


async def test_the_cli_runs_the_operator_with_metrics_and_liveness(
    cluster: AdbmEmulator, kubeconfig: None
) -> None:
    """`adbm-operator run` as a user starts it: a real process, its own login and ports."""
    await create_secrets(cluster)
    metrics_port, liveness_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "adbm-operator"),
        "run",
        "--namespace",
        NS,
        "--metrics-port",
        str(metrics_port),
        "--liveness-port",
        str(liveness_port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        body = backend()
        await call(cluster, "POST", BACKENDS, body)
        await run_migration_job(cluster, body, timeout=30)
        await until(lambda: get(cluster, "Deployment", "shop-api"), timeout=30)
        await until(lambda: get(cluster, "Deployment", "shop-worker-orders"), timeout=30)
        status, _ = await until(lambda: _probe(liveness_port, "/healthz"), timeout=30)
        assert status == 200

        async def reconciled() -> str | None:
            _, metrics = await http_get(metrics_port, "/metrics")
            return metrics if 'adbm_operator_reconcile_total{result="ok"}' in metrics else None

        metrics = await until(reconciled, timeout=30)
        assert 'adbm_operator_children_applied_total{kind="Deployment"} 2.0' in metrics
    finally:
        process.terminate()
        output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    # Every line, Kopf's and aiohttp's included, from start to SIGTERM: one JSON object of the
    # service's schema (`reference_service.observability.logging`).
    lines = []
    for text in output.decode().splitlines():
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {text!r}")
        assert list(line)[:4] == ["timestamp", "level", "event", "logger"], text
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line["timestamp"]), text
        lines.append(line)
    assert lines, output.decode()[-2000:]
    about_shop = [line for line in lines if (line.get("object") or {}).get("name") == "shop"]
    assert about_shop, "log lines about the BackendService name it"
    created = await get(cluster, "BackendService", "shop")
    uid = created["metadata"]["uid"] if created else None
    objects = [line["object"] for line in about_shop]
    # Other watched objects may share the name (its Secret): each line names its own uid.
    assert all(set(o) == {"namespace", "name", "uid"} and o["uid"] for o in objects), objects
    assert all(o["namespace"] == NS for o in objects), objects
    assert {"namespace": NS, "name": "shop", "uid": uid} in objects


async def _probe(port: int, path: str) -> tuple[int, str] | None:
    try:
        return await http_get(port, path)
    except aiohttp.ClientConnectionError:
        return None
