"""The linear word splitters give upstream's units; preparation costs grow linearly."""

from __future__ import annotations

import gc
import math
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from soynlp.tokenizer import LTokenizer

from qwen3_aligner_triton.languages import LANGUAGES_BY_CODE
from qwen3_aligner_triton.spans import locate_units
from qwen3_aligner_triton.words import (
    LinearLTokenizer,
    japanese_chars_exceed,
    split_units,
    use_linear_splitters,
)


@pytest.fixture(scope="module")
def processor():
    from qwen3_aligner_triton.loading import import_qwen_asr

    import_qwen_asr()
    from qwen_asr.inference.qwen3_forced_aligner import Qwen3ForceAlignProcessor

    return Qwen3ForceAlignProcessor()


@pytest.fixture(scope="module")
def korean_words(processor):
    return sorted(processor.ko_score)[::40]


korean_piece = st.one_of(
    st.text(alphabet="가나다라하세요는을이 ,.!a1", max_size=8),
    st.sampled_from(["안녕하세요", "만나서", "반갑습니다", "한국어", "대한민국"]),
)


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(korean_piece, max_size=12), sep=st.sampled_from(["", " ", "  ", "\n"]))
def test_linear_ltokenizer_splits_as_soynlp_does(processor, korean_words, pieces, sep):
    sentence = sep.join(pieces + korean_words[: len(pieces)])
    upstream = LTokenizer(scores=processor.ko_score)
    linear = LinearLTokenizer(scores=processor.ko_score)
    for options in ({}, {"flatten": False}, {"remove_r": True}):
        assert linear.tokenize(sentence, **options) == upstream.tokenize(sentence, **options)


def test_linear_ltokenizer_honours_scores_and_defaults():
    scores = {"ab": 0.5, "abc": 0.5, "abcd": 0.2, "abcdefg": 0.9}
    for default in (0.0, 0.5, 1.0):
        upstream, linear = LTokenizer(scores, default), LinearLTokenizer(scores, default)
        for token in ("a", "ab", "abc", "abcdef", "abcdefg", "abcdefgh", "xyzabcdefgh"):
            assert linear.tokenize(token) == upstream.tokenize(token), (token, default)


def test_linear_ltokenizer_without_scores_keeps_every_token_whole():
    linear = LinearLTokenizer()
    assert linear.tokenize("abcdef ab a") == ["abcdef", "ab", "a"]
    assert linear.tokenize("abcdef ab a", flatten=False) == [("abcdef", ""), ("ab", ""), ("a", "")]
    assert linear.tokenize("abcdef ab a") == LTokenizer().tokenize("abcdef ab a")


def test_linear_ltokenizer_with_a_tolerance_takes_the_longest_near_best_prefix():
    """Within ``tolerance`` of the best score the longest prefix wins: "abc" (0.9) over "ab"
    (1.0) at 0.5; without a tolerance the best score wins."""
    scores = {"ab": 1.0, "abc": 0.9}
    linear, upstream = LinearLTokenizer(scores), LTokenizer(scores)
    expected = {
        "": ["abc", "d", "xy"],
        "flatten": [("abc", "d"), ("xy", "")],
        "remove_r": ["abc", "xy"],
    }
    options = {"": {}, "flatten": {"flatten": False}, "remove_r": {"remove_r": True}}
    for name, option in options.items():
        assert linear.tokenize("abcd xy", tolerance=0.5, **option) == expected[name], name
        assert upstream.tokenize("abcd xy", tolerance=0.5, **option) == expected[name], name
    assert linear.tokenize("abcd xy") == ["ab", "cd", "xy"]


def test_split_units_equal_upstream_for_ordinary_text(processor):
    texts = {
        "Korean": "안녕하세요, 만나서 반갑습니다. 오늘 날씨가 좋네요.",
        "Japanese": "今日はいい天気ですね。株式会社の㍿も。",
        "Chinese": "今天我们去公园, OK?",
        "English": "Hello, world! Don't panic.",
    }
    upstream = type(processor)()
    for language, text in texts.items():
        expected = upstream.encode_timestamp(text, language)[0]
        assert split_units(processor, text, language) == expected
    assert isinstance(processor.ko_tokenizer, LinearLTokenizer)


def test_the_linear_splitter_is_installed_once(processor):
    use_linear_splitters(processor)
    first = processor.ko_tokenizer
    use_linear_splitters(processor)
    assert processor.ko_tokenizer is first


