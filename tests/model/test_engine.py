"""The served pipeline hosted in process (``InProcessAligner``) against upstream ``align()`` on the
same checkpoint."""

import dataclasses
import random

import numpy as np
import pytest
from cases import CASES
from shared_fixtures import SCORE_TOLERANCE, upstream_align, upstream_unit_scores

from qwen3_aligner_triton.inprocess import InProcessAligner
from qwen3_aligner_triton.languages import resolve_language
from qwen3_aligner_triton.params import CoreSettings, PipelineSettings
from qwen3_aligner_triton.requests import AlignRequest, RequestError


@pytest.fixture(scope="module")
def engine(upstream):
    return InProcessAligner(upstream, PipelineSettings.of(checkpoint="tiny", bucket_ratio=1000.0))


def request_of(case) -> AlignRequest:
    return AlignRequest(
        audio=case.audio(),
        sample_rate=case.sample_rate,
        text=case.text,
        language=resolve_language(case.language),
    )


def units(alignment):
    return [(u.text, u.start, u.end) for u in alignment.units]


@pytest.fixture(scope="module")
def expected(upstream):
    return {
        c.name: upstream_align(upstream, c.audio(), c.sample_rate, c.text, c.upstream_language)
        for c in CASES
    }


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_lone_request_equals_upstream(engine, expected, case):
    result = engine.align([engine.prepare(request_of(case))])[0]
    assert units(result) == expected[case.name]
    assert result.duration == pytest.approx(case.audio().shape[0] / case.sample_rate)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_lone_request_scores_equal_those_of_upstreams_forward(engine, upstream, case):
    """Scores are held to upstream too: they move with every change to the model's input (an
    extra frame of padding included) even where the timestamps do not."""
    result = engine.align([engine.prepare(request_of(case))])[0]
    reference = upstream_unit_scores(
        upstream, case.audio(), case.sample_rate, case.text, case.upstream_language
    )
    assert len(reference) == len(result.units)
    np.testing.assert_allclose(
        [u.score for u in result.units], reference, rtol=0, atol=SCORE_TOLERANCE
    )


def test_batches_give_lone_results(engine, expected):
    rng = random.Random(7)
    for _ in range(4):
        picked = rng.sample(CASES, 8)
        results = engine.align([engine.prepare(request_of(c)) for c in picked])
        for case, result in zip(picked, results, strict=True):
            assert units(result) == expected[case.name], case.name


def test_failed_forward_is_split_and_only_the_culprit_fails(engine, expected, monkeypatch):
    cases = CASES[:6]
    items = [engine.prepare(request_of(c)) for c in cases]
    culprit = items[3].core_input()
    real_forward = engine.runner.forward

    def forward(batch):
        if any(np.array_equal(it.input_ids, culprit.input_ids) for it in batch):
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_forward(batch)

    monkeypatch.setattr(engine.runner, "forward", forward)
    sizes = []
    results = engine.align(items, on_batch=sizes.append)
    assert isinstance(results[3], RuntimeError)
    for i, case in enumerate(cases):
        if i != 3:
            assert units(results[i]) == expected[case.name]
    assert sum(sizes) == 5


def test_punctuation_only_text_is_a_request_error(engine):
    req = AlignRequest(np.zeros(16000, np.float32), 16000, "... !!! ???", "English")
    with pytest.raises(RequestError, match="no alignable words"):
        engine.prepare(req)


def test_more_words_than_the_audio_holds_is_a_request_error(engine):
    req = AlignRequest(np.zeros(8000, np.float32), 16000, " ".join(["word"] * 50), "English")
    with pytest.raises(RequestError, match="holds at most") as info:
        engine.prepare(req)
    assert info.value.reason == "text_exceeds_audio"


