"""Grouping aligned words into subtitle cues: limits, break points, timing invariants."""

from __future__ import annotations

import itertools
import re

import pytest
from client_samples import CHINESE, LONG_ENGLISH, make_alignment, unit_spans
from hypothesis import given, settings
from hypothesis import strategies as st
from qwen3_aligner_client import AlignedWord, Alignment, CueOptions, group_cues
from qwen3_aligner_client.cues import display_width, monotonic_times, tiling_intervals


# Some native libraries loaded by the suite switch the CPU to flush-subnormals-to-zero, where
# hypothesis refuses subnormal floats; the cue rules never see them anyway.
def FLOATS(lo: float, hi: float):
    return st.floats(lo, hi, allow_nan=False, allow_subnormal=False)


def check_invariants(alignment: Alignment, cues, options: CueOptions) -> None:
    """What every cue list must satisfy, whatever the input times."""
    covered = [i for cue in cues for i in cue.words]
    assert covered == list(range(len(alignment.words))), "every word once, in order"
    for cue in cues:
        assert cue.end > cue.start
        assert round(cue.start * 1000) == pytest.approx(cue.start * 1000, abs=1e-6)
        assert 1 <= len(cue.lines) <= options.max_lines
        assert all(line and line == line.strip() for line in cue.lines)
        labels = {alignment.words[i].label for i in cue.words}
        for line in cue.lines:
            # Only a single word too long for any line may overflow one.
            assert display_width(line) <= options.max_chars_per_line or line in labels
        check_pieces(alignment, cue)
    for before, after in itertools.pairwise(cues):
        assert before.end <= after.start, "cues never overlap"
        assert before.start < after.start, "cues never run backwards"


def check_pieces(alignment: Alignment, cue) -> None:
    """The pieces cut the cue's text and each of its lines at its words, one piece per word."""
    assert len(cue.pieces) == len(cue.words)
    assert len(cue.line_pieces) == len(cue.lines)
    if not cue.words:
        assert cue.pieces == () and cue.line_pieces == ((),)
        return
    assert "".join(cue.pieces) == cue.flat_text
    assert ["".join(pieces) for pieces in cue.line_pieces] == list(cue.lines)
    per_line = [p for pieces in cue.line_pieces for p in pieces]
    for index, piece, line_piece in zip(cue.words, cue.pieces, per_line, strict=True):
        assert alignment.words[index].label in piece
        assert alignment.words[index].label in line_piece


def test_english_cues_keep_punctuation_casing_and_every_word():
    alignment = make_alignment(LONG_ENGLISH)
    options = CueOptions()
    cues = group_cues(alignment, options)
    check_invariants(alignment, cues, options)
    assert " ".join(c.flat_text for c in cues) == LONG_ENGLISH
    assert cues[0].lines == (
        "Hello, world! This is the quick brown fox;",
        "it jumps over the lazy dog.",
    )
    # Cue and line texts are the flat text split at line breaks.
    for cue in cues:
        assert " ".join(cue.lines) == cue.flat_text
        assert cue.text == "\n".join(cue.lines)


def test_cue_ends_at_the_last_sentence_that_fits():
    text = "One two three four five six. Seven eight nine ten eleven twelve thirteen fourteen."
    cues = group_cues(make_alignment(text), CueOptions(max_chars_per_line=30, max_lines=1))
    assert cues[0].flat_text == "One two three four five six."
    assert cues[1].flat_text.startswith("Seven")


def test_clause_break_is_preferred_over_a_plain_word_break():
    text = "alpha beta gamma delta, epsilon zeta eta theta iota kappa lambda mu nu xi omicron"
    cues = group_cues(make_alignment(text), CueOptions(max_chars_per_line=40, max_lines=1))
    assert cues[0].flat_text == "alpha beta gamma delta,"


def test_a_comma_too_early_in_the_cue_is_not_used():
    text = "Well, alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi"
    cues = group_cues(make_alignment(text), CueOptions(max_chars_per_line=40, max_lines=1))
    assert cues[0].flat_text != "Well,"
    assert display_width(cues[0].flat_text) > 30


