"""The reconcile's database step: the objects the database layer needs, one bounded
provisioning pass, and what the status shows of it.

Order within a reconcile (each step only when the previous one allows it):
1. the admin Secret the spec names is read into a `Server`;
2. `<name>-db-password` is created with a generated password when absent, never rewritten;
3. `<name>-db-app` (what the pods read) and `<name>-db-migrate` (what the Job reads) are derived
   from both and applied with the other children;
4. one provisioning pass (`database.provision`), bounded in time: the database and app role exist
   after it, so the migration Job of the current image is created only then (never patched);
5. the Deployments run the image whose migration Job succeeded last (`status.database.
   migratedImage`): pods of a new image never serve before its schema is in place.

A server that is unreachable (or refuses the admin) is retried with `database.retry_delay`
backoff; reconciles triggered meanwhile skip the pass and keep the last verdict, so the rest of
the reconcile goes on and nothing loops hot.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adbm_operator import kinds, kube
from adbm_operator.conditions import Verdict
from adbm_operator.database import children
from adbm_operator.database.budget import OPERATOR_RESERVE
from adbm_operator.database.condition import Observations
from adbm_operator.database.provision import Report, desired_from_spec, provision, retry_delay
from adbm_operator.database.target import AdminSecretError, Server, admin_server
from adbm_operator.model import BackendService, BackendServiceStatus, ConditionStatus
from adbm_operator.model import DatabaseStatus as DatabaseStatusModel
from adbm_operator.specs import dbsecrets

DATABASE_READY = "DatabaseReady"

PASS_TIMEOUT_SECONDS = 60.0
"""Longest one provisioning pass may take (its connections and lock waits are bounded more
tightly; this bounds the sum, e.g. a server that accepts connections and then stalls)."""


@dataclass
class Backoff:
    """Consecutive passes of one BackendService that found the server unusable."""

    failures: int = 0
    not_before: float = 0.0
    """`time.monotonic()` before which triggered reconciles skip the pass."""
    admin_version: str | None = None
    """The admin Secret's resourceVersion the last failure was seen with."""

    def held(self, now: float, admin_version: str | None) -> bool:
        """Whether a triggered reconcile skips the pass: while backing off, unless the admin
        Secret changed since (new credentials deserve a try at once)."""
        return self.failures > 0 and now < self.not_before and admin_version == self.admin_version

    def record(self, unreachable: bool, now: float, admin_version: str | None) -> float | None:
        """Count a pass; the delay before the next one when the server was unusable."""
        if not unreachable:
            self.failures = 0
            return None
        self.admin_version = admin_version
        self.failures += 1
        delay = retry_delay(self.failures)
        self.not_before = now + delay
        return delay


@dataclass(frozen=True)
class Inputs:
    """What the Kubernetes side provides the pass with."""

    server: Server | None = None
    password: str | None = None
    problem: str | None = None
    """Why no pass can run (the admin Secret is missing or unusable)."""
    derived: list[dict[str, Any]] = field(default_factory=list)
    """`<name>-db-app` and `<name>-db-migrate`, to apply with the other children."""
    admin_version: str | None = None
    """resourceVersion of the admin Secret read: a change to it reconciles again."""


async def read_inputs(
    client: kube.Client, obj: BackendService, owner: Mapping[str, Any]
) -> tuple[Inputs, dict[str, Any] | None, bool]:
    """The server, the app role's password (creating its Secret with a new one when absent),
    and the Secrets derived from both; also the live password Secret and whether it was
    created now."""
    ref = obj.spec.database.admin_secret_ref
    admin = await client.get(kinds.SECRET, obj.namespace, ref.name)
    if admin is None:
        return Inputs(problem=f"admin Secret {ref.name} not found"), None, False
    version = admin["metadata"].get("resourceVersion", "")
    try:
        server = admin_server(admin.get("data") or {}, ref.key)
    except AdminSecretError as exc:
        return Inputs(problem=f"admin Secret {ref.name}: {exc}", admin_version=version), None, False
    shape = dbsecrets.password_secret(obj, dbsecrets.generate_password())
    shape["metadata"]["ownerReferences"] = [dict(owner)]
    live, created = await _create_absent(client, shape)
    password = dbsecrets.read_password(live)
    if password is None:
        name = dbsecrets.password_secret_name(obj)
        problem = f"Secret {name} holds no {dbsecrets.PASSWORD_KEY!r}: delete it to generate one"
        return Inputs(server=server, problem=problem, admin_version=version), live, created
    derived = children.secrets(obj, server, password)[1:]
    for secret in derived:
        secret["metadata"]["ownerReferences"] = [dict(owner)]
    inputs = Inputs(server=server, password=password, derived=derived, admin_version=version)
    return inputs, live, created


async def _create_absent(
    client: kube.Client, obj: Mapping[str, Any]
) -> tuple[dict[str, Any], bool]:
    meta = obj["metadata"]
    live = await client.get(kinds.of(obj), meta["namespace"], meta["name"])
    if live is not None:
        return live, False
    try:
        return await client.create(obj), True
    except kube.ApiError as exc:
        if exc.status != 409:
            raise
    live = await client.get(kinds.of(obj), meta["namespace"], meta["name"])
    if live is None:
        raise kube.ApiError(409, "Conflict", f"{obj['kind']} {meta['name']} exists, then did not")
    return live, False


