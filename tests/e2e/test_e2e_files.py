"""What the kind e2e suite (test_kind.py) relies on, checked where it cannot run (no Docker here):
its payment provider answers the service's own client as the saga expects, its backing servers
fit the full example, its Secrets are the ones the examples name, and the commands, images,
routes and files it uses exist."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from adbm_operator import model
from adbm_operator.database.budget import OPERATOR_RESERVE
from reference_service import cli
from reference_service.domain.sagas.payments import Outcome, PaymentProvider
from tests.e2e import test_kind as e2e

ROOT = Path(__file__).parents[2]
# PostgreSQL's own default superuser_reserved_connections, which the operator also subtracts.
SUPERUSER_RESERVED = 3


def backing() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(e2e.BACKING.read_text()) if d]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def provider() -> Iterator[str]:
    """tests/e2e/payment_provider.py as its pod runs it, on a local port; its base URL with a
    path prefix, as the e2e's `paymentProvider.url` has one."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(e2e.PAYMENT_PROVIDER), str(port), "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        assert b"payment provider on" in process.stdout.readline()
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_payment_provider_answers_the_service_client_as_the_saga_expects(
    provider: str,
) -> None:
    async def exercise() -> None:
        client = PaymentProvider(provider, connect_timeout=2, timeout=5)
        try:
            key, order = uuid.uuid4(), uuid.uuid4()
            first = await client.charge(key, amount_minor=3980, currency="EUR", reference=order)
            again = await client.charge(key, amount_minor=3980, currency="EUR", reference=order)
            assert first.outcome is Outcome.SUCCEEDED, first
            assert again.outcome is Outcome.SUCCEEDED and again.charge_id == first.charge_id
            assert (await client.refund(key)).outcome is Outcome.SUCCEEDED
            # A refund before any charge voids the key: a late charge under it is declined.
            voided = uuid.uuid4()
            assert (await client.refund(voided)).outcome is Outcome.SUCCEEDED
            late = await client.charge(voided, amount_minor=100, currency="EUR", reference=order)
            assert late.outcome is Outcome.DECLINED, late
        finally:
            await client.aclose()

    asyncio.run(exercise())
    # Its readiness probe's path answers.
    assert httpx.get(provider.removesuffix("/v1") + "/", timeout=5).status_code == 200


def test_the_backing_postgres_fits_the_full_example() -> None:
    (postgres,) = [
        d for d in backing() if d["kind"] == "Deployment" and d["metadata"]["name"] == "postgres"
    ]
    (container,) = postgres["spec"]["template"]["spec"]["containers"]
    args = container.get("args", [])
    (setting,) = [a for a in args if a.startswith("max_connections=")]
    allowed = int(setting.partition("=")[2]) - SUPERUSER_RESERVED - OPERATOR_RESERVE
    full = model.parse(e2e.full_example())
    assert model.max_connections(full.spec) <= allowed
    # Unchanged, the example asks for more than PostgreSQL's default 100 allows: the reason the
    # backing server raises it.
    assert model.max_connections(model.parse(e2e.example("full")).spec) > 100 - 3 - OPERATOR_RESERVE


def test_the_backing_objects_use_only_local_images_and_the_provider_file() -> None:
    images = {
        c["image"]
        for d in backing()
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images <= set(e2e.LOCAL_IMAGES), images - set(e2e.LOCAL_IMAGES)
    assert all(d["metadata"]["namespace"] == e2e.BACKING_NS for d in backing())
    (provider,) = [
        d
        for d in backing()
        if d["metadata"]["name"] == "payment-provider" and d["kind"] == "Deployment"
    ]
    pod = provider["spec"]["template"]["spec"]
    (volume,) = pod["volumes"]
    assert volume["configMap"]["name"] == "payment-provider"
    (container,) = pod["containers"]
    (mount,) = container["volumeMounts"]
    assert container["command"][1] == f"{mount['mountPath']}/{e2e.PAYMENT_PROVIDER.name}"
    # The in-cluster URL is the provider's Service and port.
    (service,) = [
        d
        for d in backing()
        if d["kind"] == "Service" and d["metadata"]["name"] == "payment-provider"
    ]
    (port,) = service["spec"]["ports"]
    assert e2e.PROVIDER_URL.startswith(
        f"http://payment-provider.{e2e.BACKING_NS}.svc:{port['port']}/"
    )
    secret = next(d for d in backing() if d["kind"] == "Secret")
    assert secret["stringData"] == {
        "postgres-password": e2e.POSTGRES_PASSWORD,
        "rabbitmq-password": e2e.RABBITMQ_PASSWORD,
    }


@pytest.mark.parametrize("name", ["minimal", "full"])
def test_the_suite_creates_exactly_the_secrets_each_example_names(name: str) -> None:
    """Only the platform's Secrets: the admin URI, Redis, RabbitMQ; `<name>-db-app` and every
    other Secret the pods read is the operator's to create."""
    obj = model.parse(e2e.example(name))
    named = {obj.spec.database.admin_secret_ref.name, obj.spec.redis.secret_ref.name}
    if obj.spec.queue is not None:
        named.add(obj.spec.queue.secret_ref.name)
    assert set(e2e.PLATFORM_SECRETS[obj.namespace]) == named


def test_the_commands_routes_and_files_the_suite_uses_exist() -> None:
    for dockerfile in e2e.DOCKERFILES.values():
        assert (ROOT / dockerfile).is_file(), dockerfile
    assert e2e.SERVICE_IMAGE == model.DEFAULT_IMAGE == e2e.example("full")["spec"]["image"]
    for name in e2e.OPTIONAL_CRDS:
        assert (e2e.VENDORED_CRDS / name).is_file(), name
    parser = cli.build_parser()
    for argv in (["tenants", "create", "acme"], ["keys", "create", "--tenant", "acme"]):
        parser.parse_args(argv)  # exits (SystemExit) on a command the service does not have
    paths = json.loads((ROOT / "openapi.json").read_text())["paths"]
    for path, method in (
        ("/api/v2/accounts", "post"),
        ("/api/v2/accounts", "get"),
        ("/api/v2/accounts/{account_id}", "get"),
        ("/api/v2/products", "post"),
        ("/api/v2/products", "get"),
        ("/api/v2/orders", "post"),
        ("/api/v2/orders/{order_id}", "get"),
    ):
        assert method in paths[path], (method, path)
    # The full example's GET /api/v2/products limit is what the 429 burst is sized against.
    routes = e2e.example("full")["spec"]["rateLimit"]["routes"]
    (products,) = [r for r in routes if (r["method"], r["path"]) == ("GET", "/api/v2/products")]
    assert products["burst"] < 260
    # The example as the suite applies it (the in-cluster provider URL, lower CPU requests) is
    # still a valid BackendService.
    model.parse(e2e.full_example())
