"""Output formats, read back by independent parsers; JSON round trip; atomic writes."""

from __future__ import annotations

import csv
import html
import io
import itertools
import json
import os
import re
from dataclasses import replace

import pytest
import srt
import webvtt
from client_samples import CHINESE, LONG_ENGLISH, make_alignment
from praatio import textgrid
from qwen3_aligner_client import (
    FORMATS,
    AlignedWord,
    Alignment,
    CueOptions,
    WriteOptions,
    group_cues,
    render,
    write_atomic,
)
from qwen3_aligner_client.cues import monotonic_times, tiling_intervals
from qwen3_aligner_client.writers import _praat_number

TRICKY = 'He said "5 < 7 & 8 > 3" -- really? Yes: <b>bold</b>, "quoted" & done.'


def samples() -> list[Alignment]:
    zero_length = [(1.0, 1.0)] * len(make_alignment("One two. Three four!").words)
    return [
        make_alignment(LONG_ENGLISH, scored=True),
        make_alignment(CHINESE, language="Chinese", scored=True),
        make_alignment(TRICKY),
        make_alignment("One two. Three four!", zero_length),
        make_alignment("Hello, world! 你好。", spans=False),
        make_alignment("Late start here.", [(3661.5, 3662.0), (3662.1, 3662.2), (3662.3, 3663)]),
    ]


IDS = ["english", "chinese", "tricky", "zero-length", "no-spans", "past-an-hour"]


def test_json_round_trip_keeps_everything():
    for alignment in samples():
        text = render(alignment, "json")
        assert Alignment.from_json(text) == alignment
        assert json.loads(text)["words"][0]["text"] == alignment.words[0].text


def test_alignment_from_an_old_server_document_falls_back_to_text():
    old = {
        "language": "English",
        "duration": 1.5,
        "words": [{"text": "hi", "start": 0.1, "end": 0.4}],
    }
    alignment = Alignment.from_dict(old, text="Hi!")
    assert alignment.text == "Hi!"
    assert alignment.words == (AlignedWord("hi", 0.1, 0.4),)
    assert alignment.words[0].label == "hi"
    assert not alignment.has_spans
    assert Alignment.from_dict(alignment.to_dict()) == alignment
    assert "char_start" not in alignment.to_dict()["words"][0]


def millis(delta) -> int:
    return round(delta.total_seconds() * 1000)


@pytest.mark.parametrize("alignment", samples(), ids=IDS)
def test_srt_parses_and_matches_the_cues(alignment):
    options = WriteOptions(cues=CueOptions(max_chars_per_line=30))
    parsed = list(srt.parse(render(alignment, "srt", options)))
    cues = group_cues(alignment, options.cues)
    assert [s.index for s in parsed] == list(range(1, len(cues) + 1))
    assert [s.content for s in parsed] == [c.text for c in cues]
    assert [(millis(s.start), millis(s.end)) for s in parsed] == [
        (round(c.start * 1000), round(c.end * 1000)) for c in cues
    ]
    for s in parsed:
        assert s.end > s.start
    for before, after in itertools.pairwise(parsed):
        assert before.end <= after.start


@pytest.mark.parametrize("alignment", samples(), ids=IDS)
def test_webvtt_parses_and_matches_the_cues(alignment):
    text = render(alignment, "vtt")
    assert text.startswith("WEBVTT\n\n")
    parsed = webvtt.from_buffer(io.StringIO(text)).captions
    cues = group_cues(alignment)
    assert [html.unescape(c.text) for c in parsed] == [c.text for c in cues]
    assert [(c.start_time.in_milliseconds(), c.end_time.in_milliseconds()) for c in parsed] == [
        (round(c.start * 1000), round(c.end * 1000)) for c in cues
    ]
    for caption in parsed:
        assert caption.end_time.in_milliseconds() > caption.start_time.in_milliseconds()
        assert "<" not in caption.text and "-->" not in caption.text


@pytest.mark.parametrize("alignment", samples(), ids=IDS)
def test_textgrid_parses_with_a_word_and_a_cue_tier(alignment, tmp_path):
    path = tmp_path / "out.TextGrid"
    path.write_text(render(alignment, "textgrid"), encoding="utf-8")
    grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=False)
    assert grid.tierNames == ("words", "cues")
    words = grid.getTier("words").entries
    expected = tiling_intervals(monotonic_times(alignment.words))
    assert [e.label for e in words] == [w.text for w in alignment.words]
    assert [(round(e.start * 1000), round(e.end * 1000)) for e in words] == expected
    cues = group_cues(alignment)
    assert [e.label for e in grid.getTier("cues").entries] == [c.flat_text for c in cues]
    assert round(grid.maxTimestamp, 3) >= round(max(alignment.duration, words[-1].end), 3)
    # The full grid (with empty intervals) tiles each tier without gaps.
    full = textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
    for name in ("words", "cues"):
        entries = full.getTier(name).entries
        assert entries[0].start == 0
        assert entries[-1].end == pytest.approx(full.maxTimestamp)
        for before, after in itertools.pairwise(entries):
            assert before.end == pytest.approx(after.start)
            assert after.end > after.start


