"""One encoder pass for all clips gives what upstream gives each clip alone.

The references are upstream's own code: ``get_audio_features`` on one clip at a time (qwen-asr
0.0.6, windows applied by :mod:`qwen3_aligner_triton.encoder_attention` or not), and upstream's
chunk and ``cu_seqlens`` arithmetic for the layout. The random tiny checkpoint attends sharply
enough that dropping the windows moves its encoder output by more than 1e-2; its biases are all
zero, which would make zero padding harmless, so the tests give its encoder random biases first:
then padding a sub-second clip to a full chunk moves its encoding by ~2. Both mistakes fail here.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from qwen_asr.core.transformers_backend.modeling_qwen3_asr import (
    _get_feat_extract_output_lengths,
)

from qwen3_aligner_triton.core import pad_frames
from qwen3_aligner_triton.encoder_attention import FULL, WINDOWED, audio_encoder
from qwen3_aligner_triton.loading import load_aligner
from qwen3_aligner_triton.packed_encoder import (
    clip_layout,
    encode_packed,
    encoder_layout,
    install_packed_encoder,
    pack_layout,
    packed_encoder_installed,
    uninstall_packed_encoder,
)
from qwen3_aligner_triton.preparation import build_prompt

MEL_FRAMES_PER_SECOND = 100
SAMPLE_RATE = 16000  # Hz, the processor's input
N_WINDOW = 50  # frames: half a chunk (the checkpoints' n_window)
N_WINDOW_INFER = 800  # frames: one attention window, 8 s
WINDOW_FRAMES = N_WINDOW_INFER
LAYOUT_MAX_FRAMES = 20_000  # the layout is checked for every clip of 1..this many frames
CLIP_SECONDS = (0.1, 0.73, 0.99, 1.0, 1.01, 8.0, 8.01, 12.34, 30.0, 180.0)
EXACT_ATOL = 1e-6  # float32: measured 0.0 wherever both sides attend over the same segments
BIAS_STD = 0.5  # random biases given to the encoder's convolutions and linear layers
# In a pass, a clip's rows are rows of a taller matrix, at another offset within the CPU BLAS's
# row blocks than when its clip is multiplied alone, so some of them go through another kernel
# (an edge block's, or a tail's) with another summation order. A clip of at most 3 tokens
# (<= 0.2 s) is a matrix of 3 rows alone (seen with one nn.Linear: rows 0-2 of a 400-row product
# differ by ~1e-6 when multiplied alone): measured 1.4e-6 on the 0.1 s clip on a processor with
# AVX-512, every other clip within 1e-6. Which rows move depends on the processor's blocks: on an
# AMD EPYC with AVX2 only, the 1.0 s clip (13 tokens) moved by 4.3e-6 and the 0.1 s one by 1.9e-6.
# Alone, packed is exact on both (EXACT_ATOL); in a pass of several clips, rounding is allowed.
FEW_ROWS = 3
PASS_ATOL = 1e-5
# Upstream applies the windows as one SDPA call over the whole clip with a block-diagonal additive
# mask; packed runs one call per window. Same arithmetic, another summation order: on clips of
# more than one window the outputs (up to ~13 in magnitude here) differ by up to 3.8e-6, and each
# side is as far from a float64 run of upstream as the other (4-5.5e-6).
MASKED_WINDOWS_ATOL = 1e-5
LOGITS_ATOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def with_random_biases(aligner):
    """``aligner`` with seeded random biases in its audio encoder (the same for every call)."""
    generator = torch.Generator().manual_seed(3)
    for module in audio_encoder(aligner.model).modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and module.bias is not None:
            with torch.no_grad():
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * BIAS_STD)
    return aligner


@pytest.fixture(scope="module")
def aligners(random_checkpoint) -> dict:
    return {
        WINDOWED: with_random_biases(load_aligner(str(random_checkpoint), "cpu")),
        FULL: with_random_biases(
            load_aligner(str(random_checkpoint), "cpu", encoder_attention=FULL)
        ),
    }


@pytest.fixture(scope="module")
def clips() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(2024)
    return [
        torch.randn(128, round(s * MEL_FRAMES_PER_SECOND), generator=generator)
        for s in CLIP_SECONDS
    ]


def upstream_alone(thinker, clip: torch.Tensor) -> torch.Tensor:
    """Upstream's ``get_audio_features`` on one clip, as the unpatched loop runs it."""
    mask = torch.ones((1, clip.shape[1]), dtype=torch.long)
    with torch.no_grad():
        return thinker.get_audio_features(clip[None], feature_attention_mask=mask)