def test_two_lines_break_after_punctuation_when_it_fits():
    text = "We went home, and then we had a long dinner together."
    (cue,) = group_cues(make_alignment(text), CueOptions(max_chars_per_line=42))
    assert cue.lines == ("We went home,", "and then we had a long dinner together.")


def test_duration_limit_splits_slow_speech():
    text = " ".join(f"w{k}" for k in range(30))
    times = [(float(k), k + 0.5) for k in range(30)]  # one word a second
    options = CueOptions(max_duration=7.0)
    cues = group_cues(make_alignment(text, times), options)
    check_invariants(make_alignment(text, times), cues, options)
    assert len(cues) >= 4
    assert all(c.end - c.start <= 7.0 for c in cues)


def test_chinese_counts_full_width_characters_twice_and_adds_no_spaces():
    alignment = make_alignment(CHINESE, language="Chinese")
    options = CueOptions(max_chars_per_line=20, max_duration=100)
    cues = group_cues(alignment, options)
    check_invariants(alignment, cues, options)
    assert "".join(c.flat_text for c in cues) == CHINESE
    assert all(len(line) <= 10 for c in cues for line in c.lines)
    assert cues[0].lines == ("今天天气很好，", "我们去公园散步吧。")


def test_zero_length_words_at_one_instant_get_distinct_valid_cues():
    text = "First sentence here. Second one. Third!"
    times = [(2.0, 2.0)] * 6
    alignment = make_alignment(text, times)
    options = CueOptions(max_chars_per_line=12, max_lines=1)
    cues = group_cues(alignment, options)
    check_invariants(alignment, cues, options)
    assert len(cues) > 1
    assert cues[0].start == 2.0
    assert all(round((c.end - c.start) * 1000) >= 1 for c in cues)


def test_backwards_word_times_are_clamped_monotonic():
    text = "a b c d e f g h"
    times = [(3.0, 3.5), (1.0, 1.2), (4.0, 3.9), (5.0, 6.0), (2.0, 2.5), (7, 8), (9, 9), (8, 12)]
    alignment = make_alignment(text, times)
    options = CueOptions(max_chars_per_line=2, max_lines=1)
    cues = group_cues(alignment, options)
    check_invariants(alignment, cues, options)
    assert [c.flat_text for c in cues] == list("abcdefgh")
    assert cues[0].start == 3.0


def test_short_cues_are_stretched_into_silence_but_not_into_the_next_cue():
    text = "Yes. No. Maybe."
    times = [(1.0, 1.1), (1.3, 1.35), (5.0, 5.2)]
    options = CueOptions(max_chars_per_line=6, max_lines=1, min_duration=0.5)
    cues = group_cues(make_alignment(text, times), options)
    assert [(c.start, c.end) for c in cues] == [(1.0, 1.3), (1.3, 1.8), (5.0, 5.5)]


def test_a_long_pause_ends_the_cue():
    text = "Yes. No. Maybe so."
    times = [(1.0, 1.1), (1.3, 1.35), (5.0, 5.2), (5.3, 5.4)]
    cues = group_cues(make_alignment(text, times), CueOptions(max_pause=1.5))
    assert [c.flat_text for c in cues] == ["Yes. No.", "Maybe so."]
    assert [(c.start, c.end) for c in cues] == [(1.0, 1.5), (5.0, 5.5)]
    (together,) = group_cues(make_alignment(text, times), CueOptions(max_pause=4))
    assert together.flat_text == text


def test_overlapping_words_end_a_cue_where_the_next_begins():
    text = "Stop. Go."
    times = [(1.0, 3.0), (2.0, 2.5)]
    options = CueOptions(max_chars_per_line=5, max_lines=1, min_duration=0)
    cues = group_cues(make_alignment(text, times), options)
    assert [(c.start, c.end) for c in cues] == [(1.0, 2.0), (2.0, 2.5)]


def test_without_spans_labels_are_units_joined_by_spaces():
    alignment = make_alignment("Hello, world! 你好。", spans=False)
    (cue,) = group_cues(alignment)
    assert cue.flat_text == "Hello world 你好"


