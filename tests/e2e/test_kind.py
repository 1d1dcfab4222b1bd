"""End to end against a real Kubernetes API server in kind, installed the way users install it.

What the emulator cannot prove is proven here: both images build from this repository and run,
`helm install adbm charts/adbm-operator` brings up the operator (two replicas, Kopf peering, the
chart's least-privilege RBAC), the CRD is accepted by a real API server and its CEL rules reject
bad specs at `kubectl apply`. From nothing but the Secrets a platform team provides (the admin
database URI, Redis, RabbitMQ; in-cluster servers from `backing.yaml`), the operator provisions
the database (app role, `<name>-db-app`, row-level security), runs the image's migration Job,
and only then rolls out the pods: the minimal example becomes Ready and is dropped again under
`deletionPolicy: Delete`; the full example becomes Ready and serves (an order placed, carried by
the outbox, RabbitMQ and the orders worker through its saga to CONFIRMED against an in-cluster
payment provider; a 429; tenants isolated by RLS in the API and in PostgreSQL itself), a
hand-edited child is reverted, a new image migrates before it serves and the old image's Job is
deleted, `helm upgrade` keeps it serving, and deletion cleans up.

What a real control plane taught (run by hand: kube-apiserver and kube-controller-manager built
from Kubernetes v1.33.13 with etcd, the chart installed with helm, the operator out of cluster
authenticated as the chart's ServiceAccount, the pods' commands run as local processes):
PostgreSQL's default `max_connections` is too small for the full example (backing.yaml raises
it), the full example's payment provider is not reachable from a cluster (one runs in-cluster),
the admin URI for `tenants`/`keys` names the BackendService's database, and the API's writes
need an `Idempotency-Key`.

Skipped, with the reason, where `docker`, `kind`, `kubectl` or `helm` is missing, no Docker
engine answers, or an image the suite needs is not in the local Docker (as on the machines this
project's CI uses: no Docker engine there). Nothing is downloaded: the images are built with
`--pull=false` from local bases and loaded into kind with `kind load docker-image`; the node
image is whatever `kind` defaults to locally.
"""

from __future__ import annotations

import asyncio
import base64
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
from adbm_operator.specs import deployment, labels, migration
from tests.chart import helm

ROOT = Path(__file__).parents[2]
VERSION = adbm_operator.__version__
OPERATOR_IMAGE = f"adbm/operator:{VERSION}"
SERVICE_IMAGE = model.DEFAULT_IMAGE
# The same build under a second tag: a "new image" for the migration and pruning test.
NEXT_SERVICE_IMAGE = f"{SERVICE_IMAGE}-e2e-next"
E2E = Path(__file__).parent
BACKING = E2E / "backing.yaml"
PAYMENT_PROVIDER = E2E / "payment_provider.py"
VENDORED_CRDS = ROOT / "tests" / "operator" / "data"
OPTIONAL_CRDS = (
    "monitoring.coreos.com_servicemonitors.yaml",
    "keda.sh_scaledobjects.yaml",
    "keda.sh_triggerauthentications.yaml",
)
DOCKERFILES = {OPERATOR_IMAGE: "operator/Dockerfile", SERVICE_IMAGE: "reference_service/Dockerfile"}
# What must already be in the local Docker: the build base (also the payment provider's image)
# and what the pods run.
LOCAL_IMAGES = [
    "python:3.11-slim",
    "postgres:17-alpine",
    "redis:8-alpine",
    "rabbitmq:4-alpine",
    model.DEFAULT_COLLECTOR_IMAGE,
]
pytestmark: list[pytest.MarkDecorator] = [pytest.mark.e2e]

# The in-cluster servers of backing.yaml (namespace `payments`), as a platform team's Secrets
# would name them. The admin URI names the maintenance database: the operator creates the
# BackendService's own database from it.
BACKING_NS = "payments"
POSTGRES_PASSWORD = "e2e-postgres"
RABBITMQ_PASSWORD = "e2e-rabbitmq"
PROVIDER_URL = f"http://payment-provider.{BACKING_NS}.svc:8080/v1"


def postgres_uri(database: str) -> str:
    return f"postgresql://postgres:{POSTGRES_PASSWORD}@postgres.{BACKING_NS}.svc:5432/{database}"


