"""One reconcile of one BackendService: render, apply what differs, prune, observe, decide status.

Everything that talks to the cluster goes through `kube.Client`; everything that decides is a
pure function (`specs`, `status`, `differs`). Re-running on an unchanged spec and unchanged
children makes no write at all: a child is applied only when what we render is not already
what the cluster holds.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from adbm_operator import kinds, kube, model, observe, provisioning, specs, status, telemetry
from adbm_operator.conditions import Verdict
from adbm_operator.database.provision import Report
from adbm_operator.kinds import Kind
from adbm_operator.model import BackendService, ChildSummary
from adbm_operator.observe import Rollout
from adbm_operator.specs import (
    cursor,
    dbsecrets,
    deployment,
    keda,
    labels,
    migration,
    otel,
    pod,
    service,
    servicemonitor,
    worker,
)
from adbm_operator.status import Transition


@dataclass
class Integrations:
    """Which optional kinds the cluster serves, as the CRD watch last reported."""

    installed: set[Kind] = field(default_factory=set)

    def has(self, kind: Kind) -> bool:
        """Whether the cluster serves `kind`: built-in kinds always, optional ones once their
        CRD is established."""
        return kind.crd is None or kind in self.installed


def differs(desired: Any, live: Any) -> bool:
    """Whether applying `desired` would change `live`: every field we render must be present
    with the same value. Fields the API server or others added are not our concern."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return True
        return any(differs(v, live.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return True
        return any(differs(d, item) for d, item in zip(desired, live, strict=True))
    return bool(desired != live)


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": model.API_VERSION,
        "kind": model.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned(child: Mapping[str, Any], uid: str) -> bool:
    refs = child.get("metadata", {}).get("ownerReferences", []) or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def _summary(
    child: Mapping[str, Any], state: Literal["Applied", "Skipped", "Failed"], message: str = ""
) -> ChildSummary:
    return ChildSummary(
        api_version=child["apiVersion"],
        kind=child["kind"],
        name=child["metadata"]["name"],
        state=state,
        message=message[:4096],
    )


@dataclass
class Outcome:
    status: model.BackendServiceStatus
    transitions: list[Transition]
    writes: int
    temporary_error: str | None = None
    desired: list[dict[str, Any]] = field(default_factory=list)
    """The children as rendered (with owner references): what later events are compared to."""
    secret_versions: dict[str, str] = field(default_factory=dict)
    rollouts: list[Rollout] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(type, reason, message) of Events beyond the condition transitions (database changes)."""
    retry_database_in: float | None = None
    """Seconds until the next provisioning pass is due, when this one found the server
    unusable."""
    migration: tuple[str, bool] | None = None
    """(name, finished) of the migration Job of the current image, as this reconcile saw it."""
    database_passed: bool = False
    """Whether a provisioning pass ran."""


async def secret_versions(
    client: kube.Client, obj: BackendService, known: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, str], list[str]]:
    """resourceVersions of the Secrets the pods read, and the names of those missing; `known`
    holds Secrets this reconcile already has in hand (name -> live object)."""
    versions, missing = {}, []
    for ref in pod.referenced_secrets(obj):
        if ref.name in versions or ref.name in missing:
            continue
        secret = known.get(ref.name) or await client.get(kinds.SECRET, obj.namespace, ref.name)
        if secret is None:
            missing.append(ref.name)
        else:
            versions[ref.name] = secret["metadata"].get("resourceVersion", "")
    return versions, missing


def with_generated_value(shape: Mapping[str, Any]) -> dict[str, Any]:
    """The cursor-signing Secret as created: its rendered shape and a new random key."""
    token = secrets.token_urlsafe(cursor.RANDOM_BYTES)
    return {**shape, "data": {cursor.KEY: base64.b64encode(token.encode()).decode()}}


async def ensure_created(
    client: kube.Client, shape: Mapping[str, Any]
) -> tuple[dict[str, Any], bool]:
    """The live object, created from `shape` (with its generated value) only when absent;
    whether this call created it. An existing one is never changed, whoever wrote it."""
    kind = kinds.of(shape)
    meta = shape["metadata"]
    live = await client.get(kind, meta["namespace"], meta["name"])
    if live is not None:
        return live, False
    try:
        return await client.create(with_generated_value(shape)), True
    except kube.ApiError as exc:
        if exc.status != 409:
            raise
    # Created meanwhile (by a user, or a reconcile of a previous operator run): theirs stands.
    live = await client.get(kind, meta["namespace"], meta["name"])
    if live is None:
        raise kube.ApiError(409, "Conflict", f"{kind.kind} {meta['name']} exists, then did not")
    return live, False


async def reconcile(
    client: kube.Client,
    body: Mapping[str, Any],
    integrations: Integrations,
    *,
    drift: bool = False,
    write: bool = True,
    known_secrets: Mapping[str, str] | None = None,
    backoff: provisioning.Backoff | None = None,
    periodic: bool = False,
    database_pass: bool = True,
) -> Outcome:
    """Converge one BackendService and compute its status. `drift` marks a run triggered by a
    change to a child, so corrections are counted as drift; `write=False` only observes (a
    Deployment's rollout moved on, nothing of ours changed), and then `known_secrets` (the
    versions the last reconcile read) spares reading the Secrets again. `backoff` is this
    object's record of unusable database servers; `periodic` marks the verification timer's
    pass, which runs even while backing off (it is the retry); `database_pass=False` skips the
    provisioning pass (a child's drift changes nothing in the database) and keeps its verdict."""
    started = time.perf_counter()
    now = datetime.now(UTC).replace(microsecond=0)
    obj = model.parse(dict(body))
    previous = status.parse(body.get("status"))
    generation = int(body["metadata"].get("generation", 0))
    uid = body["metadata"]["uid"]
    applying = write and not obj.spec.paused
    run = _Writes()

    once = specs.created_once(obj)
    for shape in once:
        shape["metadata"]["ownerReferences"] = [owner_reference(body)]
    created = await _create_absent(client, once, run) if applying else {}
    database = (
        await _database(
            client,
            obj,
            body,
            integrations,
            run,
            previous,
            backoff,
            periodic=periodic,
            drift=drift,
            database_pass=database_pass or periodic,
        )
        if applying
        else _Database(
            verdict=provisioning.previous_verdict(previous),
            image=provisioning.migrated_image(previous),
        )
    )
    created.update(database.secrets)

    if known_secrets is not None and not write:
        versions = dict(known_secrets)
        missing = [r.name for r in pod.referenced_secrets(obj) if r.name not in versions]
    else:
        versions, missing = await secret_versions(client, obj, created)

    desired, held = _render(obj, database.image, versions)
    for child in desired:
        child["metadata"]["ownerReferences"] = [owner_reference(body)]
    if applying:
        await _apply(client, desired, integrations, run, drift=drift)
        if run.temporary is None:
            run.writes += await prune(client, obj, uid, desired, integrations, keep=held)
        if (
            run.temporary is None
            and database.report is not None
            and database.image == obj.spec.image
        ):
            # The current image's Job succeeded and its image is what the Deployments run: the
            # Jobs of earlier images are done with. Only on reconciles that ran a provisioning
            # pass (the Job's completion triggers one, and the verification timer retries), so
            # drift and rollout reconciles make no extra list.
            run.writes += await prune_jobs(client, obj, uid, migration.name(obj))
        if database.create_job:
            # After the ConfigMap and Secrets its pod reads, and after the pass that created the
            # database and the app role the migration grants to.
            try:
                created_job = await provisioning.ensure_job(client, obj, owner_reference(body))
                run.writes += int(created_job)
                run.children.append(_summary(migration.job(obj), "Applied"))
            except kube.ApiError as exc:
                run.failed(migration.job(obj), exc)

    notes: list[str] = []
    if not integrations.has(kinds.SCALED_OBJECT) and keda.queue_length_groups(obj):
        groups = ", ".join(g.name for g in keda.queue_length_groups(obj))
        notes.append(f"KEDA is not installed: worker groups {groups} run without autoscaling")

    names = [deployment.name(obj)]
    names += [worker.name(obj, g) for g in (obj.spec.queue.workers if obj.spec.queue else [])]
    deployments: dict[str, Mapping[str, Any] | None] = {}
    for name in names:
        # Fresh, not what the apply returned: the rollout is in the status the controller writes.
        deployments[name] = await client.get(kinds.DEPLOYMENT, obj.namespace, name)
    api, *workers = [observe.rollout(deployments[name], name) for name in names]
    collector_spec = obj.spec.observability.otel_collector
    # Deployments held back until a migration succeeds have no pod template to look at yet.
    looked_at = {n: d for n, d in deployments.items() if ("apps/v1", "Deployment", n) not in held}
    collector = (
        observe.collector(otel.enabled(obj), otel.CONTAINER, collector_spec.image, looked_at)
        if looked_at
        else None
    )

    observation = status.Observation(
        generation=generation,
        paused=obj.spec.paused,
        # Nothing was applied: the last reconcile's account of the children stands.
        children=run.children if applying else (previous.children if previous else []),
        api=api,
        workers=workers,
        monitoring=await _monitoring(client, obj, integrations, run.children, run.seen),
        collector=collector,
        missing_secrets=missing,
        error=run.temporary,
        max_connections=model.max_connections(obj.spec),
        unscaled=notes,
        database=database.verdict,
        database_status=provisioning.database_status(
            previous,
            image=database.image,
            report=database.report,
            verdict=database.verdict,
            periodic=periodic,
            now=now,
        ),
    )
    new_status = status.compute(observation, previous, now)
    result = "error" if run.temporary else "ok"
    telemetry.RECONCILES.labels(result=result).inc()
    telemetry.RECONCILE_SECONDS.labels(result=result).observe(time.perf_counter() - started)
    if run.temporary is None:
        telemetry.LAST_SUCCESS.set(time.time())
    return Outcome(
        new_status,
        status.transitions(previous, new_status),
        run.writes,
        run.temporary,
        desired=desired,
        secret_versions=_with_admin(versions, obj, database.admin_version),
        rollouts=[api, *workers],
        events=database.events,
        retry_database_in=database.retry_in,
        migration=database.migration,
        database_passed=database.report is not None,
    )


@dataclass
class _Database:
    """What the database step of one reconcile found and did."""

    verdict: Verdict | None
    image: str | None
    """The image the Deployments run: the one whose migration Job succeeded last."""
    report: Report | None = None
    secrets: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    retry_in: float | None = None
    migration: tuple[str, bool] | None = None
    create_job: bool = False
    admin_version: str | None = None


async def _database(
    client: kube.Client,
    obj: BackendService,
    body: Mapping[str, Any],
    integrations: Integrations,
    run: _Writes,
    previous: model.BackendServiceStatus | None,
    backoff: provisioning.Backoff | None,
    *,
    periodic: bool,
    drift: bool,
    database_pass: bool,
) -> _Database:
    """The database step (see `provisioning`): its Secrets applied, one bounded pass unless
    backing off, the migration Job created, and the image the Deployments may run."""
    owner = owner_reference(body)
    backoff = backoff if backoff is not None else provisioning.Backoff()
    kept = provisioning.previous_verdict(previous)
    image = provisioning.migrated_image(previous)
    try:
        inputs, password, new = await provisioning.read_inputs(client, obj, owner)
    except kube.ApiError as exc:
        run.failed(_password_shape(obj), exc)
        return _Database(verdict=kept, image=image)
    found: dict[str, Mapping[str, Any]] = {}
    admin = inputs.admin_version
    if password is not None:
        run.writes += int(new)
        run.children.append(_summary(password, "Applied"))
        found[password["metadata"]["name"]] = password
    await _apply(client, inputs.derived, integrations, run, drift=drift)
    for secret in inputs.derived:
        live = run.seen.get(_key(secret))
        if live is not None:
            found[secret["metadata"]["name"]] = live
    if inputs.problem is not None:
        retry_in = backoff.record(True, time.monotonic(), admin)
        verdict = provisioning.problem_verdict(inputs.problem)
        return _Database(
            verdict=verdict, image=image, secrets=found, retry_in=retry_in, admin_version=admin
        )

    job_name = migration.name(obj)
    try:
        job = await client.get(kinds.JOB, obj.namespace, job_name)
    except kube.ApiError as exc:
        run.failed(migration.job(obj), exc)
        return _Database(verdict=kept, image=image, secrets=found, admin_version=admin)
    succeeded = migration.succeeded(job)
    failure = provisioning.job_failure(job)
    if succeeded:
        image = obj.spec.image
    state = (job_name, succeeded or failure is not None)
    if not database_pass or (backoff.held(time.monotonic(), admin) and not periodic):
        if job is not None:
            run.children.append(_summary(migration.job(obj), "Applied"))
        return _Database(
            verdict=kept, image=image, secrets=found, migration=state, admin_version=admin
        )

    report = await provisioning.run_pass(inputs, obj, migrated=succeeded)
    verdict = provisioning.verdict(report, job_name, failure)
    unusable = report.observations.unreachable is not None or report.observations.busy
    retry_in = backoff.record(unusable, time.monotonic(), admin)
    events = []
    event = report.event()
    if event is not None:
        reason, message = event
        # Changes before isolation was ever proven complete the first provisioning (e.g. the
        # policies of an image whose migrate does not apply them): not drift.
        if not (previous and previous.database and previous.database.last_verified):
            reason = "DatabaseProvisioned"
        events.append(("Normal" if reason == "DatabaseProvisioned" else "Warning", reason, message))
    news = kept is None or (kept.status, kept.reason) != (verdict.status, verdict.reason)
    if report.unmanaged_policies and (news or report.changes):
        # Said when the outcome changes, not on every pass: they are reported, never dropped.
        names = ", ".join(report.unmanaged_policies)
        events.append(("Warning", "UnmanagedPolicies", f"policies adbm did not create: {names}"))
    if job is not None:
        run.children.append(_summary(migration.job(obj), "Applied"))
    return _Database(
        create_job=job is None and not unusable,
        verdict=verdict,
        image=image,
        report=report,
        secrets=found,
        events=events,
        retry_in=retry_in,
        migration=state,
        admin_version=admin,
    )


def _with_admin(
    versions: Mapping[str, str], obj: BackendService, admin: str | None
) -> dict[str, str]:
    """The versions the Secret watch compares with: the pods' Secrets and the admin's (whose
    change is reconciled too; the pods do not read it, so it is not in their checksum)."""
    name = obj.spec.database.admin_secret_ref.name
    return {**versions, name: admin} if admin is not None else dict(versions)


def _password_shape(obj: BackendService) -> dict[str, Any]:
    """The password Secret as a child summary names it, for a failure before it was read."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": dbsecrets.password_secret_name(obj)},
    }


def _render(
    obj: BackendService, image: str | None, versions: Mapping[str, str]
) -> tuple[list[dict[str, Any]], set[tuple[str, str, str]]]:
    """The children, the Deployments running `image` (the last migrated one). With no image
    migrated yet the Deployments are held back: not applied, and not pruned either (what runs
    stays until a migration succeeds), returned as the second value."""
    serving = obj
    if image is not None and image != obj.spec.image:
        serving = obj.model_copy(update={"spec": obj.spec.model_copy(update={"image": image})})
    desired = specs.render(serving, secret_versions=versions)
    if image is not None:
        return desired, set()
    held = {_key(c) for c in desired if c["kind"] == "Deployment"}
    return [c for c in desired if _key(c) not in held], held


@dataclass
class _Writes:
    """What one reconcile's writing pass did and saw."""

    children: list[ChildSummary] = field(default_factory=list)
    seen: dict[tuple[str, str, str], dict[str, Any] | None] = field(default_factory=dict)
    """Every live object read or written, by (apiVersion, kind, name)."""
    writes: int = 0
    temporary: str | None = None

    def failed(self, child: Mapping[str, Any], exc: kube.ApiError) -> None:
        self.children.append(_summary(child, "Failed", exc.message))
        if exc.temporary:
            self.temporary = str(exc)


async def _create_absent(
    client: kube.Client, shapes: Sequence[Mapping[str, Any]], run: _Writes
) -> dict[str, Mapping[str, Any]]:
    """Create what `specs.created_once` asks for where it is absent; the live objects by name."""
    created: dict[str, Mapping[str, Any]] = {}
    for shape in shapes:
        try:
            live, new = await ensure_created(client, shape)
        except kube.ApiError as exc:
            run.failed(shape, exc)
            continue
        created[shape["metadata"]["name"]] = live
        run.writes += int(new)
        run.children.append(_summary(shape, "Applied"))
    return created


async def _apply(
    client: kube.Client,
    desired: Sequence[dict[str, Any]],
    integrations: Integrations,
    run: _Writes,
    *,
    drift: bool,
) -> None:
    """Apply each child that is not already as rendered."""
    for child in desired:
        kind = kinds.of(child)
        if not integrations.has(kind):
            run.children.append(_summary(child, "Skipped", f"{kind.plural} CRD not installed"))
            continue
        try:
            live = await client.get(kind, child["metadata"]["namespace"], child["metadata"]["name"])
            if live is None or differs(child, live):
                live = await client.apply(child)
                run.writes += 1
                telemetry.CHILDREN_APPLIED.labels(kind=child["kind"]).inc()
                if drift:
                    telemetry.DRIFT_CORRECTIONS.labels(kind=child["kind"]).inc()
        except kube.ApiError as exc:
            run.failed(child, exc)
            continue
        run.seen[_key(child)] = live
        run.children.append(_summary(child, "Applied"))


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    return (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])


async def _monitoring(
    client: kube.Client,
    obj: BackendService,
    integrations: Integrations,
    children: Sequence[ChildSummary],
    seen: Mapping[tuple[str, str, str], Mapping[str, Any] | None],
) -> observe.Monitoring:
    """Whether Prometheus can scrape this object through its ServiceMonitor, as observed: the
    live ServiceMonitor selects the live Service's metrics port."""
    monitor = servicemonitor.build(obj)
    if monitor is None:
        return observe.Monitoring("Disabled")
    if not integrations.has(kinds.SERVICE_MONITOR):
        return observe.Monitoring("CRDNotInstalled")
    if any(c.kind == "ServiceMonitor" and c.state == "Failed" for c in children):
        return observe.Monitoring("Failed")
    api_service = service.build(obj)
    live: dict[str, Mapping[str, Any] | None] = {}
    for wanted in (monitor, api_service):
        key = _key(wanted)
        # Read back when this reconcile did not already hold it (paused, or only observing).
        live[wanted["kind"]] = (
            seen[key]
            if key in seen
            else await client.get(kinds.of(wanted), obj.namespace, wanted["metadata"]["name"])
        )
    return observe.monitoring(live["ServiceMonitor"], live["Service"], deployment.METRICS_PORT_NAME)


async def prune(
    client: kube.Client,
    obj: BackendService,
    uid: str,
    desired: Sequence[Mapping[str, Any]],
    integrations: Integrations,
    keep: set[tuple[str, str, str]] | None = None,
) -> int:
    """Delete children this object owns that the spec no longer asks for (a worker group
    removed, the ServiceMonitor or the collector turned off); `keep` is spared as well."""
    wanted = {_key(c) for c in desired} | (keep or set())
    deleted = 0
    for kind in kinds.APPLIED:
        if not integrations.has(kind):
            continue
        for live in await client.list(kind, obj.namespace, {labels.OWNER_LABEL: obj.name}):
            if (kind.api_version, kind.kind, live["metadata"]["name"]) not in wanted and owned(
                live, uid
            ):
                await client.delete(kind, obj.namespace, live["metadata"]["name"])
                deleted += 1
    return deleted


async def prune_jobs(client: kube.Client, obj: BackendService, uid: str, current: str) -> int:
    """Delete the migration Jobs this object owns other than `current` (the Job of the image
    deployed now): each image's Job is kept until a newer image has migrated, then it would only
    accumulate until the BackendService is deleted. `kube.Client.delete` asks for Background
    propagation, so the Job's pods go with it (a batch/v1 Job deleted without a propagation
    policy orphans its pods)."""
    selector = {labels.OWNER_LABEL: obj.name, labels.COMPONENT_LABEL: migration.COMPONENT}
    deleted = 0
    for live in await client.list(kinds.JOB, obj.namespace, selector):
        name = live["metadata"]["name"]
        if name != current and owned(live, uid):
            await client.delete(kinds.JOB, obj.namespace, name)
            deleted += 1
    return deleted
