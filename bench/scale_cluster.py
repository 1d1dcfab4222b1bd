"""The emulated cluster of `bench/operator_scale.py`: the test emulator with the costs that grow
with the run taken out, request counting by sender and verb, the BackendServices created, and
the Deployment controller this benchmark plays.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import sys
import time
import types
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import kmock
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `tests.operator.emulator` lives in the repo, not in a package
    sys.path.insert(0, str(ROOT))

from adbm_operator import kinds, model, specs  # noqa: E402
from tests.operator import emulator as emulator_module  # noqa: E402
from tests.operator.emulator import (  # noqa: E402
    AdbmEmulator,
    Requirement,
    key_of,
    register_standard_resources,
)


def _fast_safe_load(text: str | bytes) -> Any:
    """What `yaml.safe_load` returns, ~50x faster: apply bodies are JSON (the operator sends
    JSON, as kubectl does), else libyaml. Pure-Python PyYAML costs the emulator ~15 ms per
    Deployment apply, which would be counted against the operator."""
    try:
        return json.loads(text)
    except ValueError:
        return yaml.load(text, Loader=yaml.CSafeLoader)


# Only the emulator's module sees this; it reads `yaml.safe_load` and `yaml.YAMLError`.
setattr(  # noqa: B010 (a module attribute, not a typed one)
    emulator_module, "yaml", types.SimpleNamespace(**{**vars(yaml), "safe_load": _fast_safe_load})
)

HOST = "127.0.0.1"
BENCH_AGENT = "adbm-bench"
BASELINE_AGENT = "adbm-bench-baseline"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
READS = ("get", "list", "watch")
# A real controller-manager syncs a handful of Deployments at once (--concurrent-deployment-syncs).
CONTROLLER_WORKERS = 16
CREATE_CONCURRENCY = 32
QUIET_SECONDS = 5.0
BASELINE_CONCURRENCY = 64  # the operator's own client allows 64 connections
DATABASE_PREFIX = "adbmbench_"
"""Every database and app role of a run starts with this: what `scale_platform` drops."""


def agent_of(headers: Mapping[str, str]) -> str:
    ua = next((v for k, v in headers.items() if k.lower() == "user-agent"), "")
    if ua.startswith("adbm-operator"):
        return "operator"
    if ua.startswith("kopf/"):
        return "kopf"
    if ua.startswith(BASELINE_AGENT):
        return "baseline"
    return "bench"


def verb_of(request: kmock.Request) -> str:
    method = str(request.method.value)
    if request.resource is None:
        return "discovery"
    sub = f"/{request.subresource}" if request.subresource else ""
    if method == "GET":
        if request.name is not None:
            return "get" + sub
        return "watch" if request.params.get("watch") in ("true", "1") else "list"
    if method == "PATCH":
        ctype = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
        return ("apply" if ctype.split(";")[0].strip() == APPLY else "patch") + sub
    return {"POST": "create", "PUT": "update", "DELETE": "delete"}.get(method, method) + sub


@attrs.define(kw_only=True)
class BenchEmulator(AdbmEmulator):
    """The test emulator, counting requests by sender, with GET and LIST served from indexes.

    The indexes change no answer, only the cost: kmock 0.8 serves a GET by name by scanning every
    stored object of every kind, and `AdbmEmulator._current` does the same for each LIST, so with
    N BackendServices (about 12 N objects) every read costs O(N) and the operator's reads add up
    to O(N²) emulator time that says nothing about the operator. A real API server serves both
    from its watch cache by resource and namespace; so do these indexes.
    """

    by_agent: collections.Counter[tuple[str, str]] = attrs.field(
        factory=collections.Counter, init=False
    )
    # (resource, namespace) -> keys of every object ever stored there (deleted ones are skipped).
    _index: dict[tuple[str, str | None], dict[Any, None]] = attrs.field(factory=dict, init=False)
    _indexed: int = attrs.field(default=0, init=False)
    # Plurals Kopf has opened a watch on, and every watch opened: (time, plural, query).
    watched: set[str] = attrs.field(factory=set, init=False)
    watch_log: list[tuple[float, str, str]] = attrs.field(factory=list, init=False)

    async def _handle(self, request: kmock.Request) -> Any:
        # kmock 0.8 picks the reaction for a request by checking `request in view` for each
        # reaction, which walks every request received so far: O(R) per request, O(R²) per run
        # (with a few thousand requests, ~100 ms each). Nothing here reads kmock's request log,
        # so it is kept to the request being served (already appended by kmock; no await
        # happens between that append and the reaction lookup, so in-flight requests are safe).
        del self._requests[:-1]
        for payload in self._payloads:
            del payload._requests[:]
        agent, verb = agent_of(request.headers), verb_of(request)
        self.by_agent[agent, verb] += 1
        if (agent, verb) == ("kopf", "watch") and request.resource is not None:
            self.watched.add(str(request.resource.plural))
            query = "&".join(f"{k}={v}" for k, v in sorted(request.params.items()))
            self.watch_log.append((time.perf_counter(), str(request.resource.plural), query))
        return await super()._handle(request)

    def _current(self, request: kmock.Request, selector: list[Requirement]) -> list[dict[str, Any]]:
        # Catch up with the change log (append-only), then look only where the request looks.
        for change in self.changelog[self._indexed :]:
            meta = change.object.get("metadata", {})
            key = (change.resource, meta.get("namespace"), meta.get("name"))
            self._index.setdefault((str(change.resource), key[1]), {})[key] = None
        self._indexed = len(self.changelog)
        if request.namespace is not None:
            buckets = [self._index.get((str(request.resource), request.namespace), {})]
        else:
            buckets = [v for (r, _), v in self._index.items() if r == str(request.resource)]
        found = []
        for bucket in buckets:
            for key in bucket:
                obj = self.objects[key]
                if not obj.deleted and self._visible(request, selector, obj.raw):
                    found.append(obj.raw)
        return found

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        # The object's key is what the emulator stores it under: resource, namespace (None for
        # cluster-scoped kinds), name.
        key = key_of(request)
        async with self._cond:
            try:
                obj = self.objects[key]
            except KeyError:
                raise kmock.KubernetesObjectNotFoundError() from None
        if obj.deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return obj.raw


@dataclass
class Counts:
    """Requests by (sender, verb), and the parts of them this report cares about."""

    raw: dict[tuple[str, str], int]

    def of(self, agents: Iterable[str], verbs: Iterable[str] | None = None) -> int:
        agents, wanted = set(agents), None if verbs is None else set(verbs)
        return sum(
            n
            for (a, v), n in self.raw.items()
            if a in agents and (wanted is None or v.split("/")[0] in wanted)
        )

    def reads(self, *agents: str) -> int:
        return self.of(agents, READS)

    def writes(self, *agents: str) -> int:
        return self.of(agents) - self.reads(*agents) - self.of(agents, ["discovery"])

    def minus(self, earlier: Counts) -> Counts:
        keys = set(self.raw) | set(earlier.raw)
        return Counts({k: self.raw.get(k, 0) - earlier.raw.get(k, 0) for k in keys})


def snapshot(emulator: BenchEmulator) -> Counts:
    return Counts(dict(emulator.by_agent))


# ---------------------------------------------------------------------------------------------
# What is created


def backend_body(namespace: str, name: str, index: int) -> dict[str, Any]:
    """examples/minimal.yaml plus one worker group, renamed; every Secret is its own, and so
    are the database and the app role (named `PREFIX<index>`, see `scale_platform`)."""
    body: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    body["metadata"] = {"name": name, "namespace": namespace}
    body["spec"]["database"]["name"] = f"{DATABASE_PREFIX}{index:05d}"
    body["spec"]["database"]["appRole"] = f"{DATABASE_PREFIX}{index:05d}_app"
    body["spec"]["database"]["adminSecretRef"]["name"] = f"{name}-db-superuser"
    body["spec"]["redis"]["secretRef"]["name"] = f"{name}-redis"
    body["spec"]["queue"] = {
        "secretRef": {"name": f"{name}-rabbitmq"},
        "workers": [{"name": "orders", "queues": ["orders.place"], "replicas": 1}],
    }
    return body


def bodies(n: int, namespaces: int) -> list[dict[str, Any]]:
    return [backend_body(f"bench-{i % namespaces}", f"svc-{i:05d}", i) for i in range(n)]


def applied_children(body: dict[str, Any]) -> list[dict[str, Any]]:
    """What the operator applies for `body` here: all it renders but the kinds that exist only
    with a CRD (this benchmark serves none)."""
    return [c for c in specs.render(model.parse(body)) if kinds.of(c).crd is None]


def path_of(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    prefix = "/api" if "/" not in api_version else "/apis"
    path = f"{prefix}/{api_version}"
    if namespace is not None:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    return f"{path}/{name}" if name else path


def child_path(child: Mapping[str, Any]) -> str:
    meta = child["metadata"]
    return kinds.of(child).path(meta["namespace"], meta["name"])


# ---------------------------------------------------------------------------------------------
# The emulated cluster


@contextlib.asynccontextmanager
async def cluster() -> AsyncIterator[tuple[BenchEmulator, kmock.Server]]:
    """A fresh emulator served on 127.0.0.1 (a random port), as kmock's pytest fixture does."""
    async with BenchEmulator() as emulator, kmock.Server(emulator, host=HOST) as server:
        register_standard_resources(emulator)
        yield emulator, server


