"""Dynamic micro-batching: items that concurrent requests submit within a few milliseconds of
each other are processed by one call, in a worker thread, off the event loop.

>>> async def main() -> tuple[int, int]:
...     batcher = MicroBatcher(lambda rows: [len(row) for row in rows], max_batch=32)
...     await batcher.start()
...     done = await batcher.submit("row")
...     await batcher.stop()
...     return done.value, done.batch_size
>>> asyncio.run(main())
(3, 1)
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds ``max_queue`` items already: the caller should retry later."""


class NotRunning(Exception):
    """The batcher has not started, or is draining to stop: it takes no new items."""


@dataclass(frozen=True)
class Batched(Generic[Result]):
    """An item's result and the size of the batch it was processed in."""

    value: Result
    batch_size: int


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Batched[Result]]
    arrived: float  # the event loop's clock


class MicroBatcher(Generic[Item, Result]):
    """Collects submitted items into batches of at most ``max_batch`` for ``process``.

    A batch starts with the oldest waiting item and takes whatever else arrives until that
    item has waited ``max_wait_ms`` (none is waited for once the batch is full; an item that
    waited that long while the previous batch ran starts its batch at once). ``process`` maps
    a list of items to their results, in order; it runs in one worker thread, one batch at a
    time. When it raises for a batch of several items (one bad row, most often), each item is
    processed alone, so that each gets its own result or its own exception. At most
    ``max_queue`` items wait; ``submit`` raises QueueFull beyond that. ``on_batch`` is told
    each batch's size, ``on_depth`` the number of waiting items whenever it changes.
    """

    def __init__(
        self,
        process: Callable[[list[Item]], list[Result]],
        max_batch: int = 32,
        max_wait_ms: float = 0.0,
        max_queue: int = 256,
        on_batch: Callable[[int], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be at least 1, max_wait_ms >= 0")
        self.process, self.name = process, name
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000, max_queue
        self.on_batch, self.on_depth = on_batch, on_depth
        self._waiting: collections.deque[_Pending[Item, Result]] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        self._executor: ThreadPoolExecutor | None = None

    @property
    def depth(self) -> int:
        """How many items wait for a batch (not those being processed)."""
        return len(self._waiting)

    @property
    def running(self) -> bool:
        return self._accepting

    async def start(self) -> None:
        """Start the worker on the running event loop."""
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        self._accepting = True
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Take no new items, process every waiting one, then stop the worker."""
        self._accepting = False
        if self._task is None or self._arrived is None:
            return
        self._arrived.set()  # wake the worker: it drains what waits, then returns
        await self._task
        assert self._executor is not None
        self._executor.shutdown(wait=True)
        self._task = None

    async def submit(self, item: Item) -> Batched[Result]:
        """The item's result once its batch is processed; its own exception if it failed.

        Cancelling the wait (a timeout) drops the item if its batch has not started."""
        if not self._accepting or self._arrived is None:
            raise NotRunning(f"the {self.name} queue is not running")
        if len(self._waiting) >= self.max_queue:
            raise QueueFull(f"the {self.name} queue is full ({self.max_queue} waiting)")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Batched[Result]] = loop.create_future()
        self._waiting.append(_Pending(item, future, loop.time()))
        self._depth_changed()
        self._arrived.set()
        return await future

    async def _run(self) -> None:
        assert self._arrived is not None
        while self._accepting or self._waiting:
            if not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._gather()
            batch = [self._waiting.popleft() for _ in range(min(self.max_batch, self.depth))]
            self._depth_changed()
            live = [pending for pending in batch if not pending.future.done()]  # not timed out
            if live:
                await self._process(live)

    def _depth_changed(self) -> None:
        if self.on_depth is not None:
            self.on_depth(self.depth)

    async def _gather(self) -> None:
        """Wait until the oldest item has waited ``max_wait`` for the batch to fill (not
        while draining)."""
        assert self._arrived is not None
        deadline = self._waiting[0].arrived + self.max_wait
        while self._accepting and self.depth < self.max_batch:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    async def _process(self, batch: list[_Pending[Item, Result]]) -> None:
        loop = asyncio.get_running_loop()
        items = [pending.item for pending in batch]
        outcomes = await loop.run_in_executor(self._executor, self._outcomes, items)
        if self.on_batch is not None:
            self.on_batch(len(batch))
        for pending, outcome in zip(batch, outcomes, strict=True):
            if pending.future.done():  # timed out while its batch ran
                continue
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(Batched(outcome, len(batch)))

    def _outcomes(self, items: list[Item]) -> list[Result | Exception]:
        """Each item's result, or the exception it alone raised."""
        try:
            return list(self.process(items))
        except Exception as err:
            if len(items) == 1:
                return [err]
            log.debug("a batch of %d failed (%s); processing its items one by one", len(items), err)
        outcomes: list[Result | Exception] = []
        for item in items:
            try:
                outcomes.extend(self.process([item]))
            except Exception as err:
                outcomes.append(err)
        return outcomes
