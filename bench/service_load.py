"""The reference service under load against what a FastAPI user writes by hand, in one run.

The real service (`adbm-service serve`: authentication, rate limiting, the RLS transaction,
tracing, logs, all on) and the baselines of `baseline_app.py` are served by uvicorn with the same
settings, on one pinned core each in turn (only the one under load is busy), against a dedicated
PostgreSQL (with pg_stat_statements) and Redis started for the run. `wrk` runs on the other core.
Cases are interleaved: every round runs every case once, and the tables give medians over
rounds. Then each adbm read case runs at a fixed rate of 80 % of its median RPS (open loop, see
`fixed_rate.py`) for the latency a client sees below saturation.

Counters per request (see `counters.py`): server CPU, Postgres backends' CPU, Redis commands
and round trips, Postgres statements and round trips.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from bench import counters, local_servers, results, service_setup, wrk_run
from reference_service.http.pagination import CursorCodec

HERE = Path(__file__).parent
CURSOR_SECRET = "adbm-bench-cursor-secret"
# A quota no run reaches: every request still pays for its decision, none is refused.
POLICY = {"rate_limit": {"default": {"requests": 100_000_000, "burst": 100_000_000}}}
PATCH_PRODUCTS = 2_000


@dataclass
class Case:
    name: str
    server: str  # "service" or "baseline"
    path: str
    lua: str = "plain.lua"
    args: Callable[[int], list[str]] = lambda _round: []
    fixed_rate: bool = False
    runs: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Env:
    pg: local_servers.Postgres
    rd: local_servers.Redis
    scratch: service_setup.Scratch
    ports: dict[str, int]
    pids: dict[str, int]
    monitor: psycopg.Connection[Any]
    redis: redis.Redis
    headers: list[str]
    args: argparse.Namespace


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk duration per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument(
        "--fixed-seconds", type=float, default=10.0, help="duration of each fixed-rate run"
    )
    parser.add_argument("--deep", type=int, default=10_000, help="rows before the deep page")
    parser.add_argument("--server-cpu", default="0", help="core the servers are pinned to")
    parser.add_argument("--client-cpu", default="1", help="core the load generator runs on")
    parser.add_argument("--label", default="full run", help="how RESULTS.md labels this run")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)
    if args.seconds < 1 or args.rounds < 1 or args.connections < 1 or args.deep < 0:
        parser.error("--seconds >= 1, --rounds >= 1, --connections >= 1, --deep >= 0")
    if args.connections * 4 > PATCH_PRODUCTS:
        parser.error(f"--connections must be at most {PATCH_PRODUCTS // 4}")
    return args


@contextlib.contextmanager
def _server(command: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[int]:
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        local_servers.wait_for_port(port, timeout=60)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _service_env(
    env: dict[str, str], scratch: service_setup.Scratch, redis_url: str, port: int
) -> dict[str, str]:
    clean = {k: v for k, v in env.items() if not k.startswith(("ADBM_", "OTEL_"))}
    return {
        **clean,
        "ADBM_DATABASE_URL": scratch.app_url,
        "ADBM_REDIS_URL": redis_url,
        "ADBM_REDIS_KEY_PREFIX": "bench:",
        "ADBM_HTTP_PORT": str(port),
        "ADBM_METRICS_PORT": str(local_servers.free_port()),
        "ADBM_CURSOR_SECRET": CURSOR_SECRET,
        "ADBM_POLICY": json.dumps(POLICY),
    }


def _snapshot(env: Env, server: str) -> dict[str, Any]:
    pid = env.pids[server]
    backends = counters.pg_backends(env.monitor, env.scratch.dbname)
    return {
        "cpu": counters.cpu_seconds(pid),
        "backends": backends,
        "pg_cpu": {b: counters.cpu_of([b]) for b in backends},
        "redis_cpu": counters.cpu_seconds(env.rd.pid),
        "pg_segs": counters.segments(pid, env.pg.port),
        "redis_segs": counters.segments(pid, env.rd.port),
        "redis_cmds": counters.redis_commands(env.redis),
        "pg_stmts": counters.pg_statements(env.monitor, env.scratch.dbname),
        "client_cpu": _children_cpu(),
    }


def _wait_quiet(pid: int, timeout: float = 5.0) -> None:
    """Until the server has finished the requests still in flight when wrk stopped (its CPU
    time stops moving), so their work is charged to this case and not the next."""
    deadline = time.monotonic() + timeout
    last = counters.cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = counters.cpu_seconds(pid)
        if now == last:
            return
        last = now


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _measure(env: Env, case: Case, round_no: int, seconds: float) -> dict[str, float]:
    lua = wrk_run.script(case.lua)
    try:
        before = _snapshot(env, case.server)
        result = wrk_run.run(
            f"http://127.0.0.1:{env.ports[case.server]}{case.path}",
            lua=lua,
            seconds=seconds,
            connections=env.args.connections,
            headers=env.headers if case.server == "service" else [],
            args=case.args(round_no),
            cpus=env.args.client_cpu,
        )
        _wait_quiet(env.pids[case.server])
        after = _snapshot(env, case.server)
    finally:
        lua.unlink()
    # wrk counts the requests answered before it stopped; each of its connections still has one
    # request in flight then, which the server completes and the counters include.
    n = max(1, result.requests + env.args.connections)
    pg_sent, pg_received = counters.segments_delta(before["pg_segs"], after["pg_segs"])
    pg_cpu = sum(
        counters.cpu_of([b]) - before["pg_cpu"].get(b, 0.0)
        for b in set(before["backends"]) | set(after["backends"])
    )
    return {
        "rps": result.rps,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.non2xx + result.socket_errors,
        "cpu_us": (after["cpu"] - before["cpu"]) / n * 1e6,
        "pg_cpu_us": pg_cpu / n * 1e6,
        "redis_cpu_us": (after["redis_cpu"] - before["redis_cpu"]) / n * 1e6,
        "redis_cmds": (after["redis_cmds"] - before["redis_cmds"]) / n,
        "redis_rt": counters.segments_delta(before["redis_segs"], after["redis_segs"])[0] / n,
        "pg_rt": pg_sent / n,
        "pg_replies": pg_received / n,
        "pg_stmts": (after["pg_stmts"] - before["pg_stmts"]) / n,
        "client_core": (after["client_cpu"] - before["client_cpu"]) / result.seconds,
    }


def _median(case: Case, key: str) -> float:
    return statistics.median(run[key] for run in case.runs)


def _write_patch_targets(admin_url: str, path: Path) -> None:
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute(
            "SELECT id, version FROM public.products WHERE sku LIKE 'PATCH-%' AND NOT is_deleted"
        ).fetchall()
    path.write_text("".join(f"{r[0]} {r[1]}\n" for r in rows))


def _cases(env: Env, work: Path) -> list[Case]:
    scratch = env.scratch
    with psycopg.connect(scratch.admin_url) as conn:
        row = conn.execute("SELECT id FROM public.products WHERE sku = 'SEED-1'").fetchone()
        deep = conn.execute(
            "SELECT created_at, id FROM public.products WHERE NOT is_deleted"
            " ORDER BY created_at, id OFFSET %s LIMIT 1",
            (env.args.deep,),
        ).fetchone()
    assert row is not None and deep is not None
    product = row[0]
    account = service_setup.seed_account(scratch.admin_url, scratch.tenant_id)
    cursor = CursorCodec(CURSOR_SECRET.encode()).encode("products", (deep[0], deep[1]))
    patch_file = work / "patch-targets.txt"

    def post_args(round_no: int) -> list[str]:
        return [f"r{round_no}-{time.time_ns()}"]

    def patch_args(round_no: int) -> list[str]:
        _write_patch_targets(scratch.admin_url, patch_file)
        return [f"p{round_no}-{time.time_ns()}", str(patch_file), "/api/v2/products/"]

    return [
        Case("bare FastAPI JSON", "baseline", "/json"),
        Case("FastAPI + psycopg pool, one PK SELECT", "baseline", f"/select/{product}"),
        Case("same + slowapi (Redis)", "baseline", f"/limited/{product}"),
        Case("FastAPI + psycopg, one INSERT", "baseline", "/insert", lua="insert.lua"),
        Case(
            "adbm GET /api/v2/products/{id} (cached)",
            "service",
            f"/api/v2/products/{product}",
            fixed_rate=True,
        ),
        Case(
            "adbm GET /api/v2/accounts/{id} (not cached)",
            "service",
            f"/api/v2/accounts/{account}",
            fixed_rate=True,
        ),
        Case("adbm list 50, first page", "service", "/api/v2/products?limit=50", fixed_rate=True),
        Case(
            f"adbm list 50, page after {env.args.deep:,} rows",
            "service",
            f"/api/v2/products?limit=50&cursor={cursor}",
            fixed_rate=True,
        ),
        Case(
            "adbm POST /api/v2/products (Idempotency-Key)",
            "service",
            "/api/v2/products",
            lua="post.lua",
            args=post_args,
        ),
        Case(
            "adbm PATCH /api/v2/products/{id} (If-Match)",
            "service",
            "/api/v2/products",
            lua="patch.lua",
            args=patch_args,
        ),
    ]


def _fixed_rate(env: Env, case: Case, rate: float | None = None) -> dict[str, Any]:
    rate = 0.8 * _median(case, "rps") if rate is None else rate
    url = f"http://127.0.0.1:{env.ports[case.server]}{case.path}"
    command = [
        "taskset",
        "-c",
        env.args.client_cpu,
        sys.executable,
        str(HERE / "fixed_rate.py"),
        url,
        "--rate",
        f"{rate:.1f}",
        "--seconds",
        str(env.args.fixed_seconds),
        "--connections",
        str(env.args.connections),
    ]
    for header in env.headers if case.server == "service" else []:
        command += ["-H", header]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _wait_ready(url: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, headers=headers, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within 60 s")


def _failures(result: dict[str, Any]) -> str:
    kinds = result.get("failure_kinds") or {}
    detail = ", ".join(f"{count} x {kind}" for kind, count in sorted(kinds.items()))
    return f"{result['failures']:.0f}" + (f" ({detail})" if detail else "")


def _report(cases: list[Case], fixed: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    rows = []
    for c in cases:
        rows.append(
            [
                c.name,
                f"{_median(c, 'rps'):,.0f}",
                f"{_median(c, 'p50_ms'):.1f}",
                f"{_median(c, 'p99_ms'):.1f}",
                f"{_median(c, 'cpu_us'):,.0f}",
                f"{_median(c, 'pg_cpu_us'):,.0f}",
                f"{_median(c, 'redis_cpu_us'):,.0f}",
                f"{_median(c, 'redis_cmds'):.2f}",
                f"{_median(c, 'redis_rt'):.2f}",
                f"{_median(c, 'pg_rt'):.2f}",
                f"{_median(c, 'pg_replies'):.2f}",
                f"{_median(c, 'pg_stmts'):.2f}",
                f"{sum(r['errors'] for r in c.runs):.0f}",
                f"{_median(c, 'client_core'):.0%}",
            ]
        )
    load = results.table(
        [
            "case",
            "RPS",
            "p50 ms",
            "p99 ms",
            "server CPU µs/req",
            "Postgres CPU µs/req",
            "Redis CPU µs/req",
            "Redis commands/req",
            "Redis round trips/req",
            "Postgres client sends/req",
            "Postgres round trips/req",
            "Postgres statements/req",
            "non-2xx (all rounds)",
            "wrk core busy",
        ],
        rows,
    )
    by = {c.name: c for c in cases}
    rps = {name: _median(c, "rps") for name, c in by.items()}
    names = [c.name for c in cases]
    bare, select, slow, insert, get, uncached, first, deep, post, patch = names

    cpu = {name: _median(c, "cpu_us") for name, c in by.items()}

    def ratio(a: str, b: str) -> str:
        # RPS, then the same comparison by the server's CPU per request (requests of `a` one
        # core serves per request of `b`), which other work on a shared machine moves less.
        return f"{rps[a] / rps[b]:.2f}x (CPU {cpu[b] / cpu[a]:.2f}x)"

    targets = results.table(
        ["comparison", "measured: RPS ratio (server CPU ratio)", "issue 16 target"],
        [
            ["GET (not cached) vs slowapi baseline", ratio(uncached, slow), "≥ 1.0x"],
            ["GET (not cached) vs one-query baseline", ratio(uncached, select), "≥ 0.6x"],
            [
                "GET (not cached) Redis / Postgres round trips",
                f"{_median(by[uncached], 'redis_rt'):.2f}"
                f" / {_median(by[uncached], 'pg_replies'):.2f}",
                "1 / 1",
            ],
            ["GET (cached) vs slowapi baseline", ratio(get, slow), "≥ 1.0x"],
            ["GET (cached) vs one-query baseline", ratio(get, select), "≥ 0.6x"],
            [
                "GET (cached) Redis / Postgres round trips",
                f"{_median(by[get], 'redis_rt'):.2f} / {_median(by[get], 'pg_replies'):.2f}",
                "1 / 0 (a hit)",
            ],
            ["list first page vs one-query baseline", ratio(first, select), "≥ 0.5x"],
            ["deep page vs first page", ratio(deep, first), "≥ 0.67x (within 1.5x)"],
            ["POST vs INSERT baseline", ratio(post, insert), "≥ 0.6x"],
            ["POST Redis round trips", f"{_median(by[post], 'redis_rt'):.2f}", "≤ 2"],
            ["PATCH vs INSERT baseline", ratio(patch, insert), "(none)"],
            ["one-query baseline vs bare JSON", ratio(select, bare), "(context)"],
        ],
    )
    fixed_rows = [
        [
            name,
            f"{r['rate']:,.0f}",
            f"{r['offered_rps']:,.0f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            _failures(r),
            f"{r['connections']:.0f}",
            f"{r['start_lag_p99_ms']:.2f}",
            f"{r['client_cpu_share']:.0%}",
        ]
        for name, r in fixed.items()
    ]
    fixed_table = results.table(
        [
            "case",
            "target rate (80 % of median RPS)",
            "offered RPS",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "failures",
            "connections opened",
            "client start lag p99 ms",
            "client core busy",
        ],
        fixed_rows,
    )
    cache_note = (
        "- Products are read through `reference_service.cache` (a hit after the first"
        " request: no Postgres); accounts are not cached, so their GET is the one-pipeline read."
    )
    return (
        f"wrk -t1 -c{args.connections} -d{args.seconds:g}s, {args.rounds} interleaved rounds,"
        " medians;"
        f" servers on core {args.server_cpu}, wrk on core {args.client_cpu}.\n\n{load}\n\n"
        f"Ratios of RPS (same run):\n\n{targets}\n\n"
        f"Fixed rate, {args.fixed_seconds:g} s each"
        " (open loop, latency from the scheduled start):\n\n"
        f"{fixed_table}\n\n{cache_note}\n"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        wrk_run.require_wrk()
        with contextlib.ExitStack() as stack:
            text = _run(args, stack)
    except local_servers.Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    if not args.no_record:
        results.record(
            "Service load (bench/service_load.py)",
            args.label,
            text,
            ["fastapi", "uvicorn", "psycopg", "redis", "slowapi"],
        )
    return 0


def start(args: argparse.Namespace, stack: contextlib.ExitStack) -> tuple[Env, list[Case]]:
    """The run's PostgreSQL, Redis, seeded database, service and baseline server, all up (each
    stopped by `stack`), and the cases against them."""
    pg = stack.enter_context(local_servers.postgres())
    rd = stack.enter_context(local_servers.redis())
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="adbm-bench-")))
    print(f"PostgreSQL on {pg.port}, Redis on {rd.port}; setting up", file=sys.stderr)
    scratch = service_setup.create(pg)
    service_setup.seed_products(scratch.admin_url, scratch.tenant_id, args.deep + 100, "SEED-")
    service_setup.seed_products(scratch.admin_url, scratch.tenant_id, PATCH_PRODUCTS, "PATCH-")
    with psycopg.connect(scratch.admin_url) as conn:
        conn.execute(
            "CREATE TABLE public.bench_inserts (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
            " sku text NOT NULL, name text NOT NULL, price_minor bigint NOT NULL,"
            " currency char(3) NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        )
    monitor = stack.enter_context(psycopg.connect(pg.url(), autocommit=True))
    monitor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    redis_client = redis.Redis(port=rd.port)
    stack.callback(redis_client.close)

    ports = {"service": local_servers.free_port(), "baseline": local_servers.free_port()}
    pin = ["taskset", "-c", args.server_cpu]
    service_env = _service_env(dict(os.environ), scratch, rd.url, ports["service"])
    cli = str(Path(sys.executable).with_name("adbm-service"))
    pids = {
        "service": stack.enter_context(
            _server(
                [*pin, cli, "serve", "--host", "127.0.0.1"],
                service_env,
                ports["service"],
                work / "service.log",
            )
        ),
        "baseline": stack.enter_context(
            _server(
                [
                    *pin,
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bench.baseline_app:create_app",
                    "--factory",
                    "--app-dir",
                    str(HERE.parent),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(ports["baseline"]),
                    "--log-level",
                    "info",
                ],
                {**os.environ, "BENCH_DSN": scratch.admin_url, "BENCH_REDIS_URL": rd.url},
                ports["baseline"],
                work / "baseline.log",
            )
        ),
    }
    headers = [f"Authorization: Bearer {scratch.api_key}"]
    env = Env(pg, rd, scratch, ports, pids, monitor, redis_client, headers, args)
    cases = _cases(env, work)
    _wait_ready(
        f"http://127.0.0.1:{ports['service']}{cases[4].path}",
        {"Authorization": f"Bearer {scratch.api_key}"},
    )
    _wait_ready(f"http://127.0.0.1:{ports['baseline']}/json", {})
    return env, cases


def _run(args: argparse.Namespace, stack: contextlib.ExitStack) -> str:
    env, cases = start(args, stack)
    print("warming up", file=sys.stderr)
    for case in cases:
        _measure(env, case, 0, 1)
    for round_no in range(1, args.rounds + 1):
        for case in cases:
            case.runs.append(_measure(env, case, round_no, args.seconds))
            print(
                f"round {round_no}: {case.name}: {case.runs[-1]['rps']:,.0f} RPS", file=sys.stderr
            )
    fixed = {case.name: _fixed_rate(env, case) for case in cases if case.fixed_rate}
    # The control: the same client at the highest of those rates against a server that does
    # next to nothing. Its latency is the floor the client and the machine add.
    top = max(fixed.values(), key=lambda r: float(r["rate"]))
    fixed[f"control: {cases[0].name}, same client and rate"] = _fixed_rate(
        env, cases[0], float(top["rate"])
    )
    for name, result in fixed.items():
        print(f"fixed rate: {name}: {json.dumps(result)}", file=sys.stderr)
    return _report(cases, fixed, args)


if __name__ == "__main__":
    sys.exit(main())
