"""The migration Job as the cluster would run it: the rendered container command as a real local
process, with the environment the kubelet would resolve from the rendered ConfigMap and Secrets,
against the real PostgreSQL. Two Jobs' pods at once migrate exactly once."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any

from adbm_operator.database.provision import Desired, provision
from adbm_operator.database.target import Server, admin_uri, app_uri
from adbm_operator.model import BackendService
from adbm_operator.specs import configmap, dbsecrets, migration
from reference_service.db.migrate import migrations
from tests.operator.database import kubelet
from tests.operator.database.conftest import Scratch
from tests.operator.specs.support import assert_valid, example


def _service(scratch: Scratch) -> BackendService:
    return example(
        "minimal",
        {"spec.database.name": scratch.database, "spec.database.appRole": scratch.role},
    )


def _rendered(obj: BackendService, server: Server, scratch: Scratch) -> list[dict[str, Any]]:
    """What the operator applies before the Job: ConfigMap, the app and migrate Secrets."""
    uri = app_uri(server, dbname=scratch.database, role=scratch.role, password=scratch.password)
    return [
        configmap.configmap(obj),
        dbsecrets.password_secret(obj, scratch.password),
        dbsecrets.app_secret(
            obj, uri=uri, password=scratch.password, host=server.host, port=server.port
        ),
        dbsecrets.migrate_secret(obj, admin_uri=admin_uri(server, dbname=scratch.database)),
    ]


async def _run_job_pod(job: dict[str, Any], objects: list[dict[str, Any]]) -> tuple[int, str]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = kubelet.environment(container, objects)
    # The image's PATH: here, the environment adbm-service is installed in.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.defpath
    process = await asyncio.create_subprocess_exec(
        *kubelet.argv(container, env),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return await process.wait(), out.decode()


async def test_the_rendered_job_migrates_once_and_provisioning_then_has_nothing_to_do(
    server: Server, scratch: Scratch, desired: Callable[..., Desired]
) -> None:
    obj = _service(scratch)
    first = await provision(server, desired(migrated=False))
    assert first.condition()[1] == "Migrating"
    objects = _rendered(obj, server, scratch)
    job = migration.job(obj)
    for rendered in (*objects, job):
        assert_valid(rendered)

    # Two pods of the Job at once (a retried pod overlapping, or two operators' Jobs).
    results = await asyncio.gather(_run_job_pod(job, objects), _run_job_pod(job, objects))
    assert [code for code, _ in results] == [0, 0], results
    outputs = [out for _, out in results]
    # Each migration is its own transaction under the advisory lock, so two migrators may
    # share the list between them (one applies 0001-0003, the other the rest); what holds is
    # that each is applied exactly once.
    for version in (m.version for m in migrations()):
        assert sum(f"applied: {version}\n" in out for out in outputs) == 1, (version, outputs)
    assert not any(scratch.password in out for out in outputs)

    report = await provision(server, desired())
    assert report.condition()[:2] == ("True", "Provisioned")
    # The image's migrate applied the same rls.py plan: nothing is left for the operator.
    assert report.changes == ()

    code, out = await _run_job_pod(job, objects)
    assert (code, out.strip().splitlines()[-1]) == (0, "migrations: none pending")


async def test_a_missing_secret_fails_the_pod_before_it_runs(
    server: Server, scratch: Scratch
) -> None:
    obj = _service(scratch)
    objects = [
        o for o in _rendered(obj, server, scratch) if "db-migrate" not in o["metadata"]["name"]
    ]
    (container,) = migration.job(obj)["spec"]["template"]["spec"]["containers"]
    try:
        kubelet.environment(container, objects)
    except kubelet.ContainerConfigError as exc:
        assert str(exc) == f"couldn't find key uri in Secret {dbsecrets.migrate_secret_name(obj)}"
    else:
        raise AssertionError("the pod would have started without its admin URI")
