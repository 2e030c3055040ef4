"""Write Qwen3-ASR checkpoints: a tiny one whose greedy transcript is set by hand, not learnt,
and a full-size random one (``full``: the published sizes of Qwen3-ASR-0.6B, random weights) that
costs what the real model costs, for benchmarks. A random model rarely says its end token, so it
generates up to the bound on new tokens; the unused ids of its vocabulary decode to made-up
words (`` qab``), so what it says is words for the aligner to align.

The files load through the real ``qwen_asr.Qwen3ASRModel.from_pretrained`` and transcribe through
its ``transcribe`` (the Transformers backend: the processor's chat template, ``generate`` with
greedy decoding, ``parse_asr_output``). Random weights would emit random tokens and rarely stop,
so the text model's weights are written out as a small program instead. For any audio it answers

    language English<asr_text> one two three ...<|im_end|>

with ``audio_tokens // 13 + 1`` words (13 audio tokens per second of audio: about one word per
second, at least one), cycling through ``ASR_WORDS``; with a forced language the prompt already
ends in ``language X<asr_text>`` and it answers the words alone. Chunks of different lengths thus
get different transcripts, and a test can compute the one it expects (``expected_transcript``).
The transcript depends on how many audio tokens there are, never on what they hold: the audio
encoder runs (random weights) but its last projection ignores its input.

How the one-layer text model does it (hidden size 16, every dimension named below):

* Embeddings are one-hot. Each token that has a successor in the answer (the ``\\n`` that ends
  the prompt, ``language``, `` English``, ``<asr_text>`` and the eight words) owns a dimension;
  ``<|audio_start|>`` owns one; every audio token (the encoder's output, whose last projection is
  a constant bias) sets ``DIM_AUDIO``; all other tokens share ``DIM_OTHER``.
* The attention's queries are zero, so every position attends uniformly over all the positions
  before it (padding masked) and reads their mean value. The value is +2 for an audio token, +1
  for ``<|audio_start|>`` and -26 for each word of the answer already said (after the input
  norm, whose scale is the same for every one-hot vector). Its mean has the sign of
  ``2 * audio_tokens + 1 - 26 * words``, never zero (it is odd), whatever the positions' count;
  the output projection writes it, scaled down, into ``DIM_GATE``. The MLP is zero.
* The LM head maps each token's dimension to its successor's row (``\\n`` -> ``language`` ->
  `` English`` -> ``<asr_text>`` -> `` one`` -> `` two`` ... `` eight`` -> `` one``) with logit
  about 4, and gives ``<|im_end|>`` a huge weight against ``DIM_GATE``: once the words reach
  ``2 * audio_tokens + 1 < 26 * words`` its logit is positive and above 4 (at least
  262,144 / positions: for prompts under 65,536 positions, over an hour of audio), before that it
  is far below zero. Greedy decoding then says the next word until the count is reached, and
  stops. Every attention weight is the same and every value a small integer, so a model loaded
  in bfloat16 counts alike.

Words of the answer's own vocabulary in a prompt's context count as already said. Special tokens
sit at their real ids (``<|im_end|>`` 151645: upstream's ``generate`` stops only at 151643 and
151645, whatever the tokenizer says), so the vocabulary is the real model's 151,936 rows, nearly
all zero: the weights, stored in bfloat16 (every hand-set value is exact in it), take 10 MB and
the tokenizer 2.3 MB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .checkpoint_builder import (
    LANGUAGES,
    QWEN2_SPLIT_PATTERN,
    REAL_SPECIAL_IDS,
    TINY,
)

ASR_FLAVOURS = ("tiny", "full")


@dataclass(frozen=True)
class FullAsrSizes:
    """The published sizes of Qwen3-ASR-0.6B (its ``config.json``)."""

    audio_layers: int = 18
    audio_heads: int = 14
    audio_ffn: int = 3584
    audio_d_model: int = 896
    downsample_hidden: int = 480
    text_hidden: int = 1024
    text_intermediate: int = 3072
    text_layers: int = 28
    text_heads: int = 16
    text_kv_heads: int = 8
    head_dim: int = 128
    mrope_section: tuple[int, int, int] = (24, 20, 20)
    init_std: float = 0.02


FULL_ASR = FullAsrSizes()

VOCAB_SIZE = 151936  # rows of the real Qwen3-ASR vocabulary
HIDDEN = 16  # text hidden size: one dimension per role below
HEAD_DIM = 16
MROPE_SECTION = (4, 2, 2)  # sums to HEAD_DIM / 2
AUDIO_TOKENS_PER_WORD = 13  # audio tokens per second of audio (13 per 100 mel frames)
ASR_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight")
ANSWER_LANGUAGE = "English"
# Tokens of the prompt and the answer's head, each followed by one fixed token.
PROMPT_END = "\n"  # the prompt's last token before the answer
LEAD = (PROMPT_END, "language", " " + ANSWER_LANGUAGE, "<asr_text>")
WORD_TOKENS = tuple(" " + w for w in ASR_WORDS)
DIM_WORD0 = len(LEAD)  # the words' dimensions follow the lead's
DIM_AUDIO = DIM_WORD0 + len(WORD_TOKENS)  # 12
DIM_AUDIO_START = DIM_AUDIO + 1
DIM_GATE = DIM_AUDIO + 2
DIM_OTHER = DIM_AUDIO + 3  # 15: every other token
assert DIM_OTHER == HIDDEN - 1
# The attention value (after the input norm, a one-hot vector reads sqrt(HIDDEN) = 4).
VALUE_AUDIO = 2.0
VALUE_AUDIO_START = 1.0
VALUE_WORD = -2.0 * AUDIO_TOKENS_PER_WORD
GATE_SCALE = 1.0 / 256  # DIM_GATE holds the mean value times this: small against the one-hots
SUCCESSOR_WEIGHT = 1.0  # logit ~4 for the next token of the answer
STOP_WEIGHT = float(2**24)  # <|im_end|>'s weight against DIM_GATE

# Renders upstream's messages (system: the context; user: one audio) with add_generation_prompt
# as the real checkpoint's template does: "<|im_start|>system\n{context}<|im_end|>\n<|im_start|>
# user\n<|audio_start|><|audio_pad|><|audio_end|><|im_end|>\n<|im_start|>assistant\n".
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'audio' -%}"
    "{{- '<|audio_start|><|audio_pad|><|audio_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}"
    "{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)
# Special tokens hidden by decoding; <asr_text> is an ordinary added token, as in the real
# tokenizer, so that the decoded answer keeps it for parse_asr_output.
HIDDEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<|audio_pad|>",
    "<timestamp>",
)
ASR_TEXT = "<asr_text>"
ASR_TOKENIZER_CORPUS = (
    "language English<asr_text> one two three four five six seven eight",
    "language None<asr_text>",
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, this is a speech recognition test in English.",
    "Please transcribe the audio and keep names, numbers and terms as spoken.",
    " ".join(f"language {name}" for name in LANGUAGES),
)
PRIVATE_USE_START = 0xE000  # Unicode's private-use area, U+E000..U+F8FF
PRIVATE_USE_SPAN = 0x1900
BYTE_LEVEL_SPACE = "\u0120"  # "Ġ": a space in the byte-level alphabet
WORD_LETTERS = 4  # letters of a made-up word: 26**4 > the vocabulary's rows
CORPUS_REPEATS = 8  # the answer's tokens must come out of training as single tokens


def expected_words(audio_tokens: int) -> int:
    """How many words the tiny ASR checkpoint says for a clip of ``audio_tokens``."""
    return audio_tokens // AUDIO_TOKENS_PER_WORD + 1


def expected_transcript(audio_tokens: int) -> str:
    """The text ``transcribe`` returns on the tiny ASR checkpoint for ``audio_tokens``."""
    n = expected_words(audio_tokens)
    return " ".join(ASR_WORDS[i % len(ASR_WORDS)] for i in range(n))


def _build_tokenizer(word_placeholders: bool = False):
    """A byte-level BPE with the real special ids (151643...) and the answer's single tokens."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
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
        vocab_size=600,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(list(ASR_TOKENIZER_CORPUS) * CORPUS_REPEATS, trainer=trainer)
    # Added tokens take the next free ids; entered in the model's vocabulary first, they keep
    # the real ones. A vocabulary with holes makes the tokenizers library print every missing id
    # on each save and load, so the ids the BPE leaves free are filled with placeholders that no
    # merge forms (pairs of private-use characters, outside the byte-level alphabet).
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    by_id = {token_id: token for token, token_id in REAL_SPECIAL_IDS.items()}
    rows = max(max(by_id) + 1, VOCAB_SIZE if word_placeholders else 0)
    for token_id in range(len(vocab), rows):
        entry = by_id.get(token_id) or (word_placeholders and _word(token_id))
        vocab[entry if entry and entry not in vocab else _placeholder(token_id)] = token_id
    tok = Tokenizer.from_str(json.dumps(data))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in HIDDEN_SPECIALS])
    tok.add_tokens([AddedToken(ASR_TEXT, special=False, normalized=False)])
    fast = Qwen2TokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|endoftext|>",
        unk_token=None,
        pad_token="<|endoftext|>",
        additional_special_tokens=list(HIDDEN_SPECIALS[1:]),
        extra_special_tokens={
            "audio_token": "<|audio_pad|>",
            "audio_bos_token": "<|audio_start|>",
            "audio_eos_token": "<|audio_end|>",
        },
    )
    # No vocab.json/merges.txt: the slow files cannot hold a vocabulary with gaps.
    fast.slow_tokenizer_class = None
    for token, token_id in REAL_SPECIAL_IDS.items():
        assert fast.convert_tokens_to_ids(token) == token_id, token
    return fast


