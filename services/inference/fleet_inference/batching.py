"""Dynamic batching: requests queued while the worker is busy run together as one batch, in a worker
thread; a batch of several requests waits at most max_wait for more company. A lone request runs at once.

Inference never runs on the event loop, so /health and /ready answer fast while /predict saturates
the CPU. With max_batch=1 every request runs alone (the unbatched baseline the benchmark compares).
"""
import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch


class QueueFull(RuntimeError):
    pass


class DynamicBatcher:
    def __init__(self, infer: Callable[[torch.Tensor], torch.Tensor], max_batch: int, max_wait_s: float,
                 max_queue: int, on_batch: Callable[[int, float], None] | None = None):
        self._infer = infer
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._on_batch = on_batch or (lambda size, seconds: None)
        self._queue: asyncio.Queue | None = None
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

    async def submit(self, rows: torch.Tensor) -> torch.Tensor:
        if self.depth + len(rows) > self.max_queue:
            raise QueueFull(f"queue holds {self.depth} rows; bound is {self.max_queue}")
        fut = asyncio.get_running_loop().create_future()
        self.depth += len(rows)
        self._queue.put_nowait((rows, fut))
        return await fut

    async def _collect(self) -> list:
        items = [await self._queue.get()]
        rows = len(items[0][0])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while rows < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                if len(items) == 1:
                    break  # nobody else is waiting: waiting for company would only add latency
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            items.append(item)
            rows += len(item[0])
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            batch = torch.cat([rows for rows, _ in items])
            self.depth -= len(batch)
            started = loop.time()
            try:
                out = await loop.run_in_executor(self._executor, self._infer, batch)
            except Exception as e:  # the model's error goes to every caller of this batch
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self._on_batch(len(batch), loop.time() - started)
            offset = 0
            for rows, fut in items:
                if not fut.done():
                    fut.set_result(out[offset:offset + len(rows)])
                offset += len(rows)
