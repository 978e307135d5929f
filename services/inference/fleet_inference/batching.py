"""Dynamic batching: requests queued while the worker is busy run together as one batch, in a worker
thread; a batch of several requests waits at most max_wait for more company. A lone request runs at once.

A batch never holds more than max_batch rows: a request that would overshoot waits for the next batch,
and a request larger than max_batch is split into parts of at most max_batch rows. The rows of a
caller that went away (its future cancelled: the client disconnected) are dropped before they run.

Inference never runs on the event loop, so /predict saturating the CPU leaves the loop free. With
max_batch=1 every request runs alone (the unbatched baseline the benchmark compares). max_batch,
max_wait_s and max_queue may be changed while it runs (live configuration): the next batch uses them.
"""
import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from .model_store import Batch  # rows: one tensor per model input, each batched along its first dimension


def _size(rows: Batch) -> int:
    return len(rows[0])


def _cat(parts: list[Batch]) -> Batch:
    return tuple(torch.cat(xs) for xs in zip(*parts))


class QueueFull(RuntimeError):
    pass


class DynamicBatcher:
    def __init__(self, infer: Callable[[Batch], torch.Tensor], max_batch: int, max_wait_s: float,
                 max_queue: int, on_batch: Callable[[int, float], None] | None = None,
                 on_dropped: Callable[[int], None] | None = None):
        self._infer = infer
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._on_batch = on_batch or (lambda size, seconds: None)
        self._on_dropped = on_dropped or (lambda rows: None)
        self._queue: asyncio.Queue | None = None
        self._held: tuple | None = None  # the item that would have overshot the last batch: first in the next
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.depth = 0  # rows waiting, not yet in a running batch

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def full(self) -> bool:
        """No room for even one more row: admission control refuses before reading a request's body."""
        return self.depth >= self.max_queue

    async def submit(self, rows: Batch) -> torch.Tensor:
        if self.depth + _size(rows) > self.max_queue:
            raise QueueFull(f"queue holds {self.depth} rows; bound is {self.max_queue}")
        loop = asyncio.get_running_loop()
        parts = (list(zip(*(torch.split(x, self.max_batch) for x in rows))) if _size(rows) > self.max_batch
                 else (rows,))
        futures = [loop.create_future() for _ in parts]
        for part, fut in zip(parts, futures):
            self.depth += _size(part)
            self._queue.put_nowait((part, fut))
        # The caller going away cancels the gather, which cancels its parts: those not yet run are dropped.
        outs = await asyncio.gather(*futures)
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _next(self) -> tuple | None:
        """The next item to run, skipping (and counting) those whose caller went away; None: none waits."""
        while True:
            if self._held is not None:
                item, self._held = self._held, None
            else:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    return None
            if not item[1].cancelled():
                return item
            self.depth -= _size(item[0])
            self._on_dropped(_size(item[0]))

    async def _collect(self) -> list:
        first = self._next()
        while first is None:
            self._held = await self._queue.get()
            first = self._next()
        items, rows = [first], _size(first[0])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while rows < self.max_batch:
            item = self._next()
            if item is None:
                if len(items) == 1:
                    break  # nobody else is waiting: waiting for company would only add latency
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    self._held = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
                continue
            if rows + _size(item[0]) > self.max_batch:
                self._held = item  # it would overshoot: it opens the next batch
                break
            items.append(item)
            rows += _size(item[0])
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            batch = _cat([rows for rows, _ in items]) if len(items) > 1 else items[0][0]
            self.depth -= _size(batch)
            started = loop.time()
            try:
                out = await loop.run_in_executor(self._executor, self._infer, batch)
            except Exception as e:  # the model's error goes to every caller of this batch
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self._on_batch(_size(batch), loop.time() - started)
            offset = 0
            for rows, fut in items:
                if not fut.done():
                    fut.set_result(out[offset:offset + _size(rows)])
                offset += _size(rows)
