"""Log-mel frames made by the core (``features_in_core``): the front sends the 16 kHz waveform and
the prompt ids it builds without a spectrogram; the core makes the frames with the checkpoint's
feature extractor. Both must be exactly what upstream's processor makes, so results stay equal
to upstream's and to the front-made frames. The served path is in test_server.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cases import CASES
from hypothesis import given, settings
from hypothesis import strategies as st
from shared_fixtures import upstream_align

from qwen3_aligner_triton.audio import prepare_waveform
from qwen3_aligner_triton.core import frames_of_samples
from qwen3_aligner_triton.inprocess import InProcessAligner
from qwen3_aligner_triton.languages import resolve_language
from qwen3_aligner_triton.params import PipelineSettings
from qwen3_aligner_triton.preparation import PreparedItem, build_prompt
from qwen3_aligner_triton.requests import AlignRequest


@pytest.fixture(scope="module")
def engines(upstream):
    """The same aligner preparing both ways: frames by the front, frames by the core."""
    return (
        InProcessAligner(upstream, PipelineSettings.of(checkpoint="tiny", bucket_ratio=1000.0)),
        InProcessAligner(
            upstream,
            PipelineSettings.of(checkpoint="tiny", bucket_ratio=1000.0, features_in_core=True),
        ),
    )


def wave_of(samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(samples) * 0.1).astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(samples=st.integers(min_value=150, max_value=16000 * 65))
def test_frame_count_and_prompt_ids_match_the_processor(engines, samples):
    front_made, core_made = engines
    wave = wave_of(samples)
    prompt = build_prompt(["one", "two", "three"])
    if samples <= 200:  # shorter than half the extractor's FFT window: both ways refuse it
        for engine in engines:
            with pytest.raises((ValueError, RuntimeError)):
                engine.preparer._model_inputs(prompt, wave)
        return
    full = front_made.preparer._model_inputs(prompt, wave)
    lean = core_made.preparer._model_inputs(prompt, wave)
    assert "input_features" not in lean
    assert frames_of_samples(samples) == int(full["feature_attention_mask"].sum())
    assert frames_of_samples(samples) == int(full["input_features"].shape[-1])
    assert torch.equal(lean["input_ids"], full["input_ids"])
    assert torch.equal(lean["attention_mask"], full["attention_mask"])


@pytest.mark.parametrize("case", CASES[::2], ids=lambda c: c.name)
def test_frames_made_by_the_core_equal_the_processors(engines, case):
    front_made, core_made = engines
    request = AlignRequest(
        case.audio(), case.sample_rate, case.text, resolve_language(case.language)
    )
    full = front_made.prepare(request)
    lean = core_made.prepare(request)
    assert isinstance(full, PreparedItem) and isinstance(lean, PreparedItem)
    assert lean.input_features is None and lean.wave is not None
    np.testing.assert_array_equal(lean.wave, prepare_waveform(case.audio(), case.sample_rate))
    made = core_made.forward_pass.features_of(lean.core_input())
    assert torch.equal(made, full.input_features)
    assert torch.equal(lean.input_ids, full.input_ids)


def test_mixed_batches_give_each_clip_its_lone_result(engines):
    """Clips with frames and clips with waveforms in one pass: same bins and confidences as each
    alone with front-made frames."""
    front_made, core_made = engines
    picked = CASES[2:20:3]
    requests = [
        AlignRequest(c.audio(), c.sample_rate, c.text, resolve_language(c.language)) for c in picked
    ]
    alone = [front_made.forward_pass([front_made.prepare(r).core_input()])[0] for r in requests]
    mixed = [
        (front_made if k % 2 else core_made).prepare(r).core_input() for k, r in enumerate(requests)
    ]
    assert {it.features is None for it in mixed} == {True, False}
    together = core_made.forward_pass(mixed)
    for one, batched in zip(alone, together, strict=True):
        np.testing.assert_array_equal(one.bins, batched.bins)
        np.testing.assert_allclose(one.confidence, batched.confidence, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", CASES[1::4], ids=lambda c: c.name)
def test_alignments_with_core_made_frames_equal_upstream(engines, upstream, case):
    _, core_made = engines
    request = AlignRequest(
        case.audio(), case.sample_rate, case.text, resolve_language(case.language)
    )
    (result,) = core_made.align([core_made.prepare(request)])
    expected = upstream_align(
        upstream, case.audio(), case.sample_rate, case.text, case.upstream_language
    )
    assert [(u.text, u.start, u.end) for u in result.units] == expected