def test_free_standing_punctuation_between_words_is_kept():
    text = "the dog — who was not amused — barked"
    (cue,) = group_cues(make_alignment(text))
    assert cue.flat_text == text
    narrow = group_cues(make_alignment(text), CueOptions(max_chars_per_line=9, max_lines=1))
    assert narrow[0].flat_text == "the dog —"


def test_a_word_longer_than_a_line_gets_a_line_of_its_own():
    text = "a Donaudampfschifffahrtsgesellschaftskapitän b"
    alignment = make_alignment(text)
    options = CueOptions(max_chars_per_line=10, max_lines=2)
    cues = group_cues(alignment, options)
    check_invariants(alignment, cues, options)
    assert any("Donaudampfschifffahrtsgesellschaftskapitän" in c.lines for c in cues)


def test_no_words_no_cues():
    assert group_cues(Alignment("English", 1.0, "", ())) == []


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError):
        CueOptions(max_chars_per_line=0)
    with pytest.raises(ValueError):
        CueOptions(max_duration=0)


def test_tiling_intervals_are_strictly_increasing_and_non_empty():
    words = [AlignedWord("a", 1.0, 1.0), AlignedWord("b", 0.5, 0.7), AlignedWord("c", 1.0, 2.0)]
    times = monotonic_times(words)
    assert times == [(1000, 1000), (1000, 1000), (1000, 2000)]
    assert tiling_intervals(times) == [(1000, 1001), (1001, 1002), (1002, 2000)]


