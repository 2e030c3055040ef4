"""One packed decoder pass for all clips gives what upstream gives each clip alone.

The references are upstream's own code: ``model.thinker`` on one clip at a time and on the
left-padded batch (qwen-asr 0.0.6, the core's ``packed_decoder`` off), and upstream's
``get_rope_index`` for the positions. Both tiny checkpoints are used: the trained one, whose
timestamps follow the audio, and the random one. The packed pass keeps each clip's attention to
itself; attending across clips moves the later clips' logits far beyond the tolerance here, which
a test shows. Positions that did not restart per clip would not show in the logits (rotary
attention sees only position differences), so they are compared with upstream's directly.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qwen3_aligner_triton import packed_decoder
from qwen3_aligner_triton.core import ModelForward
from qwen3_aligner_triton.inprocess import InProcessAligner
from qwen3_aligner_triton.loading import load_aligner
from qwen3_aligner_triton.packed_decoder import decode_packed, decoder_layout
from qwen3_aligner_triton.packed_encoder import AttentionGroup, install_packed_encoder
from qwen3_aligner_triton.params import CoreSettings, PipelineSettings, read_core_settings
from qwen3_aligner_triton.requests import AlignRequest

SAMPLE_RATE = 16000  # Hz
# Clip lengths (s) and their transcripts' word counts: sub-second, one chunk, one window and
# more, the 30 s the model serves most; one and many words.
CLIPS = ((0.1, 1), (0.73, 2), (1.0, 3), (8.01, 7), (12.34, 20), (30.0, 60))
# Two more clips of the 1.0 s clip's prompt (other audio, the same words): prompts of equal
# length share one batched attention call in a packed pass.
TWINS = ((1.0, 3), (1.0, 3))
# float32, measured: with upstream's encoder, the packed decoder gives each clip's logits bit for
# bit as upstream's thinker gives them alone, but for the 0.1 s clip (2 slots) in a pass of its
# own, whose head then multiplies 2 rows instead of its 12 (the CPU BLAS takes another kernel for
# a matrix of at most 3 rows, see test_packed_encoder's FEW_ROWS): confidences 1.2e-7 apart. With
# the packed encoder, that clip's encoder rows differ likewise (logits 4.4e-6). Against the
# padded batch (a 4-D mask, repeat_kv): confidences up to 1.6e-7 apart. Bins are equal in all.
CONFIDENCE_ATOL = 1e-5
LOGITS_ATOL = 1e-5
# A mistake the tests must see: the later clips' logits move by more than this.
MISTAKE_MIN = 1e-2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def words(n: int, seed: int) -> str:
    syllables = ("ka", "lo", "mi", "ne", "su", "ta", "ri", "po")
    rng = np.random.default_rng(seed)
    return " ".join("".join(rng.choice(syllables, size=int(rng.integers(1, 4)))) for _ in range(n))


def prepared(aligner, clips, seed: int) -> list:
    """The clips as the core receives them (the front's preparation)."""
    engine = InProcessAligner(aligner, PipelineSettings.of(checkpoint="tiny"))
    rng = np.random.default_rng(seed)
    out = []
    for seconds, count in clips:
        wave = (0.1 * rng.standard_normal(round(seconds * SAMPLE_RATE))).astype(np.float32)
        request = AlignRequest(wave, SAMPLE_RATE, words(count, seed + count), "English")
        out.append(engine.prepare(request).core_input())
    return out


class Model:
    """One loaded checkpoint with its prepared clips and their references."""

    def __init__(self, checkpoint, packed_encoder: bool) -> None:
        self.aligner = load_aligner(str(checkpoint), "cpu")
        if packed_encoder:
            install_packed_encoder(self.aligner.model.thinker)
        tokenizer = self.aligner.processor.tokenizer
        self.pad = int(tokenizer.pad_token_id)
        self.items = prepared(self.aligner, CLIPS + TWINS, seed=7)
        self.packed = ModelForward(self.aligner.model, self.pad, packed_decoder=True)
        self.padded = ModelForward(self.aligner.model, self.pad, packed_decoder=False)
        self.alone = [self.padded([it])[0] for it in self.items]  # upstream, each clip alone
        config = self.aligner.model.config
        self.audio_id = int(config.thinker_config.audio_token_id)
        self.timestamp_id = int(config.timestamp_token_id)


@pytest.fixture(scope="module")
def models(tiny_checkpoint, random_checkpoint) -> dict:
    return {
        "trained": Model(tiny_checkpoint, packed_encoder=True),
        "random": Model(random_checkpoint, packed_encoder=True),
        "trained, upstream encoder": Model(tiny_checkpoint, packed_encoder=False),
    }


def passes() -> list[list[int]]:
    """Mixed passes: all clips in order, shuffled, short-long pairs, equal-length prompts, and
    the longest and the shortest clip alone."""
    everything = list(range(len(CLIPS) + len(TWINS)))
    rng = np.random.default_rng(3)
    shuffled = [[int(i) for i in rng.permutation(everything)] for _ in range(2)]
    pairs = [[0, 5], [5, 0], [1, 4], [3, 2], [2, 6, 7], [6, 2, 7, 0]]
    return [everything, everything[::-1], *shuffled, *pairs, [5], [0]]


def test_twins_have_the_prompt_length_of_their_clip(models):
    items = models["trained"].items
    assert items[2].tokens == items[6].tokens == items[7].tokens
    assert not np.array_equal(items[2].features, items[6].features)


# --- the layout ---------------------------------------------------------------------------------


def test_layout_orders_clips_longest_first_and_groups_equal_lengths():
    a, b, c, d = (np.full(n, 5, dtype=np.int64) for n in (4, 9, 4, 6))
    layout = decoder_layout([a, b, c, d], audio_token_id=1, timestamp_token_id=2)
    assert layout.order == (1, 3, 0, 2)
    assert layout.cu_seqlens == (0, 9, 15, 19, 23)
    assert layout.attention_groups == (
        AttentionGroup(0, 1, 9),
        AttentionGroup(9, 1, 6),
        AttentionGroup(15, 2, 4),
    )
    assert layout.positions.tolist() == [*range(9), *range(6), *range(4), *range(4)]
    assert (layout.rows, layout.longest) == (23, 9)


def test_layout_rows_hold_each_clips_audio_and_slots_in_clip_order():
    first = np.array([9, 1, 1, 1, 8, 3, 2, 2], dtype=np.int64)
    second = np.array([9, 1, 1, 8, 3, 2, 2, 4, 2, 2], dtype=np.int64)
    layout = decoder_layout([first, second], audio_token_id=1, timestamp_token_id=2)
    # second (10 tokens) comes first in attention order
    assert layout.input_ids.tolist() == [*second.tolist(), *first.tolist()]
    assert layout.audio_rows.tolist() == [11, 12, 13, 1, 2]
    assert layout.slot_rows.tolist() == [16, 17, 5, 6, 8, 9]
    assert layout.slot_counts == (2, 4)
    assert (layout.input_ids[layout.audio_rows] == 1).all()
    assert (layout.input_ids[layout.slot_rows] == 2).all()
    split = packed_decoder.split_slots(layout, np.arange(6))
    assert [s.tolist() for s in split] == [[0, 1], [2, 3, 4, 5]]


def test_an_empty_pass_and_an_empty_prompt():
    layout = decoder_layout([], audio_token_id=1, timestamp_token_id=2)
    assert (layout.rows, layout.longest, layout.slot_counts) == (0, 0, ())
    assert packed_decoder.split_slots(layout, np.zeros(0)) == []
    with pytest.raises(ValueError, match="at least one token"):
        decoder_layout([np.zeros(0, dtype=np.int64)], 1, 2)


def test_positions_are_upstreams_for_each_clip_alone(models):
    """Upstream's ``get_rope_index`` for a lone clip (all three MRoPE rows), clip by clip."""
    model = models["trained"]
    thinker = model.aligner.model.thinker
    items = model.items
    layout = decoder_layout([it.input_ids for it in items], model.audio_id, model.timestamp_id)
    for rank, i in enumerate(layout.order):
        mask = torch.ones((1, items[i].tokens), dtype=torch.long)
        upstream, _ = thinker.get_rope_index(mask)
        start, end = layout.cu_seqlens[rank], layout.cu_seqlens[rank + 1]
        for row in upstream:
            assert row[0].tolist() == layout.positions[start:end].tolist()


# --- the packed pass against upstream -----------------------------------------------------------


def upstream_slot_logits(model: Model, indices: list[int]) -> list[torch.Tensor]:
    """Upstream's ``thinker`` on each clip alone, its logits at the clip's ``<timestamp>`` rows."""
    out = []
    thinker = model.aligner.model.thinker
    for i in indices:
        item = model.items[i]
        ids = torch.from_numpy(item.input_ids)[None]
        features = torch.from_numpy(item.features)[None]
        with torch.inference_mode():
            logits = thinker(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                input_features=features,
                feature_attention_mask=torch.ones(features.shape[::2], dtype=torch.long),
                use_cache=False,
            ).logits[0]
        out.append(logits[ids[0] == model.timestamp_id])
    return out


def packed_slot_logits(model: Model, indices: list[int], layout=None) -> list[torch.Tensor]:
    items = [model.items[i] for i in indices]
    if layout is None:
        layout = decoder_layout([it.input_ids for it in items], model.audio_id, model.timestamp_id)
    with torch.inference_mode():
        audio = model.packed._audio_features([torch.from_numpy(it.features) for it in items])
        logits = decode_packed(model.aligner.model.thinker, layout, audio)
    return list(logits.split(list(layout.slot_counts)))


@pytest.mark.parametrize("name", ["trained", "random", "trained, upstream encoder"])
def test_packed_logits_are_each_clip_alone(models, name):
    model = models[name]
    order = passes()[0]
    expected = upstream_slot_logits(model, order)
    for got, want, i in zip(packed_slot_logits(model, order), expected, order, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=LOGITS_ATOL, msg=f"clip {CLIPS[i:]}")


@pytest.mark.parametrize("name", ["trained", "random", "trained, upstream encoder"])
def test_packed_pass_equals_each_clip_alone_and_the_padded_pass(models, name):
    model = models[name]
    for order in passes():
        batch = [model.items[i] for i in order]
        packed = model.packed(batch)
        padded = model.padded(batch)
        assert len(packed) == len(batch)
        for i, got, pad in zip(order, packed, padded, strict=True):
            where = f"clip {i} in {order}"
            assert got.bins.dtype == np.int32 and got.confidence.dtype == np.float32
            assert np.array_equal(got.bins, model.alone[i].bins), where
            assert np.array_equal(got.bins, pad.bins), where
            np.testing.assert_allclose(
                got.confidence, model.alone[i].confidence, rtol=0, atol=CONFIDENCE_ATOL,
                err_msg=where,
            )  # fmt: skip
            np.testing.assert_allclose(
                got.confidence, pad.confidence, rtol=0, atol=CONFIDENCE_ATOL, err_msg=where
            )


def test_a_clips_result_does_not_depend_on_its_batch_mates(models):
    model = models["trained"]
    seen: dict[int, list] = {}
    for order in passes():
        for i, result in zip(order, model.packed([model.items[k] for k in order]), strict=True):
            seen.setdefault(i, []).append(result)
    assert len(seen) == len(model.items)
    for i, results in seen.items():
        first = results[0]
        for other in results[1:]:
            assert np.array_equal(other.bins, first.bins), i
            np.testing.assert_allclose(
                other.confidence, first.confidence, rtol=0, atol=CONFIDENCE_ATOL
            )


def test_the_trained_checkpoint_gives_many_distinct_bins(models):
    """The comparisons above see real predictions, not one value repeated."""
    model = models["trained"]
    bins = np.concatenate([r.bins for r in model.packed(model.items)])
    assert len(np.unique(bins)) >= 20


# --- what the tests above would catch -----------------------------------------------------------


def largest_move(model: Model, layout) -> float:
    order = list(layout.order)
    indices = sorted(order)
    got = packed_slot_logits(model, indices, layout)
    expected = upstream_slot_logits(model, indices)
    # the clips after the first in attention order: they see another clip when the mistake is made
    return max(float((got[i] - expected[i]).abs().max()) for i in order[1:])


def test_rope_sees_only_position_differences(models):
    """Why the positions are checked against ``get_rope_index`` directly: positions running on
    across the pass instead of restarting per clip shift each clip's by a constant, which rotary
    attention does not see but for rounding (measured 2.6e-5 here, float32)."""
    model = models["trained"]
    items = model.items[:6]
    layout = decoder_layout([it.input_ids for it in items], model.audio_id, model.timestamp_id)
    running = dataclasses.replace(layout, positions=np.arange(layout.rows))
    assert largest_move(model, layout) <= LOGITS_ATOL
    assert 0 < largest_move(model, running) < MISTAKE_MIN


def test_attention_across_clips_shows_here(models):
    model = models["trained"]
    items = model.items[:6]
    layout = decoder_layout([it.input_ids for it in items], model.audio_id, model.timestamp_id)
    across = dataclasses.replace(
        layout, attention_groups=(AttentionGroup(0, 1, layout.rows),)
    )  # one causal span over the whole pass
    assert largest_move(model, across) > MISTAKE_MIN


# --- the varlen path, the setting ---------------------------------------------------------------


def fake_flash_attn_varlen_func(
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal
):
    """``flash_attn.flash_attn_varlen_func``'s contract ([total, heads, dim] rows, int32 bounds,
    grouped key/value heads), written with one SDPA call per sequence."""
    assert cu_seqlens_q.dtype == torch.int32 and causal
    bounds = cu_seqlens_q.tolist()
    assert bounds == cu_seqlens_k.tolist() and bounds[-1] == q.shape[0]
    assert max_seqlen_q == max_seqlen_k == max(b - a for a, b in itertools.pairwise(bounds))
    outs = []
    for a, b in itertools.pairwise(bounds):
        out = F.scaled_dot_product_attention(
            *(x[a:b].transpose(0, 1)[None] for x in (q, k, v)),
            scale=softmax_scale, is_causal=True, enable_gqa=True,
        )  # fmt: skip
        outs.append(out[0].transpose(0, 1))
    return torch.cat(outs)


def test_the_varlen_call_gets_the_passs_bounds(models, monkeypatch):
    """Where flash-attention runs (CUDA, flash_attention_2), one varlen call per layer: checked
    on the CPU with a stand-in that keeps flash_attn's contract."""
    model = models["trained"]
    order = passes()[0]
    calls = []

    def varlen(*args, **kwargs):
        calls.append(1)
        return fake_flash_attn_varlen_func(*args, **kwargs)

    monkeypatch.setitem(
        sys.modules, "flash_attn", types.SimpleNamespace(flash_attn_varlen_func=varlen)
    )
    monkeypatch.setattr(packed_decoder, "uses_varlen", lambda attn, hidden: True)
    got = packed_slot_logits(model, order)
    layers = len(model.aligner.model.thinker.model.layers)
    assert len(calls) == layers
    for logits, want in zip(got, upstream_slot_logits(model, order), strict=True):
        torch.testing.assert_close(logits, want, rtol=0, atol=LOGITS_ATOL)


def test_varlen_needs_cuda_half_precision_and_flash_attention(models):
    attn = models["trained"].aligner.model.thinker.model.layers[0].self_attn
    assert not packed_decoder.uses_varlen(attn, torch.zeros(2, 2, dtype=torch.bfloat16))


def test_audio_rows_that_do_not_match_the_encoder_are_refused(models):
    model = models["trained"]
    items = model.items[:2]
    layout = decoder_layout([it.input_ids for it in items], model.audio_id, model.timestamp_id)
    hidden = model.aligner.model.thinker.model.embed_tokens.embedding_dim
    with pytest.raises(ValueError, match="audio tokens but the encoder gave"):
        decode_packed(model.aligner.model.thinker, layout, torch.zeros(3, hidden))


def test_a_clip_whose_audio_tokens_miss_its_frames_fails_the_pass(models):
    """One audio token moved from one clip's prompt to its batch-mate's: the pass's totals match
    the encoder's, but the first clip's encoding would spill into the second's prompt."""
    model = models["trained"]
    first, second = model.items[3], model.items[4]
    fewer, more = first.input_ids.copy(), second.input_ids.copy()
    fewer[np.flatnonzero(fewer == model.audio_id)[-1]] = fewer[-3]  # a pad becomes a word
    more[-3] = model.audio_id  # a word becomes a pad
    batch = [
        dataclasses.replace(first, input_ids=fewer),
        dataclasses.replace(second, input_ids=more),
    ]
    with pytest.raises(ValueError, match=r"clip 0 of the pass has \d+ audio tokens but its frames"):
        model.packed(batch)


def test_the_setting_chooses_the_decoder(models):
    assert read_core_settings({}, environ={}).packed_decoder is True
    off = read_core_settings({"packed_decoder": {"string_value": "false"}}, environ={})
    assert off.packed_decoder is False
    aligner = models["trained"].aligner
    assert InProcessAligner(aligner).forward_pass.packed_decoder is True
    with_off = PipelineSettings(core=off)
    assert InProcessAligner(aligner, with_off).forward_pass.packed_decoder is False
    assert CoreSettings().packed_decoder is True


@pytest.mark.requires_cuda
def test_a_pass_on_the_gpu_reads_back_once(random_checkpoint):
    """bfloat16 on CUDA: the decoder runs with synchronising calls turned into errors; the
    forward's only read is its one copy of bins and confidences."""
    aligner = load_aligner(str(random_checkpoint), "cuda")
    install_packed_encoder(aligner.model.thinker)
    items = prepared(aligner, CLIPS, seed=7)
    config = aligner.model.config
    layout = decoder_layout(
        [it.input_ids for it in items],
        int(config.thinker_config.audio_token_id),
        int(config.timestamp_token_id),
    )
    forward = ModelForward(aligner.model, int(aligner.processor.tokenizer.pad_token_id))
    with torch.inference_mode():
        audio = forward._audio_features([torch.from_numpy(it.features) for it in items])
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            logits = decode_packed(aligner.model.thinker, layout, audio)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert logits.dtype == torch.bfloat16 and logits.shape[0] == sum(layout.slot_counts)
    results = forward(items)
    assert [len(r.bins) for r in results] == list(layout.slot_counts)


def test_the_decoder_bench_compares_both_on_one_model(tmp_path, capsys):
    """bench.decoder: both decoders on the same prepared clips, same bins, a ratio."""
    import json

    from qwen3_aligner_tools.bench import decoder as bench

    out = tmp_path / "decoder.json"
    argv = ["--clips", "3", "--max-seconds", "12", "--rounds", "1", "--json", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["identical"] is True
    assert report["confidence_diff"] <= CONFIDENCE_ATOL
    assert len(report["padded_s"]) == len(report["packed_s"]) == 1
    assert report["ratio"] > 0 and report["padded_tokens"] >= report["prompt_tokens"]
    assert "bins identical" in capsys.readouterr().out
