"""The operator as the Helm chart deploys it, against the emulated API server.

Two `adbm-operator run` processes get the exact arguments and environment of the container the
chart renders (its defaults: every namespace; and `watchNamespaces`), with the chart's CRDs and
peering object installed: one replica acts, the other stands by through Kopf peering. The acting
one reconciles a BackendService that uses every kind the operator manages, prunes a child of each
kind that the spec does not ask for, and reports an invalid spec. These runs make every call the
chart's RBAC grants, which tests/operator/test_rbac.py holds against what it grants.

The test plays the platform team (the admin Secret points at a database and app role of this
test's own on the real PostgreSQL) and the Job controller, as tests/operator/
test_operator_database.py does: the migration Job's container command runs as a real local
process with the environment the kubelet would give it (`database/kubelet.py`), and the Job is
then marked complete, so the operator goes on to create the Deployments.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock as kmock_lib
import pytest
import yaml

from adbm_operator import kinds, model, reconcile
from adbm_operator.specs import labels, migration
from tests.chart import helm
from tests.operator import test_operator as base
from tests.operator.database import kubelet
from tests.operator.emulator import AdbmEmulator, register_standard_resources, vendored_crd
from tests.operator.specs.support import example_body
from tests.operator.test_operator import free_port, names, until
from tests.reference_service.conftest import SERVER_URL

# This test's database and app role on the real server, dropped afterwards.
database_names = base.database_names

NS = "payments"
MODES = {"all-namespaces": [], "watch-namespaces": ["--set", f"watchNamespaces[0]={NS}"]}
PAUSED = "Pausing operations in favour of"
WAIT = 120  # seconds; generous, for a loaded machine
THIRD_PARTY_CRDS = (
    "monitoring.coreos.com_servicemonitors.yaml",
    "keda.sh_scaledobjects.yaml",
    "keda.sh_triggerauthentications.yaml",
)


@pytest.fixture
def kmock_options() -> dict[str, Any]:
    return {"cls": AdbmEmulator}


def path_of(obj: dict[str, Any], *, collection: bool = False) -> str:
    group_version = obj["apiVersion"]
    known = kinds.BY_KEY.get((group_version, obj["kind"]))
    plural = known.plural if known else obj["kind"].lower() + "s"
    prefix = "/api/" if "/" not in group_version else "/apis/"
    namespace = obj["metadata"].get("namespace")
    path = prefix + group_version + (f"/namespaces/{namespace}" if namespace else "") + "/" + plural
    return path if collection else f"{path}/{obj['metadata']['name']}"


async def create(cluster: AdbmEmulator, obj: dict[str, Any]) -> dict[str, Any]:
    async with cluster.post(path_of(obj, collection=True), json=obj) as response:
        assert response.status == 201, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def live(cluster: AdbmEmulator, obj: dict[str, Any]) -> dict[str, Any] | None:
    async with cluster.get(path_of(obj)) as response:
        if response.status == 404:
            return None
        body: dict[str, Any] = await response.json()
        return body


def container(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = helm.one(rendered, "Deployment")
    found: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return found


def command_line(rendered: list[dict[str, Any]], metrics: int, liveness: int) -> list[str]:
    """The container's arguments, on ports of this machine's choosing."""
    ports = {"--metrics-port": metrics, "--liveness-port": liveness}
    args = []
    for arg in container(rendered)["args"]:
        flag = arg.split("=")[0]
        args.append(f"{flag}={ports[flag]}" if flag in ports else arg)
    return [str(Path(sys.executable).parent / "adbm-operator"), *args]


@pytest.fixture
async def installed(cluster: AdbmEmulator, request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """`helm install` into the emulator: the chart's CRDs and peering objects (the emulator runs
    no pods, so the Deployment itself is played by the test's processes)."""
    rendered = helm.template(*MODES[request.param], include_crds=True)
    for crd in [o for o in rendered if o["kind"] == "CustomResourceDefinition"]:
        await cluster.install_crd(crd)
    for name in THIRD_PARTY_CRDS:
        await cluster.install_crd(vendored_crd(name))
    await create(cluster, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for peering in [o for o in rendered if o["kind"] in ("ClusterKopfPeering", "KopfPeering")]:
        await create(cluster, peering)
    # What the platform team provides: the database admin's, Redis' and RabbitMQ's Secrets.
    admin_uri = base64.b64encode(SERVER_URL.encode()).decode()
    for name, uri in (
        ("payments-db-superuser", admin_uri),
        ("payments-redis", "eA=="),
        ("payments-rabbitmq", "eA=="),
    ):
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}}
        await create(cluster, {**secret, "data": {"uri": uri}})
    return rendered


