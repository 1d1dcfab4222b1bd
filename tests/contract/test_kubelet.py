"""Playing the kubelet for the rendered pods: each service container runs as a local process
with the command, arguments and environment the kubelet would give it (ConfigMap, Secrets and
downward API resolved as in `pod_env.py`), on the real PostgreSQL, Redis and RabbitMQ, and its
rendered probes must pass as the kubelet's HTTP prober judges them.

The Secrets hold what a cluster would: `<name>-db-app` the URI of a scratch database's own app
role (migrated by `adbm-service migrate`), the user's Redis and RabbitMQ Secrets the local
servers, `<name>-cursor` a key generated as the operator generates it.

A pod has its own network namespace; these processes share the host's, where the rendered port
numbers may be taken. So each declared container port is moved to a free port by changing the
one ConfigMap value that carries it (there must be exactly one) — the process still listens
where its configuration says, and the probes still resolve their port by name.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adbm_operator.specs import deployment, labels, worker
from tests.contract import live, service_surface
from tests.contract.pod_env import (
    COMPONENT_LABEL,
    EXAMPLE_FILES,
    Rendered,
    container_port,
    environment,
    expand,
    generated_secrets,
    render_example,
)

# The kubelet's HTTP prober (pkg/probe/http/request.go): these headers, and success for any
# status in [200, 400) (pkg/probe/http/http.go, DoHTTPProbe).
PROBE_HEADERS = {"User-Agent": "kube-probe/1.35", "Accept": "*/*"}
# Defaults of the Probe API (pkg/apis/core/v1/defaults.go, SetDefaults_Probe).
PROBE_DEFAULTS = {"timeoutSeconds": 1, "periodSeconds": 10, "failureThreshold": 3}
METRICS_PATH = "/metrics"
PROMETHEUS_TEXT = "text/plain; version=0.0.4"
WORKER = "worker"


@dataclass
class Pod:
    container: dict[str, Any]
    host_ports: dict[int, int]
    process: live.Process

    def url(self, port: int | str, path: str) -> str:
        number = self.host_ports[container_port(self.container, port)]
        return f"http://127.0.0.1:{number}{path}"


def probe_once(pod: Pod, probe: Mapping[str, Any]) -> str | None:
    """None on success, else why it failed."""
    get = probe["httpGet"]
    assert get.get("scheme", "HTTP") == "HTTP"
    timeout = probe.get("timeoutSeconds", PROBE_DEFAULTS["timeoutSeconds"])
    try:
        response = httpx.get(
            pod.url(get["port"], get["path"]), headers=PROBE_HEADERS, timeout=timeout
        )
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 400:
        return None
    return f"HTTP {response.status_code}: {response.text[:300]}"


def probe_passes(pod: Pod, kind: str) -> None:
    """The probe succeeds before it has failed `failureThreshold` times in a row."""
    probe = pod.container[kind]
    period = probe.get("periodSeconds", PROBE_DEFAULTS["periodSeconds"])
    failures: list[str] = []
    for _ in range(probe.get("failureThreshold", PROBE_DEFAULTS["failureThreshold"])):
        if pod.process.popen.poll() is not None:
            break
        failure = probe_once(pod, probe)
        if failure is None:
            return
        failures.append(failure)
        time.sleep(period)
    raise AssertionError(
        f"{kind} failed {failures[-3:]}; the process said:\n{pod.process.output()[-3000:]}"
    )


def secrets_for(rendered: Rendered, database_url: str) -> dict[str, dict[str, str]]:
    spec = rendered.obj.spec
    values: dict[str, dict[str, str]] = {
        labels.db_app_secret_name(rendered.obj): {"uri": database_url},
        spec.redis.secret_ref.name: {spec.redis.secret_ref.key: live.REDIS_URL},
    }
    if spec.queue is not None:
        values.setdefault(spec.queue.secret_ref.name, {})[spec.queue.secret_ref.key] = live.AMQP_URL
    return {**values, **generated_secrets(rendered)}


def relocate_ports(
    rendered: Rendered, container: Mapping[str, Any], env: dict[str, str]
) -> dict[int, int]:
    config = {
        k for src in container["envFrom"] for k in rendered.configmap(src["configMapRef"]["name"])
    }
    moved: dict[int, int] = {}
    for port in container["ports"]:
        number = port["containerPort"]
        carriers = [k for k in config if env.get(k) == str(number)]
        assert len(carriers) == 1, f"port {number}: carried by ConfigMap keys {carriers}"
        moved[number] = live.free_port()
        env[carriers[0]] = str(moved[number])
    return moved


@contextmanager
def run_pod(
    rendered: Rendered,
    workload: Mapping[str, Any],
    container: dict[str, Any],
    database_url: str,
    log: Path,
) -> Iterator[Pod]:
    env = environment(
        rendered,
        container,
        secrets=secrets_for(rendered, database_url),
        pod_fields={
            "metadata.name": f"{workload['metadata']['name']}-contract",
            "metadata.namespace": rendered.obj.namespace,
        },
    )
    host_ports = relocate_ports(rendered, container, env)
    # The kubelet expands $(VAR) in command and args too.
    argv = [expand(a, env) for a in [*container["command"], *container["args"]]]
    with live.process(argv, env, log) as proc:
        pod = Pod(container, host_ports, proc)
        probe_passes(pod, "startupProbe")
        yield pod


def _pods(rendered: Rendered, component: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (d, c)
        for d, c in rendered.app_containers()
        if d["metadata"]["labels"][COMPONENT_LABEL] == component
    ]


@pytest.fixture(scope="module", params=EXAMPLE_FILES, ids=lambda p: p.stem)
def api_pod(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pod]:
    rendered = render_example(request.param)
    [(workload, container)] = _pods(rendered, deployment.COMPONENT)
    tenant_setting = rendered.configmap(container["envFrom"][0]["configMapRef"]["name"])[
        "ADBM_DB_TENANT_SETTING"
    ]
    with live.scratch_database(tenant_setting) as urls:
        log = tmp_path_factory.mktemp("pod") / "api.log"
        with run_pod(rendered, workload, container, urls.app_url, log) as pod:
            yield pod


def test_api_pod_readiness_and_liveness_pass(api_pod: Pod) -> None:
    probe_passes(api_pod, "readinessProbe")
    probe_passes(api_pod, "livenessProbe")


def test_api_pod_metrics_port_answers_prometheus_text(api_pod: Pod) -> None:
    check_metrics(api_pod)


def check_metrics(pod: Pod) -> None:
    response = httpx.get(pod.url(deployment.METRICS_PORT_NAME, METRICS_PATH), timeout=5)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"].startswith(PROMETHEUS_TEXT)
    families = list(text_string_to_metric_families(response.text))
    assert families, "no metric families"


def test_worker_pods_probes_and_metrics(tmp_path: Path) -> None:
    if WORKER not in service_surface.subcommands():
        pytest.skip(f"adbm-service has no `{WORKER}` subcommand on this branch (issue 12)")
    rendered = render_example(next(p for p in EXAMPLE_FILES if p.stem == "full"))
    pods = _pods(rendered, worker.COMPONENT)
    assert pods
    config = rendered.configmap(pods[0][1]["envFrom"][0]["configMapRef"]["name"])
    with live.scratch_database(config["ADBM_DB_TENANT_SETTING"]) as urls:
        for workload, container in pods:
            log = tmp_path / f"{workload['metadata']['name']}.log"
            with run_pod(rendered, workload, container, urls.app_url, log) as pod:
                probe_passes(pod, "readinessProbe")
                probe_passes(pod, "livenessProbe")
                check_metrics(pod)