@pytest.mark.parametrize("alignment", samples(), ids=IDS)
def test_ctm_rows_are_the_words(alignment):
    text = render(alignment, "ctm", WriteOptions(recording="my clip"))
    rows = list(csv.reader(io.StringIO(text), delimiter=" "))
    assert len(rows) == len(alignment.words)
    for row, word in zip(rows, alignment.words, strict=True):
        if word.score is None:  # a server without scores: no confidence column
            recording, channel, start, duration, token = row
        else:
            recording, channel, start, duration, token, confidence = row
            assert float(confidence) == pytest.approx(word.score, abs=5e-5)
            assert 0.0 <= float(confidence) <= 1.0
        assert (recording, channel, token) == ("my_clip", "1", word.text)
        assert float(start) == pytest.approx(word.start, abs=5e-4)
        assert float(start) + float(duration) == pytest.approx(max(word.end, word.start), abs=1e-3)


@pytest.mark.parametrize("alignment", samples(), ids=IDS)
def test_tsv_rows_are_the_words_with_displays_and_spans(alignment):
    rows = list(csv.DictReader(io.StringIO(render(alignment, "tsv")), delimiter="\t"))
    assert len(rows) == len(alignment.words)
    for row, word in zip(rows, alignment.words, strict=True):
        assert row["text"] == word.text
        assert row["display"] == word.label
        assert float(row["start"]) == pytest.approx(word.start, abs=5e-4)
        assert float(row["end"]) == pytest.approx(word.end, abs=5e-4)
        if word.has_spans:
            assert alignment.text[int(row["char_start"]) : int(row["char_end"])] == word.text
        else:
            assert row["char_start"] == row["char_end"] == ""
        if word.score is None:
            assert row["score"] == row["repaired"] == ""
        else:
            assert float(row["score"]) == pytest.approx(word.score, abs=5e-5)
            assert row["repaired"] == ("true" if word.repaired else "false")


def test_json_carries_scores_repairs_and_their_summary():
    alignment = make_alignment(LONG_ENGLISH, scored=True)
    doc = json.loads(render(alignment, "json"))
    scores = [w["score"] for w in doc["words"]]
    flags = [w["repaired"] for w in doc["words"]]
    assert scores == [w.score for w in alignment.words]
    assert any(flags) and not all(flags)
    assert doc["mean_score"] == pytest.approx(sum(scores) / len(scores), abs=1e-6)
    assert doc["repaired_share"] == pytest.approx(sum(flags) / len(flags), abs=1e-6)
    unscored = json.loads(render(make_alignment(LONG_ENGLISH), "json"))
    assert "mean_score" not in unscored and "score" not in unscored["words"][0]


def test_srt_keeps_punctuation_and_casing_from_displays():
    text = render(make_alignment(LONG_ENGLISH), "srt")
    first = next(srt.parse(text))
    assert (
        first.content == "Hello, world! This is the quick brown fox;\nit jumps over the lazy dog."
    )


def test_render_rejects_unknown_formats():
    with pytest.raises(ValueError, match="unknown format 'docx'"):
        render(make_alignment("hi"), "docx")
    assert list(FORMATS) == [
        "json",
        "whisperx",
        "verbose_json",
        "srt",
        "vtt",
        "ass",
        "lrc",
        "textgrid",
        "ctm",
        "tsv",
        "html",
        "png",
    ]


def test_write_atomic_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "out.srt"
    target.write_text("old", encoding="utf-8")
    write_atomic(target, "新しい\n")
    assert target.read_text(encoding="utf-8") == "新しい\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.srt"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_write_atomic_failure_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("old", encoding="utf-8")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "new")
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


# Expectations below are written by hand from the formats' rules, not computed with the writers'
# helpers: a pause over max_pause (1.5 s) ends a cue; "four" starts before "Three" ends, which a
# TextGrid interval tier cannot hold, so it starts at 2.8 there; CTM gives start and duration.
HAND = (
    "One two. Three four!",
    [(0.0, 0.3), (0.4, 0.7), (2.5, 2.8), (2.7, 3.2)],
)