@pytest.fixture
def cluster(kmock: kmock_lib.RawHandler) -> AdbmEmulator:
    assert isinstance(kmock, AdbmEmulator)
    register_standard_resources(kmock)
    return kmock


@pytest.fixture
async def replicas(
    cluster: AdbmEmulator,
    installed: list[dict[str, Any]],
    tmp_path: Path,
) -> AsyncIterator[list[Path]]:
    """Two replicas of the chart's container, each logging to a file of its own. The second starts
    once the first has announced itself, as in a rolling start."""
    kubeconfig = tmp_path / "kubeconfig"
    server = str(cluster.url).rstrip("/")
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": server}}],
                "users": [{"name": "operator", "user": {"token": "operator"}}],
                "contexts": [
                    {"name": "emulator", "context": {"cluster": "emulator", "user": "operator"}}
                ],
                "current-context": "emulator",
            }
        )
    )
    env_names = {e["name"] for e in container(installed)["env"]}
    assert env_names == {"POD_ID"}, "the chart sets exactly Kopf's identity"
    peering = next(o for o in installed if o["kind"] in ("ClusterKopfPeering", "KopfPeering"))
    logs, processes = [], []
    try:
        for index in range(2):

            async def announced(count: int = index) -> bool:
                body = await live(cluster, peering) or {}
                return len(body.get("status") or {}) == count

            await until(announced, timeout=WAIT, what=f"{index} replicas in the peering object")
            log = tmp_path / f"replica-{index}.log"
            logs.append(log)
            env = {"KUBECONFIG": str(kubeconfig), "POD_ID": f"adbm-operator-{index}"}
            with log.open("wb") as out:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        *command_line(installed, free_port(), free_port()),
                        env={**_base_env(), **env},
                        stdout=out,
                        stderr=asyncio.subprocess.STDOUT,
                    )
                )
        yield logs
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            await asyncio.wait_for(process.wait(), timeout=30)


