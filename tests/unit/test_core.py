"""The forward-only core without Triton: cost parsing, the simulated device, the pass planner."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import torch

from qwen3_aligner_tools.simulated_device import SimulatedDevice, placeholder_bins
from qwen3_aligner_triton.core import (
    CoreInput,
    CoreRunner,
    DeviceQueue,
    NoResult,
    PassLog,
    SlotResult,
    clips_held,
    cpu_instances,
    forward_threads,
)
from qwen3_aligner_triton.params import (
    ConfigError,
    CoreSettings,
    GpuCost,
    parse_gpu_cost,
    read_simulation,
)

TS = 7  # timestamp token id of these fake prompts


def clip(words: int, frames: int = 300, extra_tokens: int = 5) -> CoreInput:
    ids = np.array([1] * extra_tokens + [TS, TS] * words, dtype=np.int64)
    return CoreInput(ids, np.zeros((128, frames), np.float32))


@pytest.mark.parametrize(
    ("spec", "cost"),
    [("25+8.1n", GpuCost(25.0, 8.1)), (" 0 + 0n ", GpuCost(0.0, 0.0)), ("30+2*n", GpuCost(30, 2))],
)
def test_gpu_cost_parses(spec, cost):
    assert parse_gpu_cost(spec) == cost
    assert cost.seconds(2) == pytest.approx((cost.fixed_ms + 2 * cost.per_item_ms) / 1000)


@pytest.mark.parametrize("spec", ["25", "n", "25+8.1", "-1+2n", "fast"])
def test_bad_gpu_cost_is_rejected_with_the_form(spec):
    with pytest.raises(ValueError, match="A\\+Bn"):
        parse_gpu_cost(spec)
    with pytest.raises(ConfigError, match="simulate_gpu"):
        read_simulation(
            {"simulate_gpu": {"string_value": spec}, "checkpoint": {"string_value": "x"}}
        )


@pytest.mark.parametrize(("slots", "frames"), [(2, 10), (10, 300), (400, 18000)])
def test_placeholder_bins_are_ordered_pairs_inside_the_audio(slots, frames):
    bins = placeholder_bins(slots, frames, 80.0)
    assert bins.shape == (slots,) and bins.dtype == np.int32
    assert (np.diff(bins) >= 0).all()
    assert bins.min() >= 0 and bins.max() * 80 <= frames * 10


def test_simulated_device_answers_per_clip_and_charges_the_cost(tmp_path):
    slept: list[float] = []
    device = SimulatedDevice(GpuCost(25, 8), TS, 80.0, str(tmp_path / "gpu.lock"), slept.append)
    out = device([clip(3), clip(1, frames=100)])
    assert slept == [pytest.approx(0.041)]
    assert [r.bins.shape[0] for r in out] == [6, 2]
    assert all((r.confidence == 1).all() for r in out)


def test_simulated_devices_never_overlap(tmp_path):
    """Two devices on one lock file (as two processes would be) take turns."""
    lock = str(tmp_path / "gpu.lock")
    busy = threading.Event()
    overlaps: list[bool] = []

    def sleep(seconds: float) -> None:
        overlaps.append(busy.is_set())
        busy.set()
        time.sleep(0.05)
        busy.clear()

    devices = [SimulatedDevice(GpuCost(0, 0), TS, 80.0, lock, sleep) for _ in range(4)]
    threads = [threading.Thread(target=d, args=([clip(1)],)) for d in devices for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(overlaps) == 12 and not any(overlaps)


class Recorder:
    def __init__(self, fail_on=None):
        self.passes: list[int] = []
        self.fail_on = fail_on

    def __call__(self, batch):
        if self.fail_on is not None and any(it is self.fail_on for it in batch):
            raise RuntimeError("CUDA out of memory (simulated)")
        self.passes.append(len(batch))
        return [SlotResult(np.zeros(it.tokens, np.int32), np.ones(1, np.float32)) for it in batch]


def test_gpu_policy_runs_similar_clips_in_one_pass():
    forward = Recorder()
    runner = CoreRunner(forward, CoreSettings(max_forward_batch=64, max_forward_tokens=65536))
    results = runner.run([clip(40) for _ in range(64)])
    assert forward.passes == [64]
    assert all(isinstance(r, SlotResult) for r in results)


def test_cpu_policy_runs_one_clip_per_pass():
    forward = Recorder()
    CoreRunner(forward, CoreSettings(max_forward_batch=1)).run([clip(4) for _ in range(5)])
    assert forward.passes == [1] * 5


def test_a_failing_pass_is_split_and_only_the_culprit_fails():
    items = [clip(4) for _ in range(6)]
    forward = Recorder(fail_on=items[3])
    sizes: list[int] = []
    results = CoreRunner(forward, CoreSettings()).run(items, on_batch=sizes.append)
    assert isinstance(results[3], RuntimeError)
    assert all(isinstance(r, SlotResult) for i, r in enumerate(results) if i != 3)
    assert sum(sizes) == 5


def test_simulated_out_of_memory_limits_padded_tokens():
    forward = Recorder()
    settings = CoreSettings()
    results = CoreRunner(forward, settings, oom_above_tokens=100).run(
        [clip(10, extra_tokens=30) for _ in range(4)]
    )
    assert all(isinstance(r, SlotResult) for r in results)  # 50 tokens each: passes of 2
    assert forward.passes == [2, 2]
    (alone,) = CoreRunner(forward, settings, oom_above_tokens=100).run([clip(60)])
    assert isinstance(alone, torch.OutOfMemoryError)


def test_observer_sees_each_successful_pass():
    seen: list[int] = []

    class Observer:
        def forward_done(self, batch_size, forward_s, postprocess_s):
            seen.append(batch_size)

    CoreRunner(Recorder(), CoreSettings(max_forward_batch=2), Observer()).run(
        [clip(3) for _ in range(5)]
    )
    assert seen == [2, 2, 1]


# --- the device queue: what a pass takes and when ---------------------------------------------


class GatedRun:
    """A device whose passes wait for the test to open them; records each pass's clips."""

    def __init__(self, gated: bool = True) -> None:
        self.passes: list[list[CoreInput]] = []
        self.entered = threading.Semaphore(0)
        self.gate = threading.Semaphore(0 if gated else 1_000)
        self.threads: set[str] = set()

    def __call__(self, items):
        self.passes.append(list(items))
        self.threads.add(threading.current_thread().name)
        self.entered.release()
        assert self.gate.acquire(timeout=10), "the test never opened the pass"
        return [
            SlotResult(np.full(2, k, np.int32), np.ones(2, np.float32)) for k in range(len(items))
        ]