def hand_alignment() -> Alignment:
    return make_alignment(HAND[0], HAND[1], duration=4.0)


def test_srt_by_hand():
    parsed = list(srt.parse(render(hand_alignment(), "srt")))
    assert [(s.index, millis(s.start), millis(s.end), s.content) for s in parsed] == [
        (1, 0, 700, "One two."),
        (2, 2500, 3200, "Three four!"),
    ]


def test_webvtt_by_hand():
    text = render(hand_alignment(), "vtt")
    assert text.startswith("WEBVTT\n\n")
    parsed = webvtt.from_buffer(io.StringIO(text)).captions
    assert [
        (c.start_time.in_milliseconds(), c.end_time.in_milliseconds(), c.text) for c in parsed
    ] == [(0, 700, "One two."), (2500, 3200, "Three four!")]


def test_textgrid_by_hand(tmp_path):
    path = tmp_path / "hand.TextGrid"
    path.write_text(render(hand_alignment(), "textgrid"), encoding="utf-8")
    grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=False)
    words = [(e.start, e.end, e.label) for e in grid.getTier("words").entries]
    assert words == [
        (0.0, 0.3, "One"),
        (0.4, 0.7, "two"),
        (2.5, 2.8, "Three"),
        (2.8, 3.2, "four"),
    ]
    cues = [(e.start, e.end, e.label) for e in grid.getTier("cues").entries]
    assert cues == [(0.0, 0.7, "One two."), (2.5, 3.2, "Three four!")]
    assert grid.maxTimestamp == 4.0


def test_ctm_by_hand():
    rows = [line.split(" ") for line in render(hand_alignment(), "ctm").splitlines()]
    assert rows == [
        ["audio", "1", "0.000", "0.300", "One"],
        ["audio", "1", "0.400", "0.300", "two"],
        ["audio", "1", "2.500", "0.300", "Three"],
        ["audio", "1", "2.700", "0.500", "four"],
    ]


def test_tsv_by_hand():
    rows = list(csv.reader(io.StringIO(render(hand_alignment(), "tsv")), delimiter="\t"))
    assert rows == [
        ["start", "end", "text", "display", "char_start", "char_end", "score", "repaired"],
        ["0.000", "0.300", "One", "One", "0", "3", "", ""],  # no scores sent: empty fields
        ["0.400", "0.700", "two", "two.", "4", "7", "", ""],
        ["2.500", "2.800", "Three", "Three", "9", "14", "", ""],
        ["2.700", "3.200", "four", "four!", "15", "19", "", ""],
    ]
    scored = replace(
        hand_alignment(),
        words=tuple(
            replace(w, score=s, repaired=r)
            for w, s, r in zip(
                hand_alignment().words,
                (0.5, 0.25, 1.0, 0.125),
                (False, True, False, False),
                strict=True,
            )
        ),
    )
    rows = list(csv.reader(io.StringIO(render(scored, "tsv")), delimiter="\t"))
    assert [r[6:] for r in rows[1:]] == [
        ["0.5000", "false"],
        ["0.2500", "true"],
        ["1.0000", "false"],
        ["0.1250", "false"],
    ]


# --- the formats to the letter ------------------------------------------------------------------
# The parsers above are lenient (srt.parse takes "." as well as "," before the milliseconds, and
# webvtt and praatio skip what they do not expect), so these read the files line by line against
# each format's grammar, as a strict player would.

SRT_TIMING = re.compile(r"^\d{2}:\d{2}:\d{2},\d{3} --> \d{2}:\d{2}:\d{2},\d{3}$")
VTT_TIMING = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d{3} --> \d{2}:\d{2}:\d{2}\.\d{3}$")
PRAAT_NUMBER = r"\d+(?:\.\d+)?"  # seconds, as Praat writes them: no exponent, no sign
PRAAT_STRING = r'"(?:[^"]|"")*"'  # a quote inside is doubled


def literal_samples() -> list[Alignment]:
    """The samples, and times that round up across a second, a minute and an hour."""
    boundaries = make_alignment(
        "Tick tock, clock!", [(59.9996, 60.2), (119.9995, 121.0), (3599.9996, 3601.25)]
    )
    return [*samples(), boundaries]


LITERAL_IDS = [*IDS, "rounding-across-boundaries"]


def clock_ms(stamp: str) -> int:
    """Milliseconds of an ``HH:MM:SS,mmm`` or ``HH:MM:SS.mmm`` stamp (minutes, seconds < 60)."""
    hours, minutes, seconds, ms = (int(part) for part in re.split(r"[:,.]", stamp))
    assert minutes < 60 and seconds < 60, stamp
    return ((hours * 60 + minutes) * 60 + seconds) * 1000 + ms


