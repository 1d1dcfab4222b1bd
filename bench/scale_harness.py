"""The harness of `bench/operator_scale.py`: the baseline client, and one run of the real
operator CLI against the emulated cluster of `bench/scale_cluster.py`, measured into a `Result`.

See `bench/operator_scale.py` for what is measured and how to run it; the tables are written by
`bench/scale_report.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import scale_platform
import yaml
from scale_cluster import (
    APPLY,
    BASELINE_AGENT,
    BASELINE_CONCURRENCY,
    BENCH_AGENT,
    CONTROLLER_WORKERS,
    CREATE_CONCURRENCY,
    HOST,
    QUIET_SECONDS,
    BenchEmulator,
    Controller,
    Counts,
    applied_children,
    bodies,
    bounded,
    call,
    child_path,
    cluster,
    path_of,
    session_for,
    snapshot,
)

from adbm_operator import model
from adbm_operator.specs import labels

# The script the baseline client runs as (its own process, so its CPU is not the emulator's).
ENTRY = Path(__file__).with_name("operator_scale.py")
TRACED = Path(__file__).with_name("traced_operator.py")

# ---------------------------------------------------------------------------------------------
# Baseline: the same applies, straight from a client process


async def baseline_client(url: str, objects_file: Path, concurrency: int) -> dict[str, float]:
    """Runs in its own process (like the operator): apply every object, GET each, then one
    labelled LIST per BackendService, each phase at `concurrency` requests in flight."""
    objects: list[dict[str, Any]] = json.loads(objects_file.read_text())
    owners = sorted(
        {(o["metadata"]["namespace"], o["metadata"]["labels"][labels.OWNER_LABEL]) for o in objects}
    )
    result: dict[str, float] = {}
    async with session_for(concurrency, BASELINE_AGENT) as session:
        params = {"fieldManager": "adbm-bench", "force": "true"}
        phases: list[tuple[str, int, Any]] = [
            (
                "apply",
                len(objects),
                lambda: (
                    call(session, url, "PATCH", child_path(o), o, APPLY, params) for o in objects
                ),
            ),
            (
                "get",
                len(objects),
                lambda: (call(session, url, "GET", child_path(o)) for o in objects),
            ),
            (
                "list",
                len(owners),
                lambda: (
                    call(
                        session,
                        url,
                        "GET",
                        path_of("apps/v1", "deployments", ns),
                        params={"labelSelector": f"{labels.OWNER_LABEL}={owner}"},
                    )
                    for ns, owner in owners
                ),
            ),
        ]
        for name, count, jobs in phases:
            started = time.perf_counter()
            await bounded(concurrency, jobs())
            result[f"{name}_per_s"] = count / (time.perf_counter() - started)
    return result


async def run_baseline(sizes_bodies: list[dict[str, Any]], workdir: Path) -> dict[str, float]:
    objects = []
    for body in sizes_bodies:
        for child in applied_children(body):
            child = copy.deepcopy(child)
            # No owner exists in this cluster; nothing here garbage-collects, so none is needed.
            child["metadata"].pop("ownerReferences", None)
            objects.append(child)
    objects_file = workdir / "baseline-objects.json"
    objects_file.write_text(json.dumps(objects))
    async with cluster() as (emulator, server):
        base = str(server.url).rstrip("/")
        cpu_before = time.process_time()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ENTRY),
            "--baseline-client",
            base,
            str(objects_file),
            str(BASELINE_CONCURRENCY),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(900):
                out, _ = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"the baseline client failed ({proc.returncode})")
        rates: dict[str, float] = json.loads(out)
        rates["server_cpu_s"] = time.process_time() - cpu_before
        rates["requests"] = float(snapshot(emulator).of(["baseline"]))
        rates["applies"] = float(len(objects))
    return rates


# ---------------------------------------------------------------------------------------------
# The operator run


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def write_kubeconfig(path: Path, server: str) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": server}}],
                "users": [{"name": "bench", "user": {"token": "bench"}}],
                "contexts": [
                    {"name": "emulator", "context": {"cluster": "emulator", "user": "bench"}}
                ],
                "current-context": "emulator",
            }
        )
    )


def operator_command(
    metrics_port: int, liveness_port: int, profile: Path | None, traced: Path | None = None
) -> list[str]:
    script = Path(sys.executable).parent / "adbm-operator"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "adbm_operator.cli"]
    if profile is not None:  # the same CLI under cProfile; the stats are written when it stops
        head = [sys.executable, "-m", "cProfile", "-o", str(profile), str(script)]
    if traced is not None:  # the same CLI with tracemalloc on; a snapshot on SIGUSR1
        head = [sys.executable, str(TRACED), str(traced)]
    return [
        *head,
        "run",
        "-A",
        "--metrics-port",
        str(metrics_port),
        "--liveness-port",
        str(liveness_port),
    ]


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM / VmRSS in kB, and CPU seconds (utime + stime), of a live process."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                found[key] = int(value.split()[0])
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        found["cpu_ms"] = (int(fields[11]) + int(fields[12])) * 1000 // ticks
    return found


def parse_metrics(text: str) -> dict[str, float]:
    """Sum every sample of each adbm_operator_* metric over its labels."""
    sums: dict[str, float] = collections.defaultdict(float)
    for line in text.splitlines():
        match = re.match(r"(adbm_operator_[a-z_]+)(\{[^}]*\})?\s+(\S+)$", line)
        if match:
            name = match[1]
            if match[2] and 'result="error"' in match[2]:
                name += ":error"
            sums[name] += float(match[3])
    return dict(sums)


@dataclass
class Result:
    n: int
    ready_s: float | None = None
    ready_count: int = 0
    create_s: float = 0.0
    first_ready_s: float | None = None
    p50_ready_s: float | None = None
    startup_s: float = 0.0
    run: Counts = field(default_factory=lambda: Counts({}))
    settle: Counts = field(default_factory=lambda: Counts({}))
    quiet_s: float | None = None
    # Watches Kopf opened after start-up (a reconnect replays or resumes a stream).
    rewatches: list[tuple[float, str, str]] = field(default_factory=list)
    settle_s: float = 0.0
    idle: Counts = field(default_factory=lambda: Counts({}))
    idle_s: float = 0.0
    hwm_kb: int = 0
    rss_kb: int = 0
    operator_cpu_s: float = 0.0
    emulator_cpu_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    log_errors: int = 0
    log_warnings: int = 0
    log_top: list[tuple[str, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    jobs_completed: int = 0
    job_pod_failures: int = 0
    job_errors: list[str] = field(default_factory=list)
    job_seconds: float = 0.0
    """Time the migration Jobs took in all (several run at once)."""
    pg_max_connections: int = 0
    pg_peak_operator: int = 0
    """Most sessions the operator held on the server at once (sampled)."""
    pg_peak_total: int = 0

    @property
    def total(self) -> Counts:
        """Every request from the first create until the operator went quiet."""
        keys = set(self.run.raw) | set(self.settle.raw)
        return Counts({k: self.run.raw.get(k, 0) + self.settle.raw.get(k, 0) for k in keys})

    @property
    def idle_writes_per_min(self) -> float:
        return self.idle.writes("operator", "kopf") * 60 / self.idle_s if self.idle_s else 0.0


async def wait_for(check: Any, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            if proc.poll() is not None:
                raise RuntimeError(f"the operator exited ({proc.returncode}) while {what}")
            await asyncio.sleep(0.1)


async def run_operator(args: argparse.Namespace, n: int, workdir: Path, result: Result) -> None:
    all_bodies = bodies(n, args.namespaces)
    with scale_platform.postgres(args.postgres_url) as admin_url:
        async with (
            cluster() as (emulator, server),
            session_for(CONTROLLER_WORKERS, BENCH_AGENT) as s,
        ):
            await run_operator_on(
                args, n, workdir, result, all_bodies, admin_url, emulator, server, s
            )


async def run_operator_on(
    args: argparse.Namespace,
    n: int,
    workdir: Path,
    result: Result,
    all_bodies: list[dict[str, Any]],
    admin_url: str,
    emulator: BenchEmulator,
    server: Any,
    s: aiohttp.ClientSession,
) -> None:
    base = str(server.url).rstrip("/")
    # What a platform team provides: the admin, Redis and RabbitMQ Secrets. No Namespace
    # objects: kmock's router cannot POST /api/v1/namespaces, and neither the emulator nor a
    # cluster-wide Kopf needs them.
    await bounded(
        CREATE_CONCURRENCY,
        (
            call(s, base, "POST", path_of("v1", "secrets", secret["metadata"]["namespace"]), secret)
            for body in all_bodies
            for secret in scale_platform.platform_secrets(body, admin_url)
        ),
    )
    kubeconfig = workdir / f"kubeconfig-{n}"
    write_kubeconfig(kubeconfig, base)
    metrics_port, liveness_port = free_port(), free_port()
    log_path = workdir / f"operator-{n}.log"
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PGAPPNAME": scale_platform.OPERATOR_APPNAME,
    }
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(var, None)  # everything here is on 127.0.0.1
    env.update(item.split("=", 1) for item in args.operator_env)  # e.g. PYTHONMALLOC=malloc
    jobs = scale_platform.JobRuntime(emulator, s, base)
    connections = scale_platform.Connections(admin_url)
    helpers = [asyncio.create_task(jobs.run()), asyncio.create_task(connections.run())]
    started = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            operator_command(
                metrics_port,
                liveness_port,
                workdir / f"operator-{n}.prof" if args.operator_profile else None,
                workdir / f"operator-{n}.tracemalloc" if args.operator_tracemalloc else None,
            ),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,  # its own process group: stopped as a whole below
        )
    try:
        await drive(args, n, all_bodies, emulator, s, base, proc, metrics_port, result, jobs)
        result.startup_s = result.startup_s or time.perf_counter() - started
    finally:
        status = proc_status(proc.pid) if proc.poll() is None else {}
        result.hwm_kb = status.get("VmHWM", 0)
        result.rss_kb = status.get("VmRSS", 0)
        if args.operator_tracemalloc and proc.poll() is None:
            # The traced operator writes its snapshot on SIGUSR1 (see traced_operator.py).
            os.kill(proc.pid, signal.SIGUSR1)
            # Until its census (written last) is there: at N=1000 the census's scans of the
            # heap take minutes.
            census = (workdir / f"operator-{n}.tracemalloc").with_suffix(".census.txt")
            deadline = time.monotonic() + args.tracemalloc_wait
            while not census.exists() and time.monotonic() < deadline:
                await asyncio.sleep(1)
            await asyncio.sleep(2)
        stop(proc)
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        result.jobs_completed, result.job_errors = jobs.completed, list(jobs.errors)
        result.job_pod_failures = jobs.pod_failures
        result.job_seconds = jobs.seconds
        result.pg_max_connections = connections.max_connections
        result.pg_peak_operator = connections.peak_operator
        result.pg_peak_total = connections.peak_total
        read_log(log_path, result)


def read_log(path: Path, result: Result) -> None:
    """Count the operator's errors and warnings (JSON lines), and name the commonest."""
    messages: collections.Counter[str] = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            # Not a log record: output from a crash, say.
            result.log_errors += "Traceback" in line
            continue
        severity = record.get("severity", "") if isinstance(record, dict) else ""
        if severity in ("error", "critical"):
            result.log_errors += 1
        elif severity in ("warn", "warning"):
            result.log_warnings += 1
        else:
            continue
        # The same message about different objects counts as one kind.
        text = re.sub(r"svc-\d+|bench-\d+", "*", str(record.get("message", "")))
        messages[f"{severity}: {text[:160]}"] += 1
    result.log_top = messages.most_common(4)


