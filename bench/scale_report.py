"""The report of `bench/operator_scale.py`: the summary table (as in bench/RESULTS.md) and the
per-run details, from the harness's `Result`s."""

from __future__ import annotations

import collections
import json

from scale_cluster import BASELINE_CONCURRENCY, Counts
from scale_harness import Result


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: list[Result]) -> str:
    header = (
        "| N | all Ready (s) | converged (s) | reads/obj (operator + Kopf) "
        "| writes/obj (operator + Kopf) | operator peak RSS (MB) | idle writes/min "
        "| operator errors logged | operator Postgres sessions (peak) "
        "| baseline apply/s | baseline GET/s | baseline LIST/s |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        if r.ready_s is None:
            lines.append(f"| {r.n} | not all Ready ({r.ready_count}/{r.n}) |" + " - |" * 10)
            continue
        t = r.total
        reads, writes = (
            (t.reads("operator"), t.reads("kopf")),
            (t.writes("operator"), t.writes("kopf")),
        )
        idle = fmt(r.idle_writes_per_min) if r.idle_s else "-"
        lines.append(
            f"| {r.n} | {fmt(r.ready_s)} | {fmt(r.quiet_s)} "
            f"| {fmt(sum(reads) / r.n)} ({fmt(reads[0] / r.n)} + {fmt(reads[1] / r.n)}) "
            f"| {fmt(sum(writes) / r.n)} ({fmt(writes[0] / r.n)} + {fmt(writes[1] / r.n)}) "
            f"| {fmt(r.hwm_kb / 1024 if r.hwm_kb else None)} | {idle} | {r.log_errors} "
            f"| {r.pg_peak_operator} "
            f"| {fmt(r.baseline.get('apply_per_s'), 0)} | {fmt(r.baseline.get('get_per_s'), 0)} "
            f"| {fmt(r.baseline.get('list_per_s'), 0)} |"
        )
    return "\n".join(lines)


def by_verb(counts: Counts) -> str:
    verbs: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for (agent, verb), count in sorted(counts.raw.items()):
        if count:
            verbs[agent][verb] = count
    return json.dumps(verbs, sort_keys=True)


def details(r: Result) -> str:
    total = r.total.of(["operator", "kopf"])
    lines = [
        f"N={r.n}: operator start-up {fmt(r.startup_s)} s; {r.n} BackendServices created in "
        f"{fmt(r.create_s)} s; Ready: first {fmt(r.first_ready_s)} s, median "
        f"{fmt(r.p50_ready_s)} s, all ({r.ready_count}/{r.n}) {fmt(r.ready_s)} s; last operator "
        f"request {fmt(r.quiet_s)} s",
        f"  requests until all Ready, by sender and verb: {by_verb(r.run)}",
        f"  requests after all Ready until quiet: {by_verb(r.settle)}",
        f"  operator + Kopf requests in all: {total} ({fmt(total / r.n)}/object)",
        f"  CPU until quiet: operator {fmt(r.operator_cpu_s)} s, emulator (+ this benchmark) "
        f"{fmt(r.emulator_cpu_s)} s",
        f"  operator RSS: peak {fmt(r.hwm_kb / 1024)} MB, at the end {fmt(r.rss_kb / 1024)} MB",
        f"  idle window {fmt(r.idle_s)} s: {r.idle.writes('operator', 'kopf')} writes, "
        f"{r.idle.reads('operator', 'kopf')} reads ({by_verb(r.idle)})",
        f"  Postgres: {r.jobs_completed} migration Jobs complete ({r.job_pod_failures} pods failed,"
        f" {fmt(r.job_seconds)} s in all); peak"
        f" sessions: the operator {r.pg_peak_operator}, all {r.pg_peak_total}, of"
        f" max_connections {r.pg_max_connections}",
        f"  operator log: {r.log_errors} errors, {r.log_warnings} warnings",
        *(f"    {count} x {message}" for message, count in r.log_top),
    ]
    if r.rewatches:
        shown = ", ".join(f"{p} at {t:.1f} s ({q})" for t, p, q in r.rewatches[:12])
        lines.append(f"  watches Kopf re-opened after start-up: {len(r.rewatches)}: {shown}")
    if r.metrics:
        reconciles = r.metrics.get("adbm_operator_reconcile_duration_seconds_count", 0.0)
        seconds = r.metrics.get("adbm_operator_reconcile_duration_seconds_sum", 0.0)
        mean_ms = seconds / reconciles * 1000 if reconciles else None
        lines.append(
            f"  operator metrics: {r.metrics.get('adbm_operator_reconcile_total', 0):.0f} "
            f"reconciles ok, {r.metrics.get('adbm_operator_reconcile_total:error', 0):.0f} "
            f"failed; mean reconcile {fmt(mean_ms)} ms; "
            f"{r.metrics.get('adbm_operator_children_applied_total', 0):.0f} children applied"
        )
    if r.baseline:
        b = r.baseline
        t = r.total
        operator_reads = t.reads("operator", "kopf") - t.of(["operator", "kopf"], ["watch"])
        floor = t.writes("operator", "kopf") / b["apply_per_s"] + operator_reads / b["get_per_s"]
        lines.append(
            f"  baseline ({b['applies']:.0f} applies, {BASELINE_CONCURRENCY} in flight, "
            f"client in its own process): apply {fmt(b['apply_per_s'], 0)}/s, "
            f"GET {fmt(b['get_per_s'], 0)}/s, LIST {fmt(b['list_per_s'], 0)}/s; "
            f"the operator's requests at these rates: {fmt(floor)} s"
        )
    for problem in r.problems:
        lines.append(f"  PROBLEM: {problem}")
    return "\n".join(lines)
