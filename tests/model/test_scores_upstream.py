"""Confidence per unit on the tiny checkpoint: served scores and flags come from the model's own
slots, whatever the batch-mates, for clips, long recordings and cues."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from cases import CASES
from qwen3_aligner_client.results import SCORE_TOLERANCE
from score_reference import reference_confidence
from test_engine import request_of

from qwen3_aligner_tools.checkpoint_training import synthetic_set
from qwen3_aligner_triton.inprocess import InProcessAligner
from qwen3_aligner_triton.params import PipelineSettings
from qwen3_aligner_triton.preparation import WindowedJob
from qwen3_aligner_triton.requests import AlignRequest, decode_request
from qwen3_aligner_triton.scores import unit_repaired
from qwen3_aligner_triton.timestamps import repair

BATCH_TOLERANCE = SCORE_TOLERANCE  # scores of one request whatever its batch-mates


@pytest.fixture(scope="module")
def engine(upstream):
    return InProcessAligner(upstream, PipelineSettings.of(checkpoint="tiny", bucket_ratio=1000.0))


def model_slots(upstream, case):
    """Logits at the <timestamp> slots from the upstream model on the lone clip, as upstream's
    ``align()`` builds its inputs (processor on one clip), independent of the engine."""
    from qwen3_aligner_triton.audio import prepare_waveform

    _words, prompt = upstream.aligner_processor.encode_timestamp(case.text, case.upstream_language)
    wave = prepare_waveform(case.audio(), case.sample_rate)
    inputs = upstream.processor(text=[prompt], audio=[wave], return_tensors="pt", padding=True)
    with torch.inference_mode():
        logits = upstream.model.thinker(
            **{k: v.to(upstream.model.device) for k, v in inputs.items()}, use_cache=False
        ).logits[0]
    ts = int(upstream.model.config.timestamp_token_id)
    return logits[inputs["input_ids"][0] == ts].float().numpy()


@pytest.mark.parametrize("case", CASES[:6], ids=lambda c: c.name)
def test_served_scores_and_flags_come_from_the_models_own_slots(engine, upstream, case):
    logits = model_slots(upstream, case)
    bins, conf = reference_confidence(logits.astype(np.float64))
    result = engine.align([engine.prepare(request_of(case))])[0]
    got = np.array([u.score for u in result.units])
    want = np.sqrt(conf[0::2] * conf[1::2])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert np.all((got >= 0) & (got <= 1))
    flags = unit_repaired(repair((bins * 80.0).tolist()).replaced)
    assert [u.repaired for u in result.units] == flags


def test_scores_are_deterministic_and_batch_invariant(engine):
    alone = {c.name: engine.align([engine.prepare(request_of(c))])[0] for c in CASES}
    again = {c.name: engine.align([engine.prepare(request_of(c))])[0] for c in CASES}
    rng = random.Random(11)
    for _ in range(3):
        picked = rng.sample(CASES, 8)
        results = engine.align([engine.prepare(request_of(c)) for c in picked])
        for case, result in zip(picked, results, strict=True):
            lone = alone[case.name]
            assert [u.repaired for u in result.units] == [u.repaired for u in lone.units]
            np.testing.assert_allclose(
                [u.score for u in result.units],
                [u.score for u in lone.units],
                rtol=0,
                atol=BATCH_TOLERANCE,
                err_msg=case.name,
            )
    for name, result in alone.items():
        assert [u.score for u in result.units] == [u.score for u in again[name].units], name


def speechy(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t)) * np.sin(2 * np.pi * 200 * t)
    return (wave + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def check_scored(result):
    scores = np.array([u.score for u in result.units])
    assert scores.size and np.all((scores >= 0) & (scores <= 1)) and np.all(np.isfinite(scores))
    assert all(isinstance(u.repaired, bool) for u in result.units)
    doc = json.loads(result.to_json())
    assert doc["mean_score"] == pytest.approx(scores.mean(), abs=1e-6)
    assert doc["repaired_share"] == pytest.approx(np.mean([u.repaired for u in result.units]))


def test_long_recordings_and_cues_carry_scores(upstream):
    engine = InProcessAligner(upstream, PipelineSettings.of(checkpoint="tiny", window_seconds=20.0))
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 6)
    long_request = AlignRequest(speechy(45.0, seed=4), 16000, text, "English")
    cues = [
        {"start": 1.0, "end": 6.5, "text": "Hello there, world!"},
        {"start": 10.0, "end": 19.0, "text": "This cue has a few more words in it."},
    ]
    cue_request = decode_request(
        speechy(20.0, seed=5)[None, :],
        None,
        np.array([[b""]], dtype=np.object_),
        np.array([[b"en"]], dtype=np.object_),
        engine.settings.front,
        np.array([[json.dumps(cues).encode()]], dtype=np.object_),
    )
    prepared = [engine.prepare(long_request), engine.prepare(cue_request)]
    assert all(isinstance(p, WindowedJob) for p in prepared)
    first = engine.align(prepared)
    for result in first:
        check_scored(result)
    assert prepared[0].plan.windows >= 2
    # Deterministic, and the same with a batch-mate in the first window's forward pass.
    mate = engine.prepare(request_of(CASES[5]))
    second = engine.align(
        [engine.prepare(long_request), mate, engine.prepare(cue_request)], on_batch=None
    )
    for a, b in zip(first, [second[0], second[2]], strict=True):
        assert [u.repaired for u in a.units] == [u.repaired for u in b.units]
        np.testing.assert_allclose(
            [u.score for u in a.units], [u.score for u in b.units], atol=BATCH_TOLERANCE
        )


def test_words_the_audio_never_holds_raise_the_repaired_share(tiny_checkpoint):
    """On a checkpoint whose timestamps follow the audio, inserting words that are never spoken
    (half as many again) raises the repaired share over the set and lowers the mean score.

    The random tiny checkpoint cannot show this: its timestamps ignore the audio, and its repaired
    share grows with the number of words even over pure noise (a length effect, not a mismatch).
    So this runs on the tiny checkpoint trained on synthetic speech (``checkpoint_training``).
    """
    from qwen3_aligner_triton.loading import load_aligner

    path = str(tiny_checkpoint)
    engine = InProcessAligner(load_aligner(path, "cpu"), PipelineSettings.of(checkpoint=path))
    rng = np.random.default_rng(5)
    syllables = ["ba", "ko", "mi", "ru", "te", "sa", "no", "pi"]
    own_share, foreign_share, lower_score = [], [], 0
    clips = synthetic_set(321, 30, 4.0, 14.0)
    for clip in clips:
        words = list(clip.words)
        foreign = list(words)
        for _ in range(max(2, len(words) // 2)):
            made_up = "".join(rng.choice(syllables, size=int(rng.integers(1, 4))))
            foreign.insert(int(rng.integers(0, len(foreign) + 1)), made_up)
        own, other = engine.align(
            [
                engine.prepare(AlignRequest(clip.wave, 16000, " ".join(w), "English"))
                for w in (words, foreign)
            ]
        )
        own_share.append(own.repaired_share)
        foreign_share.append(other.repaired_share)
        lower_score += other.mean_score < own.mean_score
    assert np.mean(foreign_share) > np.mean(own_share)
    assert lower_score >= 0.8 * len(clips)
