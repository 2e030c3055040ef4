"""Requests without TEXT through the front, without Triton: the tiny aligner's real preparation,
a fake core and a fake ASR model that answers set transcripts per chunk."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from test_front import FakeCore, Metrics

from qwen3_aligner_triton.asr import AsrCall, ChunkTranscript, split_chunks
from qwen3_aligner_triton.front import AlignerFront
from qwen3_aligner_triton.loading import load_preparer
from qwen3_aligner_triton.params import FrontSettings
from qwen3_aligner_triton.requests import NO_ASR_MESSAGE, AlignRequest

SAMPLE_RATE = 16000  # Hz


class FakeAsr:
    """Answers ``answer(wave)`` per chunk; records the calls."""

    def __init__(self, answer, fail: str | None = None):
        self.answer = answer
        self.fail = fail
        self.calls: list[AsrCall] = []
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, call: AsrCall) -> list[ChunkTranscript]:
        self.calls.append(call)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        if self.fail:
            raise RuntimeError(self.fail)
        return [self.answer(w) for w in call.waves]


def counted(wave: np.ndarray) -> ChunkTranscript:
    """One word per 10 s of chunk, at least one."""
    n = max(1, int(wave.shape[0] / SAMPLE_RATE / 10))
    return ChunkTranscript("English", " ".join(f"w{k}" for k in range(n)))


@pytest.fixture(scope="module")
def preparer(tiny_checkpoint):
    settings = FrontSettings(checkpoint=str(tiny_checkpoint), window_seconds=20.0, asr=True)
    return load_preparer(str(tiny_checkpoint), settings)


@pytest.fixture()
def core(preparer):
    return FakeCore(preparer.processor.tokenizer.convert_tokens_to_ids("<timestamp>"))


def recording(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wave = (rng.standard_normal(int(SAMPLE_RATE * seconds)) * 0.1).astype(np.float32)
    wave[int(181.2 * SAMPLE_RATE) : int(181.4 * SAMPLE_RATE)] = 0.0  # a pause past 180 s
    return wave


def inputs(wave: np.ndarray, **strings: str) -> dict:
    out = {"AUDIO": wave[None, :]}
    for name, value in strings.items():
        out[name] = np.array([[value.encode()]], dtype=np.object_)
    return out


def text(outcome, name: str) -> str:
    return outcome.outputs[name][0][0].decode()


def test_a_long_recording_is_transcribed_chunk_by_chunk_and_aligned_per_chunk(preparer, core):
    wave = recording(400.0)
    asr = FakeAsr(counted)
    metrics = Metrics()
    front = AlignerFront(preparer, core, metrics, asr=asr)
    outcome = asyncio.run(front.serve(inputs(wave, CONTEXT="Names: Ada.")))
    assert outcome.error is None, outcome.error
    chunks = split_chunks(wave)
    assert len(chunks) == 3 and len(asr.calls) == 1  # upstream's chunks, one call (<= 32)
    (call,) = asr.calls
    assert call.contexts == ("Names: Ada.",) * 3 and call.languages == (None,) * 3
    for sent, chunk in zip(call.waves, chunks, strict=True):
        np.testing.assert_array_equal(sent, chunk.wave)
    parts = [counted(c.wave) for c in chunks]
    assert text(outcome, "TRANSCRIPT") == "".join(p.text for p in parts)  # upstream's join
    assert text(outcome, "TRANSCRIPT_LANGUAGE") == "English"
    # Each chunk was one clip (the one over 180 s too, although window_seconds is 20 here).
    assert len(core.frames) == 3
    core.frames.clear()
    # Each chunk's words are its lone alignment, offset by the chunk's start.
    starts = outcome.outputs["START_TIMES"][0]
    expected: list[float] = []
    for chunk, part in zip(chunks, parts, strict=True):
        item = preparer.prepare(AlignRequest(chunk.wave, SAMPLE_RATE, part.text, "English"), True)
        alone = preparer.to_alignment(item, asyncio.run(core(item.core_input())))
        expected.extend(round(u.start + chunk.offset, 3) for u in alone.units)
    np.testing.assert_allclose(starts, np.array(expected, np.float32))
    assert metrics.stages["transcribe"] == 1
    document = json.loads(outcome.outputs["ALIGNMENT"][0][0])
    assert (document["text"], document["language"]) == (text(outcome, "TRANSCRIPT"), "English")
    assert [document["text"][w["char_start"] : w["char_end"]] for w in document["words"]] == [
        w["text"] for w in document["words"]
    ]


def test_a_language_the_aligner_does_not_cover_gets_the_transcript_and_an_error(preparer, core):
    asr = FakeAsr(lambda w: ChunkTranscript("Thai", "สวัสดี ครับ"))
    metrics = Metrics()
    outcome = asyncio.run(
        AlignerFront(preparer, core, metrics, asr=asr).serve(inputs(recording(3.0)))
    )
    assert outcome.invalid and outcome.outputs is None
    assert "transcribed in Thai, which the aligner does not cover" in outcome.error
    assert outcome.error.endswith("transcript (Thai): สวัสดี ครับ")
    assert metrics.rejections == ["language_not_aligned"] and core.frames == []


def test_silence_gives_an_empty_transcript_and_no_words(preparer, core):
    asr = FakeAsr(lambda w: ChunkTranscript("", ""))
    outcome = asyncio.run(
        AlignerFront(preparer, core, Metrics(), asr=asr).serve(inputs(recording(2.0)))
    )
    assert outcome.error is None
    assert outcome.outputs["WORDS"].shape == (1, 0)
    assert (text(outcome, "TRANSCRIPT"), text(outcome, "TRANSCRIPT_LANGUAGE")) == ("", "")
    assert core.frames == []


def test_a_forced_language_goes_to_the_asr_model(preparer, core):
    asr = FakeAsr(lambda w: ChunkTranscript("French", "bonjour"))
    outcome = asyncio.run(
        AlignerFront(preparer, core, Metrics(), asr=asr).serve(
            inputs(recording(2.0), LANGUAGE="fr")
        )
    )
    assert outcome.error is None
    assert asr.calls[0].languages == ("French",)
    assert outcome.outputs["WORDS"][0].tolist() == [b"bonjour"]


def test_a_failed_asr_call_is_an_internal_error_the_instance_survives(preparer, core):
    metrics = Metrics()
    front = AlignerFront(preparer, core, metrics, asr=FakeAsr(counted, fail="boom"))
    outcome = asyncio.run(front.serve(inputs(recording(2.0))))
    assert not outcome.invalid and outcome.error.startswith("internal error (id ")
    assert "boom" not in outcome.error
    assert metrics.rejections == ["asr_failed"]


def test_without_the_asr_model_a_request_without_text_is_told_how_to_enable_it(
    tiny_checkpoint, core
):
    preparer = load_preparer(str(tiny_checkpoint), FrontSettings(checkpoint=str(tiny_checkpoint)))
    metrics = Metrics()
    outcome = asyncio.run(AlignerFront(preparer, core, metrics).serve(inputs(recording(2.0))))
    assert outcome.invalid and outcome.error == NO_ASR_MESSAGE
    assert metrics.rejections == ["missing_input"]


def test_asr_calls_in_flight_stay_within_one_maximal_call_as_shared_memory_is_planned(
    preparer, core
):
    from qwen3_aligner_triton.front import InFlightBytes
    from qwen3_aligner_triton.shared_memory import asr_call_bytes

    def run(front, asr):
        async def many():
            return await asyncio.gather(
                *(front.serve(inputs(recording(2.0 + k, seed=k))) for k in range(6))
            )

        assert all(o.error is None for o in asyncio.run(many()))
        assert len(asr.calls) == 6

    asr = FakeAsr(counted)
    front = AlignerFront(preparer, core, Metrics(), asr=asr)
    assert front.asr_in_flight.limit == asr_call_bytes(preparer.settings) > 0
    run(front, asr)
    assert asr.peak > 1  # small calls share the bytes of one maximal call
    asr = FakeAsr(counted)
    front = AlignerFront(preparer, core, Metrics(), asr=asr)
    front.asr_in_flight = InFlightBytes(4 * 16000 * 3)  # room for one of these calls at a time
    run(front, asr)
    assert asr.peak == 1