WORD = st.from_regex(r"[A-Za-z]{1,12}[,.;!?]?|[今天好我们]{1,2}[，。]?", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(
    tokens=st.lists(WORD, min_size=1, max_size=40),
    raw_times=st.lists(
        st.tuples(FLOATS(0, 30), FLOATS(0, 3)),
        min_size=80,
        max_size=80,
    ),
    max_chars=st.integers(5, 50),
    max_lines=st.integers(1, 3),
    max_duration=FLOATS(0.5, 10),
    min_duration=FLOATS(0, 1),
    max_pause=FLOATS(0, 5),
)
def test_invariants_hold_for_any_words_and_times(
    tokens, raw_times, max_chars, max_lines, max_duration, min_duration, max_pause
):
    text = " ".join(tokens)
    times = [(s, s + d) for s, d in raw_times[: len(unit_spans(text))]]
    alignment = make_alignment(text, times)
    options = CueOptions(max_chars, max_lines, max_duration, min_duration, max_pause)
    cues = group_cues(alignment, options)
    check_invariants(alignment, cues, options)
    joined = "".join(c.flat_text for c in cues)
    assert re.sub(r"\s", "", joined) == re.sub(r"\s", "", text)


def flat_texts(text: str, **limits) -> list[str]:
    """The cues' one-line texts for ``text`` at the default pace, under ``limits``."""
    return [c.flat_text for c in group_cues(make_alignment(text), CueOptions(**limits))]


def all_lines(text: str, **limits) -> list[tuple[str, ...]]:
    """The cues' lines for ``text`` at the default pace, under ``limits``."""
    return [c.lines for c in group_cues(make_alignment(text), CueOptions(**limits))]


def test_one_column_and_one_line_are_valid_limits():
    assert flat_texts("a b", max_chars_per_line=1, max_lines=1) == ["a", "b"]


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"max_chars_per_line": 0}, "max_chars_per_line and max_lines must be at least 1"),
        ({"max_lines": 0}, "max_chars_per_line and max_lines must be at least 1"),
        (
            {"max_duration": 0},
            "max_duration must be positive, min_duration and max_pause not negative",
        ),
        (
            {"min_duration": -0.1},
            "max_duration must be positive, min_duration and max_pause not negative",
        ),
        (
            {"max_pause": -0.1},
            "max_duration must be positive, min_duration and max_pause not negative",
        ),
    ],
)
def test_each_invalid_option_is_rejected_with_the_rule_it_breaks(limits, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        CueOptions(**limits)


def test_a_word_at_time_zero_gives_a_cue_from_zero_one_millisecond_long():
    alignment = make_alignment("Hi.", [(0.0, 0.0)])
    (cue,) = group_cues(alignment, CueOptions(min_duration=0))
    assert (cue.start, cue.end) == (0.0, 0.001)
    assert monotonic_times(alignment.words) == [(0, 0)]


def test_tiling_intervals_keep_an_interval_from_zero():
    assert tiling_intervals([(0, 5), (5, 5)]) == [(0, 5), (5, 6)]


def test_display_width_counts_full_width_forms_twice_and_combining_marks_not_at_all():
    assert display_width("ＡＢ") == 4  # FULLWIDTH LATIN CAPITAL LETTER A, B (east asian width F)
    assert display_width("e\u0301t\u0301") == 2


def test_a_sentence_end_inside_closing_brackets_still_ends_the_cue():
    text = "(Stop.) One two three four"
    assert flat_texts(text, max_chars_per_line=20, max_lines=1) == ["(Stop.)", "One two three four"]


def words_without_spans(*labels: str) -> Alignment:
    """An alignment of bare units (no display spans), as older servers send, 0.4 s apart."""
    words = tuple(AlignedWord(label, 0.4 * k, 0.4 * k + 0.3) for k, label in enumerate(labels))
    return Alignment("Japanese", 0.4 * len(labels), "".join(labels), words)


def test_kana_ideographs_and_cjk_radicals_join_without_spaces_when_spans_are_missing():
    # HIRAGANA LETTER A, KATAKANA LETTER KA, CJK UNIFIED IDEOGRAPH (person),
    # IDEOGRAPHIC ITERATION MARK, CJK RADICAL BAMBOO
    alignment = words_without_spans("あ", "カ", "人", "々", "⺮")
    (cue,) = group_cues(alignment)
    assert cue.flat_text == "あカ人々⺮"


def test_a_character_without_a_unicode_name_is_spaced_like_a_latin_word():
    alignment = words_without_spans("a\ue000", "b")  # U+E000: private use, no name
    (cue,) = group_cues(alignment)
    assert cue.flat_text == "a\ue000 b"


def test_a_word_whose_display_comes_without_its_span_is_joined_by_a_space():
    text = "Hello, world!"
    hello = AlignedWord("Hello", 0.0, 0.3, char_start=0, char_end=5, display="Hello,")
    world = AlignedWord(
        "world", 0.4, 0.7, char_start=7, char_end=12,
        display="world!", display_start=7, display_end=13,
    )  # fmt: skip
    (cue,) = group_cues(Alignment("English", 1.0, text, (hello, world)))
    assert cue.flat_text == "Hello, world!"


def test_line_breaks_and_runs_of_spaces_in_the_transcript_become_one_space():
    assert flat_texts("Hello,\n  world!") == ["Hello, world!"]


def test_free_standing_punctuation_before_the_last_word_stays_on_its_line():
    assert flat_texts("the dog — barked", max_chars_per_line=9, max_lines=1) == [
        "the dog —",
        "barked",
    ]


def test_punctuation_between_words_without_spaces_stays_attached_to_the_word_before():
    text = "dog—cat bird"
    words = tuple(
        AlignedWord(text[s:e], 0.4 * k, 0.4 * k + 0.3, s, e, text[s:e], s, e)
        for k, (s, e) in enumerate([(0, 3), (4, 7), (8, 12)])
    )
    cues = group_cues(
        Alignment("English", 1.5, text, words), CueOptions(max_chars_per_line=4, max_lines=1)
    )
    assert [c.flat_text for c in cues] == ["dog—", "cat", "bird"]


def test_a_break_after_a_sentence_wins_over_balanced_lines():
    assert all_lines("Go. We will all see you", max_chars_per_line=20) == [
        ("Go.", "We will all see you")
    ]


def test_a_single_word_may_fill_the_first_line():
    assert all_lines("Hello there", max_chars_per_line=6) == [("Hello", "there")]


def test_words_that_fit_one_line_are_not_split_into_two():
    assert all_lines("We go", max_chars_per_line=5) == [("We go",)]


def test_equally_balanced_breaks_put_the_longer_line_first():
    # "We go" / "on" and "We" / "go on" leave the same slack: 2 and 5 columns.
    assert all_lines("We go on", max_chars_per_line=7) == [("We go", "on")]


def test_a_full_line_ending_in_a_clause_ties_with_a_balanced_break_and_wins():
    # Limit 10: "Hello Tom," fills its line (0 - clause bonus 30) + "hi" (8 squared) = 34,
    # the same as "Hello" (5 squared) + "Tom, hi" (3 squared); the first found, the clause, wins.
    assert all_lines("Hello Tom, hi", max_chars_per_line=10) == [("Hello Tom,", "hi")]


def test_a_long_word_inside_a_cue_gets_its_own_line_among_the_others():
    text = "a Donaudampfschifffahrtsgesellschaftskapitän b"
    assert all_lines(text, max_chars_per_line=10) == [
        ("a", "Donaudampfschifffahrtsgesellschaftskapitän"),
        ("b",),
    ]


def test_a_cue_may_last_exactly_max_duration():
    times = [(0.0, 3.5), (3.5, 7.0)]
    cues = group_cues(make_alignment("One two.", times), CueOptions(max_duration=7.0))
    assert [(c.flat_text, c.start, c.end) for c in cues] == [("One two.", 0.0, 7.0)]


def test_a_silence_of_exactly_max_pause_keeps_the_cue_together():
    times = [(0.0, 1.0), (2.5, 3.0)]  # 1.5 s of silence, then a word that ends 2 s later
    cues = group_cues(make_alignment("Wait then", times), CueOptions(max_pause=1.5))
    assert [c.flat_text for c in cues] == ["Wait then"]


def test_a_pause_after_a_plain_word_ends_the_cue_there_not_at_the_sentence_before():
    times = [(0.0, 0.3), (0.4, 0.7), (3.0, 3.3)]
    cues = group_cues(make_alignment("Wait. Look there", times), CueOptions(max_pause=1.5))
    assert [c.flat_text for c in cues] == ["Wait. Look", "there"]


def test_the_last_cue_is_not_cut_at_a_sentence_end_when_everything_fits():
    assert flat_texts("Hello there. How are you") == ["Hello there. How are you"]


def test_a_clause_break_keeping_exactly_the_minimum_fill_is_used():
    # "So, we did" fills the 10 columns; "So," keeps 3 of them, exactly 30 %.
    assert flat_texts("So, we did it", max_chars_per_line=10, max_lines=1) == ["So,", "we did it"]


# --- one cue per transcript line (mode="lines") -------------------------------------------------

LINES = CueOptions(mode="lines")


def check_line_cues(alignment: Alignment, cues) -> None:
    """What every cue list of the lines mode must satisfy: one cue per non-blank line, its text as
    written (whitespace collapsed), every word once, in order, on its own line; valid times."""
    lines = [" ".join(line.split()) for line in alignment.text.splitlines() if line.strip()]
    assert [c.flat_text for c in cues] == lines
    assert [c.lines for c in cues] == [(line,) for line in lines]
    covered = [i for cue in cues for i in cue.words]
    assert covered == list(range(len(alignment.words)))
    for cue in cues:
        check_pieces(alignment, cue)
        assert cue.end > cue.start
        for index in cue.words:
            assert alignment.words[index].text in cue.flat_text
    for before, after in itertools.pairwise(cues):
        assert before.end <= after.start
        assert before.start < after.start


def test_lines_mode_makes_one_cue_of_each_line_as_written_whatever_the_limits():
    text = (
        "Hello, world! This line is far longer than the line limit allows.\n"
        "\n"
        "  Second   line,\t indented.\r\n"
        "Third!"
    )
    alignment = make_alignment(text)  # 0.3 s per unit, 0.1 s gaps: unit k from 0.4 k s
    options = CueOptions(mode="lines", max_chars_per_line=10, max_lines=1, max_duration=1)
    cues = group_cues(alignment, options)
    check_line_cues(alignment, cues)
    assert [(c.flat_text, c.words, c.start, c.end) for c in cues] == [
        (
            "Hello, world! This line is far longer than the line limit allows.",
            range(0, 12),
            0.0,
            4.7,
        ),
        ("Second line, indented.", range(12, 15), 4.8, 5.9),
        ("Third!", range(15, 16), 6.0, 6.5),  # 0.3 s stretched to min_duration
    ]
    assert cues[1].pieces == ("Second", " line,", " indented.")


def test_lines_mode_ignores_pauses_and_keeps_the_cue_timing_rules():
    text = "Yes, and\nno."
    times = [(1.0, 1.2), (5.0, 5.1), (5.15, 5.2)]  # a 3.8 s pause inside the first line
    cues = group_cues(make_alignment(text, times), CueOptions(mode="lines", max_pause=1.0))
    assert [(c.flat_text, c.start, c.end) for c in cues] == [
        ("Yes, and", 1.0, 5.1),
        ("no.", 5.15, 5.65),
    ]


def test_a_line_without_units_follows_the_cue_before_it():
    text = "One two.\n♪ ♪\n---\nThree."
    times = [(0.0, 0.3), (0.4, 0.7), (2.0, 2.5)]
    cues = group_cues(make_alignment(text, times), LINES)
    check_line_cues(make_alignment(text, times), cues)
    assert [(c.flat_text, c.words, c.start, c.end) for c in cues] == [
        ("One two.", range(0, 2), 0.0, 0.7),
        ("♪ ♪", range(2, 2), 0.7, 1.2),  # min_duration, before the next timed cue
        ("---", range(2, 2), 1.2, 1.7),
        ("Three.", range(2, 3), 2.0, 2.5),
    ]
    assert cues[1].pieces == () and cues[1].line_pieces == ((),)


def test_lines_without_units_at_the_start_and_squeezed_before_the_next_cue():
    times = [(0.2, 0.6)]
    cues = group_cues(make_alignment("~\n♪\nHi.", times), LINES)
    # From 0; the first gets min_duration cut at "Hi." (0.2 s); the second then 1 ms, and
    # "Hi." starts after it.
    assert [(c.flat_text, c.start, c.end) for c in cues] == [
        ("~", 0.0, 0.2),
        ("♪", 0.2, 0.201),
        ("Hi.", 0.201, 0.701),
    ]


def test_lines_mode_needs_the_units_spans():
    alignment = make_alignment("Hello\nworld", spans=False)
    with pytest.raises(ValueError, match="span in the transcript"):
        group_cues(alignment, LINES)
    assert [c.flat_text for c in group_cues(alignment)] == ["Hello world"]  # auto still works


def test_lines_mode_refuses_units_out_of_transcript_order():
    words = (
        AlignedWord("b", 0.0, 0.1, 2, 3, "b", 2, 3),
        AlignedWord("a", 0.2, 0.3, 0, 1, "a", 0, 1),
    )
    with pytest.raises(ValueError, match="unit 1 \\('a'\\) at character 0 is not on a line"):
        group_cues(Alignment("English", 1.0, "a\nb", words), LINES)


def test_lines_mode_of_an_empty_transcript_has_no_cues():
    assert group_cues(Alignment("English", 0.0, "", ()), LINES) == []
    assert group_cues(Alignment("English", 0.0, " \n\t\n", ()), LINES) == []


def test_an_unknown_cue_mode_is_rejected():
    with pytest.raises(ValueError, match="cue mode must be one of auto, lines, got 'words'"):
        CueOptions(mode="words")  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(
    tokens=st.lists(WORD, min_size=1, max_size=30),
    breaks=st.lists(st.sampled_from([" ", "\n", "\n\n", " \r\n ", "\n-\n", ", "]), min_size=30),
    raw_times=st.lists(st.tuples(FLOATS(0, 30), FLOATS(0, 3)), min_size=80, max_size=80),
    min_duration=FLOATS(0, 1),
)
def test_lines_mode_invariants_hold_for_any_lines_and_times(
    tokens, breaks, raw_times, min_duration
):
    text = tokens[0] + "".join(b + t for b, t in zip(breaks, tokens[1:], strict=False))
    times = [(s, s + d) for s, d in raw_times[: len(unit_spans(text))]]
    alignment = make_alignment(text, times)
    check_line_cues(
        alignment, group_cues(alignment, CueOptions(min_duration=min_duration, mode="lines"))
    )
