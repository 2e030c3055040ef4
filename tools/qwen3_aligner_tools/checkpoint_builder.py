"""Write randomly initialised checkpoints of the Qwen3-ForcedAligner architecture.

The files load through the real ``qwen_asr.Qwen3ForcedAligner.from_pretrained``. Two sizes:

* ``tiny``: a few MB, runs in milliseconds on a CPU; used by the test suite.
* ``full``: the published sizes of Qwen3-ForcedAligner-0.6B with random weights, so that compute
  and memory match the real model where its weights cannot be downloaded (benchmarks).

Timestamps predicted by a random model are arbitrary but deterministic: what such a checkpoint
proves is structure, determinism and equality with the upstream library, never accuracy.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<|audio_pad|>",
    "<timestamp>",
    "<asr_text>",
)
# The split pattern of the Qwen2 tokenizer family.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TOKENIZER_CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, this is a forced alignment test with timestamps.",
    "我们今天去公园散步，天气很好。",
    "今日はいい天気ですね。東京に行きます。",
    "안녕하세요 만나서 반갑습니다",
    "Bonjour tout le monde. Guten Tag! Buenos días. Olá. Привет, мир.",
)
LANGUAGES = (
    "Chinese",
    "English",
    "Cantonese",
    "French",
    "German",
    "Italian",
    "Japanese",
    "Korean",
    "Portuguese",
    "Russian",
    "Spanish",
)
TIMESTAMP_SEGMENT_TIME = 80  # ms per timestamp class
CLASSIFY_NUM = 5000  # timestamp classes: 5000 x 80 ms = 400 s


@dataclass(frozen=True)
class Sizes:
    """Architecture sizes of one checkpoint flavour."""

    audio_layers: int
    audio_heads: int
    audio_ffn: int
    audio_d_model: int
    downsample_hidden: int
    text_hidden: int
    text_intermediate: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    head_dim: int
    vocab_size: int | None  # None: rounded up from the tokenizer
    init_std: float
    mrope_section: tuple[int, int, int]


TINY = Sizes(
    audio_layers=2,
    audio_heads=4,
    audio_ffn=128,
    audio_d_model=64,
    downsample_hidden=32,
    text_hidden=64,
    text_intermediate=128,
    text_layers=2,
    text_heads=4,
    text_kv_heads=2,
    head_dim=16,
    vocab_size=None,
    init_std=0.2,
    mrope_section=(4, 2, 2),
)
FULL = Sizes(
    audio_layers=24,
    audio_heads=16,
    audio_ffn=4096,
    audio_d_model=1024,
    downsample_hidden=480,
    text_hidden=1024,
    text_intermediate=3072,
    text_layers=28,
    text_heads=16,
    text_kv_heads=8,
    head_dim=128,
    vocab_size=152064,
    init_std=0.02,
    mrope_section=(24, 20, 20),
)
FLAVOURS = {"tiny": TINY, "full": FULL}
# Token ids of the special tokens in the real vocabulary; the full flavour uses them so that
# prompts have the real id layout.
REAL_SPECIAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|audio_start|>": 151669,
    "<|audio_end|>": 151670,
    "<|audio_pad|>": 151676,
    "<timestamp>": 151705,
    "<asr_text>": 151704,
}


def _build_tokenizer(out_dir: Path):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(list(TOKENIZER_CORPUS), trainer=trainer)
    fast = Qwen2TokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|endoftext|>",
        unk_token=None,
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        extra_special_tokens={
            "audio_token": "<|audio_pad|>",
            "audio_bos_token": "<|audio_start|>",
            "audio_eos_token": "<|audio_end|>",
        },
    )
    fast.add_special_tokens({"eos_token": "<|endoftext|>"})
    return fast


def build_checkpoint(out_dir: str | Path, flavour: str = "tiny", seed: int = 0) -> Path:
    """Write a loadable random checkpoint of ``flavour`` ("tiny" or "full") into ``out_dir``."""
    import torch
    from qwen_asr.core.transformers_backend import (
        Qwen3ASRConfig,
        Qwen3ASRForConditionalGeneration,
        Qwen3ASRProcessor,
    )
    from transformers import WhisperFeatureExtractor

    sizes = FLAVOURS[flavour]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = _build_tokenizer(out)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    if sizes.vocab_size is None:
        vocab_size = int(math.ceil(len(tokenizer) / 64) * 64)
    else:
        vocab_size = sizes.vocab_size
    feature_extractor = WhisperFeatureExtractor(
        feature_size=128,
        sampling_rate=16000,
        hop_length=160,
        n_fft=400,
        chunk_length=30,
        return_attention_mask=True,
        dither=0.0,
    )
    processor = Qwen3ASRProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)

    config = Qwen3ASRConfig(
        architectures=["Qwen3ASRForConditionalGeneration"],
        support_languages=list(LANGUAGES),
        timestamp_token_id=ids["<timestamp>"],
        timestamp_segment_time=TIMESTAMP_SEGMENT_TIME,
        thinker_config={
            "audio_token_id": ids["<|audio_pad|>"],
            "audio_start_token_id": ids["<|audio_start|>"],
            "audio_end_token_id": ids["<|audio_end|>"],
            "classify_num": CLASSIFY_NUM,
            "initializer_range": sizes.init_std,
            "audio_config": {
                "num_mel_bins": 128,
                "encoder_layers": sizes.audio_layers,
                "encoder_attention_heads": sizes.audio_heads,
                "encoder_ffn_dim": sizes.audio_ffn,
                "d_model": sizes.audio_d_model,
                "output_dim": sizes.text_hidden,
                "downsample_hidden_size": sizes.downsample_hidden,
                "n_window": 50,
                "n_window_infer": 800,
                "max_source_positions": 1500,
                "initializer_range": sizes.init_std,
            },
            "text_config": {
                "vocab_size": vocab_size,
                "hidden_size": sizes.text_hidden,
                "intermediate_size": sizes.text_intermediate,
                "num_hidden_layers": sizes.text_layers,
                "num_attention_heads": sizes.text_heads,
                "num_key_value_heads": sizes.text_kv_heads,
                "head_dim": sizes.head_dim,
                "rms_norm_eps": 1e-6,
                "rope_theta": 1000000.0,
                "tie_word_embeddings": False,
                "initializer_range": sizes.init_std,
                "rope_scaling": {
                    "rope_type": "default",
                    "mrope_section": list(sizes.mrope_section),
                    "interleaved": True,
                    "mrope_interleaved": True,
                },
            },
        },
    )
    # The aligner head (classify_num outputs) is only built for a forced-aligner thinker.
    config.thinker_config.model_type = "qwen3_forced_aligner"

    torch.manual_seed(seed)
    model = Qwen3ASRForConditionalGeneration(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if name.endswith("norm.weight") or ".ln" in name or "layer_norm" in name:
                param.fill_(1.0)
            elif name.endswith(".bias"):
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * sizes.init_std)
    model = model.to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)

    # save_pretrained writes the thinker's class default model_type; the loader needs the aligner's.
    config_path = out / "config.json"
    data = json.loads(config_path.read_text())
    data["thinker_config"]["model_type"] = "qwen3_forced_aligner"
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return out
