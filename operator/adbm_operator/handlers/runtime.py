"""State the handlers share for one operator run: the API client, what the cluster serves, and a
lock per BackendService so two triggers never reconcile the same object at once.

Reconciles run at most `MAX_CONCURRENT` at a time. A reconcile waiting for a slot holds nothing
of the object (it reads it once it has one), so the event handlers work as a controller's work
queue: `enqueue` records what the object needs and returns at once, the reconcile runs in a
task of its own, and an event of an object that already has a reconcile waiting joins it
instead of queueing a second one behind it (one entry per key). Before, every child, Job and
Secret event waited for its reconcile with the event in hand, and Kopf with it: at N=1000 some
20,000 handlers held 4,600 objects' bodies, 200 MB at the peak (`bench/RESULTS.md`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from adbm_operator import backoff, kinds, kube, model, provisioning, reconcile, status

logger = logging.getLogger("adbm_operator")

MAX_CONCURRENT = 32


@dataclass
class Queued:
    """A reconcile of one object waiting for a slot, and what it is to do: each trigger that
    joins it adds what it asks for (a drift count, writes, the provisioning pass, the
    verification that runs while backing off)."""

    drift: bool
    write: bool
    database_pass: bool
    periodic: bool
    expect_uid: str | None

    def join(self, other: Queued) -> None:
        self.drift |= other.drift
        self.write |= other.write
        self.database_pass |= other.database_pass
        self.periodic |= other.periodic


@dataclass
class Runtime:
    integrations: reconcile.Integrations = field(default_factory=reconcile.Integrations)
    client: kube.Client | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    # The reconcile of each object that is waiting for a slot, if any (see `enqueue`), and the
    # tasks running the enqueued ones.
    queued: dict[tuple[str, str], Queued] = field(default_factory=dict)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    retries: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)
    # What the last reconcile of each BackendService rendered and read: events that match it
    # are our own writes coming back, and need no reconcile. Kept packed (`pack`): as dicts
    # the ten children of one object take ~45 KB, packed ~4 KB, and only a child's own event
    # unpacks its entry.
    rendered: dict[tuple[str, str], dict[tuple[str, str, str], bytes]] = field(default_factory=dict)
    secrets_seen: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    # The last rollout state seen per Deployment: a status event that changes nothing of it
    # (a heartbeat, a replica count inside a rollout already reported) needs no reconcile.
    rollouts: dict[tuple[str, str], Any] = field(default_factory=dict)
    # Bounds concurrent reconciles: thousands of objects at start-up queue here rather than in
    # the HTTP client, where waiting would count against request timeouts.
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT))
    # Per BackendService: unusable database servers seen in a row, and the next provisioning
    # pass (the verification timer, or the retry while backing off), one pending task each.
    database: dict[tuple[str, str], provisioning.Backoff] = field(default_factory=dict)
    verifiers: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)
    migrations: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)
    """(migration Job name, finished) the last reconcile of each BackendService saw."""
    verify_interval: float | None = None
    """Overrides every object's `database.verifyIntervalSeconds` (tests; None in production)."""

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is kept about a deleted BackendService."""
        key = (namespace, name)
        for _, kind, child in self.rendered.pop(key, {}):
            if kind == "Deployment":
                self.rollouts.pop((namespace, child), None)
        self.secrets_seen.pop(key, None)
        self.locks.pop(key, None)
        self.database.pop(key, None)
        self.migrations.pop(key, None)
        for tasks in (self.retries, self.verifiers):
            task = tasks.pop(key, None)
            if task is not None and task is not asyncio.current_task():
                task.cancel()

    async def api(self) -> kube.Client:
        await self.connected.wait()
        assert self.client is not None
        return self.client

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self.locks.setdefault((namespace, name), asyncio.Lock())


def of(memo: Any) -> Runtime:
    runtime = memo.get("runtime") if isinstance(memo, Mapping) else None
    if not isinstance(runtime, Runtime):
        raise RuntimeError("start the operator with memo=runtime.new_memo()")
    return runtime


def new_memo(*, verify_interval: float | None = None) -> kopf.Memo:
    return kopf.Memo(runtime=Runtime(verify_interval=verify_interval))


async def converge(
    rt: Runtime,
    namespace: str,
    name: str,
    *,
    expect_uid: str | None = None,
    drift: bool = False,
    write: bool = True,
    periodic: bool = False,
    database_pass: bool = True,
    log: logging.Logger | logging.LoggerAdapter[Any] = logger,
) -> reconcile.Outcome:
    """Reconcile one BackendService under its lock, then publish status and events. The object
    is read under the lock, so a trigger never acts on a version another one moved past.
    LookupError when it is gone (or is another object of the same name than `expect_uid`)."""
    request = Queued(drift, write, database_pass, periodic, expect_uid)
    return await _run(rt, namespace, name, request, log)


def _joined(rt: Runtime, key: tuple[str, str], request: Queued) -> bool:
    """Whether a reconcile of the object already waiting for a slot takes `request` on: it
    reads the object after this trigger's event, and does what the trigger asks too."""
    waiting = rt.queued.get(key)
    if waiting is None or waiting.expect_uid not in (None, request.expect_uid):
        return False
    waiting.join(request)
    return True