def _word(token_id: int) -> str:
    """A made-up word for ``token_id`` (four letters after a space, in byte-level form) that no
    merge forms: generated, it decodes to `` qxab``."""
    letters = []
    for _ in range(WORD_LETTERS):
        token_id, digit = divmod(token_id, 26)
        letters.append(chr(ord("a") + digit))
    return BYTE_LEVEL_SPACE + "".join(letters)


def _placeholder(token_id: int) -> str:
    """An unreachable vocabulary entry for ``token_id``: two private-use characters."""
    first, second = divmod(token_id, PRIVATE_USE_SPAN)
    return chr(PRIVATE_USE_START + first) + chr(PRIVATE_USE_START + second)


def _single_token_ids(tokenizer, pieces: tuple[str, ...]) -> list[int]:
    """The id of each piece, which must encode as exactly one token."""
    ids = []
    for piece in pieces:
        encoded = tokenizer.encode(piece, add_special_tokens=False)
        if len(encoded) != 1:
            raise RuntimeError(f"{piece!r} is not one token of the tiny ASR tokenizer: {encoded}")
        ids.append(encoded[0])
    return ids


def build_asr_checkpoint(out_dir: str | Path, flavour: str = "tiny", seed: int = 0) -> Path:
    """Write the tiny (or full-size random) Qwen3-ASR checkpoint (see the module's docstring)
    into ``out_dir``."""
    if flavour not in ASR_FLAVOURS:
        raise ValueError(
            f"unknown ASR checkpoint flavour {flavour!r}: expected one of {', '.join(ASR_FLAVOURS)}"
        )
    import torch
    from qwen_asr.core.transformers_backend import (
        Qwen3ASRConfig,
        Qwen3ASRForConditionalGeneration,
        Qwen3ASRProcessor,
    )
    from qwen_asr.inference.utils import SUPPORTED_LANGUAGES
    from transformers import WhisperFeatureExtractor

    full = flavour == "full"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(word_placeholders=full)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in REAL_SPECIAL_IDS}
    lead_ids = _single_token_ids(tokenizer, LEAD)
    word_ids = _single_token_ids(tokenizer, WORD_TOKENS)
    feature_extractor = WhisperFeatureExtractor(
        feature_size=128,
        sampling_rate=16000,
        hop_length=160,
        n_fft=400,
        chunk_length=30,
        return_attention_mask=True,
        dither=0.0,
    )
    processor = Qwen3ASRProcessor(
        feature_extractor=feature_extractor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )
    sizes = FULL_ASR if full else TINY
    text_config = (
        {
            "hidden_size": FULL_ASR.text_hidden,
            "intermediate_size": FULL_ASR.text_intermediate,
            "num_hidden_layers": FULL_ASR.text_layers,
            "num_attention_heads": FULL_ASR.text_heads,
            "num_key_value_heads": FULL_ASR.text_kv_heads,
            "head_dim": FULL_ASR.head_dim,
            "tie_word_embeddings": True,
        }
        if full
        else {
            "hidden_size": HIDDEN,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 1,
            "num_key_value_heads": 1,
            "head_dim": HEAD_DIM,
            "tie_word_embeddings": False,
        }
    )
    config = Qwen3ASRConfig(
        architectures=["Qwen3ASRForConditionalGeneration"],
        support_languages=list(SUPPORTED_LANGUAGES),
        thinker_config={
            "audio_token_id": ids["<|audio_pad|>"],
            "audio_start_token_id": ids["<|audio_start|>"],
            "audio_end_token_id": ids["<|audio_end|>"],
            "initializer_range": sizes.init_std,
            "audio_config": {
                "num_mel_bins": 128,
                "encoder_layers": sizes.audio_layers,
                "encoder_attention_heads": sizes.audio_heads,
                "encoder_ffn_dim": sizes.audio_ffn,
                "d_model": sizes.audio_d_model,
                "output_dim": FULL_ASR.text_hidden if full else HIDDEN,
                "downsample_hidden_size": sizes.downsample_hidden,
                "n_window": 50,
                "n_window_infer": 800,
                "max_source_positions": 1500,
                "initializer_range": sizes.init_std,
            },
            "text_config": {
                "vocab_size": VOCAB_SIZE,
                **text_config,
                "rms_norm_eps": 1e-6,
                "rope_theta": 1000000.0,
                "initializer_range": sizes.init_std,
                "pad_token_id": ids["<|endoftext|>"],
                "eos_token_id": ids["<|im_end|>"],
                "rope_scaling": {
                    "rope_type": "default",
                    "mrope_section": list(FULL_ASR.mrope_section if full else MROPE_SECTION),
                    "interleaved": True,
                    "mrope_interleaved": True,
                },
            },
        },
    )
    torch.manual_seed(seed)
    model = Qwen3ASRForConditionalGeneration(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if not full and not name.startswith("thinker.audio_tower."):
                param.zero_()
            elif name.endswith("norm.weight") or ".ln" in name or "layer_norm" in name:
                param.fill_(1.0)
            elif name.endswith(".bias"):
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * sizes.init_std)
        if full:  # random weights in float32 (3 GB), as the CPU runs them
            return _save(model.to(torch.float32), processor, out)
        _program_text_model(model.thinker, lead_ids, word_ids, ids)
    return _save(model.to(torch.bfloat16), processor, out)