SESSIONS_PER_PASS = 2
"""Sessions one pass holds at most at once: the admin's and the app role's (isolation proof,
`rls.verify`); the maintenance session is closed before them."""
PASSES_PER_SERVER = 3
"""Passes run at once against one server. The operator's sessions then stay at 6 of the
`OPERATOR_RESERVE` the connection budget keeps, the rest left to the migration Job and a
person's psql; uncapped, 32 reconciles in flight held 64 (bench/operator_scale.py, N=300)."""
assert PASSES_PER_SERVER * SESSIONS_PER_PASS < OPERATOR_RESERVE

_Gates = dict[tuple[str, str], asyncio.Semaphore]
# Per event loop (a semaphore is bound to the loop it first waits in), per server.
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Gates] = weakref.WeakKeyDictionary()


def _gate(server: Server) -> asyncio.Semaphore:
    per_server = _gates.setdefault(asyncio.get_running_loop(), {})
    key = (server.host, server.port)
    if key not in per_server:
        per_server[key] = asyncio.Semaphore(PASSES_PER_SERVER)
    return per_server[key]


async def run_pass(
    inputs: Inputs, obj: BackendService, *, migrated: bool, timeout: float = PASS_TIMEOUT_SECONDS
) -> Report:
    """One provisioning pass, never longer than `timeout` once it has its turn: at most
    `PASSES_PER_SERVER` run against one server at a time, and waiting for a turn is not counted
    (a queue of passes at start-up is not a stalled server). The pass is async (psycopg's async
    connections) and runs in the operator's event loop: one at a time per BackendService under
    its reconcile lock, so no state is shared between threads."""
    assert inputs.server is not None and inputs.password is not None
    desired = desired_from_spec(obj, app_password=inputs.password, migrated=migrated)
    try:
        async with _gate(inputs.server):
            return await asyncio.wait_for(provision(inputs.server, desired), timeout)
    except TimeoutError:
        message = f"provisioning {desired.database} did not finish within {timeout:g} s"
        return Report(Observations(unreachable=message), pending="", changes=())


async def ensure_job(client: kube.Client, obj: BackendService, owner: Mapping[str, Any]) -> bool:
    """Create the migration Job of `obj.spec.image` when absent (whether it did); an existing
    one is never changed (its pod template is immutable, and it ran, or runs, already)."""
    job = children.migration_job(obj)
    job["metadata"]["ownerReferences"] = [dict(owner)]
    return (await _create_absent(client, job))[1]


def job_failure(live: Mapping[str, Any] | None) -> str | None:
    """The message of a migration Job that failed for good (its Failed condition is True)."""
    for cond in ((live or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            return str(cond.get("message") or cond.get("reason") or "failed")
    return None


def verdict(report: Report, job: str, failure: str | None) -> Verdict:
    status, reason, message = report.condition()
    if reason == "Migrating" and failure is not None:
        return Verdict(
            DATABASE_READY,
            ConditionStatus.FALSE,
            "MigrationFailed",
            f"migration Job {job} failed: {failure}",
        )
    return Verdict(DATABASE_READY, ConditionStatus(status), reason, message)


def problem_verdict(problem: str) -> Verdict:
    return Verdict(DATABASE_READY, ConditionStatus.FALSE, "Unreachable", problem)


def previous_verdict(previous: BackendServiceStatus | None) -> Verdict | None:
    """DatabaseReady as the last status recorded it: what stands while no pass runs."""
    for c in previous.conditions if previous else []:
        if c.type == DATABASE_READY:
            return Verdict(c.type, c.status, c.reason, c.message)
    return None


def migrated_image(previous: BackendServiceStatus | None) -> str | None:
    return previous.database.migrated_image if previous and previous.database else None


def database_status(
    previous: BackendServiceStatus | None,
    *,
    image: str | None,
    report: Report | None,
    verdict: Verdict | None,
    periodic: bool,
    now: datetime,
) -> DatabaseStatusModel:
    """status.database after this reconcile. `lastVerified` moves on periodic passes and when
    the outcome changed, not on every event-triggered pass, so an idle object is not rewritten
    at each reconcile."""
    before = previous.database if previous and previous.database else DatabaseStatusModel()
    if report is None or verdict is None:
        return before.model_copy(update={"migrated_image": image})
    proven = verdict.status == ConditionStatus.TRUE
    was = previous_verdict(previous)
    changed = was is None or (was.status, was.reason) != (verdict.status, verdict.reason)
    last = now if proven and (periodic or changed or before.last_verified is None) else None
    return DatabaseStatusModel(
        schema_version=report.schema_version or before.schema_version,
        migrated_image=image,
        pending_changes=report.pending[:4096] if report.observations.migrated else "",
        last_verified=last or before.last_verified,
    )