async def call(
    session: aiohttp.ClientSession,
    base: str,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
    params: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    async with session.request(
        method,
        base + path,
        data=None if body is None else json.dumps(body),
        headers={"Content-Type": content_type},
        params=params,
    ) as response:
        text = await response.text()
        if response.status >= 400:
            raise RuntimeError(f"{method} {path}: {response.status} {text[:300]}")
        result: dict[str, Any] = json.loads(text) if text else {}
        return result


async def bounded(concurrency: int, jobs: Iterable[Any]) -> None:
    """Run coroutines with at most `concurrency` in flight; the first failure is raised."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(job: Any) -> None:
        async with semaphore:
            await job

    await asyncio.gather(*(one(job) for job in jobs))


def session_for(concurrency: int, agent: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        headers={"User-Agent": agent},
        timeout=aiohttp.ClientTimeout(total=60),
    )


@dataclass
class Controller:
    """Plays the Deployment controller and watches readiness, from the emulator's change log
    (in-process: the same events a watch would stream, without HTTP cost to the emulator)."""

    emulator: BenchEmulator
    session: aiohttp.ClientSession
    base: str
    expected: set[tuple[str, str]]
    rollout_seconds: float = 0.0
    on_job: Callable[[dict[str, Any]], None] | None = None
    """Plays the Job's pods (`scale_platform.JobRuntime.see`) for each Job seen."""
    ready_at: dict[tuple[str, str], float] = field(default_factory=dict)
    marked: dict[tuple[str, str], int] = field(default_factory=dict)
    status_writes: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    _queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    async def run(self) -> None:
        workers = [asyncio.create_task(self._worker()) for _ in range(CONTROLLER_WORKERS)]
        position = 0
        try:
            while True:
                log = self.emulator.changelog
                batch, position = log[position:], len(log)
                for change in batch:
                    self._see(str(change.resource.plural), change.type, change.object)
                await asyncio.sleep(0.02)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    def _see(self, plural: str, type_: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        if type_ == "DELETED":
            return
        if plural == "deployments":
            generation = int(meta.get("generation", 0))
            observed = int((obj.get("status") or {}).get("observedGeneration", 0))
            if observed < generation and self.marked.get(key) != generation:
                self.marked[key] = generation
                if self.rollout_seconds:  # pods take a while to become available
                    loop = asyncio.get_running_loop()
                    loop.call_later(self.rollout_seconds, self._queue.put_nowait, obj)
                else:
                    self._queue.put_nowait(obj)
        elif plural == "jobs" and self.on_job is not None:
            self.on_job(obj)
        elif plural == "backendservices" and key in self.expected and key not in self.ready_at:
            conditions = (obj.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                self.ready_at[key] = time.perf_counter() - self.started

    async def _worker(self) -> None:
        while True:
            obj = await self._queue.get()
            meta = obj["metadata"]
            replicas = (obj.get("spec") or {}).get("replicas", 1)
            status = {
                "observedGeneration": meta["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [{"type": "Available", "status": "True"}],
            }
            path = path_of("apps/v1", "deployments", meta["namespace"], meta["name"]) + "/status"
            try:
                await call(self.session, self.base, "PATCH", path, {"status": status}, MERGE)
                self.status_writes += 1
            except (RuntimeError, aiohttp.ClientError, TimeoutError) as exc:
                self.errors.append(f"{meta['namespace']}/{meta['name']}: {exc!r}")