def test_japanese_bound_counts_nfkc_characters():
    assert japanese_chars_exceed("㍿" * 10, "Japanese", 10, 4.0) == 0
    assert japanese_chars_exceed("㍿" * 11, "Japanese", 10, 4.0) == 44  # 株式会社 each
    assert japanese_chars_exceed("あ" * 40, "Japanese", 10, 4.0) == 0
    assert japanese_chars_exceed("あ" * 41, "Japanese", 10, 4.0) == 41
    assert japanese_chars_exceed("あ" * 41, "Korean", 10, 4.0) == 0


def test_japanese_bound_holds_for_the_widest_nfkc_expansion():
    """U+FDFA becomes 18 characters under NFKC, the most any character does."""
    assert japanese_chars_exceed("あ", "Japanese", 10, 4.0) == 0
    assert japanese_chars_exceed("\ufdfa" * 2, "Japanese", 9, 4.0) == 0  # 36 of 36
    assert japanese_chars_exceed("\ufdfa" * 3, "Japanese", 9, 4.0) == 54


# --- cost: preparation grows linearly in the text ---------------------------------------------

ADVERSARIAL = {
    "one long token": {"Korean": "가", "Japanese": "あ", "Chinese": "我", "default": "a"},
    "expanding characters": {"default": "㍿"},
    "mixed scripts": {"default": "a가我あ1㍿ｶﾞ"},
}
# Per-character cost at 64k characters against that at 4k: quadratic work gives 16, linear work
# ~1 (0.7-1.3 measured for every case on two cores busy with other jobs). Japanese: 500 against
# 8k, as nagisa reads ~0.2-1.5 ms per character. The times are the process's CPU time, so that
# time spent waiting for a core does not count; small and large rounds alternate, so that what
# slows the processor for a while (a busy neighbour, a frequency change) slows both, and the best
# round of each is compared. The bound sits midway between linear and quadratic (4 = sqrt 16).
SIZES = {"default": (4_000, 64_000), "Japanese": (500, 8_000)}  # characters
MAX_GROWTH = 4.0
MIN_ROUND_SECONDS = 0.05  # CPU seconds; a round repeats the small text until it lasts this long


def prepare_text(processor, text: str, language: str) -> int:
    units = split_units(processor, text, language)
    locate_units(text, units)
    return len(units)


def cpu_seconds(processor, text: str, language: str, repeats: int = 1) -> float:
    """CPU seconds of one preparation of ``text``, over a round of ``repeats`` of them."""
    started = time.process_time()
    for _ in range(repeats):
        prepare_text(processor, text, language)
    return (time.process_time() - started) / repeats


def costs(processor, small: str, large: str, language: str) -> tuple[float, float]:
    """CPU seconds to prepare ``small`` and ``large``: the best of alternating rounds (the
    collector paused), the small text repeated within a round to last ``MIN_ROUND_SECONDS``."""
    repeats = math.ceil(MIN_ROUND_SECONDS / max(cpu_seconds(processor, small, language), 1e-6))
    small_s, large_s = [], []
    gc.collect()
    gc.disable()
    try:
        for _ in range(3 if len(large) <= 16_000 else 2):
            small_s.append(cpu_seconds(processor, small, language, repeats))
            large_s.append(cpu_seconds(processor, large, language))
    finally:
        gc.enable()
    return min(small_s), min(large_s)


def peak_bytes(processor, text: str, language: str) -> int:
    """Peak traced bytes to prepare ``text``."""
    tracemalloc.start()
    try:
        prepare_text(processor, text, language)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", list(ADVERSARIAL))
@pytest.mark.parametrize("language", sorted(LANGUAGES_BY_CODE.values()))
def test_preparation_cost_grows_linearly(processor, language, kind):
    unit = ADVERSARIAL[kind].get(language, ADVERSARIAL[kind]["default"])
    small, large = SIZES.get(language, SIZES["default"])
    small_text = (unit * small)[:small]
    large_text = (unit * large)[:large]
    prepare_text(processor, small_text, language)  # load dictionaries and models first
    small_s, large_s = costs(processor, small_text, large_text, language)
    small_bytes = peak_bytes(processor, small_text, language)
    large_bytes = peak_bytes(processor, large_text, language)
    scale = large / small
    time_growth = (large_s / scale) / small_s
    memory_growth = (large_bytes / scale) / max(small_bytes, 64 * 1024)
    print(
        f"{language:10} {kind:22} {small}: {small_s * 1e3:7.1f} ms {small_bytes / 1e6:6.2f} MB"
        f"  {large}: {large_s * 1e3:8.1f} ms {large_bytes / 1e6:7.2f} MB"
        f"  per-char growth time x{time_growth:.2f} memory x{memory_growth:.2f}"
    )
    assert time_growth < MAX_GROWTH, (language, kind, small_s, large_s)
    assert memory_growth < MAX_GROWTH, (language, kind, small_bytes, large_bytes)