PLATFORM_SECRETS = {
    "shop": {
        "shop-db-superuser": postgres_uri("postgres"),
        "shop-redis": f"redis://redis.{BACKING_NS}.svc:6379/0",
    },
    "payments": {
        "payments-db-superuser": postgres_uri("postgres"),
        "payments-redis": f"redis://redis.{BACKING_NS}.svc:6379/1",
        "payments-rabbitmq": f"amqp://adbm:{RABBITMQ_PASSWORD}@rabbitmq.{BACKING_NS}.svc:5672/%2F",
    },
}


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
    pytestmark = [
        pytest.mark.e2e,
        pytest.mark.skip(reason=f"kind e2e needs a Docker engine and kind: {REASON}"),
    ]


def kubectl(kubeconfig: Path, *args: str, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        input=stdin,
        check=False,
        timeout=660,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout + result.stderr


def get(kubeconfig: Path, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
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


def wait_condition(
    kubeconfig: Path, namespace: str, name: str, condition: str, seconds: int
) -> None:
    kubectl(
        kubeconfig,
        "-n",
        namespace,
        "wait",
        f"--for=condition={condition}",
        f"bsvc/{name}",
        f"--timeout={seconds}s",
    )


def condition_of(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in body["status"]["conditions"] if c["type"] == kind)


def run(*args: str, timeout: float = 600) -> str:
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result.stdout


def helm_cli(kubeconfig: Path, *args: str) -> str:
    return run(helm.binary("helm"), "--kubeconfig", str(kubeconfig), *args)


def psql(kubeconfig: Path, query: str, uri: str | None = None) -> str:
    """One query with `psql` inside the in-cluster PostgreSQL pod: as the superuser, or as
    whoever `uri` logs in as."""
    target = [uri] if uri else ["-U", "postgres"]
    return kubectl(
        kubeconfig,
        "-n",
        BACKING_NS,
        "exec",
        "deploy/postgres",
        "--",
        "psql",
        *target,
        "-v",
        "ON_ERROR_STOP=1",
        "-qAtc",
        query,
    ).strip()


def secret_value(kubeconfig: Path, namespace: str, name: str, key: str) -> str:
    secret = get(kubeconfig, "secret", name, namespace)
    assert secret is not None, f"Secret {name}"
    return base64.b64decode(secret["data"][key]).decode()


def create_platform_secrets(kubeconfig: Path, namespace: str) -> None:
    """Only what a platform team provides; everything else is the operator's to create."""
    for name, uri in PLATFORM_SECRETS[namespace].items():
        kubectl(
            kubeconfig,
            "-n",
            namespace,
            "create",
            "secret",
            "generic",
            name,
            f"--from-literal=uri={uri}",
        )


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


@pytest.fixture(scope="module")
def images(cluster: Path) -> Path:
    """Both images built from this repository, and every image the pods run, inside kind."""
    context = run("kubectl", "--kubeconfig", str(cluster), "config", "current-context")
    kind_name = context.strip().removeprefix("kind-")
    for tag, dockerfile in DOCKERFILES.items():
        run("docker", "build", "--pull=false", "-f", str(ROOT / dockerfile), "-t", tag, str(ROOT))
    run("docker", "tag", SERVICE_IMAGE, NEXT_SERVICE_IMAGE)
    for image in (OPERATOR_IMAGE, SERVICE_IMAGE, NEXT_SERVICE_IMAGE, *LOCAL_IMAGES):
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
    return cluster


@pytest.fixture(scope="module")
def backing(operator: Path) -> Path:
    """PostgreSQL, Redis, RabbitMQ and the payment provider, running in namespace payments."""
    kubectl(operator, "create", "namespace", BACKING_NS)
    kubectl(
        operator,
        "-n",
        BACKING_NS,
        "create",
        "configmap",
        "payment-provider",
        f"--from-file={PAYMENT_PROVIDER.name}={PAYMENT_PROVIDER}",
    )
    kubectl(operator, "apply", "-f", str(BACKING))
    for name in ("postgres", "redis", "rabbitmq", "payment-provider"):
        kubectl(
            operator,
            "-n",
            BACKING_NS,
            "wait",
            "--for=condition=Available",
            f"deployment/{name}",
            "--timeout=300s",
        )
    return operator


def example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((ROOT / "examples" / f"{name}.yaml").read_text())
    return body


def test_cel_rules_reject_bad_specs_at_apply(operator: Path) -> None:
    body = example("minimal")
    body["metadata"].update(name="too-big", namespace="default")
    body["spec"]["replicas"] = 50  # 50 x pool 10 > budget 100
    out = kubectl(operator, "apply", "-f", "-", stdin=yaml.safe_dump(body), check=False)
    assert "exceed database.connectionBudget" in out
    body = example("minimal")
    body["metadata"].update(name="no-endpoint", namespace="default")
    body["spec"]["observability"]["otelCollector"] = {"enabled": True}
    out = kubectl(operator, "apply", "-f", "-", stdin=yaml.safe_dump(body), check=False)
    assert "otelCollector.endpoint is required" in out


# The minimal example: provisioned from the platform's Secrets, Ready, a child reverted, dropped.


def test_the_minimal_example_is_provisioned_served_and_dropped(backing: Path) -> None:
    cluster, ns = backing, "shop"
    kubectl(cluster, "create", "namespace", ns)
    create_platform_secrets(cluster, ns)
    kubectl(cluster, "apply", "-f", str(ROOT / "examples" / "minimal.yaml"))
    obj = model.parse(example("minimal"))
    job = migration.name(obj)
    wait_for(lambda: get(cluster, "job", job, ns), what=f"the migration Job {job}")
    kubectl(cluster, "-n", ns, "wait", "--for=condition=Complete", f"job/{job}", "--timeout=300s")
    wait_condition(cluster, ns, "shop", "DatabaseReady", 300)
    wait_condition(cluster, ns, "shop", "Ready", 300)

    shop = get(cluster, "bsvc", "shop", ns)
    assert shop is not None
    assert shop["status"]["observedGeneration"] == shop["metadata"]["generation"]
    database = condition_of(shop, "DatabaseReady")
    assert database["reason"] == "Provisioned" and "isolation proven" in database["message"]
    assert shop["status"]["database"]["migratedImage"] == SERVICE_IMAGE
    assert not shop["metadata"].get("finalizers"), "Retain (the default): no finalizer"
    # The printer columns: READY, REPLICAS, REASON, AGE.
    table = kubectl(cluster, "-n", ns, "get", "bsvc", "shop").splitlines()
    assert table[0].split() == ["NAME", "READY", "REPLICAS", "REASON", "AGE"]
    assert table[1].split()[:4] == ["shop", "True", "2/2", "Ready"]
    # `<name>-db-app` was written by the operator, owned by the BackendService, and logs in as
    # the app role: not a superuser, not exempt from RLS.
    app = get(cluster, "secret", labels.db_app_secret_name(obj), ns)
    assert app is not None
    (ref,) = app["metadata"]["ownerReferences"]
    assert ref["uid"] == shop["metadata"]["uid"]
    role = labels.app_role(obj)
    assert psql(
        cluster, f"SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = '{role}'"
    ) == ("f|f")

    # Drift: a hand edit of a field the operator owns is reverted.
    api = deployment.name(obj)
    kubectl(
        cluster,
        "-n",
        ns,
        "patch",
        "pdb",
        api,
        "--type=merge",
        "-p",
        '{"spec":{"maxUnavailable":3}}',
    )
    wait_for(
        lambda: (get(cluster, "pdb", api, ns) or {}).get("spec", {}).get("maxUnavailable") == 1,
        what="PodDisruptionBudget reverted",
    )

    # deletionPolicy Delete: a finalizer appears; deleting drops the app role and the database,
    # then the finalizer goes and garbage collection removes every child.
    kubectl(
        cluster,
        "-n",
        ns,
        "patch",
        "bsvc",
        "shop",
        "--type=merge",
        "-p",
        '{"spec":{"database":{"deletionPolicy":"Delete"}}}',
    )
    wait_for(
        lambda: (get(cluster, "bsvc", "shop", ns) or {}).get("metadata", {}).get("finalizers"),
        what="the finalizer of deletionPolicy Delete",
    )
    kubectl(cluster, "-n", ns, "delete", "bsvc", "shop", "--wait=true", "--timeout=180s")
    assert psql(cluster, f"SELECT count(*) FROM pg_roles WHERE rolname = '{role}'") == "0"
    assert psql(cluster, "SELECT count(*) FROM pg_database WHERE datname = 'shop'") == "0"
    for kind, name in (("deployment", api), ("secret", "shop-cursor"), ("job", job)):
        wait_for(
            lambda k=kind, n=name: get(cluster, k, n, ns) is None, what=f"{kind}/{name} collected"
        )
    # The platform's Secrets are theirs: left as they were.
    assert get(cluster, "secret", "shop-db-superuser", ns) is not None


# The full example ------------------------------------------------------------------------------


def full_example() -> dict[str, Any]:
    """examples/full.yaml as applied here: its payment provider is the in-cluster one (the
    example's is not reachable from a cluster), and its CPU requests fit one kind node (the
    example asks 500m for each of 3 API pods, more than a laptop's node may offer)."""
    body = example("full")
    body["spec"]["paymentProvider"]["url"] = PROVIDER_URL
    body["spec"]["resources"]["requests"]["cpu"] = "100m"
    return body


@pytest.fixture(scope="module")
def payments(backing: Path) -> Path:
    """The full example, next to its databases, from the platform's Secrets to Ready."""
    cluster = backing
    for name in OPTIONAL_CRDS:  # the integrations it uses: their CRDs (no controllers needed)
        kubectl(cluster, "apply", "--server-side", "-f", str(VENDORED_CRDS / name))
    create_platform_secrets(cluster, BACKING_NS)
    kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump(full_example()))
    wait_condition(cluster, BACKING_NS, "payments", "Ready", 600)
    return cluster


def admin(cluster: Path, *args: str) -> str:
    """`adbm-service ARGS` (the image's entrypoint) as the schema owner of the payments
    database, in a one-off pod of the service image; the last line it printed."""
    out = run(
        "kubectl",
        "--kubeconfig",
        str(cluster),
        "-n",
        BACKING_NS,
        "run",
        f"admin-{uuid.uuid4().hex[:6]}",
        f"--image={SERVICE_IMAGE}",
        "--image-pull-policy=Never",
        "--restart=Never",
        "--rm",
        "-i",
        "--quiet",
        f"--env=ADBM_ADMIN_DATABASE_URL={postgres_uri('payments')}",
        "--",
        *args,
    )
    return out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def api(payments: Path) -> Iterator[str]:
    """The payments Service through `kubectl port-forward`, as a base URL."""
    process = subprocess.Popen(
        [
            "kubectl",
            "--kubeconfig",
            str(payments),
            "-n",
            BACKING_NS,
            "port-forward",
            "svc/payments",
            ":80",
        ],
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


def tenant(cluster: Path, name: str) -> tuple[str, dict[str, str]]:
    """A tenant's id and the Authorization header of a key issued to it."""
    tenant_id = admin(cluster, "tenants", "create", name)
    key = admin(cluster, "keys", "create", "--tenant", name)
    return tenant_id, {"Authorization": f"Bearer {key}"}


def writing(headers: dict[str, str]) -> dict[str, str]:
    """Every write of the API needs an Idempotency-Key."""
    return {**headers, "Idempotency-Key": str(uuid.uuid4())}


def test_the_full_example_confirms_an_order_limits_rates_and_isolates_tenants(
    payments: Path, api: str
) -> None:
    acme_id, acme = tenant(payments, "acme")
    globex_id, globex = tenant(payments, "globex")
    with httpx.Client(base_url=api, timeout=30) as client:
        account = client.post(
            "/api/v2/accounts",
            headers=writing(acme),
            json={"name": "Alice", "balance": {"amount": 100_000, "currency": "EUR"}},
        )
        assert account.status_code == 201, account.text
        product = client.post(
            "/api/v2/products",
            headers=writing(acme),
            json={
                "sku": "WIDGET-1",
                "name": "Widget",
                "price": {"amount": 1990, "currency": "EUR"},
            },
        )
        assert product.status_code == 201, product.text
        account_id = account.json()["id"]
        order = client.post(
            "/api/v2/orders",
            headers=writing(acme),
            json={"account_id": account_id, "product_id": product.json()["id"], "quantity": 2},
        )
        # Accepted, PENDING: the saga runs in the orders worker, reached through the outbox
        # relay and RabbitMQ, and charges the in-cluster payment provider.
        assert order.status_code == 202, order.text
        assert order.json()["status"] == "PENDING"
        location = order.headers["Location"]

        def settled() -> dict[str, Any] | None:
            body: dict[str, Any] = client.get(location, headers=acme).json()
            return body if body["status"] != "PENDING" else None

        placed = wait_for(settled, timeout=180, what="the order settled by the saga")
        assert placed["status"] == "CONFIRMED", placed
        assert placed["total"] == {"amount": 3980, "currency": "EUR"}
        balance = client.get(f"/api/v2/accounts/{account_id}", headers=acme).json()["balance"]
        assert balance == {"amount": 100_000 - 3980, "currency": "EUR"}

        # Another tenant sees none of it through the API.
        assert client.get(f"/api/v2/accounts/{account_id}", headers=globex).status_code == 404
        assert client.get(location, headers=globex).status_code == 404
        listed = client.get("/api/v2/accounts", headers=globex).json()
        assert account_id not in {item["id"] for item in listed["items"]}

    # And in PostgreSQL itself, as the app role the pods log in as: the policies, not the
    # service's queries, keep the tenants apart.
    app_uri = secret_value(payments, BACKING_NS, "payments-db-app", "uri")

    def visible(tenant_id: str | None) -> str:
        scope = f"SET app.tenant_id = '{tenant_id}'; " if tenant_id else ""
        return psql(payments, f"{scope}SELECT count(*) FROM accounts", uri=app_uri).splitlines()[-1]

    assert visible(acme_id) == "1"
    assert visible(globex_id) == "0"
    assert visible(None) == "0", "no tenant set: no rows"

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
    kubectl(payments, "-n", BACKING_NS, "delete", "configmap", "payments-config")
    wait_for(
        lambda: get(payments, "configmap", "payments-config", BACKING_NS),
        what="ConfigMap recreated",
    )
    kubectl(
        payments,
        "-n",
        BACKING_NS,
        "patch",
        "networkpolicy",
        "payments-api",
        "--type=merge",
        "-p",
        '{"spec":{"ingress":[]}}',
    )
    wait_for(
        lambda: (
            (get(payments, "networkpolicy", "payments-api", BACKING_NS) or {})
            .get("spec", {})
            .get("ingress")
        ),
        what="NetworkPolicy ingress restored",
    )
    wait_condition(payments, BACKING_NS, "payments", "Ready", 300)


def test_a_new_image_migrates_before_it_serves_and_the_old_job_goes(payments: Path) -> None:
    old_job = migration.name(model.parse(full_example()))
    assert get(payments, "job", old_job, BACKING_NS) is not None
    kubectl(
        payments,
        "-n",
        BACKING_NS,
        "patch",
        "bsvc",
        "payments",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"image": NEXT_SERVICE_IMAGE}}),
    )
    new = full_example()
    new["spec"]["image"] = NEXT_SERVICE_IMAGE
    new_job = migration.name(model.parse(new))
    wait_for(lambda: get(payments, "job", new_job, BACKING_NS), what="the new image's Job")
    kubectl(
        payments,
        "-n",
        BACKING_NS,
        "wait",
        "--for=condition=Complete",
        f"job/{new_job}",
        "--timeout=300s",
    )

    def serving() -> bool:
        live = get(payments, "deployment", "payments-api", BACKING_NS) or {}
        containers = live.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        return any(c["image"] == NEXT_SERVICE_IMAGE for c in containers)

    wait_for(serving, timeout=180, what="the API on the new image")
    wait_for(
        lambda: get(payments, "job", old_job, BACKING_NS) is None,
        timeout=180,
        what="the old image's Job deleted",
    )
    assert get(payments, "job", new_job, BACKING_NS) is not None, "the deployed image's Job stays"
    wait_condition(payments, BACKING_NS, "payments", "Ready", 600)
    shop = get(payments, "bsvc", "payments", BACKING_NS)
    assert shop is not None
    assert shop["status"]["database"]["migratedImage"] == NEXT_SERVICE_IMAGE


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

    def peers() -> int:
        peering = json.loads(
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
        )
        return len(peering.get("status") or {})

    wait_for(lambda: peers() == 3, what="three replicas in the peering object")
    wait_condition(payments, BACKING_NS, "payments", "Ready", 300)


def test_deleting_cleans_up_and_uninstall_keeps_the_crd(payments: Path) -> None:
    kubectl(
        payments, "-n", BACKING_NS, "delete", "bsvc", "payments", "--wait=true", "--timeout=300s"
    )
    for kind, name in (
        ("deployment", "payments-api"),
        ("deployment", "payments-worker-orders"),
        ("service", "payments"),
        ("scaledobject", "payments-worker-notifications"),
        ("secret", "payments-db-app"),
    ):
        wait_for(
            lambda k=kind, n=name: get(payments, k, n, BACKING_NS) is None,
            what=f"{kind} collected",
        )
    # deletionPolicy Retain (the example's): the database and its app role stay.
    assert psql(payments, "SELECT count(*) FROM pg_roles WHERE rolname = 'payments_app'") == "1"
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