def _save(model, processor, out: Path) -> Path:
    """Write the model, the processor and a sorted config.json into ``out``."""
    from tokenizers import Tokenizer

    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    # transformers writes tokenizer.json one entry a line: a third larger for 151,706 entries.
    tokenizer_path = str(out / "tokenizer.json")
    Tokenizer.from_file(tokenizer_path).save(tokenizer_path, pretty=False)
    config_path = out / "config.json"
    data = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return out


def _program_text_model(
    thinker, lead_ids: list[int], word_ids: list[int], ids: dict[str, int]
) -> None:
    """Set the weights that make greedy decoding say the answer (the module's docstring)."""
    tower = thinker.audio_tower
    tower.proj2.weight.zero_()
    tower.proj2.bias.zero_()
    tower.proj2.bias[DIM_AUDIO] = 1.0  # every audio token: one-hot on DIM_AUDIO

    text = thinker.model
    embed = text.embed_tokens.weight
    embed[:, DIM_OTHER] = 1.0
    answer_ids = [*lead_ids, *word_ids]
    for dim, token_id in enumerate(answer_ids):
        embed[token_id, DIM_OTHER] = 0.0
        embed[token_id, dim] = 1.0
    for token_id, dim in (
        (ids["<|audio_start|>"], DIM_AUDIO_START),
        (ids["<|audio_pad|>"], DIM_AUDIO),
    ):
        embed[token_id, DIM_OTHER] = 0.0
        embed[token_id, dim] = 1.0

    layer = text.layers[0]
    for norm in (layer.input_layernorm, layer.post_attention_layernorm, text.norm):
        norm.weight.fill_(1.0)
    attention = layer.self_attn
    # Zero queries: uniform attention. Value dimension 0 reads the normalised one-hots (4 each).
    one_hot = HIDDEN**0.5
    v = attention.v_proj.weight
    v[0, DIM_AUDIO] = VALUE_AUDIO / one_hot
    v[0, DIM_AUDIO_START] = VALUE_AUDIO_START / one_hot
    for k in range(len(word_ids)):
        v[0, DIM_WORD0 + k] = VALUE_WORD / one_hot
    attention.o_proj.weight[DIM_GATE, 0] = GATE_SCALE

    head = thinker.lm_head.weight
    successors = [*lead_ids[1:], *word_ids]  # the token after each of answer_ids[:-1]
    for dim, successor in enumerate(successors):
        head[successor, dim] = SUCCESSOR_WEIGHT
    head[word_ids[0], DIM_WORD0 + len(word_ids) - 1] = SUCCESSOR_WEIGHT  # the words cycle
    head[ids["<|im_end|>"], DIM_GATE] = -STOP_WEIGHT
