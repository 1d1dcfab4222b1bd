"""Operator start-up, login and shutdown."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import kopf
import yaml

from adbm_operator import kube
from adbm_operator.handlers import registry, runtime


def settings(fast: bool = False) -> kopf.OperatorSettings:
    """Operator settings. Kopf's bookkeeping goes into `adbm.io/` annotations, since the CRD's
    structural status schema would prune a `status.kopf` field."""
    s = kopf.OperatorSettings()
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="adbm.io")
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="adbm.io", key="last-handled-configuration"
    )
    # Handler chatter would be an Event per reconcile; our own Events mark real state changes.
    s.posting.level = logging.WARNING
    if fast:
        s.scanning.disabled = True
        s.watching.reconnect_backoff = 0.01
        s.queueing.exit_timeout = 0.5
    return s


class NoCredentials(Exception):
    """Neither in a cluster nor given a usable kubeconfig: said in one line, before start-up."""


def find_credentials(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """In-cluster service account first, then the current kubeconfig context (`KUBECONFIG`, else
    `~/.kube/config`), read by Kopf's own functions: what the login handler will find."""
    try:
        info = kopf.login_with_service_account(settings=settings)
        if info is None:
            info = kopf.login_with_kubeconfig(settings=settings)
            if info is not None and info.token is None:
                info = with_token_file(info)
    except OSError as exc:
        raise NoCredentials(f"cannot read kubeconfig {exc.filename}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        where = " ".join(str(exc).split())  # PyYAML's message spans lines
        raise NoCredentials(f"the kubeconfig is not valid YAML: {where}") from exc
    except kopf.LoginError as exc:
        raise NoCredentials(f"the kubeconfig cannot be used: {exc}") from exc
    except KeyError as exc:
        raise NoCredentials(
            f"the kubeconfig's current context refers to {exc}, which it does not define"
        ) from exc
    except (TypeError, AttributeError) as exc:
        raise NoCredentials(f"the kubeconfig is not a kubeconfig: {exc}") from exc
    if info is None:
        raise NoCredentials(
            "no Kubernetes credentials: not running in a cluster (no service account token)"
            " and no kubeconfig (set KUBECONFIG or create ~/.kube/config)"
        )
    return info


def _kubeconfig_paths() -> list[Path]:
    """The kubeconfig files, as `kopf.login_with_kubeconfig` finds them."""
    listed = os.environ.get("KUBECONFIG") or ""
    if not listed and os.path.exists(os.path.expanduser("~/.kube/config")):
        listed = "~/.kube/config"
    return [Path(os.path.expanduser(p.strip())) for p in listed.split(os.pathsep) if p.strip()]


def with_token_file(info: kopf.ConnectionInfo) -> kopf.ConnectionInfo:
    """The bearer token of the current context's user from its `tokenFile`, which Kopf's
    kubeconfig login does not read: a kubeconfig of a ServiceAccount token (e.g. a projected or
    `kubectl create token` one kept in a file) would otherwise send no credentials at all, and
    every request would be refused as `system:anonymous`. As client-go reads it: `token` wins
    over `tokenFile`, and a relative `tokenFile` is relative to the kubeconfig that names it. The
    file is read at each login, so a rotated token is picked up when Kopf logs in again."""
    current: str | None = None
    contexts: dict[str, Any] = {}
    users: dict[str, tuple[Any, Path]] = {}
    for path in _kubeconfig_paths():
        config = yaml.safe_load(path.read_text()) or {}
        current = current or config.get("current-context")
        for item in config.get("contexts") or []:
            contexts.setdefault(item["name"], item.get("context") or {})
        for item in config.get("users") or []:
            users.setdefault(item["name"], (item.get("user") or {}, path))
    user, source = users.get(contexts.get(current or "", {}).get("user", ""), ({}, Path()))
    token_file = user.get("tokenFile")
    if user.get("token") or not token_file:
        return info
    path = Path(os.path.expanduser(token_file))
    if not path.is_absolute():
        path = source.parent / path
    return dataclasses.replace(info, token=path.read_text().strip() or None)


@kopf.on.login(registry=registry)
async def login(memo: Any, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """Our own client shares the identity Kopf uses. A failure here (credentials removed after
    start-up) is retried by Kopf."""
    info = find_credentials(settings)
    rt = runtime.of(memo)
    if rt.client is not None:  # re-login after the credentials expired
        await rt.client.close()
    rt.client = kube.Client(info)
    rt.connected.set()
    return info


@kopf.on.cleanup(registry=registry)
async def cleanup(memo: Any, **_: Any) -> None:
    rt = runtime.of(memo)
    for task in [*rt.retries.values(), *rt.verifiers.values(), *rt.background]:
        task.cancel()
    if rt.client is not None:
        await rt.client.close()
