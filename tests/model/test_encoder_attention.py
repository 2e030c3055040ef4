"""The audio encoder attends within its 8 s windows by default, as the model was trained.

qwen-asr 0.0.6 computes the windows but applies them only under flash-attention-2; under sdpa and
eager every token attends to the whole clip (QwenLM/Qwen3-ASR issue #213). These tests pin down
both settings: ``windowed`` (the default) is what upstream's flash-attention path computes, checked
here without trusting our mask (a clip's first window encodes as the clip cut to that window), and
``full`` is the unpatched upstream module, bit for bit. A checkpoint whose encoder attends sharply
makes the difference reach the timestamps, so the parity tests below can tell which one ran.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cases import CASES
from shared_fixtures import upstream_align
from test_engine import request_of

from qwen3_aligner_triton.encoder_attention import (
    FULL,
    WINDOWED,
    audio_encoder,
    encoder_attention_of,
    set_encoder_attention,
)
from qwen3_aligner_triton.inprocess import InProcessAligner
from qwen3_aligner_triton.loading import load_aligner
from qwen3_aligner_triton.params import (
    ConfigError,
    CoreSettings,
    PipelineSettings,
    read_core_settings,
)

WINDOW_FRAMES = 800  # n_window_infer: 8 s of 10 ms mel frames
WINDOW_TOKENS = 104  # 8 chunks of 100 frames, 13 encoder tokens each
SHARP_QUERY_SCALE = 12.0  # the sharp checkpoint's encoder queries, times the trained ones


def encode(aligner, features: torch.Tensor) -> torch.Tensor:
    encoder = audio_encoder(aligner.model)
    with torch.no_grad():
        lens = torch.tensor([features.shape[1]])
        return encoder(features, feature_lens=lens).last_hidden_state


@pytest.fixture(scope="module")
def random_aligner(random_checkpoint):
    return load_aligner(str(random_checkpoint), "cpu")


@pytest.fixture(scope="module")
def features() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(7).standard_normal((128, 2000)).astype("f4"))


def test_windowed_is_the_default_everywhere(random_aligner):
    assert CoreSettings().encoder_attention == WINDOWED
    assert read_core_settings({}).encoder_attention == WINDOWED
    assert encoder_attention_of(random_aligner.model) == WINDOWED


def test_a_windowed_clip_encodes_its_first_window_as_that_window_alone(random_aligner, features):
    """Independent of the mask's construction: with windows, the first 8 s of a 20 s clip see
    nothing after them, so they encode exactly as the clip cut to 8 s; without, they differ."""
    set_encoder_attention(random_aligner.model, WINDOWED)
    try:
        alone = encode(random_aligner, features[:, :WINDOW_FRAMES])
        whole = encode(random_aligner, features)
        assert alone.shape[0] == WINDOW_TOKENS
        torch.testing.assert_close(whole[:WINDOW_TOKENS], alone, rtol=0, atol=1e-5)
        set_encoder_attention(random_aligner.model, FULL)
        full = encode(random_aligner, features)
        assert (full[:WINDOW_TOKENS] - alone).abs().max() > 1e-2
    finally:
        set_encoder_attention(random_aligner.model, WINDOWED)


def test_a_clip_of_one_window_is_the_same_either_way(random_aligner, features):
    set_encoder_attention(random_aligner.model, FULL)
    try:
        full = encode(random_aligner, features[:, :WINDOW_FRAMES])
    finally:
        set_encoder_attention(random_aligner.model, WINDOWED)
    windowed = encode(random_aligner, features[:, :WINDOW_FRAMES])
    torch.testing.assert_close(windowed, full, rtol=0, atol=1e-6)


def test_full_is_upstream_untouched_bit_for_bit(random_checkpoint, random_aligner, features):
    from qwen_asr import Qwen3ForcedAligner

    plain = Qwen3ForcedAligner.from_pretrained(str(random_checkpoint), dtype=torch.float32)
    set_encoder_attention(random_aligner.model, FULL)
    try:
        assert encoder_attention_of(random_aligner.model) == FULL
        assert torch.equal(encode(random_aligner, features), encode(plain, features))
    finally:
        set_encoder_attention(random_aligner.model, WINDOWED)


def test_switching_is_idempotent_and_leaves_one_set_of_hooks(random_aligner, features):
    once = encode(random_aligner, features)
    set_encoder_attention(random_aligner.model, WINDOWED)
    set_encoder_attention(random_aligner.model, WINDOWED)
    layer = audio_encoder(random_aligner.model).layers[0]
    assert len(layer._forward_pre_hooks) == 1
    assert torch.equal(encode(random_aligner, features), once)


def test_unknown_settings_are_refused():
    with pytest.raises(ConfigError, match="encoder_attention"):
        read_core_settings({"encoder_attention": {"string_value": "sliding"}})
    with pytest.raises(ConfigError, match="flash_attention_2"):
        read_core_settings(
            {
                "encoder_attention": {"string_value": "full"},
                "attn_implementation": {"string_value": "flash_attention_2"},
            }
        )
    with pytest.raises(ValueError, match="not one of"):
        set_encoder_attention(object(), "sliding")


# A checkpoint whose encoder attends sharply enough for the windows to reach the timestamps. The
# trained tiny checkpoint's timestamps do not move with them (measured: none of the 12 long cases
# changed, even with its encoder's queries x1000 or its attention outputs x16: its decoder reads
# the audio through the residual path); the random one's encoder, queries scaled up, does.


def sharpen(checkpoint: Path, out: Path) -> Path:
    from qwen_asr import Qwen3ForcedAligner

    aligner = Qwen3ForcedAligner.from_pretrained(str(checkpoint), dtype=torch.float32)
    with torch.no_grad():
        for layer in audio_encoder(aligner.model).layers:
            layer.self_attn.q_proj.weight.mul_(SHARP_QUERY_SCALE)
            layer.self_attn.q_proj.bias.mul_(SHARP_QUERY_SCALE)
    aligner.model.save_pretrained(out, safe_serialization=True)
    aligner.processor.save_pretrained(out)
    for name in ("config.json",):  # the aligner's thinker type, as the builder writes it
        (out / name).write_text((checkpoint / name).read_text())
    return out


@pytest.fixture(scope="module")
def sharp_checkpoint(random_checkpoint, tmp_path_factory) -> Path:
    return sharpen(random_checkpoint, tmp_path_factory.mktemp("sharp"))


@pytest.fixture(scope="module")
def sharp(sharp_checkpoint):
    return {
        WINDOWED: load_aligner(str(sharp_checkpoint), "cpu"),
        FULL: load_aligner(str(sharp_checkpoint), "cpu", encoder_attention=FULL),
    }


LONG_CASES = [c for c in CASES if c.seconds > 8.0]


@pytest.fixture(scope="module")
def sharp_expected(sharp):
    return {
        mode: {
            c.name: upstream_align(aligner, c.audio(), c.sample_rate, c.text, c.upstream_language)
            for c in LONG_CASES
        }
        for mode, aligner in sharp.items()
    }


def test_the_sharp_checkpoint_tells_windowed_from_full(sharp_expected):
    windowed, full = sharp_expected[WINDOWED], sharp_expected[FULL]
    differ = [c.name for c in LONG_CASES if windowed[c.name] != full[c.name]]
    assert len(differ) >= len(LONG_CASES) // 2, differ


@pytest.mark.parametrize("mode", [WINDOWED, FULL])
def test_in_process_results_equal_upstream_with_the_same_encoder_setting(
    sharp, sharp_expected, mode
):
    engine = InProcessAligner(
        sharp[mode], PipelineSettings.of(checkpoint="sharp", encoder_attention=mode)
    )
    for case in LONG_CASES:
        result = engine.align([engine.prepare(request_of(case))])[0]
        got = [(u.text, u.start, u.end) for u in result.units]
        assert got == sharp_expected[mode][case.name], (mode, case.name)


@pytest.mark.integration
@pytest.mark.parametrize("mode", [WINDOWED, FULL])
def test_served_results_follow_the_encoder_setting(
    sharp_checkpoint, sharp_expected, tmp_path, mode
):
    """A real server on the sharp checkpoint: by default the windowed reference, with the
    ``encoder_attention: full`` parameter unpatched upstream's; both over HTTP."""
    from shared_fixtures import dedicated_server
    from triton_calls import as_float32, infer_http

    picked = [
        c for c in LONG_CASES if sharp_expected[WINDOWED][c.name] != sharp_expected[FULL][c.name]
    ]
    assert picked, "no long case tells the two settings apart on the sharp checkpoint"
    parameters = {} if mode == WINDOWED else {"encoder_attention": mode}
    with dedicated_server(tmp_path, sharp_checkpoint, **parameters) as server:
        for case in picked[:3]:
            got = infer_http(
                server.http_url, case.audio(), case.sample_rate, case.text, case.language
            )
            assert got["units"] == as_float32(sharp_expected[mode][case.name]), case.name
