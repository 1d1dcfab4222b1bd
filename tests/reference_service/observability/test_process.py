"""`adbm-service serve` as the pod runs it: every line it writes, from start-up to the SIGTERM
shutdown, standard output and standard error alike, is one JSON object of the schema; its
metrics port answers a scrape that `promtool check metrics` accepts."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.reference_service.cli_process import one_error_line, run_cli
from tests.reference_service.conftest import DatabaseUrls
from tests.reference_service.http.conftest import Callers

EXECUTABLE = Path(sys.executable).parent / "adbm-service"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z")
LEVELS = {"debug", "info", "warning", "error", "critical"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int

    def get(self, path: str, port: int | None = None, **headers: str) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port or self.port}{path}", headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def stop(self) -> tuple[int, list[str]]:
        """SIGTERM, as the kubelet sends it; the exit code and every line written."""
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=30)
        return self.process.returncode, out.decode().splitlines()


def wait_until_up(served: Served) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if served.get("/health")[0] == 200:
                return
        except OSError:
            pass
        if served.process.poll() is not None or time.monotonic() > deadline:
            out = served.process.communicate()[0].decode()
            pytest.fail(f"adbm-service serve did not come up:\n{out}")
        time.sleep(0.1)


@pytest.fixture
def served(database_urls: DatabaseUrls) -> Iterator[Served]:
    port, metrics_port = free_port(), free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("ADBM_", "OTEL_"))}
    process = subprocess.Popen(
        [str(EXECUTABLE), "serve", "--host", "127.0.0.1"],
        env={
            **environment,
            "ADBM_DATABASE_URL": database_urls.app_url,
            "ADBM_HTTP_PORT": str(port),
            "ADBM_METRICS_PORT": str(metrics_port),
            "ADBM_CURSOR_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
            "ADBM_REDIS_KEY_PREFIX": f"test-{uuid.uuid4().hex}:",
            "ADBM_LOG_LEVEL": "INFO",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    result = Served(process, port, metrics_port)
    try:
        wait_until_up(result)
        yield result
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def parse(lines: list[str]) -> list[dict[str, Any]]:
    parsed = []
    for line in lines:
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(value, dict), line
        assert list(value)[:4] == ["timestamp", "level", "event", "logger"], line
        assert TIMESTAMP.fullmatch(value["timestamp"]), line
        assert value["level"] in LEVELS, line
        parsed.append(value)
    return parsed


def test_every_line_from_start_to_sigterm_is_json(served: Served, callers: Callers) -> None:
    key = callers.a.headers["Authorization"]
    status, _ = served.get(f"/api/v2/products/{uuid.uuid4()}", Authorization=key)
    assert status == 404
    assert served.get("/api/v1/nothing")[0] == 404
    code, lines = served.stop()
    # Uvicorn shuts down gracefully, then re-raises the signal it caught: the exit status says
    # "terminated by SIGTERM", as for any process the kubelet stops.
    assert code == -signal.SIGTERM, lines
    logged = parse(lines)
    events = [line["event"] for line in logged]
    # Uvicorn's start-up and shutdown lines went through our formatter too.
    assert any(event.startswith("Started server process") for event in events), events
    assert any(event.startswith("Finished server process") for event in events), events
    access = [line for line in logged if line["logger"] == "adbm.access"]
    assert [(a["route"], a["status"]) for a in access if a["route"] != "/health"] == [
        ("/api/v2/products/{product_id}", 404),
        ("unmatched", 404),
    ]
    product = access[-2]
    assert product["tenant"] == str(callers.a.tenant_id)
    assert re.fullmatch(r"[0-9a-f]{32}", product["trace_id"])
    assert re.fullmatch(r"[0-9a-f]{32}", product["request_id"])
    assert "Bearer" not in "\n".join(lines)


def scrape(served: Served) -> str:
    status, body = served.get("/metrics", port=served.metrics_port)
    assert status == 200
    return body.decode()


def test_the_metrics_port_serves_the_service_metrics(served: Served, callers: Callers) -> None:
    served.get("/api/v1/products", Authorization=callers.a.headers["Authorization"])
    text = scrape(served)
    assert (
        'adbm_http_requests_total{method="GET",route="/api/v1/products",status_class="2xx"} 1.0'
        in text
    )
    assert 'adbm_db_pool_max_connections{pool="adbm"} 10.0' in text
    assert 'adbm_ratelimit_decisions_total{decision="admitted",source="redis"} 1.0' in text
    # The API port does not serve them: the ServiceMonitor scrapes the metrics port only.
    assert served.get("/metrics")[0] == 404
    served.stop()


def test_promtool_accepts_the_scrape(served: Served, callers: Callers) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        served.stop()
        pytest.skip("promtool is not installed (Debian package prometheus; .ci/install-tools)")
    served.get("/api/v1/products", Authorization=callers.a.headers["Authorization"])
    served.get("/api/v1/products")
    text = scrape(served)
    served.stop()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", (
        result.stdout + result.stderr
    )


def test_a_taken_metrics_port_is_a_one_line_error(database_urls: DatabaseUrls) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "serve",
            ADBM_DATABASE_URL=database_urls.app_url,
            ADBM_CURSOR_SECRET=uuid.uuid4().hex + uuid.uuid4().hex,
            ADBM_METRICS_PORT=str(port),
            ADBM_HTTP_PORT=str(free_port()),
        )
    line = one_error_line(result)
    assert line.startswith(f"error: cannot listen on ADBM_METRICS_PORT {port}: ")