async def trigger(
    rt: Runtime,
    namespace: str,
    name: str,
    *,
    expect_uid: str | None = None,
    drift: bool = False,
    write: bool = True,
    periodic: bool = False,
    database_pass: bool = True,
    log: logging.Logger | logging.LoggerAdapter[Any] = logger,
) -> reconcile.Outcome | None:
    """`converge` for a timer or a retry; None when it joined a reconcile of the object already
    waiting for a slot (whose caller handles its outcome)."""
    request = Queued(drift, write, database_pass, periodic, expect_uid)
    if _joined(rt, (namespace, name), request):
        return None
    return await _run(rt, namespace, name, request, log)


def enqueue(
    rt: Runtime,
    namespace: str,
    name: str,
    why: str,
    *,
    expect_uid: str | None = None,
    drift: bool = False,
    write: bool = True,
    database_pass: bool = True,
    corrected: str | None = None,
    log: logging.Logger | logging.LoggerAdapter[Any] = logger,
) -> None:
    """For event handlers: reconcile the object soon, in a task of its own, and return at once,
    so the event is let go. It joins a reconcile of the object already waiting, if any. A
    failure is logged (`why` says what triggered it) and retried (`retry_later`); with
    `corrected`, a reconcile that wrote logs that it corrected the drift of that child."""
    key = (namespace, name)
    request = Queued(drift, write, database_pass, False, expect_uid)
    if _joined(rt, key, request):
        return
    # Registered now, not when the task first runs: the next event already joins it.
    rt.queued[key] = request

    async def run() -> None:
        try:
            outcome = await _run(rt, namespace, name, request, log)
        except LookupError:
            return  # gone (or replaced): nothing to reconcile
        except kube.ApiError as exc:
            log.warning(f"reconcile after {why} failed: {exc}")
            retry_later(rt, namespace, name)
            return
        except Exception:
            log.exception(f"reconcile after {why} failed")
            retry_later(rt, namespace, name)
            return
        if corrected is not None and outcome.writes:
            log.info(f"corrected drift of {corrected}")
        if outcome.temporary_error:
            retry_later(rt, namespace, name)

    task = asyncio.get_running_loop().create_task(run())
    rt.background.add(task)
    task.add_done_callback(rt.background.discard)


async def _run(
    rt: Runtime,
    namespace: str,
    name: str,
    request: Queued,
    log: logging.Logger | logging.LoggerAdapter[Any],
) -> reconcile.Outcome:
    client = await rt.api()
    key = (namespace, name)
    rt.queued.setdefault(key, request)
    try:
        # The slot first, then the object's lock: the lock is held only while a reconcile
        # runs, so the event handlers that read what it recorded (under the lock) wait for
        # one reconcile at most, not for the queue of slots.
        async with rt.slots:
            if rt.queued.get(key) is request:
                del rt.queued[key]  # from here on it reads the object: later triggers follow
            async with rt.lock(namespace, name):
                return await _reconcile(rt, client, namespace, name, request, log)
    finally:
        if rt.queued.get(key) is request:
            del rt.queued[key]


async def _reconcile(
    rt: Runtime,
    client: kube.Client,
    namespace: str,
    name: str,
    request: Queued,
    log: logging.Logger | logging.LoggerAdapter[Any],
) -> reconcile.Outcome:
    key = (namespace, name)
    write = request.write
    fresh = await client.get(kinds.BACKEND_SERVICE, namespace, name)
    if fresh is None or fresh["metadata"].get("deletionTimestamp"):
        raise LookupError(f"BackendService {namespace}/{name} is gone")
    if request.expect_uid is not None and fresh["metadata"].get("uid") != request.expect_uid:
        raise LookupError(f"BackendService {namespace}/{name} was replaced")
    outcome = await reconcile.reconcile(
        client,
        fresh,
        rt.integrations,
        drift=request.drift,
        write=write,
        known_secrets=None if write else rt.secrets_seen.get(key),
        backoff=rt.database.setdefault(key, provisioning.Backoff()),
        periodic=request.periodic,
        database_pass=request.database_pass,
    )
    await publish(client, fresh, outcome, log)
    rt.rendered[key] = {identity(c): pack(c) for c in outcome.desired}
    rt.secrets_seen[key] = outcome.secret_versions
    for rollout in outcome.rollouts:
        rt.rollouts[(namespace, rollout.name)] = rollout
    if outcome.migration is not None:
        rt.migrations[key] = outcome.migration
    pending = rt.verifiers.get(key)
    if outcome.database_passed or (write and (pending is None or pending.done())):
        schedule_pass(rt, namespace, name, _next_pass(rt, fresh, outcome))
    return outcome


