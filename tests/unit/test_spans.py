import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen3_aligner_triton.spans import UnitSpan, _core_spans, _match_length, _Scanner, locate_units


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


# --- the linear search finds what a plain scan finds -------------------------------------------


def reference_core_spans(text, units):
    """The plain scan (quadratic when a unit is missing from the text): the behaviour to keep."""

    def find(unit_char, pos):
        q = pos
        while q < len(text):
            width = _match_length(text, q, unit_char)
            if width:
                return q, q + width
            ch = text[q]
            if is_word_char(ch) and unicodedata.category(ch) not in ("Mn", "Mc", "Lm"):
                return None
            q += 1
        return None

    spans, pos = [], 0
    for unit in units:
        first, cursor = None, pos
        for ch in unit:
            found = find(ch, cursor)
            if found is None:
                q = cursor
                while q < len(text) and text[q].isspace():
                    q += 1
                if q >= len(text):
                    continue
                found = (q, q + 1)
            if first is None:
                first = found[0]
            cursor = found[1]
        if first is None:
            spans.append((pos, pos))
            continue
        spans.append((first, cursor))
        pos = cursor
    return spans


TRICKY = "ab A9' ,.!-—「」。\n\t㍿㌔ｶﾞｷﾞ！ＡＢ株式会社ßẞİ́"  # expanding, width and case variants
tricky = st.sampled_from([*TRICKY, " " * 40, "…" * 12])  # runs longer than the direct scan


@settings(max_examples=500, deadline=None)
@given(
    text=st.lists(tricky, max_size=80).map("".join),
    units=st.lists(st.lists(tricky, min_size=1, max_size=3).map("".join), max_size=12),
)
def test_linear_search_equals_the_plain_scan(text, units):
    assert _core_spans(text, units) == reference_core_spans(text, units)


@settings(max_examples=100, deadline=None)
@given(st.lists(tricky, max_size=120).map("".join))
def test_linear_search_equals_the_plain_scan_on_split_units(splitter, text):
    for language in ("Japanese", "English"):
        units = splitter(text, language)
        assert _core_spans(text, units) == reference_core_spans(text, units)


def test_units_missing_from_the_text_cost_linear_time(splitter):
    """3,000 x ㍿ split into 株式 + 会社 took 45 s with a scan to the end for every unit."""
    text = "㍿" * 3000
    units = splitter(text, "Japanese")
    assert len(units) == 6000
    spans = locate_units(text, units)
    check_invariants(text, units, spans)
    assert [(s.char_start, s.char_end) for s in spans[:3]] == [(0, 2), (2, 4), (4, 6)]
    assert reference_core_spans(text[:300], units[:600]) == _core_spans(text[:300], units[:600])


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("…" * 20 + "Ａb", ["ab"]),  # case and width folded, past the direct scan
        ("—" * 20 + "ẞ", ["ß"]),
        ("!" * 20 + "ｶﾞ", ["ガ"]),  # a pair of half-width characters
        ("「" * 20 + "㍿", ["株式会社"]),
        ("。" * 20 + "x" + "。" * 20 + "a", ["a"]),  # a blocking character stops the search
        (" " * 30 + "a" + " " * 30, ["b", "c", "a"]),  # out of step, then found
    ],
)
def test_linear_search_equals_the_plain_scan_past_the_direct_scan(text, units):
    assert _core_spans(text, units) == reference_core_spans(text, units)


# --- exact spans and displays, worked out by hand -----------------------------------------------


def displays(text, units):
    return [text[s.display_start : s.display_end] for s in locate_units(text, units)]


def test_first_unit_keeps_its_leading_punctuation():
    assert locate_units('"(Hello)" she said', ["Hello", "she", "said"]) == [
        UnitSpan(2, 7, 0, 9),
        UnitSpan(10, 13, 10, 13),
        UnitSpan(14, 18, 14, 18),
    ]
    assert locate_units("¿Qué?", ["Qué"]) == [UnitSpan(1, 4, 0, 5)]


def test_second_unit_keeps_its_leading_punctuation_after_a_space():
    assert locate_units('Hello, "world"', ["Hello", "world"]) == [
        UnitSpan(0, 5, 0, 6),
        UnitSpan(8, 13, 7, 14),
    ]


@pytest.mark.parametrize(
    ("text", "units", "expected"),
    [
        # "(" ends the trailing run of "f"; "-" before "x" does not open it: "(-" goes to neither
        ("f(-x)", ["f", "x"], ["f", "x)"]),
        ("— f(-x)", ["f", "x"], ["f", "x)"]),  # the run before "x" stops at "f", not at the space
        ("y = f(-x)", ["y", "f", "x"], ["y", "f", "x)"]),
        ("f(-(x))", ["f", "x"], ["f", "(x))"]),  # only the bracket touching "x" opens it
        ("他说“好”", ["他", "说", "好"], ["他", "说", "“好”"]),  # an initial quote opens
        ("今天，我们", ["今", "天", "我", "们"], ["今", "天，", "我", "们"]),
    ],
)
def test_punctuation_between_units_without_a_space(text, units, expected):
    assert displays(text, units) == expected


def test_units_of_an_empty_transcript_get_empty_spans():
    assert locate_units("", ["a", "b"]) == [UnitSpan(0, 0, 0, 0), UnitSpan(0, 0, 0, 0)]
    assert locate_units("   ", ["a", "b"]) == [UnitSpan(0, 0, 0, 0), UnitSpan(0, 0, 0, 0)]


def test_displays_stay_disjoint_when_a_unit_ends_in_a_space():
    # "Hi " ends on the space, so the run before "there" reaches back to it: "," goes to "Hi ".
    assert locate_units("Hi ,(there)", ["Hi ", "there"]) == [
        UnitSpan(0, 3, 0, 4),
        UnitSpan(5, 10, 4, 11),
    ]


def test_half_width_kana_with_a_voicing_mark_spans_two_characters():
    assert locate_units("ｶﾞｷﾞ！", ["ガ", "ギ"]) == [UnitSpan(0, 2, 0, 2), UnitSpan(2, 4, 2, 5)]


def test_half_width_kana_pair_is_found_past_the_direct_scan():
    assert _core_spans("！" * 10 + "ｶﾞｷﾞ", ["ガギ"]) == [(10, 14)]


def test_decomposed_capital_is_found_past_the_direct_scan():
    assert _core_spans("—" * 10 + "A\u030a", ["Å"]) == [(10, 12)]  # A + combining ring = Å


@pytest.mark.parametrize(
    ("text", "core"),
    [
        ("xzy", (0, 2)),  # a letter the unit does not spell stops the search: "y" takes "z"
        ("x1y", (0, 2)),  # so does a digit
        ("x'y", (0, 2)),  # and an apostrophe
        ("x-y", (0, 3)),  # punctuation is skipped
        ("x\u02bcy", (0, 3)),  # so is a modifier letter (ʼ)
        ("x\u0301y", (0, 3)),  # and a combining mark
    ],
)
def test_only_word_characters_stop_the_search(text, core):
    assert _core_spans(text, ["xy"]) == [core]


def test_next_visible_past_the_direct_scan_on_a_fresh_scanner():
    assert _Scanner(" " * 20 + "a").next_visible(0) == 20
    assert _Scanner(" " * 20 + "a").next_visible(5) == 20
    assert _Scanner(" " * 20).next_visible(3) == 20
