import asyncio
import threading

import pytest
import torch

from fleet_inference.batching import DynamicBatcher, QueueFull


def run(coro):
    return asyncio.run(coro)


class Recorder:
    """A fake model: doubles its input and records batch sizes and the thread it ran on."""

    def __init__(self):
        self.sizes, self.threads = [], set()

    def __call__(self, batch):
        self.sizes.append(len(batch))
        self.threads.add(threading.get_ident())
        return batch * 2


def test_concurrent_requests_share_a_batch_and_get_their_own_rows():
    rec = Recorder()

    async def main():
        b = DynamicBatcher(rec, max_batch=32, max_wait_s=0.05, max_queue=100)
        b.start()
        outs = await asyncio.gather(*(b.submit(torch.full((1, 2), float(i))) for i in range(8)))
        await b.stop()
        return outs

    outs = run(main())
    assert [o.tolist() for o in outs] == [[[2.0 * i] * 2] for i in range(8)]
    assert rec.sizes == [8]
    assert threading.get_ident() not in rec.threads  # inference never on the event loop's thread


def sizes_for(max_batch: int, requests: list[torch.Tensor]) -> list[int]:
    """Submit all requests at once to a batcher over a Recorder; the batch sizes it ran."""
    rec = Recorder()

    async def main():
        b = DynamicBatcher(rec, max_batch=max_batch, max_wait_s=0.05, max_queue=100)
        b.start()
        await asyncio.gather(*(b.submit(r) for r in requests))
        await b.stop()

    run(main())
    return rec.sizes


def test_max_batch_one_runs_each_request_alone():
    assert sizes_for(1, [torch.ones(1, 2)] * 5) == [1] * 5


def test_batch_does_not_exceed_max_batch_rows():
    sizes = sizes_for(4, [torch.ones(2, 2)] * 6)
    assert all(s <= 4 for s in sizes) and sum(sizes) == 12


def test_queue_bound_rejects():
    async def main():
        b = DynamicBatcher(lambda x: x, max_batch=8, max_wait_s=0.01, max_queue=3)
        b.start()
        with pytest.raises(QueueFull):
            await asyncio.gather(*(b.submit(torch.ones(2, 2)) for _ in range(2)))
        await b.stop()

    run(main())


def test_model_error_reaches_every_caller_and_the_batcher_survives():
    calls = []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return batch

    async def main():
        b = DynamicBatcher(flaky, max_batch=8, max_wait_s=0.02, max_queue=100)
        b.start()
        first = await asyncio.gather(b.submit(torch.ones(1, 2)), b.submit(torch.ones(1, 2)), return_exceptions=True)
        second = await b.submit(torch.ones(1, 2))
        await b.stop()
        return first, second

    first, second = run(main())
    assert all(isinstance(e, RuntimeError) for e in first)
    assert second.tolist() == [[1.0, 1.0]]