def slots_and_seconds(engine, batch) -> list[tuple[int, float]]:
    """Per clip of a forward pass: its units (two slots each) and its seconds of audio."""
    return [
        (int((it.input_ids == engine.timestamp_token_id).sum()) // 2, it.frames / 100)
        for it in batch
    ]


def test_warmup_aligns_the_warmup_text_in_one_forward_pass(engine, monkeypatch):
    real_forward = engine.runner.forward
    seen = []

    def forward(batch):
        seen.append(slots_and_seconds(engine, batch))
        return real_forward(batch)

    monkeypatch.setattr(engine.runner, "forward", forward)
    engine.warmup()
    assert seen == [[(4, 2.0)]]  # "warm up the aligner" over 2 s, alone


def test_gpu_warmup_runs_a_common_length_alone_and_in_a_shared_pass(engine, monkeypatch):
    from qwen3_aligner_triton.preparation import GPU_WARMUP_PASSES

    real_forward = engine.runner.forward
    seen = []

    def forward(batch):
        seen.append(slots_and_seconds(engine, batch))
        return real_forward(batch)

    monkeypatch.setattr(engine.runner, "forward", forward)
    core = dataclasses.replace(engine.settings.core, max_forward_batch=4)  # caps the shared pass
    capped = dataclasses.replace(engine.settings, core=core)
    monkeypatch.setattr(engine, "settings", capped)
    engine.warmup(GPU_WARMUP_PASSES)
    # 30 s at an ordinary speaking rate: 76 words; the shared pass holds at most 4 clips.
    assert seen == [[(76, 30.0)], [(76, 30.0)] * 4]


def test_a_core_on_a_gpu_warms_up_with_the_gpu_passes(tiny_checkpoint, upstream, monkeypatch):
    from qwen3_aligner_triton import loading
    from qwen3_aligner_triton.inprocess import InProcessAligner
    from qwen3_aligner_triton.preparation import GPU_WARMUP_PASSES

    calls = []

    def warmup(self, passes="default"):
        calls.append((self.settings.front.features_in_core, passes))

    monkeypatch.setattr(loading, "load_aligner", lambda *args, **kwargs: upstream)
    monkeypatch.setattr(InProcessAligner, "warmup", warmup)
    # upstream is the suite's reference: it must keep upstream's own per-clip encoder
    settings = CoreSettings(checkpoint=str(tiny_checkpoint), packed_encoder=False)
    loading.load_forward(settings, "cuda:0")
    # frames from the CPU for the short clip, then made on the device at the common length
    assert calls == [(False, "default"), (True, GPU_WARMUP_PASSES)]
    calls.clear()
    loading.load_forward(settings, "cpu")
    assert calls == [(False, "default")]


def test_a_core_encodes_each_pass_in_one_encoder_call_unless_told_not_to(
    tiny_checkpoint, monkeypatch
):
    from qwen3_aligner_triton import loading
    from qwen3_aligner_triton.packed_encoder import packed_encoder_installed

    real, loaded = loading.load_aligner, []

    def load_aligner(*args, **kwargs):
        loaded.append(real(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(loading, "load_aligner", load_aligner)
    settings = CoreSettings(checkpoint=str(tiny_checkpoint), warmup=False)
    packed = loading.load_forward(settings, "cpu")
    plain = loading.load_forward(dataclasses.replace(settings, packed_encoder=False), "cpu")
    assert packed_encoder_installed(loaded[0].model.thinker)
    assert packed.description.endswith("encoder windowed, packed; decoder packed)")
    assert not packed_encoder_installed(loaded[1].model.thinker)
    assert plain.description.endswith("encoder windowed; decoder packed)")


def test_gpu_warmup_passes_run_with_frames_made_by_the_core(upstream):
    from qwen3_aligner_triton.preparation import GPU_WARMUP_PASSES

    on_device = InProcessAligner(
        upstream, PipelineSettings.of(checkpoint="tiny", features_in_core=True)
    )
    on_device.warmup(GPU_WARMUP_PASSES)  # the real path, on the CPU here


def test_warmup_fails_loudly_when_the_forward_fails(engine, monkeypatch):
    def forward(batch):
        raise RuntimeError("broken kernel")

    monkeypatch.setattr(engine.runner, "forward", forward)
    with pytest.raises(RuntimeError, match="warm-up alignment failed: broken kernel"):
        engine.warmup()
