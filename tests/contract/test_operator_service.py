"""The operator -> service contract, read statically: what the operator renders for the pods
(command, arguments, environment, Secret keys) is what the service's own code accepts and reads.

Checked for both examples and for a sweep of valid BackendServices. A renamed setting, a removed
subcommand or option, or a Secret key nobody writes fails here; `test_kubelet.py` runs the pods.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import example as explicit_example
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from adbm_operator.database import children
from adbm_operator.database.target import admin_server
from adbm_operator.specs import dbsecrets, deployment, labels, worker
from reference_service.config import DEVELOPMENT_CURSOR_SECRET, Settings
from tests.contract import service_surface
from tests.contract.pod_env import (
    COMPONENT_LABEL,
    EXAMPLE_FILES,
    Rendered,
    generated_secrets,
    render,
    render_example,
)
from tests.operator.strategies import backend_services

SCRIPT_TARGET = "reference_service.cli:main"
DOWNWARD_API = {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}

# Rendered, but no code of the service on this branch reads them: each a strict xfail below, so
# the day a branch starts reading one, its marker must go (and the sweep's allowance with it).
NOT_READ_YET: dict[str, str] = {}
# The admin Secret as CloudNativePG writes `<cluster>-superuser` (what both examples point at).
ADMIN_URI = "postgresql://postgres:admin-password@payments-db-rw.shop.svc:5432/*"

SWEEP = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def _ids(path: Path) -> str:
    return path.stem


def _containers(rendered: Rendered, component: str) -> list[dict[str, Any]]:
    return [
        c
        for d, c in rendered.app_containers()
        if d["metadata"]["labels"][COMPONENT_LABEL] == component
    ]


def check_command(container: dict[str, Any]) -> None:
    """The container runs the service's console script with arguments its parser accepts,
    naming a subcommand that exists."""
    scripts = service_surface.console_scripts()
    command = container["command"]
    assert len(command) == 1, f"command {command}: the arguments belong in args"
    assert scripts.get(command[0]) == SCRIPT_TARGET, f"{command[0]} is not the service's script"
    parsed = service_surface.parse(container["args"])
    assert parsed.command in service_surface.subcommands()


def rendered_variables(rendered: Rendered, container: dict[str, Any]) -> dict[str, str]:
    """Every variable the container gets -> where from (`configmap`, `secret`, `field`, `value`)."""
    out: dict[str, str] = {}
    for source in container.get("envFrom", []):
        for key in rendered.configmap(source["configMapRef"]["name"]):
            out[key] = "configmap"
    for var in container.get("env", []):
        if "value" in var:
            out[var["name"]] = "value"
        elif "secretKeyRef" in var["valueFrom"]:
            out[var["name"]] = "secret"
        else:
            out[var["name"]] = "field"
    return out


def check_variables_known(rendered: Rendered, container: dict[str, Any]) -> set[str]:
    """Every variable is a setting of the service, one the OpenTelemetry SDK reads, or a
    downward-API value another variable expands; returns the settings no code reads."""
    variables = rendered_variables(rendered, container)
    values = " ".join(v.get("value", "") for v in container.get("env", []))
    unread: set[str] = set()
    for name, source in variables.items():
        if name.startswith(service_surface.ENV_PREFIX):
            field = service_surface.setting_field(name)
            assert field is not None, f"{name} ({source}) is no field of the service's Settings"
            if field not in service_surface.settings_read():
                unread.add(name)
        elif name.startswith("OTEL_"):
            assert name in service_surface.otel_variables(), f"{name}: the OTel SDK reads no such"
        elif name in DOWNWARD_API:
            assert source == "field", f"{name} should come from the downward API"
            assert f"$({name})" in values, f"{name} is rendered, and no variable expands it"
        else:
            raise AssertionError(f"{name} ({source}): nothing in the service reads it")
    return unread


def unsafe_defaults() -> set[str]:
    """Settings whose default only works on a developer machine: a local address, or the public
    development cursor key."""
    unsafe = set()
    for name, field in Settings.model_fields.items():
        default = field.default
        text = default.get_secret_value() if isinstance(default, SecretStr) else str(default)
        if "127.0.0.1" in text or "localhost" in text or text == DEVELOPMENT_CURSOR_SECRET:
            unsafe.add(name)
    return unsafe


# Only the admin commands use these; the pods never run them.
ADMIN_ONLY = {"admin_database_url"}


def check_required_sources(rendered: Rendered, container: dict[str, Any]) -> None:
    variables = rendered_variables(rendered, container)
    fields = {service_surface.setting_field(v) for v in variables}
    queue = rendered.obj.spec.queue is not None
    for field in unsafe_defaults() - ADMIN_ONLY:
        if field == "amqp_url" and not queue:
            # Rendered ADBM_QUEUE_ENABLED=false says the broker is not there.
            assert variables.get("ADBM_QUEUE_ENABLED") == "configmap"
            continue
        assert field in fields, f"ADBM_{field.upper()} has a development default and no source"
    # Secret-shaped settings never travel in the ConfigMap or a literal value.
    for name, source in variables.items():
        field = service_surface.setting_field(name)
        if field and isinstance(Settings.model_fields[field].default, SecretStr):
            assert source == "secret", f"{name} is a secret and comes from {source}"


def secret_sources(rendered: Rendered) -> dict[str, set[str]]:
    """Secrets someone puts there: the user (named in the spec), or the operator (created once,
    with the keys it generates). Name -> keys."""
    spec = rendered.obj.spec
    user = [spec.redis.secret_ref, *([spec.queue.secret_ref] if spec.queue else [])]
    out: dict[str, set[str]] = {}
    for ref in user:
        out.setdefault(ref.name, set()).add(ref.key)
    for name, data in generated_secrets(rendered).items():
        out.setdefault(name, set()).update(data)
    for name, data in provisioned_secrets(rendered.obj).items():
        out.setdefault(name, set()).update(data)
    return out


def provisioned_secrets(obj: Any) -> dict[str, dict[str, str]]:
    """The Secrets the operator's database provisioning writes at run time, built by the code
    that builds them (`children.secrets`, which `provisioning.read_inputs` applies) from an
    admin Secret and a generated password, decoded: name -> key -> value."""
    ref = obj.spec.database.admin_secret_ref
    admin = {ref.key: base64.b64encode(ADMIN_URI.encode()).decode()}
    written = children.secrets(obj, admin_server(admin, ref.key), dbsecrets.generate_password())
    return {
        s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
        for s in written
    }


def secret_refs(container: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (v["valueFrom"]["secretKeyRef"]["name"], v["valueFrom"]["secretKeyRef"]["key"])
        for v in container.get("env", [])
        if "secretKeyRef" in v.get("valueFrom", {})
    ]


def check_secrets(rendered: Rendered, container: dict[str, Any]) -> None:
    sources = secret_sources(rendered)
    for name, key in secret_refs(container):
        assert key in sources.get(name, set()), f"Secret {name} key {key}: nobody writes it"


def check_probes(container: dict[str, Any]) -> None:
    """Probes use named ports the container declares (`test_kubelet.py` requests their paths)."""
    ports = {p["name"] for p in container["ports"]}
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container[kind]["httpGet"]
        assert probe["port"] in ports, f"{kind} port {probe['port']} is not declared"


# --- the examples, one test per check ----------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=_ids)
def test_api_command_parses(example: Path) -> None:
    api = _containers(render_example(example), deployment.COMPONENT)
    assert len(api) == 1
    check_command(api[0])


def test_worker_commands_parse() -> None:
    rendered = render_example(next(p for p in EXAMPLE_FILES if p.stem == "full"))
    workers = _containers(rendered, worker.COMPONENT)
    assert len(workers) == len(rendered.obj.spec.queue.workers) > 0  # type: ignore[union-attr]
    for container in workers:
        check_command(container)


def _variables_of_examples() -> list[Any]:
    params = []
    for example in EXAMPLE_FILES:
        rendered = render_example(example)
        seen: set[str] = set()
        for _, container in rendered.app_containers():
            seen |= set(rendered_variables(rendered, container))
        for name in sorted(n for n in seen if n.startswith(service_surface.ENV_PREFIX)):
            marks = (
                [pytest.mark.xfail(strict=True, reason=NOT_READ_YET[name])]
                if name in NOT_READ_YET
                else []
            )
            params.append(pytest.param(example, name, marks=marks, id=f"{example.stem}-{name}"))
    return params


@pytest.mark.parametrize(("example", "variable"), _variables_of_examples())
def test_rendered_setting_is_read_by_the_service(example: Path, variable: str) -> None:
    field = service_surface.setting_field(variable)
    assert field is not None, f"{variable} is no field of the service's Settings"
    assert field in service_surface.settings_read(), f"no code of the service reads {field}"


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=_ids)
def test_every_variable_is_known_and_required_settings_have_sources(example: Path) -> None:
    rendered = render_example(example)
    for _, container in rendered.app_containers():
        check_variables_known(rendered, container)
        check_required_sources(rendered, container)
        check_secrets(rendered, container)
        check_probes(container)


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=_ids)
def test_the_app_database_secret_is_written(example: Path) -> None:
    # `<name>-db-app` is no rendered child: the database provisioning writes it once it knows the
    # server and the app role's password. Every key any pod (the API, each worker, the migration
    # Job) reads from it is one that code writes, and its URI is the app role's on the database.
    rendered = render_example(example)
    obj = rendered.obj
    db_app = labels.db_app_secret_name(obj)
    pods = [c for _, c in rendered.app_containers()]
    pods += children.migration_job(obj)["spec"]["template"]["spec"]["containers"]
    read = {key for c in pods for name, key in secret_refs(c) if name == db_app}
    assert read, f"no pod reads {db_app}: the check below would hold vacuously"
    written = provisioned_secrets(obj)
    assert db_app in written, f"the pods read Secret {db_app}; provisioning does not write it"
    assert read <= set(written[db_app]), f"read from {db_app} and never written: {read}"
    for c in pods:
        check_secrets(rendered, c)
    uri = written[db_app][dbsecrets.URI_KEY]
    assert Settings(database_url=uri).database_url.get_secret_value() == uri
    params = conninfo_to_dict(uri)
    assert params["user"] == labels.app_role(obj)
    assert params["dbname"] == obj.spec.database.name


def test_unsafe_defaults_are_what_the_service_documents() -> None:
    # Guards the derivation above: if it found nothing, every source check would pass vacuously.
    assert unsafe_defaults() >= {"database_url", "redis_url", "amqp_url", "cursor_secret"}


# --- the sweep ---------------------------------------------------------------------------------


@SWEEP
@given(body=backend_services())
def test_sweep_every_rendered_pod_matches_the_service(body: dict[str, Any]) -> None:
    rendered = render(body)
    api = _containers(rendered, deployment.COMPONENT)
    assert len(api) == 1
    check_command(api[0])
    for _, container in rendered.app_containers():
        unread = check_variables_known(rendered, container)
        assert unread <= set(NOT_READ_YET), f"rendered and never read: {unread}"
        check_required_sources(rendered, container)
        check_secrets(rendered, container)
        check_probes(container)


def _with_first_queues(queues: list[str]) -> dict[str, Any]:
    """The full example with its first worker group consuming `queues`."""
    body: dict[str, Any] = yaml.safe_load(
        next(p for p in EXAMPLE_FILES if p.stem == "full").read_text()
    )
    body["spec"]["queue"]["workers"][0]["queues"] = queues
    return body


# A list starting with '-' (the CRD's queue pattern [A-Za-z0-9._:-] allows it) is the case a
# separate `--queues <list>` got wrong: argparse took it for an option. Not shrunk: shrinking a
# failure takes a minute.
@settings(SWEEP, phases=[Phase.explicit, Phase.generate])
@given(body=backend_services().filter(lambda b: "queue" in b["spec"]))
@explicit_example(body=_with_first_queues(["-:"]))
def test_sweep_worker_commands_parse(body: dict[str, Any]) -> None:
    for container in _containers(render(body), worker.COMPONENT):
        check_command(container)
