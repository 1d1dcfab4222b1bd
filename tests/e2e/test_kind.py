"""End to end against a real Kubernetes API server in kind, installed the way users install it.

What the emulator cannot prove is proven here: both images build from this repository and run,
`helm install adbm charts/adbm-operator` brings up the operator (two replicas, Kopf peering, the
chart's least-privilege RBAC), the CRD is accepted by a real API server and its CEL rules reject
bad specs at `kubectl apply`, the full example with in-cluster PostgreSQL, Redis and RabbitMQ
becomes Ready and serves (an order confirmed, a 429, tenants isolated by RLS), a hand-edited
child is reverted, `helm upgrade` keeps it serving, and deletion cleans up.

Skipped, with the reason, where `docker`, `kind`, `kubectl` or `helm` is missing, no Docker
engine answers, or an image the suite needs is not in the local Docker (as on the machines this
project's CI uses). Nothing is downloaded: the images are built with `--pull=false` from local
bases and loaded into kind with `kind load docker-image`; the node image is whatever `kind`
defaults to locally.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import adbm_operator
from adbm_operator import model
from tests.chart import helm

ROOT = Path(__file__).parents[2]
VERSION = adbm_operator.__version__
OPERATOR_IMAGE = f"adbm/operator:{VERSION}"
SERVICE_IMAGE = model.DEFAULT_IMAGE
BACKING = ROOT / "tests" / "e2e" / "backing.yaml"
VENDORED_CRDS = ROOT / "tests" / "operator" / "data"
# What must already be in the local Docker: the build base and what the pods run.
LOCAL_IMAGES = [
    "python:3.11-slim",
    "postgres:17-alpine",
    "redis:8-alpine",
    "rabbitmq:4-alpine",
    model.DEFAULT_COLLECTOR_IMAGE,
]
pytestmark = pytest.mark.e2e


def _why_not() -> str | None:
    for tool in ("docker", "kind", "kubectl"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    try:
        helm.binary("helm")
    except RuntimeError as exc:
        return str(exc)
    engine = subprocess.run(["docker", "info"], capture_output=True, check=False)
    if engine.returncode != 0:
        return "no Docker engine answers `docker info`"
    missing = [
        image
        for image in LOCAL_IMAGES
        if subprocess.run(
            ["docker", "image", "inspect", image], capture_output=True, check=False
        ).returncode
        != 0
    ]
    if missing:
        return f"not in the local Docker (nothing is pulled): {', '.join(missing)}"
    return None


REASON = _why_not()
if REASON is not None:
    pytestmark = [pytest.mark.e2e, pytest.mark.skip(reason=f"kind e2e: {REASON}")]


def kubectl(kubeconfig: Path, *args: str, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        input=stdin,
        check=False,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout + result.stderr


def get(kubeconfig: Path, kind: str, name: str, namespace: str = "shop") -> dict[str, Any] | None:
    out = subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(kubeconfig),
            "-n",
            namespace,
            "get",
            kind,
            name,
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return json.loads(out.stdout) if out.returncode == 0 else None


def wait_for(check: Any, timeout: float = 120, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    name = f"adbm-e2e-{uuid.uuid4().hex[:6]}"
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    subprocess.run(
        [
            "kind",
            "create",
            "cluster",
            "--name",
            name,
            "--kubeconfig",
            str(kubeconfig),
            "--wait",
            "120s",
        ],
        check=True,
        timeout=600,
    )
    try:
        yield kubeconfig
    finally:
        subprocess.run(["kind", "delete", "cluster", "--name", name], check=False, timeout=300)


def run(*args: str, timeout: float = 600) -> str:
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result.stdout


def helm_cli(kubeconfig: Path, *args: str) -> str:
    return run(helm.binary("helm"), "--kubeconfig", str(kubeconfig), *args)


@pytest.fixture(scope="module")
def images(cluster: Path) -> Path:
    """Both images built from this repository, and every image the pods run, inside kind."""
    context = run("kubectl", "--kubeconfig", str(cluster), "config", "current-context")
    kind_name = context.strip().removeprefix("kind-")
    for dockerfile, tag in (
        ("operator/Dockerfile", OPERATOR_IMAGE),
        ("reference_service/Dockerfile", SERVICE_IMAGE),
    ):
        run("docker", "build", "--pull=false", "-f", str(ROOT / dockerfile), "-t", tag, str(ROOT))
    for image in (OPERATOR_IMAGE, SERVICE_IMAGE, *LOCAL_IMAGES[1:]):
        run("kind", "load", "docker-image", image, "--name", kind_name)
    return cluster


@pytest.fixture(scope="module")
def operator(images: Path) -> Path:
    """`helm install adbm charts/adbm-operator`, as the README says, with the images loaded."""
    cluster = images
    helm_cli(
        cluster,
        "install",
        "adbm",
        str(helm.CHART),
        "--namespace",
        "adbm-system",
        "--create-namespace",
        "--set",
        "image.pullPolicy=Never",
        "--wait",
        "--timeout",
        "5m",
    )
    kubectl(cluster, "wait", "--for=condition=Established", "crd/backendservices.adbm.io")
    kubectl(cluster, "create", "namespace", "shop")
    for secret in ("shop-db-app", "shop-redis"):
        kubectl(
            cluster, "-n", "shop", "create", "secret", "generic", secret, "--from-literal=uri=x"
        )
    return cluster


def minimal() -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    return body


def test_cel_rules_reject_bad_specs_at_apply(operator: Path) -> None:
    body = minimal()
    body["metadata"]["name"] = "too-big"
    body["spec"]["replicas"] = 50  # 50 x pool 10 > budget 100
    out = kubectl(operator, "apply", "-f", "-", stdin=yaml.safe_dump(body), check=False)
    assert "exceed database.connectionBudget" in out
    body = minimal()
    body["metadata"]["name"] = "no-endpoint"
    body["spec"]["observability"]["otelCollector"] = {"enabled": True}
    out = kubectl(operator, "apply", "-f", "-", stdin=yaml.safe_dump(body), check=False)
    assert "otelCollector.endpoint is required" in out


def test_children_status_drift_and_garbage_collection(operator: Path) -> None:
    kubectl(operator, "apply", "-f", str(ROOT / "examples" / "minimal.yaml"))
    for kind, name in [
        ("configmap", "shop-config"),
        ("configmap", "shop-otel"),
        ("service", "shop"),
        ("deployment", "shop-api"),
        ("poddisruptionbudget", "shop-api"),
        ("networkpolicy", "shop-api"),
        ("secret", "shop-cursor"),
    ]:
        wait_for(lambda k=kind, n=name: get(operator, k, n), what=f"{kind}/{name}")
    # Status from observation: no ServiceMonitor CRD in the cluster yet, said so.
    kubectl(
        operator,
        "-n",
        "shop",
        "wait",
        "--for=condition=MonitoringReady=False",
        "bsvc/shop",
        "--timeout=120s",
    )
    shop = get(operator, "bsvc", "shop")
    assert shop is not None
    assert shop["status"]["observedGeneration"] == shop["metadata"]["generation"]
    # The pods cannot start here (the Secrets hold no usable URI): Ready must not claim they did.
    ready = next(c for c in shop["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    # Drift: a hand edit of a field the operator owns is reverted.
    kubectl(
        operator,
        "-n",
        "shop",
        "patch",
        "pdb",
        "shop-api",
        "--type=merge",
        "-p",
        '{"spec":{"maxUnavailable":3}}',
    )
    wait_for(
        lambda: (get(operator, "pdb", "shop-api") or {}).get("spec", {}).get("maxUnavailable") == 1,
        what="PodDisruptionBudget reverted",
    )
    # Deletion: garbage collection removes every child; no finalizer holds the object.
    assert not shop["metadata"].get("finalizers")
    kubectl(operator, "-n", "shop", "delete", "bsvc", "shop", "--wait=true", "--timeout=120s")
    wait_for(lambda: get(operator, "deployment", "shop-api") is None, what="children collected")
    wait_for(lambda: get(operator, "secret", "shop-cursor") is None, what="cursor key collected")


# The full example, with in-cluster PostgreSQL, Redis and RabbitMQ ------------------------------

NS = "payments"
SECRETS = {
    "payments-db-superuser": "postgresql://postgres:e2e-postgres@postgres.payments.svc:5432/postgres",
    "payments-redis": "redis://redis.payments.svc:6379/0",
    "payments-rabbitmq": "amqp://adbm:e2e-rabbitmq@rabbitmq.payments.svc:5672/%2F",
}


@pytest.fixture(scope="module")
def payments(operator: Path) -> Path:
    """examples/full.yaml applied next to its databases, and Ready."""
    # Optional integrations the full example uses: their CRDs (no controllers needed).
    for name in (
        "monitoring.coreos.com_servicemonitors.yaml",
        "keda.sh_scaledobjects.yaml",
        "keda.sh_triggerauthentications.yaml",
    ):
        kubectl(operator, "apply", "--server-side", "-f", str(VENDORED_CRDS / name))
    kubectl(operator, "create", "namespace", NS)
    kubectl(operator, "apply", "-f", str(BACKING))
    for name in ("postgres", "redis", "rabbitmq"):
        kubectl(
            operator,
            "-n",
            NS,
            "wait",
            "--for=condition=Available",
            f"deployment/{name}",
            "--timeout=300s",
        )
    for name, uri in SECRETS.items():
        kubectl(
            operator, "-n", NS, "create", "secret", "generic", name, f"--from-literal=uri={uri}"
        )
    kubectl(operator, "apply", "-f", str(ROOT / "examples" / "full.yaml"))
    kubectl(operator, "-n", NS, "wait", "--for=condition=Ready", "bsvc/payments", "--timeout=600s")
    return operator


def admin(cluster: Path, *args: str) -> str:
    """`adbm-service ARGS` as the schema owner, in a one-off pod of the service image."""
    out = run(
        "kubectl",
        "--kubeconfig",
        str(cluster),
        "-n",
        NS,
        "run",
        f"admin-{uuid.uuid4().hex[:6]}",
        f"--image={SERVICE_IMAGE}",
        "--image-pull-policy=Never",
        "--restart=Never",
        "--rm",
        "-i",
        "--quiet",
        f"--env=ADBM_ADMIN_DATABASE_URL={SECRETS['payments-db-superuser']}",
        "--",
        *args,
    )
    return out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def api(payments: Path) -> Iterator[str]:
    """The payments Service through `kubectl port-forward`, as a base URL."""
    process = subprocess.Popen(
        ["kubectl", "--kubeconfig", str(payments), "-n", NS, "port-forward", "svc/payments", ":80"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match, line
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def tenant_key(cluster: Path, tenant: str) -> dict[str, str]:
    admin(cluster, "tenants", "create", tenant)
    key = admin(cluster, "keys", "create", "--tenant", tenant)
    return {"Authorization": f"Bearer {key}"}


def test_the_full_example_confirms_an_order_limits_rates_and_isolates_tenants(
    payments: Path, api: str
) -> None:
    acme, globex = tenant_key(payments, "acme"), tenant_key(payments, "globex")
    with httpx.Client(base_url=api, timeout=30) as client:
        account = client.post(
            "/api/v2/accounts",
            headers=acme,
            json={"name": "Alice", "balance": {"amount": 100_000, "currency": "EUR"}},
        )
        assert account.status_code == 201, account.text
        product = client.post(
            "/api/v2/products",
            headers=acme,
            json={
                "sku": "WIDGET-1",
                "name": "Widget",
                "price": {"amount": 1999, "currency": "EUR"},
            },
        )
        assert product.status_code == 201, product.text
        order = client.post(
            "/api/v2/orders",
            headers={**acme, "Idempotency-Key": str(uuid.uuid4())},
            json={
                "account_id": account.json()["id"],
                "product_id": product.json()["id"],
                "quantity": 2,
            },
        )
        assert order.status_code in (201, 202), order.text
        location = f"/api/v2/orders/{order.json()['id']}"
        # Placed through the outbox, RabbitMQ and the orders worker: confirmed asynchronously.
        wait_for(
            lambda: client.get(location, headers=acme).json().get("status") == "confirmed",
            timeout=120,
            what="the order confirmed by the worker",
        )
        # Row-level security: another tenant sees none of it.
        assert (
            client.get(f"/api/v2/accounts/{account.json()['id']}", headers=globex).status_code
            == 404
        )
        listed = client.get("/api/v2/accounts", headers=globex).json()
        assert account.json()["id"] not in {item["id"] for item in listed["items"]}

    async def burst() -> list[httpx.Response]:
        # GET /api/v2/products: 1000 per 60 s with a burst of 200 in examples/full.yaml.
        async with httpx.AsyncClient(base_url=api, timeout=30) as client:
            return await asyncio.gather(
                *(client.get("/api/v2/products", headers=acme) for _ in range(260))
            )

    statuses = [r.status_code for r in asyncio.run(burst())]
    assert 429 in statuses, statuses
    assert set(statuses) <= {200, 429}


def test_a_deleted_or_edited_child_of_the_full_example_is_restored(payments: Path) -> None:
    kubectl(payments, "-n", NS, "delete", "configmap", "payments-config")
    wait_for(lambda: get(payments, "configmap", "payments-config", NS), what="ConfigMap recreated")
    kubectl(
        payments,
        "-n",
        NS,
        "patch",
        "networkpolicy",
        "payments-api",
        "--type=merge",
        "-p",
        '{"spec":{"ingress":[]}}',
    )
    wait_for(
        lambda: (
            (get(payments, "networkpolicy", "payments-api", NS) or {})
            .get("spec", {})
            .get("ingress")
        ),
        what="NetworkPolicy ingress restored",
    )
    kubectl(payments, "-n", NS, "wait", "--for=condition=Ready", "bsvc/payments", "--timeout=300s")


def test_helm_upgrade_keeps_the_backend_ready(payments: Path) -> None:
    helm_cli(
        payments,
        "upgrade",
        "adbm",
        str(helm.CHART),
        "--namespace",
        "adbm-system",
        "--reuse-values",
        "--set",
        "replicaCount=3",
        "--wait",
        "--timeout",
        "5m",
    )
    wait_for(
        lambda: (
            len(
                json.loads(
                    run(
                        "kubectl",
                        "--kubeconfig",
                        str(payments),
                        "get",
                        "clusterkopfpeering",
                        "adbm-operator",
                        "-o",
                        "json",
                    )
                ).get("status")
                or {}
            )
            == 3
        ),
        what="three replicas in the peering object",
    )
    kubectl(payments, "-n", NS, "wait", "--for=condition=Ready", "bsvc/payments", "--timeout=300s")


def test_deleting_cleans_up_and_uninstall_keeps_the_crd(payments: Path) -> None:
    kubectl(payments, "-n", NS, "delete", "bsvc", "payments", "--wait=true", "--timeout=300s")
    for kind, name in (
        ("deployment", "payments-api"),
        ("service", "payments"),
        ("scaledobject", "payments-worker-notifications"),
    ):
        wait_for(lambda k=kind, n=name: get(payments, k, n, NS) is None, what=f"{kind} collected")
    helm_cli(payments, "uninstall", "adbm", "--namespace", "adbm-system", "--wait")
    assert get(payments, "deployment", "adbm-operator", "adbm-system") is None
    crd = run(
        "kubectl",
        "--kubeconfig",
        str(payments),
        "get",
        "crd",
        "backendservices.adbm.io",
        "-o",
        "name",
    )
    assert crd.strip() == "customresourcedefinition.apiextensions.k8s.io/backendservices.adbm.io"
