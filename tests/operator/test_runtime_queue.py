"""One reconcile waiting per object: event triggers join a reconcile already waiting for a slot
(it reads the object after their events), and add what they ask; once a reconcile has its slot,
a new trigger waits for a reconcile of its own."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from adbm_operator import kube
from adbm_operator.handlers import runtime

# What the stand-in reconcile returns: it wrote nothing and failed at nothing.
OUTCOME: Any = SimpleNamespace(writes=0, temporary_error=None)


class _Recorder:
    def __init__(self) -> None:
        self.runs: list[runtime.Queued] = []
        self.release = asyncio.Event()

    async def __call__(
        self,
        rt: runtime.Runtime,
        client: kube.Client,
        namespace: str,
        name: str,
        request: runtime.Queued,
        log: Any,
    ) -> Any:
        # A copy: what the request asked when it was read, not what joins it later.
        self.runs.append(runtime.Queued(**vars(request)))
        await self.release.wait()
        return OUTCOME


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    found = _Recorder()
    monkeypatch.setattr(runtime, "_reconcile", found)
    return found


def _runtime(slots: int) -> runtime.Runtime:
    rt = runtime.Runtime(slots=asyncio.Semaphore(slots))
    rt.client = object()  # type: ignore[assignment]
    rt.connected.set()
    return rt


async def _until(condition: Any) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_triggers_join_the_reconcile_waiting_for_a_slot(recorder: _Recorder) -> None:
    rt = _runtime(slots=1)
    await rt.slots.acquire()  # every slot busy: what is triggered now waits
    first = asyncio.create_task(runtime.converge(rt, "ns", "a", write=False, database_pass=False))
    await _until(lambda: ("ns", "a") in rt.queued)
    # Two events of the object while it waits: neither queues a reconcile of its own.
    assert await runtime.trigger(rt, "ns", "a", drift=True, database_pass=False) is None
    assert await runtime.trigger(rt, "ns", "a", periodic=True) is None
    rt.slots.release()
    recorder.release.set()
    assert await first is OUTCOME
    assert len(recorder.runs) == 1
    ran = recorder.runs[0]
    assert (ran.drift, ran.write, ran.database_pass, ran.periodic) == (True, True, True, True)
    assert rt.queued == {}


async def test_a_trigger_after_the_reconcile_started_waits_for_its_own(
    recorder: _Recorder,
) -> None:
    rt = _runtime(slots=2)
    first = asyncio.create_task(runtime.converge(rt, "ns", "a"))
    await _until(lambda: len(recorder.runs) == 1)
    # The running reconcile may have read the object before this event: no joining it.
    second = asyncio.create_task(runtime.trigger(rt, "ns", "a", drift=True))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not second.done()  # waiting for the object's lock, with a slot of its own
    assert len(recorder.runs) == 1
    recorder.release.set()
    assert await first is OUTCOME
    assert await second is OUTCOME
    assert [run.drift for run in recorder.runs] == [False, True]


async def test_other_objects_and_another_uid_do_not_join(recorder: _Recorder) -> None:
    rt = _runtime(slots=1)
    await rt.slots.acquire()
    waiting = asyncio.create_task(runtime.converge(rt, "ns", "a", expect_uid="uid-1"))
    await _until(lambda: ("ns", "a") in rt.queued)
    other = asyncio.create_task(runtime.trigger(rt, "ns", "b"))
    replaced = asyncio.create_task(runtime.trigger(rt, "ns", "a", expect_uid="uid-2"))
    same = await runtime.trigger(rt, "ns", "a", expect_uid="uid-1")
    assert same is None
    rt.slots.release()
    recorder.release.set()
    assert await asyncio.gather(waiting, other, replaced) == [OUTCOME] * 3
    assert len(recorder.runs) == 3


async def test_a_cancelled_waiter_leaves_no_queue_entry(recorder: _Recorder) -> None:
    rt = _runtime(slots=1)
    await rt.slots.acquire()
    waiting = asyncio.create_task(runtime.converge(rt, "ns", "a"))
    await _until(lambda: ("ns", "a") in rt.queued)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert rt.queued == {}
    rt.slots.release()
    recorder.release.set()
    # A later trigger is not lost in a joined request nobody runs.
    assert await runtime.trigger(rt, "ns", "a") is OUTCOME


async def test_an_event_is_let_go_at_once_and_later_events_join_its_reconcile(
    recorder: _Recorder,
) -> None:
    rt = _runtime(slots=1)
    await rt.slots.acquire()
    # The handler returns before any reconcile runs: Kopf lets the event go.
    runtime.enqueue(rt, "ns", "a", "a change to Deployment a", write=False, database_pass=False)
    runtime.enqueue(rt, "ns", "a", "a change to Service a", drift=True, database_pass=False)
    runtime.enqueue(rt, "ns", "a", "the migration Job a-1 changed")
    assert len(rt.background) == 1
    assert recorder.runs == []
    rt.slots.release()
    recorder.release.set()
    await asyncio.gather(*rt.background)
    assert len(recorder.runs) == 1
    ran = recorder.runs[0]
    assert (ran.drift, ran.write, ran.database_pass, ran.periodic) == (True, True, True, False)
    assert rt.queued == {} and rt.background == set()


async def test_a_failed_enqueued_reconcile_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def failing(*_: Any) -> Any:
        raise kube.ApiError(503, "ServiceUnavailable", "the API server is busy")

    retried: list[tuple[str, str]] = []
    monkeypatch.setattr(runtime, "_reconcile", failing)
    monkeypatch.setattr(runtime, "retry_later", lambda rt, ns, name: retried.append((ns, name)))
    rt = _runtime(slots=1)
    runtime.enqueue(rt, "ns", "a", "a change to Deployment a")
    await asyncio.gather(*rt.background)
    assert retried == [("ns", "a")]