def cue_ms(cues) -> list[tuple[int, int]]:
    return [(round(c.start * 1000), round(c.end * 1000)) for c in cues]


@pytest.mark.parametrize("alignment", literal_samples(), ids=LITERAL_IDS)
def test_srt_blocks_and_timing_lines_to_the_letter(alignment):
    options = WriteOptions(cues=CueOptions(max_chars_per_line=30))
    text = render(alignment, "srt", options)
    cues = group_cues(alignment, options.cues)
    assert "\r" not in text and text.endswith("\n") and not text.endswith("\n\n")
    blocks = text[:-1].split("\n\n")  # one blank line between blocks, none inside one
    assert len(blocks) == len(cues)
    times = []
    for number, (block, cue) in enumerate(zip(blocks, cues, strict=True), start=1):
        index, timing, *lines = block.split("\n")
        assert index == str(number)
        assert SRT_TIMING.match(timing), timing
        start, end = timing.split(" --> ")
        times.append((clock_ms(start), clock_ms(end)))
        assert lines == list(cue.lines)
        assert all(line.strip() and "-->" not in line for line in lines), lines
    assert times == cue_ms(cues)
    assert all(start < end for start, end in times)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(times))


@pytest.mark.parametrize("alignment", literal_samples(), ids=LITERAL_IDS)
def test_webvtt_header_and_cue_timings_to_the_letter(alignment):
    text = render(alignment, "vtt")
    cues = group_cues(alignment)
    assert "\r" not in text and not text.startswith("\ufeff")
    assert text.endswith("\n") and not text.endswith("\n\n")
    header, *blocks = text[:-1].split("\n\n")
    assert header == "WEBVTT"  # the signature alone on the first line, then a blank line
    assert len(blocks) == len(cues)
    times = []
    for block, cue in zip(blocks, cues, strict=True):
        timing, *lines = block.split("\n")  # no cue identifiers: the timing line comes first
        assert VTT_TIMING.match(timing), timing
        start, end = timing.split(" --> ")
        times.append((clock_ms(start), clock_ms(end)))
        assert [html.unescape(line) for line in lines] == list(cue.lines)
        for line in lines:
            assert line.strip() and "-->" not in line and "<" not in line, line
            assert "&" not in re.sub(r"&(?:amp|lt|gt);", "", line), line  # only these entities
    assert times == cue_ms(cues)
    assert all(start < end for start, end in times)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(times))  # cues ordered by start


def praat_value(line: str, key: str, pattern: str) -> str:
    found = re.fullmatch(rf"{key} = ({pattern})", line)
    assert found, (key, line)
    return found.group(1)


@pytest.mark.parametrize("alignment", literal_samples(), ids=LITERAL_IDS)
def test_textgrid_long_format_to_the_letter(alignment):
    text = render(alignment, "textgrid")
    assert "\r" not in text and text.endswith("\n")
    lines = iter(text[:-1].split("\n"))
    head = [next(lines) for _ in range(8)]
    assert head[:4] == ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0"]
    xmax = praat_value(head[4], "xmax", PRAAT_NUMBER)
    assert head[5:] == ["tiers? <exists>", "size = 2", "item []:"]
    labels = {}
    for number, name in enumerate(("words", "cues"), start=1):
        assert next(lines) == f"    item [{number}]:"
        assert next(lines) == '        class = "IntervalTier"'
        assert next(lines) == f'        name = "{name}"'
        assert next(lines) == "        xmin = 0"
        assert next(lines) == f"        xmax = {xmax}"
        size = int(praat_value(next(lines), "        intervals: size", r"[1-9]\d*"))
        cursor, texts = "0", []
        for k in range(1, size + 1):
            assert next(lines) == f"        intervals [{k}]:"
            start = praat_value(next(lines), " " * 12 + "xmin", PRAAT_NUMBER)
            end = praat_value(next(lines), " " * 12 + "xmax", PRAAT_NUMBER)
            quoted = praat_value(next(lines), " " * 12 + "text", PRAAT_STRING)
            assert float(start) == float(cursor)  # the intervals tile the tier
            assert float(end) > float(start), (name, k, start, end)
            cursor = end
            texts.append(quoted[1:-1].replace('""', '"'))
        assert float(cursor) == float(xmax)
        labels[name] = [t for t in texts if t]
    assert next(lines, None) is None  # nothing after the second tier
    assert float(xmax) >= alignment.duration - 5e-4
    assert labels == {
        "words": [w.text for w in alignment.words],
        "cues": [c.flat_text for c in group_cues(alignment)],
    }


# --- exact text of each format, worked out by hand ----------------------------------------------


