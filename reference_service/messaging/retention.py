"""Pruning the outbox and the inbox: bounded tables, with exactly-once effects kept.

**Outbox.** A published row has done its work: the relay never reads it again. It is kept for
`outbox_retention_seconds` after publication (to see what was sent), then deleted. A row not
yet published is never deleted.

**Inbox.** A row says "this consumer applied this message id"; a copy of the message that comes
after its row is gone would be applied a second time. So a row is kept as long as a copy can
still come, which is:

- while the message's outbox row is unpublished, whatever its age: the relay may publish it
  (again) at any time, e.g. after it published it, the message was applied, and the commit
  marking the row failed. Pruning never deletes such an inbox row;
- after publication, while the broker still holds a copy: one requeued because a worker died
  between its commit and its ack (delivered again as soon as a consumer is back), one waiting
  in a delay queue (at most the whole retry schedule,
  `config.retry_schedule_seconds`), or one queued behind a backlog.

Retention counts from when the message was applied (`inbox.created_at`), and
`inbox_retention_seconds` must exceed both the retry schedule (`Settings` refuses less) and the
longest outage or backlog during which a copy may wait in the broker. The default, 7 days,
covers a week without consumers; a message held longer than that is no longer deduplicated.

**How.** Every relay (each worker process that relays, and `adbm-service relay`) prunes every
`prune_interval_seconds`, through the SECURITY DEFINER functions `adbm_outbox_prune` and
`adbm_inbox_prune` (migration 0004): each call deletes at most `PRUNE_BATCH` rows, oldest first,
in its own short transaction, skipping rows another transaction holds (`SKIP LOCKED`), so
pruning never waits on a consumer or a relay, never holds locks for long, and several relays
share the work. A backlog of old rows is worked off `MAX_BATCHES_PER_RUN` batches at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from prometheus_client import Counter
from psycopg import sql

from reference_service.db.pool import Database

log = logging.getLogger(__name__)

PRUNE_BATCH: Final = 500
"""Rows one call deletes at most: small enough that its transaction is over in milliseconds."""
MAX_BATCHES_PER_RUN: Final = 20
"""Batches per table per run: a large backlog is worked off over several runs, with the relay's
other work in between."""

PRUNED = Counter(
    "adbm_messaging_pruned_rows_total",
    "Outbox and inbox rows deleted past their retention, by table.",
    ["table"],
)

_PRUNE: Final = {
    table: sql.SQL("SELECT {}(%s, %s) AS deleted").format(sql.Identifier("public", function))
    for table, function in (("outbox", "adbm_outbox_prune"), ("inbox", "adbm_inbox_prune"))
}


@dataclass(frozen=True)
class Pruned:
    outbox: int = 0
    inbox: int = 0


class Pruner:
    def __init__(
        self,
        database: Database,
        *,
        outbox_retention_seconds: float,
        inbox_retention_seconds: float,
        batch_size: int = PRUNE_BATCH,
    ) -> None:
        self._database = database
        self._retention = {
            "outbox": timedelta(seconds=outbox_retention_seconds),
            "inbox": timedelta(seconds=inbox_retention_seconds),
        }
        self._batch = batch_size

    async def prune_batch(self, table: str) -> int:
        """One batch of `table` ("outbox" or "inbox"), in its own transaction: rows deleted."""
        async with self._database.transaction(None) as conn:
            cur = await conn.execute(_PRUNE[table], (self._retention[table], self._batch))
            row = await cur.fetchone()
        assert row is not None
        deleted: int = row["deleted"]
        PRUNED.labels(table).inc(deleted)
        return deleted

    async def prune(self) -> Pruned:
        """Batches of each table until one comes back short (or `MAX_BATCHES_PER_RUN`)."""
        done: dict[str, int] = {}
        for table in ("outbox", "inbox"):
            done[table] = 0
            for _ in range(MAX_BATCHES_PER_RUN):
                deleted = await self.prune_batch(table)
                done[table] += deleted
                if deleted < self._batch:
                    break
        pruned = Pruned(**done)
        if pruned.outbox or pruned.inbox:
            log.info("pruned %d outbox and %d inbox rows", pruned.outbox, pruned.inbox)
        return pruned

    async def run(self, stop: asyncio.Event, interval_seconds: float) -> None:
        """Prune every `interval_seconds` until `stop` is set; a failed run (the database is
        away) is logged and tried again at the next interval."""
        while not stop.is_set():
            try:
                await self.prune()
            except Exception:
                log.exception(
                    "pruning the outbox and the inbox failed; next try in %gs", interval_seconds
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_seconds)
