import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen3_aligner_triton.spans import locate_units


@pytest.fixture(scope="module")
def splitter():
    from qwen3_aligner_triton.loading import import_qwen_asr

    import_qwen_asr()
    from qwen_asr.inference.qwen3_forced_aligner import Qwen3ForceAlignProcessor

    processor = Qwen3ForceAlignProcessor()
    return lambda text, language: processor.encode_timestamp(text, language)[0]


def is_word_char(ch: str) -> bool:
    return ch == "'" or unicodedata.category(ch)[0] in ("L", "N")


def check_invariants(text, units, spans):
    assert len(spans) == len(units)
    previous_end = 0
    for unit, s in zip(units, spans, strict=True):
        assert previous_end <= s.display_start <= s.char_start <= s.char_end <= s.display_end
        assert s.display_end <= len(text)
        gap = text[previous_end : s.display_start]
        assert not any(is_word_char(c) for c in gap), (gap, unit)
        previous_end = s.display_end
    assert not any(is_word_char(c) for c in text[previous_end:])


CASES = [
    ('Hello, world! "Quoted" (paren) don\'t e-mail ¿Qué? ¡Sí!', "English",
     ["Hello,", "world!", '"Quoted"', "(paren)", "don't", "e-mail", "¿Qué?", "¡Sí!"]),
    ("今天，我们去「公园」。", "Chinese", ["今", "天，", "我", "们", "去", "「公", "园」。"]),
    ("今日はいい天気ですね。ＡＢＣ ｶﾞｷﾞ！", "Japanese",
     ["今日", "は", "いい", "天気", "です", "ね。", "ＡＢＣ", "ｶﾞｷﾞ！"]),
    ("안녕하세요, 만나서 반갑습니다.", "Korean",
     ["안녕", "하세요,", "만나", "서", "반갑", "습니다."]),
    ("Qwen3 对齐器 aligns — 42!", "English", ["Qwen3", "对", "齐", "器", "aligns", "42!"]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "language", "displays"), CASES)
def test_displays_keep_punctuation_and_spelling(splitter, text, language, displays):
    units = splitter(text, language)
    spans = locate_units(text, units)
    check_invariants(text, units, spans)
    assert [text[s.display_start : s.display_end] for s in spans] == displays


alphabet = st.sampled_from(list("abcXYZ019' ,.!?-—«»()「」，。¿¡\n\t") + list("我们今天"))


@settings(max_examples=300, deadline=None)
@given(st.lists(alphabet, max_size=60).map("".join))
def test_invariants_hold_on_arbitrary_text(splitter, text):
    units = splitter(text, "English")
    spans = locate_units(text, units)
    check_invariants(text, units, spans)
    for unit, s in zip(units, spans, strict=True):
        core = text[s.char_start : s.char_end]
        assert "".join(c for c in core if is_word_char(c)) == unit