def _base_env() -> dict[str, str]:
    """The test's environment minus its KUBECONFIG and the like: only the process basics."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}


def log_lines(log: Path) -> list[dict[str, Any]]:
    text = log.read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def listed(cluster: AdbmEmulator, api_version: str, kind: str) -> list[dict[str, Any]]:
    collection = {"apiVersion": api_version, "kind": kind, "metadata": {"namespace": NS}}
    async with cluster.get(path_of(collection, collection=True)) as response:
        assert response.status == 200, await response.text()
        items: list[dict[str, Any]] = (await response.json())["items"]
    return [{**item, "kind": kind} for item in items]


async def run_migration_pod(cluster: AdbmEmulator, job: dict[str, Any]) -> tuple[int, str]:
    """The Job's container as the kubelet would start it: env from the live ConfigMaps and
    Secrets of the namespace, the rendered command, as a real process against the real server."""
    (container,) = job["spec"]["template"]["spec"]["containers"]
    objects = [
        *await listed(cluster, "v1", "ConfigMap"),
        *await listed(cluster, "v1", "Secret"),
    ]
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


def stray(kind: kinds.Kind, owner: dict[str, Any]) -> dict[str, Any]:
    """A child of this kind that the owner's spec does not ask for (as an older release might
    have named it): owned and labelled like every child, so it must be pruned."""
    meta = owner["metadata"]
    return {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {
            "name": f"{meta['name']}-stray",
            "namespace": meta["namespace"],
            "labels": {
                labels.OWNER_LABEL: meta["name"],
                "app.kubernetes.io/managed-by": labels.MANAGED_BY,
            },
            "ownerReferences": [reconcile.owner_reference(owner)],
        },
        "spec": {},
    }


@pytest.mark.parametrize("installed", list(MODES), indirect=True)
async def test_one_replica_acts_and_uses_every_granted_call(
    cluster: AdbmEmulator, installed: list[dict[str, Any]], replicas: list[Path]
) -> None:
    try:
        await one_acts_and_uses_every_granted_call(cluster, installed, replicas)
    except (AssertionError, TimeoutError) as exc:
        tails = "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}" for log in replicas
        )
        raise AssertionError(f"{exc!r}\n{tails}") from exc


async def one_acts_and_uses_every_granted_call(
    cluster: AdbmEmulator, installed: list[dict[str, Any]], replicas: list[Path]
) -> None:
    peering = next(o for o in installed if o["kind"] in ("ClusterKopfPeering", "KopfPeering"))

    async def both_announced() -> dict[str, Any] | None:
        body = await live(cluster, peering) or {}
        return body if len(body.get("status") or {}) == 2 else None

    announced = await until(both_announced, timeout=WAIT, what="both replicas in the peering")
    # Kopf: the live replica with the highest priority acts. A replica starts paused and resumes
    # only on seeing itself the highest; the first one, alone at first, pauses (and says so) when
    # a higher one joins.
    priorities = {peer: info["priority"] for peer, info in announced["status"].items()}
    assert len(set(priorities.values())) == 2, "--priority=random gave each its own"
    leader = max(priorities, key=priorities.__getitem__)
    acting = replicas[int(leader.rsplit("-", 1)[1])]
    standby = next(log for log in replicas if log != acting)
    if standby == replicas[0]:
        await until(
            lambda: PAUSED in standby.read_text(errors="replace"),
            timeout=WAIT,
            what="the first replica pausing in favour of the second",
        )

    body = copy.deepcopy(example_body("full"))
    body["spec"]["database"].update(name=names().database, appRole=names().role)
    owner = await create(cluster, body)
    # No Deployment before the image's migration ran: play the Job controller.
    job_name = migration.name(model.parse(body))
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job_name, "namespace": NS}}
    live_job = await until(lambda: live(cluster, job), timeout=WAIT, what="the migration Job")
    code, out = await run_migration_pod(cluster, live_job)
    assert code == 0, out
    api = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "payments-api"}}
    api["metadata"]["namespace"] = NS
    assert await live(cluster, api) is None, "no pod of an image whose migration has not run"
    # As tests/operator/test_operator.py's `mark_job`: the Job controller records success.
    complete = {"type": "Complete", "status": "True", "reason": "Complete", "message": "Complete"}
    status = {"status": {"succeeded": 1, "conditions": [complete]}}
    async with cluster.patch(path_of(job) + "/status", json=status, headers=base.MERGE) as response:
        assert response.status == 200, await response.text()
    await until(lambda: live(cluster, api), timeout=WAIT, what="the API Deployment")
    scaled = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {}}
    scaled["metadata"] = {"name": "payments-worker-notifications", "namespace": NS}
    await until(lambda: live(cluster, scaled), timeout=WAIT, what="the KEDA ScaledObject")

    strays = [stray(kind, owner) for kind in kinds.APPLIED]
    for obj in strays:
        await create(cluster, obj)

    async def all_pruned() -> bool:
        return all([await live(cluster, obj) is None for obj in strays])

    await until(all_pruned, timeout=WAIT, what="every stray child pruned")

    invalid = copy.deepcopy(example_body("full"))
    invalid["metadata"]["name"] = "invalid"
    invalid["spec"]["replicas"] = 0  # the emulator does not validate; the operator does
    await create(cluster, invalid)
    events = {"apiVersion": "v1", "kind": "Event", "metadata": {"namespace": NS}}

    async def warned() -> bool:
        async with cluster.get(path_of(events, collection=True)) as response:
            items = (await response.json())["items"]
        return any(e.get("involvedObject", {}).get("name") == "invalid" for e in items)

    await until(warned, timeout=WAIT, what="a Warning event about the invalid spec")

    lines = log_lines(standby)
    paused_at = next((i for i, line in enumerate(lines) if line["event"].startswith(PAUSED)), None)
    if paused_at is None:  # the second replica, the lower: paused from its start, never resumed
        assert not [line for line in lines if line["event"].startswith("Resuming")]
    handled = [line for line in lines[paused_at or 0 :] if line.get("object")]
    assert handled == [], "the replica standing by handles nothing while the other acts"
    assert any((line.get("object") or {}).get("name") == "payments" for line in log_lines(acting))
