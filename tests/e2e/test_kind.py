"""End to end against a real Kubernetes API server in kind.

What the emulator cannot prove is proven here: the CRD is accepted by a real API server, its
CEL rules reject bad specs at `kubectl apply`, server-side apply and garbage collection behave
as the operator assumes, and `kubectl wait --for=condition=...` works on the status it writes.
The operator runs as `adbm-operator run` on the test host against the kind cluster's kubeconfig.
The pods themselves cannot become Ready without the service image and databases, and the suite
says so through the status rather than pretending otherwise.

Skipped, with the reason, where `docker` or `kind` is missing or no Docker engine answers (as on
the machines this project's CI uses). Nothing is downloaded: `kind` must be on PATH, and the
node image is whatever `kind` defaults to locally.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.e2e


def _why_not() -> str | None:
    for tool in ("docker", "kind", "kubectl"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    engine = subprocess.run(["docker", "info"], capture_output=True, check=False)
    if engine.returncode != 0:
        return "no Docker engine answers `docker info`"
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


@pytest.fixture(scope="module")
def operator(cluster: Path) -> Iterator[Path]:
    kubectl(cluster, "apply", "--server-side", "-f", str(ROOT / "crds" / "backendservice.yaml"))
    kubectl(cluster, "wait", "--for=condition=Established", "crd/backendservices.adbm.io")
    kubectl(cluster, "apply", "-f", str(ROOT / "deploy" / "operator-rbac.yaml"))
    kubectl(cluster, "create", "namespace", "shop")
    for secret in ("shop-db-app", "shop-redis"):
        kubectl(
            cluster, "-n", "shop", "create", "secret", "generic", secret, "--from-literal=uri=x"
        )
    env = {**os.environ, "KUBECONFIG": str(cluster)}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "adbm-operator"), "run", "-A", "--metrics-port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield cluster
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


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
    # Status from observation: no ServiceMonitor CRD in a bare kind cluster, said so.
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
    # The pods cannot start here (no service image, no database): Ready must not claim they did.
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
