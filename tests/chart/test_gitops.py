"""docs/gitops.md: the Argo CD health check run by a real Lua interpreter, and the Flux CEL
expressions by a CEL interpreter, against statuses the operator itself computes."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from datetime import UTC, datetime
from typing import Any

import celpy
import pytest
import yaml

from adbm_operator import crd, observe, status
from adbm_operator.status import Observation, Rollout
from tests.chart import helm

DOC = helm.ROOT / "docs" / "gitops.md"
LUA = helm.ROOT / "docs" / "gitops" / "argocd-health-backendservice.lua"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def rolled_out(done: bool = True, failed: bool = False) -> Rollout:
    message = "rolled out" if done else "2 of 3 updated replicas are available"
    return Rollout("shop-api", 3, 3 if done else 2, done, failed, message)


def observed(**changes: Any) -> Observation:
    # What the operator observes of a healthy object: its Deployment and the collector beside it.
    values: dict[str, Any] = {
        "generation": 2,
        "paused": False,
        "children": [],
        "api": rolled_out(),
        "collector": observe.Collector(enabled=True, running=("shop-api",)),
    }
    values.update(changes)
    return Observation(**values)


def backend(obs: Observation | None, generation: int = 2) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "adbm.io/v1alpha1",
        "kind": "BackendService",
        "metadata": {"name": "shop", "namespace": "shop", "generation": generation},
        "spec": {},
    }
    if obs is not None:
        computed = status.as_patch(status.compute(obs, None, NOW))
        body["status"] = json.loads(json.dumps(computed))  # as the API server stores it
    return body


# (object, Argo CD health, whether Flux's `current` holds, whether its `failed` holds)
CASES = {
    "ready": (backend(observed()), "Healthy", True, False),
    "rolling out": (backend(observed(api=rolled_out(done=False))), "Progressing", False, False),
    "no Deployment yet": (backend(observed(api=None)), "Progressing", False, False),
    "secret missing": (
        backend(observed(missing_secrets=["shop-redis"])),
        "Degraded",
        False,
        True,
    ),
    "rollout deadline exceeded": (
        backend(observed(api=rolled_out(done=False, failed=True))),
        "Degraded",
        False,
        True,
    ),
    "paused": (backend(observed(paused=True)), "Suspended", True, False),
    "generation not observed yet": (backend(observed(), generation=3), "Progressing", False, False),
}


def lua() -> str:
    found = shutil.which("lua5.4")
    if found is None:
        raise RuntimeError("lua5.4 is not installed: bash .ci/install-tools (apt-get lua5.4)")
    return found


def lua_literal(value: Any) -> str:
    """A JSON value as a Lua table constructor; null is nil, as Argo CD's conversion makes it."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid Lua escapes for this text
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    items = (f"[{json.dumps(k)}] = {lua_literal(v)}" for k, v in value.items())
    return "{" + ", ".join(items) + "}"


def argo_health(obj: dict[str, Any]) -> tuple[str, str]:
    """Run the health script as Argo CD does: `obj` is the live object, the chunk returns hs."""
    program = (
        f"obj = {lua_literal(obj)}\n"
        f"local hs = (function()\n{LUA.read_text()}\nend)()\n"
        'io.write(hs.status, "\\n", hs.message or "", "\\n")\n'
    )
    result = subprocess.run(
        [lua(), "-"], input=program, capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 0, result.stderr
    health, message = result.stdout.split("\n", 1)
    return health, message.strip()


@pytest.mark.parametrize("case", list(CASES))
def test_argo_cd_health(case: str) -> None:
    obj, expected, _, _ = CASES[case]
    health, message = argo_health(obj)
    assert health == expected
    assert message, "every health says why"
    if expected == "Degraded":
        degraded = next(c for c in obj["status"]["conditions"] if c["type"] == "Degraded")
        assert degraded["reason"] in message


def test_argo_cd_health_without_any_status() -> None:
    health, message = argo_health(backend(None))
    assert health == "Progressing"
    assert "generation 2" in message


def test_lua_is_the_one_in_the_doc_and_needs_nothing_past_lua_5_1() -> None:
    """Argo CD runs gopher-lua (5.1): no integer division, bit operators, goto or attributes."""
    text = LUA.read_text()
    block = DOC.read_text().split("resource.customizations.health.adbm.io_BackendService: |\n")[1]
    embedded = block.split("```", 1)[0]
    assert "\n".join(line.removeprefix("    ") for line in embedded.splitlines()) + "\n" == text
    code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    assert not re.search(r"//|<<|>>|\bgoto\b|<const>|<close>", code)


def flux_expressions() -> dict[str, str]:
    docs = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    for doc in docs:
        for body in yaml.safe_load_all(doc):
            if body and body.get("kind") == "Kustomization":
                (check,) = body["spec"]["healthCheckExprs"]
                assert (check["apiVersion"], check["kind"]) == (
                    "adbm.io/v1alpha1",
                    "BackendService",
                )
                return {k: check[k] for k in ("current", "failed")}
    raise AssertionError("no Flux Kustomization in docs/gitops.md")


def cel(expression: str, obj: dict[str, Any]) -> bool:
    """As kustomize-controller evaluates it: the object's top-level fields are the variables."""
    env = celpy.Environment()
    program = env.program(env.compile(expression))
    return bool(program.evaluate({k: celpy.json_to_cel(v) for k, v in obj.items()}))


@pytest.mark.parametrize("case", list(CASES))
def test_flux_health_check_expressions(case: str) -> None:
    obj, _, current, failed = CASES[case]
    expressions = flux_expressions()
    assert cel(expressions["current"], obj) is current
    assert cel(expressions["failed"], obj) is failed


def test_kubectl_wait_commands_name_the_resource_and_fields_the_crd_has() -> None:
    definition = crd.build_crd()
    names = definition["spec"]["names"]
    resource_names = {names["plural"], names["singular"], *names.get("shortNames", [])}
    status_schema = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "status"
    ]["properties"]
    waits = [
        shlex.split(line.split("$(", 1)[0])
        for line in re.findall(r"^kubectl .*wait .*$", DOC.read_text(), flags=re.M)
    ]
    assert waits
    for args in waits:
        target = next(a for a in args if "/" in a and not a.startswith("--"))
        assert target.split("/")[0] in resource_names, target
        condition = next(a for a in args if a.startswith("--for="))
        if condition.startswith("--for=jsonpath="):
            field = re.search(r"\{\.status\.(\w+)\}", condition)
            assert field is not None and field.group(1) in status_schema
        else:
            assert condition == f"--for=condition={status.READY}"
