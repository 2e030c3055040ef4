"""The in-process host's local core without a model: rounds, shared passes and errors."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from qwen3_aligner_triton.core import CoreInput, CoreRunner, SlotResult
from qwen3_aligner_triton.inprocess import LocalCore
from qwen3_aligner_triton.params import CoreSettings

TS = 7


def clip(words: int) -> CoreInput:
    ids = np.array([1] * 5 + [TS, TS] * words, dtype=np.int64)
    return CoreInput(ids, np.zeros((128, 100), np.float32))


class Recorder:
    """A forward that records each pass's clips and answers ordered bins."""

    def __init__(self, fail_words: int | None = None) -> None:
        self.passes: list[list[int]] = []
        self.fail_words = fail_words

    def __call__(self, batch):
        words = [int((it.input_ids == TS).sum()) // 2 for it in batch]
        self.passes.append(words)
        if self.fail_words in words:
            raise RuntimeError("simulated failure")
        return [
            SlotResult(np.arange(2 * n, dtype=np.int32), np.ones(2 * n, np.float32)) for n in words
        ]


def run_requests(core: LocalCore, rounds: list[list[int]]) -> list:
    """Each request sends one clip per round (a recording's windows), the next after the last
    one's answer, as the front does."""

    async def request(sizes: list[int]):
        out = []
        for words in sizes:
            await asyncio.sleep(0)
            out.append(await core(clip(words)))
        return out

    async def main():
        return await asyncio.gather(*(request(r) for r in rounds), return_exceptions=True)

    return asyncio.run(main())


def test_requests_given_together_share_a_pass_round_by_round():
    forward = Recorder()
    runner = CoreRunner(forward, CoreSettings(max_forward_batch=16, bucket_ratio=1000.0))
    core = LocalCore(runner, settled=lambda: True)
    results = run_requests(core, [[2, 3], [4], [5, 6, 7]])
    # round 1: every request's first clip; round 2: the second clips; round 3: the last one
    assert [sorted(p) for p in forward.passes] == [[2, 4, 5], [3, 6], [7]]
    assert [len(r) for r in results] == [2, 1, 3]
    assert results[2][2].bins.tolist() == list(range(14))


def test_a_round_waits_while_preparation_is_running():
    """A clip still being prepared joins the round: the pass starts once nothing is prepared."""
    forward = Recorder()
    runner = CoreRunner(forward, CoreSettings(max_forward_batch=16, bucket_ratio=1000.0))
    preparing = {"left": 20}
    core = LocalCore(runner, settled=lambda: preparing["left"] == 0)

    async def prepared_later():
        while preparing["left"]:  # the preparation thread's work, 20 ms of it
            await asyncio.sleep(0.001)
            preparing["left"] -= 1
        return await core(clip(2))

    async def main():
        return await asyncio.gather(core(clip(1)), prepared_later())

    asyncio.run(main())
    assert [sorted(p) for p in forward.passes] == [[1, 2]]


def test_a_failing_clip_gets_its_own_error_and_the_others_their_results():
    forward = Recorder(fail_words=3)
    runner = CoreRunner(forward, CoreSettings(max_forward_batch=16, bucket_ratio=1000.0))
    core = LocalCore(runner, settled=lambda: True)
    results = run_requests(core, [[2], [3], [4]])
    assert isinstance(results[1], RuntimeError) and "simulated failure" in str(results[1])
    assert [len(results[0]), len(results[2])] == [1, 1]
    # the failed pass was split in halves and retried: the culprit alone failed
    assert sorted(forward.passes[0]) == [2, 3, 4] and [3] in forward.passes


@pytest.mark.parametrize("batch", [1, 2])
def test_passes_hold_at_most_max_forward_batch_clips(batch):
    forward = Recorder()
    runner = CoreRunner(forward, CoreSettings(max_forward_batch=batch, bucket_ratio=1000.0))
    run_requests(LocalCore(runner, settled=lambda: True), [[1], [2], [3]])
    assert all(len(p) <= batch for p in forward.passes)
    assert sorted(w for p in forward.passes for w in p) == [1, 2, 3]
