"""The real `helm` binary on the chart: render it as `helm install` would, offline."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "adbm-operator"
RELEASE, NAMESPACE = "adbm", "adbm-system"
TOOLS = Path(os.environ.get("ADBM_TOOLS_DIR", Path.home() / ".cache" / "adbm-tools")) / "bin"


def binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(TOOLS))
    if found is None:
        raise RuntimeError(f"{name} is not installed: run `bash .ci/install-tools`")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("helm"), *args], capture_output=True, text=True, check=False, timeout=120
    )


@functools.cache
def _rendered(args: tuple[str, ...]) -> str:
    result = run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    if result.returncode != 0:
        raise AssertionError(f"helm template {' '.join(args)}: {result.stderr}")
    return result.stdout


def template(*args: str, include_crds: bool = False) -> list[dict[str, Any]]:
    """Every object `helm install adbm charts/adbm-operator -n adbm-system ARGS` would create
    (rendered once per session and arguments; each call gets its own copy to change)."""
    extra = ("--include-crds",) if include_crds else ()
    return [doc for doc in yaml.safe_load_all(_rendered((*extra, *args))) if doc]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} objects of kind {kind} named {name}"
    return found[0]
