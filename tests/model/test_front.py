"""The front without Triton: the real preparation of the tiny checkpoint, a fake core."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from qwen3_aligner_tools.simulated_device import placeholder_bins
from qwen3_aligner_triton import front as front_module
from qwen3_aligner_triton.core import CoreInput, SlotResult
from qwen3_aligner_triton.front import (
    STOPPING_MESSAGE,
    AlignerFront,
    core_request_arrays,
    slots_from_arrays,
)
from qwen3_aligner_triton.loading import load_preparer
from qwen3_aligner_triton.params import FrontSettings
from qwen3_aligner_triton.requests import decode_request

TIMESTAMP_ID = None  # read from the preparer's tokenizer


class Metrics:
    def __init__(self):
        self.rejections: list[str] = []
        self.units = 0
        self.stages: dict[str, int] = {}
        self.quality: list[tuple[float, float]] = []

    def rejected(self, reason):
        self.rejections.append(reason)

    def aligned(self, audio_seconds, units):
        self.units += units

    def stage(self, name, seconds):
        self.stages[name] = self.stages.get(name, 0) + 1

    def scored(self, mean_score, repaired_share):
        self.quality.append((mean_score, repaired_share))


class FakeCore:
    """Answers ordered placeholder bins after ``delay`` seconds; records what it was sent."""

    def __init__(
        self, timestamp_id: int, delay: float = 0.01, slots_delta: int = 0, confidence=None
    ):
        self.timestamp_id = timestamp_id
        self.confidence = confidence  # per-slot confidences by slot index (default all 1)
        self.delay = delay
        self.slots_delta = slots_delta
        self.frames: list[int] = []
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, item: CoreInput) -> SlotResult:
        self.frames.append(item.frames)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(self.delay)
        self.in_flight -= 1
        slots = int((item.input_ids == self.timestamp_id).sum()) + self.slots_delta
        bins = placeholder_bins(slots, item.frames, 80.0)
        conf = np.ones(slots, np.float32)
        if self.confidence is not None:
            conf = np.array([self.confidence(k) for k in range(slots)], np.float32)
        return SlotResult(bins, conf)


@pytest.fixture(scope="module")
def preparer(tiny_checkpoint):
    return load_preparer(
        str(tiny_checkpoint), FrontSettings(checkpoint=str(tiny_checkpoint), window_seconds=20.0)
    )


@pytest.fixture()
def core(preparer):
    return FakeCore(preparer.processor.tokenizer.convert_tokens_to_ids("<timestamp>"))


def arrays(seconds: float, text: str, language: str = "en", segments=None, seed: int = 0):
    rng = np.random.default_rng(seed)
    audio = (rng.standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)
    out = {
        "AUDIO": audio[None, :],
        "TEXT": np.array([[text.encode()]], dtype=np.object_),
        "LANGUAGE": np.array([[language.encode()]], dtype=np.object_),
    }
    if segments is not None:
        out["SEGMENTS"] = np.array([[json.dumps(segments).encode()]], dtype=np.object_)
    return out


def words(n: int) -> str:
    return " ".join(f"word{k}" for k in range(n))


def test_a_clip_is_one_core_request_and_its_times_come_back(preparer, core):
    metrics = Metrics()
    outcome = asyncio.run(AlignerFront(preparer, core, metrics).serve(arrays(4.0, words(5))))
    assert outcome.error is None
    assert len(core.frames) == 1
    starts = outcome.outputs["START_TIMES"][0]
    assert len(starts) == 5 and (np.diff(starts) > 0).all()
    assert metrics.units == 5 and metrics.stages == {"preprocess": 1, "postprocess": 1}


def test_each_window_of_a_long_recording_is_its_own_core_request(preparer, core):
    outcome = asyncio.run(AlignerFront(preparer, core, Metrics()).serve(arrays(75.0, words(60))))
    assert outcome.error is None
    assert len(core.frames) >= 3
    assert max(core.frames) <= 20 * 100  # no piece longer than one window (100 frames/s)
    assert len(outcome.outputs["WORDS"][0]) == 60
    assert core.peak == 1  # windows of one recording go one after another


def test_a_short_request_is_answered_between_the_windows_of_a_long_one(preparer, core):
    front = AlignerFront(preparer, core, Metrics())
    finished: list[str] = []

    async def run(name, request, wait=0.0):
        await asyncio.sleep(wait)
        outcome = await front.serve(request)
        assert outcome.error is None
        finished.append(name)

    async def both():
        await asyncio.gather(
            run("long", arrays(75.0, words(60))), run("short", arrays(2.0, "a b"), 0.005)
        )

    asyncio.run(both())
    assert finished == ["short", "long"]


def test_cues_are_core_requests_of_their_own_with_a_bound_in_flight(preparer, monkeypatch):
    monkeypatch.setattr(front_module, "MAX_PIECES_IN_FLIGHT", 2)
    # Slower than preparing the next cue, so that pieces overlap at the core.
    core = FakeCore(preparer.processor.tokenizer.convert_tokens_to_ids("<timestamp>"), delay=0.2)
    cues = [{"start": 2.0 * k, "end": 2.0 * k + 1.5, "text": f"cue {k} words"} for k in range(6)]
    outcome = asyncio.run(
        AlignerFront(preparer, core, Metrics()).serve(arrays(12.0, "", segments=cues))
    )
    assert outcome.error is None
    assert len(core.frames) == 6 and core.peak == 2
    starts = outcome.outputs["START_TIMES"][0]
    assert len(starts) == 18 and (np.diff(starts) >= 0).all()


def test_a_client_mistake_is_invalid_and_counted(preparer, core):
    metrics = Metrics()
    outcome = asyncio.run(
        AlignerFront(preparer, core, metrics).serve(arrays(2.0, "hello", language="klingon"))
    )
    assert outcome.invalid and "LANGUAGE" in outcome.error
    assert metrics.rejections == ["bad_language"] and not core.frames


def test_a_core_answer_of_the_wrong_size_is_an_internal_error(preparer):
    bad = FakeCore(
        preparer.processor.tokenizer.convert_tokens_to_ids("<timestamp>"), slots_delta=-1
    )
    metrics = Metrics()
    logged: list[str] = []
    outcome = asyncio.run(
        AlignerFront(preparer, bad, metrics, logged.append).serve(arrays(2, "a b"))
    )
    assert not outcome.invalid and outcome.error.startswith("internal error (id ")
    assert "timestamps" not in outcome.error  # the exception's text stays in the log
    error_id = outcome.error.split("id ")[1].rstrip(")")
    assert metrics.rejections == ["forward_failed"] and error_id in logged[0]
    assert "timestamps" in logged[0]


def test_scores_come_from_the_cores_confidences(preparer):
    # Start slots 0.81, end slots 0.25: every unit scores sqrt(0.81 * 0.25) = 0.45.
    timestamp_id = preparer.processor.tokenizer.convert_tokens_to_ids("<timestamp>")
    core = FakeCore(timestamp_id, confidence=lambda k: 0.81 if k % 2 == 0 else 0.25)
    metrics = Metrics()
    front = AlignerFront(preparer, core, metrics)
    for request, units in ((arrays(4.0, words(5)), 5), (arrays(75.0, words(60)), 60)):
        outcome = asyncio.run(front.serve(request))
        assert outcome.error is None
        np.testing.assert_allclose(outcome.outputs["SCORES"][0], [0.45] * units, rtol=1e-6)
        doc = json.loads(outcome.outputs["ALIGNMENT"][0][0])
        assert doc["mean_score"] == pytest.approx(0.45)
        assert doc["repaired_share"] == 0.0  # placeholder bins are in order
    assert metrics.quality == [(pytest.approx(0.45), 0.0)] * 2


def test_core_tensors_round_trip(preparer, core):
    item = CoreInput(np.arange(5, dtype=np.int64), np.ones((128, 7), np.float32))
    sent = core_request_arrays(item)
    assert sent.keys() == {"INPUT_IDS", "FEATURES"}
    assert sent["INPUT_IDS"].shape == (1, 5) and sent["FEATURES"].shape == (1, 128, 7)
    wave = CoreInput(np.arange(5, dtype=np.int64), wave=np.ones(1600, np.float32))
    assert core_request_arrays(wave)["AUDIO"].shape == (1, 1600) and wave.frames == 10
    assert "FEATURES" not in core_request_arrays(wave)
    back = slots_from_arrays(
        {"TIMESTAMP_BINS": np.array([[1, 2]]), "SLOT_CONFIDENCE": np.array([[0.5, 1.0]])}
    )
    assert back.bins.dtype == np.int32 and back.bins.tolist() == [1, 2]
    assert back.confidence.dtype == np.float32


def test_a_stopping_front_refuses_with_unavailable_before_any_work(preparer, core):
    metrics = Metrics()
    front = AlignerFront(preparer, core, metrics, stopping=lambda: True)
    outcome = asyncio.run(front.serve(arrays(4.0, words(5))))
    assert outcome.unavailable and not outcome.invalid and outcome.outputs is None
    assert outcome.error == STOPPING_MESSAGE
    assert core.frames == [] and metrics.rejections == ["stopping"]
    assert metrics.stages == {}


class PilingCore(FakeCore):
    """The worst model: every word piled at the end of its clip. Records each prompt's length."""

    def __init__(self, timestamp_id: int):
        super().__init__(timestamp_id, delay=0.0)
        self.tokens: list[int] = []

    async def __call__(self, item: CoreInput) -> SlotResult:
        self.tokens.append(item.tokens)
        slots = int((item.input_ids == self.timestamp_id).sum())
        end_bin = int(item.frames * 10 // 80)
        return SlotResult(np.full(slots, end_bin, np.int32), np.ones(slots, np.float32))


def test_forty_minutes_with_a_tenth_never_spoken_never_fail_late(tiny_checkpoint):
    """Words that no window can place are carried forward until the last window, which once
    took them all and made a prompt over the limit after the whole recording's work. Now each
    window takes what its prompt may hold, and the words left over come back flagged, inside
    the recording, and the request succeeds."""
    limit = 8192
    preparer = load_preparer(
        str(tiny_checkpoint),
        FrontSettings(
            checkpoint=str(tiny_checkpoint), max_forward_tokens=limit, max_audio_seconds=3600
        ),
    )
    core = PilingCore(preparer.processor.tokenizer.convert_tokens_to_ids("<timestamp>"))
    seconds = 2400.0
    spoken = int(2.2 * seconds)
    text = words(spoken + spoken // 9)  # a tenth of the transcript is never spoken
    outcome = asyncio.run(AlignerFront(preparer, core, Metrics()).serve(arrays(seconds, text)))
    assert outcome.error is None, outcome.error
    assert max(core.tokens) <= limit and len(core.tokens) > 1
    doc = json.loads(outcome.outputs["ALIGNMENT"][0][0])
    units = doc["words"]
    assert len(units) == spoken + spoken // 9
    starts = [u["start"] for u in units]
    assert starts == sorted(starts) and starts[0] >= 0 and units[-1]["end"] <= seconds
    unplaced = [u for u in units if u["repaired"] and u["score"] == 0.0]
    assert unplaced and doc["repaired_share"] > 0


def test_prompt_tokens_are_counted_as_the_processor_builds_the_prompt(preparer):
    from qwen3_aligner_triton.preparation import build_prompt

    for n_words, samples in ((1, 1600), (7, 16000 * 3 + 123), (300, 16000 * 61)):
        some = [f"w{k}" for k in range(n_words)]
        wave = np.zeros(samples, np.float32)
        built = preparer._model_inputs(build_prompt(some), wave)["input_ids"].shape[-1]
        assert preparer.prompt_tokens(some, samples) == built


def test_preparation_runs_off_the_event_loop(preparer, core, monkeypatch):
    """A long preparation (a 4-hour recording's takes seconds) never stalls the loop, which
    meanwhile sends other requests' answers and core calls."""
    import time

    real_prepare = preparer.prepare

    def slow_prepare(request):
        time.sleep(1.0)  # holds its thread, as resampling and the frames do
        return real_prepare(request)

    monkeypatch.setattr(preparer, "prepare", slow_prepare)
    front = AlignerFront(preparer, core, Metrics())
    gaps: list[float] = []

    async def ticker(until: asyncio.Future):
        last = time.perf_counter()
        while not until.done():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async def run():
        serving = asyncio.ensure_future(front.serve(arrays(2.0, words(3))))
        await ticker(serving)
        return await serving

    try:
        outcome = asyncio.run(run())
    finally:
        front.close()
    assert outcome.error is None
    assert len(gaps) > 20 and max(gaps) < 0.5, max(gaps)


def test_audio_held_across_requests_is_bounded(preparer, tiny_checkpoint):
    """Over the instance's budget a request is refused UNAVAILABLE while others hold the audio
    (retry), and INVALID_ARG when it alone exceeds it; the budget is back to 0 afterwards."""
    from qwen3_aligner_triton.front import audio_bytes
    from qwen3_aligner_triton.requests import AlignRequest

    one = audio_bytes(AlignRequest(np.zeros(16000 * 4, np.float32), 16000, "x", "English"))
    settings = FrontSettings(
        checkpoint=str(tiny_checkpoint), window_seconds=20.0, max_held_audio_bytes=one + one // 2
    )
    slow = FakeCore(preparer.processor.tokenizer.convert_tokens_to_ids("<timestamp>"), delay=0.5)
    original = preparer.settings
    preparer.settings = settings
    front = AlignerFront(preparer, slow, Metrics())

    async def run():
        first = asyncio.ensure_future(front.serve(arrays(4.0, words(3))))
        await asyncio.sleep(0.2)
        second = await front.serve(arrays(4.0, words(3), seed=1))
        too_big = await front.serve(arrays(8.0, words(3), seed=2))
        return await first, second, too_big

    try:
        first, second, too_big = asyncio.run(run())
    finally:
        preparer.settings = original
        front.close()
    assert first.error is None
    assert second.unavailable and "max_held_audio_bytes" in second.error
    assert (
        too_big.invalid
        and "the limit is" in too_big.error
        and "max_held_audio_bytes" in too_big.error
    )
    assert front.budget.held == 0
    assert front.metrics.rejections == ["busy", "audio_too_long"]


def test_a_full_core_queue_is_unavailable_for_the_client(preparer):
    """Triton refuses a BLS call when the core's bounded queue is full: the client is told to
    retry (UNAVAILABLE), not that the server failed."""

    async def full(item):
        raise front_module.CoreFailed("Exceeds maximum queue size")

    metrics = Metrics()
    front = AlignerFront(preparer, full, metrics)
    try:
        outcome = asyncio.run(front.serve(arrays(2.0, words(3))))
    finally:
        front.close()
    assert outcome.unavailable and outcome.error == front_module.CORE_BUSY_MESSAGE
    assert metrics.rejections == ["core_queue_full"]


def test_the_core_queue_holds_what_the_fronts_may_keep_in_flight():
    from pathlib import Path

    from qwen3_aligner_triton.repository import MAX_FRONT_INSTANCES, load_config

    repo = Path(__file__).resolve().parents[2] / "model_repository"
    core = load_config(repo / "qwen3_aligner_core" / "config.pbtxt")
    front_model = (repo / "qwen3_aligner" / "1" / "model.py").read_text()
    per_instance = int(front_model.split("MAX_REQUESTS_PER_INSTANCE = ")[1].split()[0])
    bound = core.dynamic_batching.default_queue_policy.max_queue_size
    assert bound == MAX_FRONT_INSTANCES * per_instance * front_module.MAX_PIECES_IN_FLIGHT


def test_cue_words_placed_past_their_window_are_clamped_into_it_and_flagged(preparer):
    """A model that places every word 4 s past the end of its clip: each cue's words are moved
    to the end of the cue's window (its span plus the margin), never into the next cue or past
    the recording, and flagged repaired."""

    class PastCore(FakeCore):
        async def __call__(self, item: CoreInput) -> SlotResult:
            slots = int((item.input_ids == self.timestamp_id).sum())
            past = int(item.frames * 10 // 80) + 50  # 50 bins of 80 ms past the clip's end
            return SlotResult(np.full(slots, past, np.int32), np.ones(slots, np.float32))

    core = PastCore(preparer.processor.tokenizer.convert_tokens_to_ids("<timestamp>"))
    cues = [
        {"start": 1.0, "end": 2.0, "text": "one two"},
        {"start": 4.0, "end": 5.0, "text": "three four"},
    ]
    front = AlignerFront(preparer, core, Metrics())
    try:
        outcome = asyncio.run(front.serve(arrays(6.0, "", segments=cues)))
    finally:
        front.close()
    assert outcome.error is None, outcome.error
    doc = json.loads(outcome.outputs["ALIGNMENT"][0][0])
    times = [(w["start"], w["end"]) for w in doc["words"]]
    # windows: 0.5-3.0 s (the margin is half the 2 s gap) and 3.0-5.5 s (half the 1 s tail)
    assert times == [(3.0, 3.0), (3.0, 3.0), (5.5, 5.5), (5.5, 5.5)]
    assert all(w["repaired"] for w in doc["words"])


@pytest.mark.parametrize("on_a_thread", [False, True])
def test_an_admitted_request_is_copied_out_of_the_callers_memory_and_released(
    preparer, core, monkeypatch, on_a_thread
):
    """In the server the inputs are views of the stub's shared-memory region: the front copies
    what it keeps (large audio on a thread), empties the arrays and says so before it prepares,
    so the caller can let the region go while the request is served."""
    if on_a_thread:
        monkeypatch.setattr(front_module, "INLINE_COPY_BYTES", 0)
    events: list[str] = []
    sent = arrays(4.0, words(5))
    audio = sent["AUDIO"]
    reference = asyncio.run(AlignerFront(preparer, core, Metrics()).serve(arrays(4.0, words(5))))

    class Recording(FakeCore):
        async def __call__(self, item):
            audio_in = item.features if item.features is not None else item.wave
            events.append("core" if np.isfinite(audio_in).all() else "core got freed memory")
            return await super().__call__(item)

    def released():
        events.append("released")
        audio[:] = np.nan  # the caller's memory is reused once it is released

    front = AlignerFront(preparer, Recording(core.timestamp_id), Metrics())
    outcome = asyncio.run(front.serve(sent, released))
    assert events == ["released", "core"]
    assert sent == {}
    assert outcome.error is None
    for name in ("START_TIMES", "END_TIMES", "SCORES"):
        np.testing.assert_array_equal(outcome.outputs[name], reference.outputs[name])


@pytest.mark.parametrize("why", ["invalid", "too_large", "busy", "stopping"])
def test_a_refused_request_releases_the_callers_memory_too(preparer, core, why):
    settings = preparer.settings
    front = AlignerFront(preparer, core, Metrics(), stopping=lambda: why == "stopping")
    sent = arrays(4.0, "" if why == "invalid" else words(5))
    if why == "too_large":
        front.budget.limit = 1000
    if why == "busy":
        front.budget.reserve(settings.max_held_audio_bytes - 1000)
    released: list[int] = []
    outcome = asyncio.run(front.serve(sent, lambda: released.append(1)))
    assert outcome.error is not None
    assert released == [1] and sent == {}


def test_the_bytes_in_flight_to_the_core_are_bounded(preparer, monkeypatch):
    """Clips in flight to the core sit in shared memory (the front's region and the core's):
    their bytes stay within the front's bound, and a clip over it alone still goes."""
    core = FakeCore(preparer.processor.tokenizer.convert_tokens_to_ids("<timestamp>"), delay=0.05)
    held: list[int] = []

    class Watching(FakeCore):
        async def __call__(self, item):
            held.append(front.in_flight.held)
            return await core(item)

    front = AlignerFront(preparer, Watching(core.timestamp_id), Metrics())
    sent = arrays(4.0, words(5))
    request = decode_request(sent["AUDIO"], None, sent["TEXT"], sent["LANGUAGE"], preparer.settings)
    clip = preparer.prepare(request).core_input().nbytes  # every request below: one such clip
    front.in_flight.limit = int(2.5 * clip)

    async def many():
        return await asyncio.gather(*(front.serve(arrays(4.0, words(5), seed=k)) for k in range(6)))

    outcomes = asyncio.run(many())
    assert all(o.error is None for o in outcomes)
    assert max(held) <= front.in_flight.limit and core.peak == 2
    front.in_flight.limit = clip // 2  # smaller than one clip: each goes alone
    core.peak = 0
    assert all(o.error is None for o in asyncio.run(many()))
    assert core.peak == 1
