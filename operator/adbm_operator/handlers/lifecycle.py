"""Operator start-up, login and shutdown."""

from __future__ import annotations

import logging
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
        info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
            settings=settings
        )
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
    for task in [*rt.retries.values(), *rt.verifiers.values()]:
        task.cancel()
    if rt.client is not None:
        await rt.client.close()
