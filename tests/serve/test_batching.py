"""The micro-batcher alone: concurrent items merged into one call, batches capped, a failing
item isolated, a bounded queue, timed-out items dropped, and a drain on stop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from polymodal.serve.batching import MicroBatcher, NotRunning, QueueFull


class Recorder:
    """A ``process`` that records each batch (and its thread) and may wait for a gate."""

    def __init__(self, bad: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()
        self.bad = bad
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, items: list[str]) -> list[str]:
        self.entered.set()
        assert self.gate.wait(10)
        self.batches.append(list(items))
        self.threads.add(threading.get_ident())
        if self.bad in items:
            raise ValueError(f"bad item {self.bad}")
        return [item.upper() for item in items]


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition did not come true")


def test_concurrent_items_are_processed_in_one_call_off_the_event_loop() -> None:
    process = Recorder()
    sizes: list[int] = []

    async def test() -> None:
        batcher = MicroBatcher(process, max_batch=8, max_wait_ms=2000, on_batch=sizes.append)
        await batcher.start()
        done = await asyncio.gather(*(batcher.submit(x) for x in "abcdefgh"))
        await batcher.stop()
        assert [d.value for d in done] == list("ABCDEFGH")
        assert {d.batch_size for d in done} == {8}

    run(test)
    assert process.batches == [list("abcdefgh")]  # full: no wait for the 2 s
    assert sizes == [8]
    assert threading.get_ident() not in process.threads


def test_batches_hold_at_most_max_batch_items_and_each_depth_is_told() -> None:
    process = Recorder()
    depths: list[int] = []

    async def test() -> None:
        batcher = MicroBatcher(process, max_batch=3, max_wait_ms=50, on_depth=depths.append)
        await batcher.start()
        await asyncio.gather(*(batcher.submit(x) for x in "abcdefg"))
        await batcher.stop()

    run(test)
    assert [len(batch) for batch in process.batches] == [3, 3, 1]
    assert depths == [1, 2, 3, 4, 5, 6, 7, 4, 1, 0]  # each arrival, then each batch taken


def test_a_failing_item_gets_its_error_and_the_others_their_results() -> None:
    process = Recorder(bad="b")

    async def test() -> None:
        batcher = MicroBatcher(process, max_batch=3, max_wait_ms=2000)
        await batcher.start()
        done = await asyncio.gather(*(batcher.submit(x) for x in "abc"), return_exceptions=True)
        await batcher.stop()
        assert done[0].value == "A" and done[2].value == "C"  # type: ignore[union-attr]
        assert isinstance(done[1], ValueError) and "bad item b" in str(done[1])

    run(test)
    assert process.batches == [["a", "b", "c"], ["a"], ["b"], ["c"]]  # then one by one


def test_the_wait_counts_from_the_oldest_items_arrival() -> None:
    """An item that waited max_wait while the previous batch ran is processed at once, not
    held another max_wait for company."""
    process = Recorder()
    process.gate.clear()

    async def test() -> float:
        batcher = MicroBatcher(process, max_batch=2, max_wait_ms=500)
        await batcher.start()
        full = asyncio.gather(batcher.submit("a"), batcher.submit("b"))  # a full batch: at once
        await until(process.entered.is_set)
        late = asyncio.ensure_future(batcher.submit("c"))
        await asyncio.sleep(0.6)  # "c" has waited past max_wait while "a b" ran
        loop = asyncio.get_running_loop()
        opened = loop.time()
        process.gate.set()
        await full
        await late
        elapsed = loop.time() - opened
        await batcher.stop()
        return elapsed

    elapsed = asyncio.run(test())
    assert process.batches == [["a", "b"], ["c"]]
    assert elapsed < 0.4  # measured from the worker becoming free it would be 0.5 s or more


def test_a_full_queue_refuses_and_a_stopped_batcher_too() -> None:
    process = Recorder()
    process.gate.clear()

    async def test() -> None:
        batcher = MicroBatcher(process, max_batch=1, max_wait_ms=0, max_queue=2)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit("a"))
        await until(process.entered.is_set)  # "a" is being processed
        waiting = [asyncio.ensure_future(batcher.submit(x)) for x in "bc"]
        await until(lambda: batcher.depth == 2)
        with pytest.raises(QueueFull, match="full"):
            await batcher.submit("d")
        process.gate.set()
        await asyncio.gather(first, *waiting)
        await batcher.stop()
        with pytest.raises(NotRunning):
            await batcher.submit("e")

    run(test)
    assert process.batches == [["a"], ["b"], ["c"]]


def test_an_item_whose_wait_timed_out_is_not_processed() -> None:
    process = Recorder()
    process.gate.clear()

    async def test() -> None:
        batcher = MicroBatcher(process, max_batch=1, max_wait_ms=0)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit("a"))
        await until(process.entered.is_set)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.submit("b"), 0.05)
        process.gate.set()
        assert (await first).value == "A"
        await batcher.stop()

    run(test)
    assert process.batches == [["a"]]


def test_stop_finishes_every_waiting_item() -> None:
    process = Recorder()
    process.gate.clear()

    async def test() -> None:
        batcher = MicroBatcher(process, max_batch=2, max_wait_ms=1000)
        await batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(x)) for x in "abcde"]
        await until(process.entered.is_set)
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0.01)
        process.gate.set()
        await stopping
        assert [(await p).value for p in pending] == list("ABCDE")

    run(test)
    assert sum(len(batch) for batch in process.batches) == 5


def test_settings_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(Recorder(), max_batch=0)
