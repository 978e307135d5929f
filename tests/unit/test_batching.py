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
        x, = batch  # one tensor per model input: one input here
        self.sizes.append(len(x))
        self.threads.add(threading.get_ident())
        return x * 2


def test_concurrent_requests_share_a_batch_and_get_their_own_rows():
    rec = Recorder()

    async def main():
        b = DynamicBatcher(rec, max_batch=32, max_wait_s=0.05, max_queue=100)
        b.start()
        outs = await asyncio.gather(*(b.submit((torch.full((1, 2), float(i)),)) for i in range(8)))
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
        await asyncio.gather(*(b.submit((r,)) for r in requests))
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
        b = DynamicBatcher(lambda x: x[0], max_batch=8, max_wait_s=0.01, max_queue=3)
        b.start()
        with pytest.raises(QueueFull):
            await asyncio.gather(*(b.submit((torch.ones(2, 2),)) for _ in range(2)))
        await b.stop()

    run(main())


def test_model_error_reaches_every_caller_and_the_batcher_survives():
    calls = []

    def flaky(batch):
        calls.append(len(batch[0]))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return batch[0]

    async def main():
        b = DynamicBatcher(flaky, max_batch=8, max_wait_s=0.02, max_queue=100)
        b.start()
        first = await asyncio.gather(b.submit((torch.ones(1, 2),)), b.submit((torch.ones(1, 2),)), return_exceptions=True)
        second = await b.submit((torch.ones(1, 2),))
        await b.stop()
        return first, second

    first, second = run(main())
    assert all(isinstance(e, RuntimeError) for e in first)
    assert second.tolist() == [[1.0, 1.0]]


def test_a_request_that_would_overshoot_waits_for_the_next_batch():
    """3-row requests with max_batch 4: two would make 6, so each batch holds one (the old code ran 6)."""
    sizes = sizes_for(4, [torch.ones(3, 2)] * 4)
    assert sizes == [3, 3, 3, 3]


def test_a_request_larger_than_max_batch_is_split_and_answered_whole():
    rec = Recorder()

    async def main():
        b = DynamicBatcher(rec, max_batch=2, max_wait_s=0.05, max_queue=100)
        b.start()
        out = await b.submit((torch.arange(10, dtype=torch.float32).reshape(5, 2),))
        await b.stop()
        return out

    out = run(main())
    assert out.tolist() == (torch.arange(10, dtype=torch.float32).reshape(5, 2) * 2).tolist()
    assert all(s <= 2 for s in rec.sizes) and sum(rec.sizes) == 5


def test_rows_of_a_caller_that_went_away_never_run():
    ran, dropped = [], []
    release = threading.Event()

    def slow(batch):  # holds the worker while the queue fills
        release.wait(5)
        ran.append(batch[0][:, 0].tolist())
        return batch[0]

    async def main():
        b = DynamicBatcher(slow, max_batch=1, max_wait_s=0.0, max_queue=100, on_dropped=dropped.append)
        b.start()
        first = asyncio.ensure_future(b.submit((torch.zeros(1, 2),)))
        await asyncio.sleep(0.05)  # the first runs (blocked in the worker); the next ones queue
        gone = [asyncio.ensure_future(b.submit((torch.full((1, 2), float(i)),))) for i in (1, 2)]
        kept = asyncio.ensure_future(b.submit((torch.full((1, 2), 3.0),)))
        await asyncio.sleep(0.05)
        for g in gone:
            g.cancel()  # what the app does when the client disconnects
        release.set()
        await first
        await kept
        depth = b.depth
        await b.stop()
        return depth

    assert run(main()) == 0
    assert ran == [[0.0], [3.0]]
    assert dropped == [1, 1]


def test_admission_refuses_only_when_the_queue_is_full():
    async def main():
        b = DynamicBatcher(lambda x: x, max_batch=8, max_wait_s=0.01, max_queue=2)
        seen = [b.full()]
        b.depth = 2
        seen.append(b.full())
        return seen

    assert run(main()) == [False, True]


def test_several_inputs_are_batched_and_split_together():
    """A model of two inputs (token ids and a mask): requests' rows are joined and split input by input,
    so each row's tensors stay together and every caller gets its own rows' outputs."""
    seen = []

    def model(batch):
        tokens, mask = batch
        seen.append((len(tokens), len(mask)))
        return (tokens * mask).sum(dim=1, keepdim=True).float()

    async def main():
        b = DynamicBatcher(model, max_batch=3, max_wait_s=0.05, max_queue=100)
        b.start()
        requests = [(torch.full((n, 4), i, dtype=torch.int64), torch.ones(n, 4, dtype=torch.int64)) for i, n in
                    ((1, 2), (2, 1), (3, 5))]
        outs = await asyncio.gather(*(b.submit(r) for r in requests))
        await b.stop()
        return outs

    outs = run(main())
    assert [o.flatten().tolist() for o in outs] == [[4.0] * 2, [8.0], [12.0] * 5]
    assert all(t == m and t <= 3 for t, m in seen) and sum(t for t, _ in seen) == 8