async def entered(run: GatedRun) -> None:
    """Wait until the device thread has started its next pass."""
    assert await asyncio.to_thread(run.entered.acquire, True, 10)


def test_a_lone_clip_starts_its_pass_at_once_off_the_event_loop():
    """Ordering, not wall time: the pass has begun after a single turn of the event loop, before
    any timer (a batching delay) could fire or another clip arrive, and it runs on the device
    thread while the loop stays free."""
    run = GatedRun()

    async def main():
        queue = DeviceQueue(run, max_pass=8, max_held=16)
        future = await queue.submit(clip(2))
        await asyncio.sleep(0)  # one turn of the loop: the queue's driver takes its first step
        assert queue.passes == 1, "a lone clip waited for company before its pass"
        await entered(run)  # the device thread is in the pass; this loop goes on meanwhile
        assert run.threads and all(name.startswith("device") for name in run.threads)
        assert not future.done()
        run.gate.release()
        assert isinstance(await asyncio.wait_for(future, 10), SlotResult)
        return queue

    queue = asyncio.run(main())
    assert [len(p) for p in run.passes] == [1] and queue.passes == 1


def test_clips_arriving_during_a_pass_share_the_next_one():
    run = GatedRun()

    async def main():
        queue = DeviceQueue(run, max_pass=8, max_held=16)
        first = await queue.submit(clip(1))
        await entered(run)  # the device is busy with the first clip
        later = [await queue.submit(clip(2)) for _ in range(5)]
        assert queue.waiting == 5
        run.gate.release()  # the first pass ends; the next one takes all five at once
        await entered(run)
        run.gate.release()
        outcomes = await asyncio.gather(first, *later)
        return outcomes

    outcomes = asyncio.run(main())
    assert [len(p) for p in run.passes] == [1, 5]
    assert [int(o.bins[0]) for o in outcomes] == [0, 0, 1, 2, 3, 4]  # each clip its own result


def test_the_next_pass_starts_before_the_last_ones_are_answered():
    run = GatedRun()
    seen: list[int] = []

    async def main():
        queue = DeviceQueue(run, max_pass=8, max_held=16)
        first = await queue.submit(clip(1))
        await entered(run)
        second = await queue.submit(clip(1))
        first.add_done_callback(lambda _: seen.append(queue.passes))
        run.gate.release()
        await first
        await entered(run)
        run.gate.release()
        await second

    asyncio.run(main())
    assert seen == [2]  # when the first clip's answer went out, its successor's pass had begun


def test_a_pass_takes_at_most_max_pass_clips_in_arrival_order():
    run = GatedRun(gated=False)

    async def main():
        queue = DeviceQueue(run, max_pass=3, max_held=16)
        futures = [await queue.submit(clip(k + 1)) for k in range(7)]
        await asyncio.gather(*futures)

    asyncio.run(main())
    assert [len(p) for p in run.passes] == [3, 3, 1]
    assert [it.tokens for p in run.passes for it in p] == [clip(k + 1).tokens for k in range(7)]


