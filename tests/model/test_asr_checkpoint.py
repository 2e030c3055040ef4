"""The tiny Qwen3-ASR checkpoint: upstream's ``Qwen3ASRModel`` loads it and transcribes with it.

Its weights are set by hand (``asr_checkpoint_builder``'s docstring), so what it says is known in
advance: ``language English<asr_text>`` and ``audio_tokens // 13 + 1`` counted words, then
``<|im_end|>``. These tests hold it to that through upstream's own ``transcribe`` (chat template,
greedy ``generate``, ``parse_asr_output``), alone, batched, with a forced language, and in front
of the project's tiny aligner.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qwen3_aligner_tools.asr_checkpoint_builder import (
    ASR_WORDS,
    CHAT_TEMPLATE,
    REAL_SPECIAL_IDS,
    build_asr_checkpoint,
    expected_transcript,
    expected_words,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RATE = 16000  # Hz
MAX_NEW_TOKENS = 128
# Lengths (s) whose transcripts all differ: 1, 2, 5, 14 and 42 words (the last wraps the words).
CLIP_SECONDS = (0.6, 1.3, 4.2, 13.1, 41.5)
# What the real checkpoint's template renders for upstream's messages, written out.
EMPTY_CONTEXT_PROMPT = (
    "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n"
    "<|audio_start|><|audio_pad|><|audio_end|><|im_end|>\n<|im_start|>assistant\n"
)
NAMED_CONTEXT_PROMPT = (
    "<|im_start|>system\nNames: Ada, Grace.<|im_end|>\n<|im_start|>user\n"
    "<|audio_start|><|audio_pad|><|audio_end|><|im_end|>\n<|im_start|>assistant\n"
)


def messages(context: str) -> list[dict]:
    """Upstream's messages (``Qwen3ASRModel._build_messages``) for one clip."""
    return [
        {"role": "system", "content": context},
        {"role": "user", "content": [{"type": "audio", "audio": ""}]},
    ]


def clip(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(round(seconds * SAMPLE_RATE)) * 0.1).astype(
        np.float32
    )


def audio_tokens(model, wave: np.ndarray) -> int:
    """How many ``<|audio_pad|>`` tokens upstream's processor gives ``wave``."""
    prompt = model._build_text_prompt(context="", force_language=None)
    inputs = model.processor(text=prompt, audio=[wave], return_tensors="pt")
    return int((inputs["input_ids"] == REAL_SPECIAL_IDS["<|audio_pad|>"]).sum())


@pytest.fixture(scope="module")
def asr(asr_checkpoint):
    from qwen_asr import Qwen3ASRModel

    return Qwen3ASRModel.from_pretrained(str(asr_checkpoint), max_new_tokens=MAX_NEW_TOKENS)


def test_the_template_renders_the_real_prompt():
    from transformers.utils.chat_template_utils import render_jinja_template

    for context, expected in (
        ("", EMPTY_CONTEXT_PROMPT),
        ("Names: Ada, Grace.", NAMED_CONTEXT_PROMPT),
    ):
        rendered, _ = render_jinja_template(
            conversations=[messages(context)],
            chat_template=CHAT_TEMPLATE,
            add_generation_prompt=True,
        )
        assert rendered == [expected]


def test_the_answer_is_counted_words():
    assert [expected_words(n) for n in (0, 12, 13, 25, 26, 403)] == [1, 1, 2, 2, 3, 32]
    assert expected_transcript(0) == "one"
    assert expected_transcript(13 * 9) == " ".join([*ASR_WORDS, "one", "two"])


def test_an_unknown_flavour_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "asr"
    with pytest.raises(
        ValueError, match=r"unknown ASR checkpoint flavour 'huge': expected one of tiny, full"
    ):
        build_asr_checkpoint(out, flavour="huge")
    assert not out.exists()


def test_the_script_takes_one_flavour(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_tiny_model.py"),
            "--asr",
            "--full",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / p) for p in ("src", "client", "tools")]),
        },
    )
    assert done.returncode == 2
    assert "--full: not allowed with argument --asr" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_script_writes_the_same_bytes_as_the_builder(asr_checkpoint, tmp_path):
    from qwen3_aligner_tools.checkpoint_training import checkpoint_digest

    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_tiny_model.py"),
            "--asr",
            str(tmp_path / "a"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / p) for p in ("src", "client", "tools")]),
        },
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "a")
    assert "holes" not in done.stdout + done.stderr  # the vocabulary has no gaps
    assert checkpoint_digest(tmp_path / "a") == checkpoint_digest(asr_checkpoint)
    files = {p.name: p.stat().st_size for p in asr_checkpoint.iterdir()}
    assert "chat_template.jinja" in files
    assert sum(files.values()) < 16 * 2**20


def test_the_processor_loads_the_template_and_the_real_special_ids(asr):
    assert (
        asr.processor.apply_chat_template(
            messages("Names: Ada, Grace."), add_generation_prompt=True, tokenize=False
        )
        == NAMED_CONTEXT_PROMPT
    )
    assert asr._build_text_prompt(context="", force_language="English") == (
        EMPTY_CONTEXT_PROMPT + "language English<asr_text>"
    )
    tokenizer = asr.processor.tokenizer
    for token, token_id in REAL_SPECIAL_IDS.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id
    # Decoding hides the chat's special tokens but keeps <asr_text>, which parse_asr_output reads.
    ids = tokenizer("<|im_start|>assistant\nlanguage English<asr_text> one<|im_end|>")["input_ids"]
    assert (
        tokenizer.decode(ids, skip_special_tokens=True)
        == "assistant\nlanguage English<asr_text> one"
    )


