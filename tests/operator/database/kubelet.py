"""What the kubelet hands a container: its environment and its argv, from rendered objects.

Encodes the kubelet's rules (pkg/kubelet/kubelet_pods.go `makeEnvironmentVariables`, and
third_party/forked/golang/expansion for `$(VAR)`):
- `envFrom` first, in order: every key of the ConfigMap's `data` / the Secret's decoded `data`
  (with the optional prefix) that is a valid variable name; invalid keys are skipped;
- then `env` in order, each replacing what came before: `value` with `$(VAR)` expanded against
  the variables defined so far, or `valueFrom` a ConfigMap/Secret key; a missing object or key
  fails the container unless marked optional;
- `command` and `args` expanded against the final environment. `$$` is a literal `$`, and an
  undefined `$(VAR)` stays as written.
Service links are left out (the rendered pods set enableServiceLinks false); fieldRef and
resourceFieldRef are not needed by the Job and are refused rather than guessed.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import Any

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ContainerConfigError(Exception):
    """What the kubelet reports as CreateContainerConfigError."""


def expand(text: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def _index(objects: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def _data(obj: Mapping[str, Any]) -> dict[str, str]:
    if obj["kind"] == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    return dict(obj.get("data") or {})


def environment(
    container: Mapping[str, Any], objects: Iterable[Mapping[str, Any]]
) -> dict[str, str]:
    found = _index(objects)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind, ref = (
            ("ConfigMap", source["configMapRef"])
            if "configMapRef" in source
            else ("Secret", source["secretRef"])
        )
        obj = found.get((kind, ref["name"]))
        if obj is None:
            if ref.get("optional"):
                continue
            raise ContainerConfigError(f'{kind.lower()} "{ref["name"]}" not found')
        for key, value in _data(obj).items():
            name = source.get("prefix", "") + key
            if _ENV_NAME.match(name):
                env[name] = value
    for var in container.get("env", []):
        if var.get("value"):
            env[var["name"]] = expand(var["value"], env)
            continue
        source = var.get("valueFrom")
        if source is None:
            env[var["name"]] = ""
            continue
        if "secretKeyRef" in source or "configMapKeyRef" in source:
            kind = "Secret" if "secretKeyRef" in source else "ConfigMap"
            ref = source["secretKeyRef" if kind == "Secret" else "configMapKeyRef"]
            obj = found.get((kind, ref["name"]))
            data = _data(obj) if obj is not None else None
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(
                    f"couldn't find key {ref['key']} in {kind} {ref['name']}"
                )
            env[var["name"]] = data[ref["key"]]
            continue
        raise ContainerConfigError(f"{var['name']}: this stand-in does not resolve {source}")
    return env


def argv(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """command + args as the runtime executes them (the image's entrypoint is not consulted:
    every container the operator renders sets `command`)."""
    if "command" not in container:
        raise ContainerConfigError("container sets no command")
    return [expand(part, env) for part in [*container["command"], *container.get("args", [])]]