def test_submit_waits_while_the_instance_holds_max_held_clips():
    run = GatedRun()

    async def main():
        queue = DeviceQueue(run, max_pass=2, max_held=2)
        held = [await queue.submit(clip(1)) for _ in range(2)]
        await entered(run)
        third = asyncio.ensure_future(queue.submit(clip(1)))
        await asyncio.sleep(0.05)
        assert not third.done()  # Triton's queue keeps it meanwhile
        run.gate.release()
        await asyncio.gather(*held)
        future = await asyncio.wait_for(third, 5)
        await entered(run)
        run.gate.release()
        await future

    asyncio.run(main())
    assert [len(p) for p in run.passes] == [2, 1]


def test_a_failing_run_answers_each_of_its_clips_and_the_queue_goes_on():
    calls = []

    def run(items):
        calls.append(len(items))
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return [SlotResult(np.zeros(2, np.int32), np.ones(2, np.float32)) for _ in items][:1]

    async def main():
        queue = DeviceQueue(run, max_pass=4, max_held=8)
        failed = [await queue.submit(clip(1)) for _ in range(2)]
        failed_outcomes = await asyncio.gather(*failed)
        later = [await queue.submit(clip(1)) for _ in range(2)]
        return failed_outcomes, await asyncio.gather(*later)

    failed, later = asyncio.run(main())
    assert all(isinstance(o, RuntimeError) and "device lost" in str(o) for o in failed)
    assert isinstance(later[0], SlotResult) and isinstance(later[1], NoResult)


def test_pass_log_hands_passes_on_only_when_flushed():
    seen: list[tuple[int, float]] = []

    class Observer:
        def forward_done(self, batch_size, forward_s, postprocess_s):
            seen.append((batch_size, forward_s))

    log = PassLog(Observer())
    CoreRunner(Recorder(), CoreSettings(max_forward_batch=2), log).run([clip(3) for _ in range(3)])
    assert seen == []
    log.flush()
    assert [size for size, _ in seen] == [2, 1]
    log.flush()
    assert len(seen) == 2


def test_after_pass_runs_on_the_event_loop_after_each_pass():
    run = GatedRun(gated=False)
    threads: list[str] = []

    async def main():
        queue = DeviceQueue(
            run,
            max_pass=1,
            max_held=4,
            after_pass=lambda: threads.append(threading.current_thread().name),
        )
        await asyncio.gather(*[await queue.submit(clip(1)) for _ in range(3)])

    asyncio.run(main())
    assert threads == [threading.current_thread().name] * 3


@pytest.mark.parametrize(("batch", "held"), [(1, 1), (2, 4), (64, 128)])
def test_an_instance_holds_one_pass_waiting_beyond_the_running_one(batch, held):
    assert clips_held(batch) == held


def test_room_waits_while_the_instance_is_full():
    run = GatedRun()

    async def main():
        queue = DeviceQueue(run, max_pass=1, max_held=1)
        future = await queue.submit(clip(1))
        room = asyncio.ensure_future(queue.room())
        await entered(run)
        await asyncio.sleep(0.05)
        assert not room.done()  # one clip per pass: full until its clip is answered
        run.gate.release()
        await future
        await asyncio.wait_for(room, 5)
        await asyncio.wait_for(queue.room(), 5)  # and not consumed by waiting for it

    asyncio.run(main())


def test_thread_setup_runs_on_the_device_thread_before_its_first_pass():
    run = GatedRun(gated=False)
    setups: list[tuple[str, int]] = []

    def setup() -> None:
        torch.set_num_threads(1)
        setups.append((threading.current_thread().name, len(run.passes)))

    def counting(items):
        run.threads.add(f"threads={torch.get_num_threads()}")
        return run(items)

    async def main():
        queue = DeviceQueue(counting, max_pass=8, max_held=16, thread_setup=setup)
        for _ in range(3):
            await (await queue.submit(clip(2)))

    asyncio.run(main())
    assert len(setups) == 1 and setups[0][0].startswith("device") and setups[0][1] == 0
    assert "threads=1" in run.threads  # the setting holds for the passes on that thread


def test_forward_instances_on_the_cpu_share_its_threads():
    assert forward_threads(2, 1) == 2  # one instance keeps every core
    assert forward_threads(2, 2) == 1
    assert forward_threads(16, 3) == 5
    assert forward_threads(2, 4) == 1  # never fewer than one
    assert forward_threads(8, 0) == 8


