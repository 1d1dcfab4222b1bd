"""operator/Dockerfile and reference_service/Dockerfile: hadolint clean, and each image runs the
way the objects that use it expect: the user, the ports and the entrypoint."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

import adbm_operator
import reference_service
from adbm_operator import model, specs
from adbm_operator.specs import pod
from tests.chart import helm

ROOT = helm.ROOT
OPERATOR = ROOT / "operator" / "Dockerfile"
SERVICE = ROOT / "reference_service" / "Dockerfile"
# What a final stage may hold: files from the build stage and metadata, nothing that runs.
FINAL_STAGE = {"FROM", "ENV", "COPY", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "LABEL"}


def stages(path: Path) -> list[list[dict[str, Any]]]:
    parsed = DockerfileParser(path=str(path))
    found: list[list[dict[str, Any]]] = []
    for instruction in parsed.structure:
        if instruction["instruction"] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def final(path: Path, name: str) -> list[str]:
    values = [i["value"] for i in stages(path)[-1] if i["instruction"] == name]
    return values


def exposed(path: Path) -> set[int]:
    return {int(p.split("/")[0]) for value in final(path, "EXPOSE") for p in value.split()}


def entrypoint(path: Path) -> list[str]:
    import json

    (value,) = final(path, "ENTRYPOINT")
    parsed: list[str] = json.loads(value)
    return parsed


def scripts() -> dict[str, str]:
    found: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "scripts"
    ]
    return found


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        raise RuntimeError("hadolint is not installed: pip install -e '.[dev]'")
    return found


@pytest.mark.parametrize("path", [OPERATOR, SERVICE], ids=lambda p: p.parent.name)
def test_hadolint_is_clean(path: Path) -> None:
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", [OPERATOR, SERVICE], ids=lambda p: p.parent.name)
def test_multi_stage_slim_wheel_from_this_repository(path: Path) -> None:
    build, run = stages(path)
    assert build[0]["value"].startswith("python:3.11-slim AS ")
    assert run[0]["value"] == "python:3.11-slim"
    build_runs = " ".join(i["value"] for i in build if i["instruction"] == "RUN")
    assert "pip wheel --no-deps --wheel-dir /wheels ." in build_runs
    assert {i["instruction"] for i in run} - {"COMMENT"} <= FINAL_STAGE, (
        "nothing is built in the final stage"
    )
    copies = [i["value"] for i in run if i["instruction"] == "COPY"]
    assert copies and all(c.startswith("--from=") for c in copies)
    env = " ".join(final(path, "ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "no bytecode written to a read-only root"


@pytest.mark.parametrize("path", [OPERATOR, SERVICE], ids=lambda p: p.parent.name)
def test_numeric_non_root_user_is_the_rendered_run_as_user(path: Path) -> None:
    (user,) = final(path, "USER")
    uid, gid = user.split(":")
    assert int(uid) == int(gid) == pod.RUN_AS_USER != 0


def test_service_image_matches_the_pods_the_operator_renders() -> None:
    obj = model.parse(
        {
            **__import__("yaml").safe_load((ROOT / "examples" / "minimal.yaml").read_text()),
        }
    )
    api = next(c for c in specs.render(obj) if c["kind"] == "Deployment")
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["runAsUser"] == pod.RUN_AS_USER
    assert exposed(SERVICE) == {p["containerPort"] for p in container["ports"]}
    assert entrypoint(SERVICE) == container["command"]
    assert entrypoint(SERVICE)[0] in scripts()


def test_operator_image_matches_the_chart_container() -> None:
    deployment = helm.one(helm.template(), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container, "the chart runs the image's entrypoint"
    assert exposed(OPERATOR) == {p["containerPort"] for p in container["ports"]}
    assert entrypoint(OPERATOR) == ["adbm-operator"]
    assert entrypoint(OPERATOR)[0] in scripts()
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(
        final(OPERATOR, "USER")[0].split(":")[0]
    )


def test_default_image_is_this_releases_reference_service() -> None:
    # One release number: the wheel's, both packages', the default image's tag.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == adbm_operator.__version__ == reference_service.__version__
    assert f"adbm/reference-service:{adbm_operator.__version__}" == model.DEFAULT_IMAGE
    assert f"adbm/reference-service:{adbm_operator.__version__}" in SERVICE.read_text()