async def explain_not_ready(
    emulator: BenchEmulator, controller: Controller, result: Result
) -> None:
    """Whether the operator is still at work, and what the objects not Ready say about it."""
    before = snapshot(emulator)
    await asyncio.sleep(QUIET_SECONDS * 2)
    busy = snapshot(emulator).minus(before).of(["operator", "kopf"])
    result.problems.append(
        f"operator and Kopf requests in the last {QUIET_SECONDS * 2:.0f} s: {busy}"
    )
    reasons: collections.Counter[str] = collections.Counter()
    for key in sorted(controller.expected - set(controller.ready_at)):
        live = emulator.objects["adbm.io/v1alpha1/backendservices", key[0], key[1]]
        conditions = (live.get("status") or {}).get("conditions") or []
        ready: dict[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
        message = re.sub(r"svc-\d+", "*", str(ready.get("message", "")))
        # Did this benchmark's Deployment controller do its part? Then the operator missed it.
        available = all(
            int((d.get("status") or {}).get("observedGeneration", 0))
            == int(d["metadata"].get("generation", 0))
            for (res, ns, _), d in emulator.objects.items()
            if res.plural == "deployments" and ns == key[0] and not d.deleted
            if d["metadata"].get("labels", {}).get(labels.OWNER_LABEL) == key[1]
        )
        reasons[
            f"Ready={ready.get('status')} {ready.get('reason')}: {message[:120]}"
            f" (its Deployments {'are' if available else 'are NOT'} all available)"
        ] += 1
    for reason, count in reasons.most_common(4):
        result.problems.append(f"not Ready: {count} x {reason}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Kopf stops gracefully), then SIGKILL; only this process group, which we made."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


async def drive(
    args: argparse.Namespace,
    n: int,
    all_bodies: list[dict[str, Any]],
    emulator: BenchEmulator,
    session: aiohttp.ClientSession,
    base: str,
    proc: subprocess.Popen[bytes],
    metrics_port: int,
    result: Result,
    jobs: scale_platform.JobRuntime,
) -> None:
    started = time.perf_counter()

    async def watching() -> bool:
        # Kopf has opened its watches on BackendServices and Deployments: events are seen.
        return {"backendservices", "deployments"} <= emulator.watched

    async def healthy() -> bool:
        try:
            async with (
                aiohttp.ClientSession() as probe,
                probe.get(f"http://{HOST}:{metrics_port}/metrics") as response,
            ):
                return response.status == 200 and await watching()
        except aiohttp.ClientError:
            return False

    await wait_for(healthy, 120, "starting", proc)
    await asyncio.sleep(1.0)  # the rest of Kopf's watches open within milliseconds
    result.startup_s = time.perf_counter() - started
    at_start, watches_at_start = snapshot(emulator), len(emulator.watch_log)
    cpu_start = time.process_time()
    operator_cpu_start = proc_status(proc.pid).get("cpu_ms", 0) / 1000

    expected = {(b["metadata"]["namespace"], b["metadata"]["name"]) for b in all_bodies}
    controller = Controller(emulator, session, base, expected, args.rollout_seconds, jobs.see)
    controller_task = asyncio.create_task(controller.run())
    try:
        await bounded(
            CREATE_CONCURRENCY,
            (
                call(
                    session,
                    base,
                    "POST",
                    path_of(model.API_VERSION, model.PLURAL, b["metadata"]["namespace"]),
                    b,
                )
                for b in all_bodies
            ),
        )
        result.create_s = time.perf_counter() - controller.started
        reported_at, reported = time.perf_counter(), 0
        deadline = controller.started + args.ready_timeout
        while len(controller.ready_at) < n and time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the operator exited ({proc.returncode}) before all Ready")
            if time.perf_counter() - reported_at > 30:  # progress, every 30 s
                count = len(controller.ready_at)
                stalled = ", none new for 30 s" if count == reported else ""
                print(f"  N={n}: {count}/{n} Ready{stalled}", file=sys.stderr)
                reported_at, reported = time.perf_counter(), count
            await asyncio.sleep(0.1)
        times = sorted(controller.ready_at.values())
        result.ready_count = len(times)
        if times:
            result.first_ready_s = times[0]
            result.p50_ready_s = times[len(times) // 2]
        if len(times) < n:
            result.problems.append(f"only {len(times)} of {n} Ready after {args.ready_timeout} s")
            result.run = snapshot(emulator).minus(at_start)
            await explain_not_ready(emulator, controller, result)
            return
        result.ready_s = times[-1]
        result.run = snapshot(emulator).minus(at_start)

        # Ready comes first: the first reconcile already sees the Deployments available (this
        # controller is quick), so the Deployment events are handled after it, and Kopf's Events
        # trail too. Converged means: no operator or Kopf request at all for QUIET_SECONDS.
        settle_start = last_change = time.perf_counter()
        last = snapshot(emulator).of(["operator", "kopf"])
        while time.perf_counter() - last_change < QUIET_SECONDS:
            if time.perf_counter() - settle_start > args.settle_timeout:
                result.problems.append(f"still busy {args.settle_timeout} s after all Ready")
                break
            await asyncio.sleep(0.1)
            now = snapshot(emulator).of(["operator", "kopf"])
            if now != last:
                last, last_change = now, time.perf_counter()
        result.quiet_s = last_change - controller.started
        result.settle = snapshot(emulator).minus(at_start).minus(result.run)
        result.settle_s = time.perf_counter() - settle_start
        result.rewatches = [
            (t - controller.started, plural, query)
            for t, plural, query in emulator.watch_log[watches_at_start:]
        ]
        result.emulator_cpu_s = time.process_time() - cpu_start
        result.operator_cpu_s = proc_status(proc.pid).get("cpu_ms", 0) / 1000 - operator_cpu_start

        before_idle, idle_start = snapshot(emulator), time.perf_counter()
        await asyncio.sleep(args.idle_seconds)
        if proc.poll() is not None:
            raise RuntimeError(f"the operator exited ({proc.returncode}) while idle")
        result.idle = snapshot(emulator).minus(before_idle)
        result.idle_s = time.perf_counter() - idle_start
        if result.idle.writes("operator", "kopf"):
            result.problems.append(f"{result.idle.writes('operator', 'kopf')} writes while idle")
        if controller.errors:
            result.problems.append(f"{len(controller.errors)} Deployment status writes failed")
        if jobs.errors:
            result.problems.append(f"{len(jobs.errors)} migration Jobs failed: {jobs.errors[0]}")
        async with (
            aiohttp.ClientSession() as probe,
            probe.get(f"http://{HOST}:{metrics_port}/metrics") as response,
        ):
            result.metrics = parse_metrics(await response.text())
    finally:
        controller_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await controller_task
