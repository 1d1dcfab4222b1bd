"""What a platform team and the cluster's runtime provide to `bench/operator_scale.py`: a real
PostgreSQL with the admin Secret pointing at it, the Redis and RabbitMQ Secrets, the migration
Jobs run to completion, and every database and role made for the run dropped afterwards.

- **Postgres.** By default a dedicated server (`local_servers.postgres`) on a free port, so the
  operator's connections (up to two per reconcile in flight) do not eat the shared server's
  `max_connections`, which other tests on this machine use; it is disposable, so it runs
  without fsync (the operator's cost does not depend on it). `--postgres-url` points the run
  at an existing server instead, e.g. the shared `postgresql://postgres@127.0.0.1:5432/postgres`.
- **Names.** Every database and app role of the run starts with `PREFIX`; whatever carries it
  is dropped before the run (a previous run killed hard) and after it, also on Ctrl-C (the
  `finally` of `run_operator`). One benchmark run per server at a time.
- **The Job runtime.** What the migration Job's pod does, as `tests/operator` plays it: the
  container's environment resolved from the live ConfigMap and Secrets the way the kubelet does
  (`tests/operator/database/kubelet.py`), then `adbm-service migrate --app-role <role>`'s own
  function (`reference_service.db.migrate.migrate`) against the real server, in this process
  (a Python start-up per Job would cost the machine ~1 s of CPU each), then the Job's status
  marked Complete as the Job controller does. Redis and RabbitMQ are never connected to by the
  operator, so their Secrets only have to exist (they point at the shared local servers).
- **Connections.** The operator runs with `PGAPPNAME`, so its sessions are told apart in
  `pg_stat_activity`; a sampler records the peak of its sessions and of all of them against
  `max_connections`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psycopg
from psycopg import sql
from scale_cluster import DATABASE_PREFIX as PREFIX
from scale_cluster import MERGE, call

from adbm_operator.specs import dbsecrets, migration
from reference_service.db import rls
from reference_service.db.migrate import migrate
from tests.operator.database import kubelet

OPERATOR_APPNAME = "adbm-operator-bench"
REDIS_URL = "redis://127.0.0.1:6379/0"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
JOB_WORKERS = 4
"""Migration Jobs running at once (a cluster runs them all at once; this machine has 2 cores)."""
SAMPLE_SECONDS = 0.25


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[str]:
    """The admin's libpq URI (maintenance database `postgres`): `url`, with every `PREFIX*`
    database and role dropped before and after (also when the run is interrupted), or a
    dedicated server, removed afterwards with all it holds."""
    if url is not None:
        drop_prefixed(url)
        try:
            yield url
        finally:
            drop_prefixed(url)
        return
    from local_servers import postgres as dedicated

    # Its max_connections (200) is above what 32 reconciles in flight (2 sessions each) and
    # the Jobs need.
    settings = {"fsync": "off", "full_page_writes": "off"}
    with dedicated(settings=settings) as server:
        yield server.url()


def secret(namespace: str, name: str, uri: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {dbsecrets.URI_KEY: base64.b64encode(uri.encode()).decode()},
    }


def platform_secrets(body: dict[str, Any], admin_url: str) -> list[dict[str, Any]]:
    """The admin, Redis and RabbitMQ Secrets `body` names, as a platform team provides them."""
    spec, namespace = body["spec"], body["metadata"]["namespace"]
    return [
        secret(namespace, spec["database"]["adminSecretRef"]["name"], admin_url),
        secret(namespace, spec["redis"]["secretRef"]["name"], REDIS_URL),
        secret(namespace, spec["queue"]["secretRef"]["name"], RABBITMQ_URL),
    ]


def drop_prefixed(admin_url: str) -> tuple[int, int]:
    """Drop every database and role named `PREFIX*` (their sessions ended first); how many.
    Synchronous, so it also runs while a Ctrl-C unwinds the event loop."""
    like = PREFIX.replace("_", r"\_") + "%"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        databases = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_catalog.pg_database WHERE datname LIKE %s", (like,)
            )
        ]
        for name in databases:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        roles = [
            r[0]
            for r in conn.execute(
                "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname LIKE %s", (like,)
            )
        ]
        for name in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
    return len(databases), len(roles)


@dataclass
class Connections:
    """Peak sessions on the server while the run goes, sampled from pg_stat_activity."""

    admin_url: str
    max_connections: int = 0
    peak_operator: int = 0
    peak_total: int = 0
    samples: int = 0

    async def run(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.admin_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT current_setting('max_connections')::int")
            self.max_connections = (await cur.fetchone() or (0,))[0]
            while True:
                cur = await conn.execute(
                    "SELECT count(*) FILTER (WHERE application_name = %s), count(*)"
                    " FROM pg_catalog.pg_stat_activity"
                    " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                    (OPERATOR_APPNAME,),
                )
                operator, total = await cur.fetchone() or (0, 0)
                self.peak_operator = max(self.peak_operator, operator)
                self.peak_total = max(self.peak_total, total)
                self.samples += 1
                await asyncio.sleep(SAMPLE_SECONDS)


@dataclass
class JobRuntime:
    """Runs each migration Job the operator creates, then marks it Complete (see the module)."""

    emulator: Any
    session: aiohttp.ClientSession
    base: str
    completed: int = 0
    pod_failures: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    _queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def see(self, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        key = (meta["namespace"], meta["name"])
        if key not in self._seen and not migration.succeeded(job):
            self._seen.add(key)
            self._queue.put_nowait(job)

    async def run(self) -> None:
        workers = [asyncio.create_task(self._worker()) for _ in range(JOB_WORKERS)]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    def _live(self, kind: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self.emulator.objects[f"v1/{plural}", namespace, name]
        except KeyError:
            return None
        if found.deleted:
            return None
        raw: dict[str, Any] = found.raw
        return {"kind": kind, **raw}

    def _environment(self, job: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
        """The container's environment and argv as the kubelet would hand them over."""
        namespace = job["metadata"]["namespace"]
        (container,) = job["spec"]["template"]["spec"]["containers"]
        objects = []
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                ref = source["configMapRef"]["name"]
                live = self._live("ConfigMap", "configmaps", namespace, ref)
                if live is not None:
                    objects.append(live)
        for var in container.get("env", []):
            ref = ((var.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
            live = ref and self._live("Secret", "secrets", namespace, ref)
            if live:
                objects.append(live)
        env = kubelet.environment(container, objects)
        return env, kubelet.argv(container, env)

    async def _worker(self) -> None:
        while True:
            job = await self._queue.get()
            meta = job["metadata"]
            started = time.perf_counter()
            try:
                await self._run_pods(job)
            except Exception as exc:
                self.errors.append(f"{meta['namespace']}/{meta['name']}: {exc!r}")
                print(f"  migration Job failed: {self.errors[-1]}", file=sys.stderr)
            self.seconds += time.perf_counter() - started

    async def _run_pods(self, job: dict[str, Any]) -> None:
        """As the Job controller does: a failed pod is replaced after a backoff (10 s, doubling)
        until `backoffLimit` failures, then the Job is Failed."""
        limit = int(job["spec"].get("backoffLimit", 6))
        meta = job["metadata"]
        for failures in range(limit + 1):
            try:
                await self._migrate(job)
            except Exception as exc:
                self.pod_failures += 1
                print(f"  {meta['namespace']}/{meta['name']}: pod failed: {exc!r}", file=sys.stderr)
                if failures == limit:
                    await self._finish(job, "Failed", {"failed": limit + 1}, repr(exc)[:200])
                    raise
                await asyncio.sleep(10 * 2**failures)
                continue
            await self._finish(job, "Complete", {"succeeded": 1}, "")
            self.completed += 1
            return

    async def _migrate(self, job: dict[str, Any]) -> None:
        # The ConfigMap and Secrets the pod reads are applied before the Job is created; a
        # container whose config is missing waits, as a pod in CreateContainerConfigError does.
        for _ in range(100):
            try:
                env, argv = self._environment(job)
                break
            except kubelet.ContainerConfigError:
                await asyncio.sleep(0.2)
        else:
            raise RuntimeError("the Job's ConfigMap or Secrets never appeared")
        if argv[:3] != ["adbm-service", "migrate", "--app-role"] or len(argv) != 4:
            raise RuntimeError(f"not the migration command this runtime plays: {argv}")
        # As `adbm-service migrate` does: the admin URL, the named role, no password of its own.
        await migrate(
            env["ADBM_ADMIN_DATABASE_URL"],
            app_role=argv[3],
            tenant_setting=env.get("ADBM_DB_TENANT_SETTING", rls.DEFAULT_TENANT_SETTING),
        )

    async def _finish(
        self, job: dict[str, Any], outcome: str, counts: dict[str, int], message: str
    ) -> None:
        meta = job["metadata"]
        path = f"/apis/batch/v1/namespaces/{meta['namespace']}/jobs/{meta['name']}/status"
        condition = {"type": outcome, "status": "True", "reason": outcome, "message": message}
        body = {"status": {**counts, "conditions": [condition]}}
        await call(self.session, self.base, "PATCH", path, body, MERGE)