def test_json_is_indented_by_two_spaces_and_ends_with_a_newline():
    alignment = Alignment("English", 1.5, "hi", (AlignedWord("hi", 0.1, 0.4),))
    assert render(alignment, "json") == (
        "{\n"
        '  "language": "English",\n'
        '  "duration": 1.5,\n'
        '  "text": "hi",\n'
        '  "words": [\n'
        "    {\n"
        '      "text": "hi",\n'
        '      "start": 0.1,\n'
        '      "end": 0.4\n'
        "    }\n"
        "  ]\n"
        "}\n"
    )


def test_webvtt_escapes_greater_than_less_than_and_ampersand():
    # Five units, 0.3 s each with 0.1 s gaps: the last ends at 1.9 s; one cue of one line.
    assert render(make_alignment("Is 5 > 3 & 2 < 4?"), "vtt") == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.900\nIs 5 &gt; 3 &amp; 2 &lt; 4?\n"
    )


# A max_pause of 2 s keeps the 1.8 s pause between "two." and "Three" inside one cue (20
# characters, 3.2 s: within the default line and duration limits); the default (1.5 s) splits it.
LONG_PAUSE = WriteOptions(cues=CueOptions(max_pause=2.0))


def test_webvtt_follows_the_cue_options():
    assert render(hand_alignment(), "vtt", LONG_PAUSE) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:03.200\nOne two. Three four!\n"
    )


def test_textgrid_cue_tier_follows_the_cue_options():
    text = render(hand_alignment(), "textgrid", LONG_PAUSE)
    cue_tier = text.split("    item [2]:\n")[1]
    assert cue_tier == (
        '        class = "IntervalTier"\n'
        '        name = "cues"\n'
        "        xmin = 0\n"
        "        xmax = 4\n"
        "        intervals: size = 2\n"
        "        intervals [1]:\n"
        "            xmin = 0\n"
        "            xmax = 3.2\n"
        '            text = "One two. Three four!"\n'
        "        intervals [2]:\n"
        "            xmin = 3.2\n"
        "            xmax = 4\n"
        '            text = ""\n'
    )


def test_textgrid_of_an_empty_alignment_lasts_one_millisecond():
    # Praat needs xmax > xmin: with no audio and no words, each tier is one empty 1 ms interval.
    tier = [
        "        xmin = 0",
        "        xmax = 0.001",
        "        intervals: size = 1",
        "        intervals [1]:",
        "            xmin = 0",
        "            xmax = 0.001",
        '            text = ""',
    ]
    expected = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        "xmin = 0",
        "xmax = 0.001",
        "tiers? <exists>",
        "size = 2",
        "item []:",
        "    item [1]:",
        '        class = "IntervalTier"',
        '        name = "words"',
        *tier,
        "    item [2]:",
        '        class = "IntervalTier"',
        '        name = "cues"',
        *tier,
    ]
    assert render(Alignment("English", 0.0, "", ()), "textgrid") == "\n".join(expected) + "\n"


@pytest.mark.parametrize(
    ("ms", "seconds"),
    [
        (0, "0"),
        (1, "0.001"),
        (10, "0.01"),
        (1500, "1.5"),
        (2000, "2"),
        (3_601_250, "3601.25"),
        (10**19, "10000000000000000"),  # plain digits even where Python would write 1e+16
    ],
)
def test_praat_numbers_are_seconds_without_trailing_zeros_or_exponent(ms, seconds):
    assert _praat_number(ms) == seconds


@pytest.mark.parametrize(
    ("recording", "column"),
    [("", "audio"), (" \t\n", "audio"), (" my \t long  clip\n", "my_long_clip")],
)
def test_ctm_recording_column_has_no_blanks_and_falls_back_to_audio(recording, column):
    alignment = make_alignment("Hi", [(0.25, 0.5)])
    text = render(alignment, "ctm", WriteOptions(recording=recording))
    assert text == f"{column} 1 0.250 0.250 Hi\n"


def test_tsv_lines_end_with_a_bare_newline():
    assert render(make_alignment("Hi", [(0.25, 0.5)]), "tsv") == (
        "start\tend\ttext\tdisplay\tchar_start\tchar_end\tscore\trepaired\n"
        "0.250\t0.500\tHi\tHi\t0\t2\t\t\n"
    )


def test_unknown_format_error_lists_the_known_formats():
    with pytest.raises(ValueError) as error:
        render(make_alignment("hi"), "docx")
    assert str(error.value) == (
        "unknown format 'docx'; use one of: json, whisperx, verbose_json, srt, vtt, ass, lrc, "
        "textgrid, ctm, tsv, html, png"
    )