def test_the_tokenizer_spells_english_and_the_language_names(asr):
    from qwen3_aligner_tools.checkpoint_builder import LANGUAGES

    tokenizer = asr.processor.tokenizer
    for text in (
        "The quick brown fox jumps over the lazy dog.",
        "Zebras quietly vex jumping wizards, 1234567890!",
        " ".join(f"language {name}" for name in LANGUAGES),
    ):
        ids = tokenizer(text)["input_ids"]
        assert max(ids) < REAL_SPECIAL_IDS["<|endoftext|>"]
        assert tokenizer.decode(ids) == text
    assert len(tokenizer("language English")["input_ids"]) == 2


def test_transcribe_says_language_english_and_one_word_per_13_audio_tokens(asr):
    texts = []
    for seconds in CLIP_SECONDS:
        wave = clip(seconds)
        (result,) = asr.transcribe((wave, SAMPLE_RATE))
        assert result.language == "English"
        assert result.text == expected_transcript(audio_tokens(asr, wave))
        assert result.time_stamps is None
        texts.append(result.text)
    assert [len(t.split()) for t in texts] == [1, 2, 5, 14, 42]
    # Content does not matter, length does; and the same call answers the same.
    (other,) = asr.transcribe((clip(CLIP_SECONDS[2], seed=7), SAMPLE_RATE))
    assert other.text == texts[2]


def test_the_raw_answer_is_well_formed_and_stops(asr):
    wave = clip(2.4)
    n = audio_tokens(asr, wave)
    (raw,) = asr._infer_asr([""], [wave], [None])
    assert raw == "language English<asr_text> " + expected_transcript(n)
    (forced,) = asr._infer_asr([""], [wave], ["English"])
    assert forced == " " + expected_transcript(n)
    inputs = asr.processor(
        text=asr._build_text_prompt(context="", force_language=None),
        audio=[wave],
        return_tensors="pt",
    )
    generated = asr.model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS).sequences[0]
    new = generated[inputs["input_ids"].shape[1] :].tolist()
    assert new[-1] == REAL_SPECIAL_IDS["<|im_end|>"]  # stopped by upstream's own end ids
    assert len(new) == 3 + expected_words(n) + 1 < MAX_NEW_TOKENS


def test_a_forced_language_gives_the_same_words(asr):
    wave = clip(CLIP_SECONDS[3])
    (auto,) = asr.transcribe((wave, SAMPLE_RATE))
    (english,) = asr.transcribe((wave, SAMPLE_RATE), language="English")
    (french,) = asr.transcribe((wave, SAMPLE_RATE), language="french")
    assert (english.language, english.text) == ("English", auto.text)
    assert (french.language, french.text) == ("French", auto.text)


def test_a_batch_answers_what_each_clip_answers_alone(asr):
    waves = [clip(s, seed=i) for i, s in enumerate(CLIP_SECONDS)]
    together = asr.transcribe([(w, SAMPLE_RATE) for w in waves])
    alone = [asr.transcribe((w, SAMPLE_RATE))[0] for w in waves]
    assert together == alone
    assert len({r.text for r in together}) == len(waves)


def test_loaded_in_bfloat16_it_says_the_same(asr_checkpoint, asr):
    import torch
    from qwen_asr import Qwen3ASRModel

    half = Qwen3ASRModel.from_pretrained(
        str(asr_checkpoint), max_new_tokens=MAX_NEW_TOKENS, dtype=torch.bfloat16
    )
    assert half.model.dtype == torch.bfloat16 and asr.model.dtype == torch.float32
    waves = [(clip(s), SAMPLE_RATE) for s in CLIP_SECONDS]
    assert half.transcribe(waves) == asr.transcribe(waves)


def test_words_of_its_own_in_the_context_count_as_said(asr):
    wave = clip(CLIP_SECONDS[2])
    (plain,) = asr.transcribe((wave, SAMPLE_RATE))
    (names,) = asr.transcribe((wave, SAMPLE_RATE), context="Names: Ada, Grace.")
    (counted,) = asr.transcribe((wave, SAMPLE_RATE), context="Count: one two three")
    assert names.text == plain.text
    assert counted.text.split() == plain.text.split()[:-3]  # " one", " two", " three"


def test_with_the_tiny_aligner_it_returns_time_stamps(asr_checkpoint, tiny_checkpoint):
    from qwen_asr import Qwen3ASRModel, Qwen3ForcedAligner

    model = Qwen3ASRModel.from_pretrained(
        str(asr_checkpoint), forced_aligner=str(tiny_checkpoint), max_new_tokens=MAX_NEW_TOKENS
    )
    aligner = Qwen3ForcedAligner.from_pretrained(str(tiny_checkpoint))
    for seconds in CLIP_SECONDS[:4]:
        wave = clip(seconds)
        (result,) = model.transcribe((wave, SAMPLE_RATE), return_time_stamps=True)
        assert result.language == "English"
        assert result.text == expected_transcript(audio_tokens(model, wave))
        items = result.time_stamps.items
        assert [it.text for it in items] == result.text.split()
        assert all(0 <= it.start_time <= it.end_time for it in items)
        (aligned,) = aligner.align(audio=(wave, SAMPLE_RATE), text=result.text, language="English")
        assert items == aligned.items
    (forced,) = model.transcribe((wave, SAMPLE_RATE), language="English", return_time_stamps=True)
    assert (forced.text, forced.time_stamps) == (result.text, result.time_stamps)