@pytest.fixture(scope="module")
def references(aligners, clips) -> dict:
    return {
        mode: [upstream_alone(aligner.model.thinker, c) for c in clips]
        for mode, aligner in aligners.items()
    }


def passes() -> list[list[int]]:
    """Mixed passes over CLIP_SECONDS: all in order, shuffled, and short-long pairs."""
    everything = list(range(len(CLIP_SECONDS)))
    rng = np.random.default_rng(11)
    shuffled = [list(rng.permutation(everything)) for _ in range(2)]
    pairs = [[0, 9], [9, 0], [1, 7], [2, 8], [4, 6], [3, 5], [1, 2]]
    return [everything, *shuffled, *pairs]


# --- the layout against upstream's arithmetic -------------------------------------------------


def upstream_chunk_lengths(feature_lens: torch.Tensor, n_window: int) -> tuple:
    """Lines of upstream's ``Qwen3ASRAudioEncoder.forward`` (0.0.6): the chunks of a batch."""
    chunk_num = torch.ceil(feature_lens / (n_window * 2)).long()
    chunk_lengths = torch.tensor([n_window * 2] * chunk_num.sum(), dtype=torch.long)
    tail_chunk_index = F.pad(chunk_num, (1, 0), value=-1).cumsum(0)[1:]
    chunk_lengths[tail_chunk_index] = feature_lens % (n_window * 2)
    chunk_lengths[chunk_lengths == 0] = n_window * 2
    return chunk_num, chunk_lengths


