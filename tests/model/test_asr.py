"""The ASR half of transcribe-then-align (``asr``) against upstream's ``Qwen3ASRModel``.

On the tiny ASR checkpoint (whose answer is known: ``asr_checkpoint_builder``) each call of
``AsrRunner`` must give what upstream's ``_infer_asr`` followed by ``parse_asr_output`` gives
for the same chunks, context and language; the chunking, the merge and the bound on new tokens
are upstream's or follow from the settings.
"""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_aligner_tools.asr_checkpoint_builder import expected_transcript
from qwen3_aligner_triton.asr import (
    MAX_CHUNK_SECONDS,
    AsrCall,
    AsrCallError,
    AsrSettings,
    ChunkTranscript,
    asr_call_from_arrays,
    asr_request_arrays,
    forced_language,
    load_asr,
    merge_transcripts,
    new_token_limit,
    split_chunks,
    transcript_arrays,
    transcripts_from_arrays,
)
from qwen3_aligner_triton.params import ConfigError, read_asr_settings

SAMPLE_RATE = 16000  # Hz
CLIP_SECONDS = (0.6, 1.3, 4.2, 13.1)


def clip(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(round(seconds * SAMPLE_RATE)) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def upstream_asr(asr_checkpoint):
    from qwen_asr import Qwen3ASRModel

    return Qwen3ASRModel.from_pretrained(str(asr_checkpoint))


@pytest.fixture(scope="module")
def runner(asr_checkpoint):
    return load_asr(AsrSettings(checkpoint=str(asr_checkpoint), encoder_attention="full"), "cpu")


def upstream_parsed(model, waves, context, language):
    from qwen_asr.inference.utils import parse_asr_output

    raws = model._infer_asr([context] * len(waves), list(waves), [language] * len(waves))
    return [ChunkTranscript(*parse_asr_output(raw, user_language=language)) for raw in raws]


@pytest.mark.parametrize(
    ("context", "language"),
    [("", None), ("Names: Ada, Grace.", None), ("", "English"), ("Count: one two", "French")],
)
def test_each_clip_alone_equals_upstream(runner, upstream_asr, context, language):
    for seconds in CLIP_SECONDS:
        wave = clip(seconds)
        ours = runner.transcribe([wave], [context], [language])
        assert ours == upstream_parsed(upstream_asr, [wave], context, language)
        # A context that already says the clip's words leaves nothing: no language either.
        assert ours[0].language == ((language or "English") if ours[0].text else "")


def test_one_call_of_several_chunks_equals_upstreams_batch(runner, upstream_asr):
    waves = [clip(s, seed=i) for i, s in enumerate(CLIP_SECONDS)]
    ours = runner.transcribe(waves, [""] * 4, [None] * 4)
    assert ours == upstream_parsed(upstream_asr, waves, "", None)
    assert len({t.text for t in ours}) == len(waves)


def test_the_transcript_is_the_checkpoints_counted_words(runner, upstream_asr):
    wave = clip(4.2)
    prompt = upstream_asr._build_text_prompt(context="", force_language=None)
    inputs = upstream_asr.processor(text=prompt, audio=[wave], return_tensors="pt")
    audio_tokens = int((inputs["input_ids"] == 151676).sum())
    (said,) = runner.transcribe([wave], [""], [None])
    assert said == ChunkTranscript("English", expected_transcript(audio_tokens))
    assert runner.prompt("", "English") == prompt + "language English<asr_text>"


def test_the_new_token_bound_cuts_generation(asr_checkpoint):
    wave = clip(13.1)
    tight = load_asr(
        AsrSettings(
            checkpoint=str(asr_checkpoint),
            base_new_tokens=4,
            new_tokens_per_second=0.1,
            encoder_attention="full",
        ),
        "cpu",
    )
    (raw,) = tight.generate([wave], [""], [None])
    # 4 + ceil(0.1 x 13.1) = 6 tokens: language, English, <asr_text> and three of 14 words.
    assert raw == "language English<asr_text> one two three"


def test_calls_travel_as_tensors_and_back():
    waves = (clip(0.6), clip(1.3, seed=1))
    call = AsrCall(waves, ("", "Names: Ada."), (None, "English"))
    arrays = asr_request_arrays(call)
    assert arrays["AUDIO"].shape == (2, waves[1].shape[0])
    back = asr_call_from_arrays(arrays)
    assert (back.contexts, back.languages) == (call.contexts, call.languages)
    for a, b in zip(back.waves, waves, strict=True):
        np.testing.assert_array_equal(a, b)
    parts = [ChunkTranscript("English", "one 二"), ChunkTranscript("", "")]
    assert transcripts_from_arrays(transcript_arrays(parts)) == parts
    with pytest.raises(AsrCallError, match="AUDIO_LENGTH"):
        asr_call_from_arrays({**arrays, "AUDIO_LENGTH": np.array([[0], [5]], np.int32)})
    with pytest.raises(AsrCallError, match="input CONTEXT has 1 rows for 2 chunks"):
        asr_call_from_arrays({**arrays, "CONTEXT": np.array([[b""]], np.object_)})


def test_a_long_requests_chunks_go_32_to_a_call():
    from qwen3_aligner_triton.asr import AsrChunk, calls_for

    chunks = [AsrChunk(clip(0.1, seed=i), 180.0 * i) for i in range(70)]
    calls = calls_for(chunks, "ctx", "German")
    assert [len(c.waves) for c in calls] == [32, 32, 6]
    assert calls[2].waves[5] is chunks[69].wave
    assert set(calls[1].contexts) == {"ctx"} and set(calls[1].languages) == {"German"}


def test_new_token_limit_follows_the_audio_and_stops_at_upstreams_cap():
    settings = AsrSettings()
    assert new_token_limit(settings, 1.0) == 26
    assert new_token_limit(settings, 30.0) == 316
    assert new_token_limit(settings, 180.0) == 512
    assert new_token_limit(AsrSettings(max_new_tokens=64), 30.0) == 64


def test_chunks_are_upstreams():
    from qwen_asr.inference.utils import split_audio_into_chunks

    rng = np.random.default_rng(3)
    wave = (rng.standard_normal(int(400.2 * SAMPLE_RATE)) * 0.1).astype(np.float32)
    wave[int(181 * SAMPLE_RATE) : int(181.5 * SAMPLE_RATE)] = 0.0  # a pause past the mark
    ours = split_chunks(wave)
    theirs = split_audio_into_chunks(wav=wave, sr=SAMPLE_RATE, max_chunk_sec=MAX_CHUNK_SECONDS)
    assert len(ours) == len(theirs) == 3
    for chunk, (w, offset) in zip(ours, theirs, strict=True):
        assert chunk.offset == offset
        np.testing.assert_array_equal(chunk.wave, w)
    assert 180.0 < ours[1].offset < 182.0
    assert len(split_chunks(wave[: 170 * SAMPLE_RATE])) == 1


def test_transcripts_merge_as_upstream_merges_them():
    merged = merge_transcripts(
        [
            ChunkTranscript("English", "one two"),
            ChunkTranscript("English", " three"),
            ChunkTranscript("", ""),
            ChunkTranscript("Chinese", "你好"),
        ]
    )
    assert (merged.language, merged.text) == ("English,Chinese", "one two three你好")


def test_forced_language_is_upstreams_name_or_none():
    assert forced_language(None) is None
    assert forced_language("") is None
    assert forced_language("AUTO") is None
    assert forced_language("fRENCH") == "French"
    assert forced_language("Thai") == "Thai"
    with pytest.raises(ValueError, match="Unsupported language: Klingon"):
        forced_language("klingon")


def test_an_aligner_checkpoint_is_refused(random_checkpoint):
    with pytest.raises(ConfigError, match="is a forced aligner, not an ASR checkpoint"):
        load_asr(AsrSettings(checkpoint=str(random_checkpoint)), "cpu")


def test_the_settings_reader_types_and_refuses():
    settings = read_asr_settings(
        {
            "checkpoint": {"string_value": "/x"},
            "max_new_tokens": {"string_value": "128"},
            "new_tokens_per_second": {"string_value": "${RATE}"},
            "warmup": {"string_value": "false"},
        }
    )
    assert settings == AsrSettings(checkpoint="/x", max_new_tokens=128, warmup=False)
    with pytest.raises(ConfigError, match=r"unknown parameter.*window_seconds"):
        read_asr_settings({"window_seconds": {"string_value": "10"}})
    with pytest.raises(ConfigError, match="'max_new_tokens' must be > 0"):
        read_asr_settings({"max_new_tokens": {"string_value": "0"}})
    with pytest.raises(ConfigError, match="'dtype'"):
        read_asr_settings({"dtype": {"string_value": "int8"}})
