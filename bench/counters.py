"""Counters read before and after a load run, so each case is charged only its own work.

- CPU of a process: utime + stime from /proc/<pid>/stat (all its threads).
- Round trips to a server: the kernel's `data_segs_out` of every TCP connection a process holds
  to that port (`ss -tinp`). Every client here disables Nagle (libpq, redis-py and hiredis set
  TCP_NODELAY), so each request the client writes leaves as one data segment on loopback, and a
  pipeline written at once is one segment: segments out = round trips. Connections closed during
  a run take their counts with them; the pools here keep theirs open.
- Redis commands: the sum of `calls` in `INFO commandstats` (commands run inside a Lua script
  count too, by name), without the `info` calls made to read it.
- Postgres statements: `pg_stat_statements` calls in one database (BEGIN, COMMIT and
  `set_config` included: they are statements the server parses and answers).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import psycopg
import redis

_TICKS = os.sysconf("SC_CLK_TCK")
_SEGS_OUT = re.compile(r"\bdata_segs_out:(\d+)")
_SEGS_IN = re.compile(r"\bdata_segs_in:(\d+)")
_PID = re.compile(r"pid=(\d+)")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5), counted from the state field (3) after the command name.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def cpu_of(pids: Iterable[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def segments(pid: int, port: int) -> dict[str, tuple[int, int]]:
    """`(data_segs_out, data_segs_in)` per connection (keyed by its local address) from `pid`
    to `port`."""
    out = subprocess.run(
        ["ss", "-tinpH", "state", "established", f"( dport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    counts: dict[str, tuple[int, int]] = {}
    lines = out.splitlines()
    # ss prints each socket as a header line (addresses, users:((...pid=N...))) and an
    # indented line of TCP info.
    for header, info in zip(lines[::2], lines[1::2], strict=False):
        pids = {int(p) for p in _PID.findall(header)}
        if pid in pids:
            sent, received = _SEGS_OUT.search(info), _SEGS_IN.search(info)
            counts[header.split()[2]] = (
                int(sent[1]) if sent else 0,
                int(received[1]) if received else 0,
            )
    return counts


def segments_delta(
    before: Mapping[str, tuple[int, int]], after: Mapping[str, tuple[int, int]]
) -> tuple[int, int]:
    """Segments sent and received between two `segments` snapshots (a connection opened in
    between counts from 0)."""
    sent = sum(out - before.get(local, (0, 0))[0] for local, (out, _) in after.items())
    received = sum(in_ - before.get(local, (0, 0))[1] for local, (_, in_) in after.items())
    return sent, received


def redis_commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def redis_commands_by_name(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def pg_statements(conn: psycopg.Connection[Any], dbname: str) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s"
        " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s",
        (dbname,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def pg_backends(conn: psycopg.Connection[Any], dbname: str) -> list[int]:
    """Pids of the server processes serving connections to `dbname`."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (dbname,),
    ).fetchall()
    return [int(r[0]) for r in rows]