def upstream_cu_seqlens(aftercnn_lens: list[int], window_aftercnn: int) -> list[int]:
    """Upstream's ``cu_seqlens`` loop, on ints."""
    cu_chunk_lens = [0]
    for cnn_len in aftercnn_lens:
        cu_chunk_lens += [window_aftercnn] * (cnn_len // window_aftercnn)
        remainder = cnn_len % window_aftercnn
        if remainder != 0:
            cu_chunk_lens += [remainder]
    return list(itertools.accumulate(cu_chunk_lens))


@pytest.mark.parametrize("mode", [WINDOWED, FULL])
def test_layout_is_upstreams_for_every_length(mode):
    frames = torch.arange(1, LAYOUT_MAX_FRAMES + 1)
    chunk_num, chunk_lengths = upstream_chunk_lengths(frames, N_WINDOW)
    chunk_tokens = _get_feat_extract_output_lengths(chunk_lengths)
    clip_of_chunk = torch.repeat_interleave(torch.arange(len(frames)), chunk_num)
    # The padded chunk width of a call with this clip alone, in tokens (padded_mask_after_cnn).
    widest = torch.zeros(len(frames), dtype=torch.long).scatter_reduce(
        0, clip_of_chunk, chunk_tokens, "amax"
    )
    windows = (widest * (N_WINDOW_INFER // (2 * N_WINDOW))).tolist()
    tokens = _get_feat_extract_output_lengths(frames).tolist()

    layouts = [clip_layout(f, N_WINDOW, N_WINDOW_INFER, mode) for f in frames.tolist()]
    assert [len(lay.chunk_frames) for lay in layouts] == chunk_num.tolist()
    assert [n for lay in layouts for n in lay.chunk_frames] == chunk_lengths.tolist()
    assert [n for lay in layouts for n in lay.chunk_tokens] == chunk_tokens.tolist()
    assert [lay.tokens for lay in layouts] == tokens
    assert [lay.padded_to_chunk for lay in layouts] == (frames >= 2 * N_WINDOW).tolist()
    for lay, n, window in zip(layouts, tokens, windows, strict=True):
        got = [0, *itertools.accumulate(lay.segments)]
        expected = upstream_cu_seqlens([n], window) if mode == WINDOWED else [0, n]
        assert got == expected, lay.frames


def test_pass_cu_seqlens_are_what_upstreams_forward_computes(aligners):
    """The windows read from upstream's real forward (the ``cu_seqlens`` its layers get), per
    clip alone, laid end to end, are the pass's."""
    encoder = audio_encoder(aligners[WINDOWED].model)
    frame_counts = [1, 7, 99, 100, 101, 799, 800, 801, 1234, 3000]
    seen: list[list[int]] = []
    hook = encoder.layers[0].register_forward_pre_hook(
        lambda module, args: seen.append(args[1].tolist())
    )
    try:
        with torch.no_grad():
            for n in frame_counts:
                encoder(torch.zeros(128, n), feature_lens=torch.tensor([n]))
    finally:
        hook.remove()
    expected, offset = [0], 0
    for cu in seen:
        expected += [offset + c for c in cu[1:]]
        offset = expected[-1]
    layout = encoder_layout(encoder, frame_counts, WINDOWED)
    assert list(layout.cu_seqlens) == expected
    assert layout.tokens == sum(_get_feat_extract_output_lengths(torch.tensor(frame_counts)))
    assert pack_layout(frame_counts, N_WINDOW, N_WINDOW_INFER, FULL).cu_seqlens == tuple(
        itertools.accumulate([0, *(cu[-1] for cu in seen)])
    )


def test_a_layout_refuses_what_upstream_cannot_encode():
    with pytest.raises(ValueError, match="at least one mel frame"):
        clip_layout(0, N_WINDOW, N_WINDOW_INFER, WINDOWED)
    with pytest.raises(ValueError, match="not one of"):
        clip_layout(100, N_WINDOW, N_WINDOW_INFER, "sliding")


# --- packed encoding against upstream, clip by clip ---------------------------------------------


def split_rows(packed: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    assert packed.shape[0] == sum(sizes)
    return list(packed.split(sizes))


def windows_alone(encoder, clip: torch.Tensor) -> torch.Tensor | None:
    """Each 8 s window of ``clip`` encoded alone by upstream, end to end: what the windowed clip
    is, exactly, since chunks and their position embeddings restart at every window. None where a
    last window under one chunk would be left unpadded alone (upstream pads it in the clip)."""
    frames = clip.shape[1]
    starts = range(0, frames, WINDOW_FRAMES)
    if frames > WINDOW_FRAMES and frames - starts[-1] < 2 * N_WINDOW:
        return None
    with torch.no_grad():
        return torch.cat(
            [
                encoder(
                    piece := clip[:, s : s + WINDOW_FRAMES],
                    feature_lens=torch.tensor([piece.shape[1]]),
                ).last_hidden_state
                for s in starts
            ]
        )


@pytest.mark.parametrize("mode", [WINDOWED, FULL])
def test_packed_is_each_clip_alone(aligners, clips, references, mode):
    encoder = audio_encoder(aligners[mode].model)
    for order in passes():
        with torch.no_grad():
            packed = encode_packed(encoder, [clips[i] for i in order], mode)
        rows = split_rows(packed, [references[mode][i].shape[0] for i in order])
        for i, got in zip(order, rows, strict=True):
            atol = EXACT_ATOL
            if mode == WINDOWED and clips[i].shape[1] > WINDOW_FRAMES:
                atol = MASKED_WINDOWS_ATOL
            elif len(order) > 1:
                atol = PASS_ATOL
            torch.testing.assert_close(
                got, references[mode][i], rtol=0, atol=atol, msg=f"{CLIP_SECONDS[i]} s in {order}"
            )


def test_windowed_is_each_window_alone_exactly(aligners, clips):
    """The clips of several windows, to EXACT_ATOL: against each window encoded alone (one
    segment, where upstream's mask changes nothing), not against upstream's masked call."""
    encoder = audio_encoder(aligners[WINDOWED].model)
    checked = 0
    for order in passes()[:3]:
        with torch.no_grad():
            packed = encode_packed(encoder, [clips[i] for i in order], WINDOWED)
        sizes = [
            clip_layout(clips[i].shape[1], N_WINDOW, N_WINDOW_INFER, WINDOWED).tokens for i in order
        ]
        for i, got in zip(order, split_rows(packed, sizes), strict=True):
            expected = windows_alone(encoder, clips[i])
            if expected is not None and clips[i].shape[1] > WINDOW_FRAMES:
                torch.testing.assert_close(got, expected, rtol=0, atol=EXACT_ATOL)
                checked += 1
    assert checked == 3 * 3  # 12.34 s, 30 s and 180 s in each pass


def test_the_mistakes_to_avoid_show_here(aligners, clips, references):
    """Without its windows a long clip is far from upstream's windowed encoding, and a sub-second
    clip padded to a full chunk (upstream's own batched call, beside a 1 s clip) is off too: the
    checks above can see both mistakes on this checkpoint."""
    encoder = audio_encoder(aligners[WINDOWED].model)
    short, second = clips[1], clips[3]  # 0.73 s and 1.0 s
    with torch.no_grad():
        unwindowed = encode_packed(encoder, [clips[7]], FULL)
        beside = encoder(
            torch.cat([short, second], dim=1),
            feature_lens=torch.tensor([short.shape[1], second.shape[1]]),
        ).last_hidden_state
    assert (unwindowed - references[WINDOWED][7]).abs().max() > 1e-2
    padded_short = beside[: references[WINDOWED][1].shape[0]]
    assert (padded_short - references[WINDOWED][1]).abs().max() > 1e-2


@pytest.mark.parametrize("mode", [WINDOWED, FULL])
def test_a_clip_of_few_tokens_alone_is_exact(aligners, clips, references, mode):
    encoder = audio_encoder(aligners[mode].model)
    with torch.no_grad():
        alone = encode_packed(encoder, [clips[0]], mode)
    assert alone.shape[0] <= FEW_ROWS
    torch.testing.assert_close(alone, references[mode][0], rtol=0, atol=EXACT_ATOL)


def test_packed_keeps_the_encoders_dtype(aligners, clips):
    encoder = audio_encoder(aligners[WINDOWED].model)
    with torch.no_grad():
        out = encode_packed(encoder, [clips[1].double(), clips[7]], WINDOWED)
        empty = encode_packed(encoder, [], WINDOWED)
    assert out.dtype == torch.float32
    assert empty.shape == (0, encoder.proj2.out_features)


# --- the thinker with the packed encoder installed ---------------------------------------------


def padded_batch(aligner, seconds: tuple[float, ...]) -> dict:
    """A batch as the engine sends it: the processor per clip, ids left-padded, frames right."""
    rng = np.random.default_rng(5)
    items = []
    for s in seconds:
        wave = (0.1 * rng.standard_normal(int(s * SAMPLE_RATE))).astype(np.float32)
        prompt = build_prompt(["one", "two", "three"])
        items.append(
            aligner.processor(text=[prompt], audio=[wave], return_tensors="pt", padding=True)
        )
    pad_id = int(aligner.processor.tokenizer.pad_token_id)
    longest = max(int(it["input_ids"].shape[-1]) for it in items)
    input_ids = torch.full((len(items), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(items), longest), dtype=torch.long)
    for b, it in enumerate(items):
        n = int(it["input_ids"].shape[-1])
        input_ids[b, longest - n :] = it["input_ids"][0]
        attention_mask[b, longest - n :] = 1
    features, feature_mask = pad_frames(
        [it["input_features"][0, :, : int(it["feature_attention_mask"].sum())] for it in items]
    )
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "input_features": features,
        "feature_attention_mask": feature_mask,
    }


@pytest.mark.parametrize("mode", [WINDOWED, FULL])
def test_installed_forward_gives_upstreams_logits(aligners, mode):
    aligner = aligners[mode]
    thinker = aligner.model.thinker
    inputs = padded_batch(aligner, (0.73, 12.34, 1.0, 30.0))
    encoder_calls = []
    hook = thinker.audio_tower.register_forward_hook(lambda *_: encoder_calls.append(1))
    try:
        with torch.no_grad():
            expected = thinker(**inputs, use_cache=False).logits
            assert len(encoder_calls) == 4  # upstream: one encoder call per clip
            install_packed_encoder(thinker)
            assert packed_encoder_installed(thinker)
            got = thinker(**inputs, use_cache=False).logits
            assert len(encoder_calls) == 4  # packed: the encoder module's forward is not used
    finally:
        hook.remove()
        uninstall_packed_encoder(thinker)
    torch.testing.assert_close(got, expected, rtol=0, atol=LOGITS_ATOL)


def test_install_follows_the_models_attention_unless_told(aligners, clips, references):
    thinker = aligners[WINDOWED].model.thinker
    clip = clips[7]  # 12.34 s: two windows
    mask = torch.ones((1, clip.shape[1]), dtype=torch.long)
    try:
        install_packed_encoder(thinker)
        with torch.no_grad():
            followed = thinker.get_audio_features(clip[None], feature_attention_mask=mask)
        install_packed_encoder(thinker, FULL)
        with torch.no_grad():
            told = thinker.get_audio_features(clip[None], feature_attention_mask=mask)
    finally:
        uninstall_packed_encoder(thinker)
    torch.testing.assert_close(followed, references[WINDOWED][7], rtol=0, atol=MASKED_WINDOWS_ATOL)
    torch.testing.assert_close(told, references[FULL][7], rtol=0, atol=EXACT_ATOL)
    with pytest.raises(ValueError, match="not one of"):
        install_packed_encoder(thinker, "sliding")


def test_uninstall_restores_upstreams_method(aligners):
    thinker = aligners[FULL].model.thinker
    upstream = type(thinker).get_audio_features
    install_packed_encoder(thinker)
    install_packed_encoder(thinker)  # idempotent
    assert thinker.get_audio_features.__func__ is not upstream
    uninstall_packed_encoder(thinker)
    assert thinker.get_audio_features.__func__ is upstream
    assert not packed_encoder_installed(thinker)
    uninstall_packed_encoder(thinker)  # a no-op now
    assert thinker.get_audio_features.__func__ is upstream


def test_a_given_layout_is_used_and_checked(aligners, clips, references):
    encoder = audio_encoder(aligners[FULL].model)
    pair = [clips[1], clips[7]]
    layout = encoder_layout(encoder, [c.shape[1] for c in pair], FULL)
    with torch.no_grad():
        got = encode_packed(encoder, pair, FULL, layout=layout)
    torch.testing.assert_close(
        got, torch.cat([references[FULL][1], references[FULL][7]]), rtol=0, atol=EXACT_ATOL
    )
    with pytest.raises(ValueError, match="other clips or another attention mode"):
        encode_packed(encoder, pair, WINDOWED, layout=layout)
    with pytest.raises(ValueError, match="other clips or another attention mode"):
        encode_packed(encoder, pair[::-1], FULL, layout=layout)


@pytest.mark.requires_cuda
def test_a_pass_on_the_gpu_reads_nothing_back(random_checkpoint, clips):
    """bfloat16 on CUDA: the pass runs with synchronising calls turned into errors."""
    aligner = load_aligner(str(random_checkpoint), "cuda")
    encoder = audio_encoder(aligner.model)
    on_device = [c.to("cuda") for c in clips]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            out = encode_packed(encoder, on_device, WINDOWED)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.dtype == torch.bfloat16
    assert out.shape[0] == sum(
        _get_feat_extract_output_lengths(torch.tensor([c.shape[1] for c in clips]))
    )
    assert bool(torch.isfinite(out).all())


def test_the_encoder_bench_compares_both_on_one_model(tmp_path, capsys):
    """bench.encoder: both encoders on the same prepared clips, same timestamps, a ratio."""
    import json

    from qwen3_aligner_tools.bench import encoder as bench

    out = tmp_path / "encoder.json"
    argv = ["--clips", "2", "--max-seconds", "12", "--rounds", "1", "--shared-pass"]
    assert bench.main([*argv, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for shape in ("a pass per clip", "one pass of all"):
        assert report[shape]["identical"] is True
        assert len(report[shape]["upstream_s"]) == len(report[shape]["packed_s"]) == 1
        assert report[shape]["ratio"] > 0
    assert "timestamps identical" in capsys.readouterr().out