def _next_pass(rt: Runtime, body: Mapping[str, Any], outcome: reconcile.Outcome) -> float:
    """Seconds until the next provisioning pass: the backoff's retry while the server is
    unusable, else the verification interval."""
    if outcome.retry_database_in is not None:
        return outcome.retry_database_in
    if rt.verify_interval is not None:
        return rt.verify_interval
    database = (body.get("spec") or {}).get("database") or {}
    return float(database.get("verifyIntervalSeconds", model.defaults.VERIFY_INTERVAL_SECONDS))


def schedule_pass(rt: Runtime, namespace: str, name: str, delay: float) -> None:
    """The verification timer of one BackendService: after `delay`, a reconcile whose
    provisioning pass re-proves isolation and repairs drift. Every reconcile that writes moves
    it (a pass just ran), so an object busy with changes is not verified twice as often, and
    one whose spec changed its interval follows the new one. A reconcile without a pass (a
    child's drift) leaves it as it is. Kopf's own timers and daemons
    would put a finalizer on every object; this one needs none (it is cancelled when the
    object is deleted), so only `deletionPolicy: Delete` brings a finalizer."""
    key = (namespace, name)
    pending = rt.verifiers.get(key)
    if pending is not None and pending is not asyncio.current_task() and not pending.done():
        pending.cancel()

    async def later() -> None:
        await asyncio.sleep(delay)
        try:
            await trigger(rt, namespace, name, periodic=True)
        except LookupError:
            return
        except kube.ApiError as exc:
            logger.warning(f"verification of {namespace}/{name} failed: {exc}")
            retry_later(rt, namespace, name)

    rt.verifiers[key] = asyncio.get_running_loop().create_task(later())


def enqueue_each(
    rt: Runtime,
    objects: Iterable[tuple[str, str]],
    why: str,
    log: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """Enqueue several BackendServices after a shared trigger; each fails and is retried on
    its own."""
    for namespace, name in objects:
        enqueue(rt, namespace, name, why, log=log)


def identity(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    return (obj.get("apiVersion", ""), obj.get("kind", ""), obj["metadata"]["name"])


def pack(obj: Mapping[str, Any]) -> bytes:
    """A rendered child as compact JSON, compressed (it is what the API was sent, so JSON
    holds all of it)."""
    return zlib.compress(json.dumps(obj, separators=(",", ":")).encode(), 1)


def unpack(packed: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(zlib.decompress(packed))
    return obj


async def publish(
    client: kube.Client,
    body: Mapping[str, Any],
    outcome: reconcile.Outcome,
    log: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """Write the status only when it changed (an idle operator writes nothing), and post one
    Event per condition that changed."""
    meta = body["metadata"]
    patch = status.as_patch(outcome.status)
    if _comparable(body.get("status")) != _comparable(patch):
        await client.patch_status(kinds.BACKEND_SERVICE, meta["namespace"], meta["name"], patch)
    for t in outcome.transitions:
        kopf.event(
            cast(kopf.Body, body),
            type="Warning" if t.warning else "Normal",
            reason=t.reason,
            message=f"{t.type}={t.status}: {t.message}"[:1024],
        )
        log.info(f"{t.type} is now {t.status} ({t.reason}): {t.message}")
    for kind, reason, message in outcome.events:
        kopf.event(cast(kopf.Body, body), type=kind, reason=reason, message=message[:1024])
        log.info(f"{reason}: {message}")


def _comparable(raw: Any) -> dict[str, Any]:
    parsed = status.parse(raw) if raw else None
    return status.as_patch(parsed) if parsed else {}


def retry_later(rt: Runtime, namespace: str, name: str, attempt: int = 0) -> None:
    """Converge again after a delay: for triggers whose temporary failure nothing else retries
    (child, Secret and CRD events). Retried with the backoff Kopf's own retries use while the
    failure is temporary, until it succeeds or the object is gone; one pending retry per object."""
    key = (namespace, name)
    if key in rt.retries and not rt.retries[key].done():
        return

    async def later() -> None:
        await asyncio.sleep(backoff.delay(attempt))
        try:
            outcome = await trigger(rt, namespace, name)
            if outcome is None:
                # Joined a reconcile already waiting: its caller retries it if it fails.
                rt.retries.pop(key, None)
                return
        except LookupError:
            return
        except kube.ApiError as exc:
            logger.warning(f"retry of {namespace}/{name} failed: {exc}")
            if not exc.temporary:
                rt.retries.pop(key, None)
                return  # as a PermanentError stops Kopf's retries: the next event tries again
            outcome = None
        if outcome is None or outcome.temporary_error:
            rt.retries.pop(key, None)
            retry_later(rt, namespace, name, attempt + 1)

    rt.retries[key] = asyncio.get_running_loop().create_task(later())