def test_cpu_instances_counts_the_cpu_groups_of_a_configuration():
    assert cpu_instances({"instance_group": [{"kind": "KIND_CPU", "count": 2}]}) == 2
    groups = [{"kind": "KIND_CPU", "count": 2}, {"kind": "KIND_GPU", "count": 4}, {"count": 1}]
    assert cpu_instances({"instance_group": groups}) == 3  # no kind: Triton's default, CPU here
    assert cpu_instances({}) == 1  # no instance_group: one instance


def test_audio_tokens_of_frames_equal_upstream_s_for_every_length():
    from qwen_asr.core.transformers_backend.processing_qwen3_asr import (
        _get_feat_extract_output_lengths,
    )

    from qwen3_aligner_triton.core import audio_tokens_of_frames

    frames = torch.arange(0, 40_001)
    expected = _get_feat_extract_output_lengths(frames).tolist()
    assert [audio_tokens_of_frames(n) for n in range(40_001)] == expected


AUDIO_PAD = 5
RULES_VOCAB = 400


def rules_clip(ids, frames: int = 300, features=None, wave=None) -> CoreInput:
    if wave is not None:
        return CoreInput(np.asarray(ids, np.int64), wave=wave)
    if features is None:
        features = np.zeros((128, frames), np.float32)
    return CoreInput(np.asarray(ids, np.int64), features)


@pytest.mark.parametrize(
    "item, message",
    [
        (rules_clip([1, TS, TS]), "has 0 audio tokens (id 5) but FEATURES's 300 frames make 39"),
        (rules_clip([AUDIO_PAD] * 40 + [TS, TS]), "has 40 audio tokens"),
        (rules_clip([AUDIO_PAD] * 39 + [10**12]), "INPUT_IDS must lie in [0, 400)"),
        (rules_clip([AUDIO_PAD] * 39 + [-1]), "INPUT_IDS must lie in [0, 400)"),
        (rules_clip([AUDIO_PAD] * 39 + [RULES_VOCAB]), "INPUT_IDS must lie in [0, 400)"),
        (
            rules_clip([AUDIO_PAD] * 39, features=np.full((128, 300), np.nan, np.float32)),
            "FEATURES contains NaN or infinite values",
        ),
        (
            rules_clip([AUDIO_PAD] * 39, features=np.full((128, 300), 1e30, np.float32)),
            "FEATURES values must lie within [-10, 10]",
        ),
        (
            rules_clip([AUDIO_PAD] * 39, features=np.zeros((80, 300), np.float32)),
            "FEATURES must be [128, frames] per clip",
        ),
        (
            rules_clip([AUDIO_PAD], wave=np.full(1600, np.inf, np.float32)),
            "AUDIO contains NaN or infinite values",
        ),
        (
            rules_clip([AUDIO_PAD], wave=np.full(1600, 2.0, np.float32)),
            "AUDIO values must lie within [-1, 1]",
        ),
        (rules_clip([AUDIO_PAD] * 3, wave=np.zeros(160, np.float32)), "1 frames make 1"),
    ],
)
def test_the_core_refuses_clips_that_could_touch_their_batch_mates(item, message):
    from qwen3_aligner_triton.core import ClipRules, refusal

    rules = ClipRules(vocab_size=RULES_VOCAB, audio_token_id=AUDIO_PAD)
    why = refusal(item, CoreSettings(), rules)
    assert why is not None and message in why


def test_well_formed_clips_pass_the_rules():
    from qwen3_aligner_triton.core import ClipRules, refusal

    rules = ClipRules(vocab_size=RULES_VOCAB, audio_token_id=AUDIO_PAD)
    assert refusal(rules_clip([AUDIO_PAD] * 39 + [1, TS, TS]), CoreSettings(), rules) is None
    wave = np.linspace(-1, 1, 160, dtype=np.float32)
    assert refusal(rules_clip([AUDIO_PAD, TS, TS], wave=wave), CoreSettings(), rules) is None


@pytest.mark.parametrize(
    "error, fatal",
    [
        (RuntimeError("CUDA error: device-side assert triggered"), True),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), True),
        (RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED when calling cublasGemmEx"), True),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), False),
        (IndexError("index out of range in self"), False),
        (ValueError("bad"), False),
    ],
)
def test_device_errors_that_poison_the_process_are_told_apart(error, fatal):
    from qwen3_aligner_triton.core import fatal_device_error

    assert fatal_device_error(error) is fatal


def test_a_fatal_device_error_is_not_retried_in_halves():
    calls = []

    def forward(batch):
        calls.append(len(batch))
        raise RuntimeError("CUDA error: device-side assert triggered")

    settings = CoreSettings(max_forward_batch=8)
    results = CoreRunner(forward, settings).run([clip(2) for _ in range(4)])
    assert calls == [4]
    assert all("device-side assert" in str(r) for r in results)
