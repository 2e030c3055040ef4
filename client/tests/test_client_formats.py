"""The formats other tools load (WhisperX JSON, OpenAI verbose_json, ASS, enhanced LRC, WebVTT with
word timestamps) and cues by transcript lines: exact text for small inputs, then each read back by
the tool's own model or an independent parser."""

from __future__ import annotations

import html
import io
import itertools
import json
import math
import re
from dataclasses import replace

import pydantic
import pysubs2
import pytest
import srt
import webvtt
from client_samples import CHINESE, LONG_ENGLISH, make_alignment
from openai.types.audio import TranscriptionVerbose
from praatio import textgrid
from qwen3_aligner_client import (
    AlignedWord,
    Alignment,
    CueOptions,
    WriteOptions,
    group_cues,
    render,
)
from qwen3_aligner_client.writers import format_of_path, formats_without_audio, language_code

TRICKY = 'He said "5 < 7 & 8 > 3" -- really? Yes: <b>bold</b>, "quoted" & done.'


def samples() -> list[Alignment]:
    zero_length = [(1.0, 1.0)] * 4
    return [
        make_alignment(LONG_ENGLISH, scored=True),
        make_alignment(CHINESE, language="Chinese", scored=True),
        make_alignment(TRICKY),
        make_alignment("One two. Three four!", zero_length),
        make_alignment("Hello, world! 你好。", spans=False),
        make_alignment("Late start here.", [(3661.5, 3662.0), (3662.1, 3662.2), (3662.3, 3663)]),
        make_alignment("Backwards a b c", [(3.0, 3.5), (1.0, 1.2), (4.0, 3.9), (2.0, 2.5)]),
    ]


IDS = ["english", "chinese", "tricky", "zero-length", "no-spans", "past-an-hour", "backwards"]

# "four" starts before "Three" ends; a pause of 1.8 s (over max_pause) ends the first cue.
HAND_TEXT = "One two. Three four!"
HAND_TIMES = [(0.0, 0.3), (0.4, 0.7), (2.5, 2.8), (2.7, 3.2)]
HAND_SCORES = [(0.5, False), (0.25, True), (1.0, False), (0.125, False)]
# One cue of two lines: the pause kept inside (max_pause 2 s), lines of at most 12 columns.
TWO_LINES = WriteOptions(cues=CueOptions(max_chars_per_line=12, max_pause=2.0))


def hand(scored: bool = False) -> Alignment:
    alignment = make_alignment(HAND_TEXT, HAND_TIMES, duration=4.0)
    if not scored:
        return alignment
    words = tuple(
        replace(w, score=s, repaired=r)
        for w, (s, r) in zip(alignment.words, HAND_SCORES, strict=True)
    )
    return replace(alignment, words=words)


def cue_ms(cue) -> tuple[int, int]:
    return round(cue.start * 1000), round(cue.end * 1000)


# --- format registry ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "format_name"),
    [
        ("speech.json", "json"),
        ("speech.JSON", "json"),
        ("out/speech.whisperx.json", "whisperx"),
        ("speech.verbose.json", "verbose_json"),
        ("speech.ass", "ass"),
        ("speech.lrc", "lrc"),
        ("speech.textgrid", "textgrid"),
        ("speech.words.srt", "srt"),
        ("speech.mp3", None),
        ("speech", None),
    ],
)
def test_a_file_name_gives_its_format_by_the_longest_suffix(name, format_name):
    found = format_of_path(name)
    assert (None if found is None else found.name) == format_name


def test_formats_without_audio_are_every_text_format_but_html():
    assert [f.name for f in formats_without_audio()] == [
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
    ]
    suffixes = [f.suffix.lower() for f in formats_without_audio()]
    assert len(set(suffixes)) == len(suffixes)  # -f all never writes two formats to one file


# --- WhisperX -----------------------------------------------------------------------------------


def test_whisperx_by_hand():
    words = (
        AlignedWord("Hi", 0.12345, 0.5, 0, 2, "Hi,", 0, 3, score=0.98765, repaired=False),
        AlignedWord("you", 0.6, 0.9004, 4, 7, "you!", 4, 8),  # no score: left out
    )
    alignment = Alignment("English", 1.0, "Hi, you!", words)
    assert render(alignment, "whisperx") == (
        "{\n"
        '  "segments": [\n'
        "    {\n"
        '      "start": 0.123,\n'
        '      "end": 0.9,\n'
        '      "text": "Hi, you!",\n'
        '      "words": [\n'
        "        {\n"
        '          "word": "Hi,",\n'
        '          "start": 0.123,\n'
        '          "end": 0.5,\n'
        '          "score": 0.988\n'
        "        },\n"
        "        {\n"
        '          "word": "you!",\n'
        '          "start": 0.6,\n'
        '          "end": 0.9\n'
        "        }\n"
        "      ]\n"
        "    }\n"
        "  ],\n"
        '  "word_segments": [\n'
        "    {\n"
        '      "word": "Hi,",\n'
        '      "start": 0.123,\n'
        '      "end": 0.5,\n'
        '      "score": 0.988\n'
        "    },\n"
        "    {\n"
        '      "word": "you!",\n'
        '      "start": 0.6,\n'
        '      "end": 0.9\n'
        "    }\n"
        "  ],\n"
        '  "language": "en"\n'
        "}\n"
    )


@pytest.mark.parametrize("alignment", samples(), ids=IDS)
def test_whisperx_segments_are_the_cues_and_word_segments_every_word(alignment):
    options = WriteOptions(cues=CueOptions(max_chars_per_line=30))
    doc = json.loads(render(alignment, "whisperx", options))
    assert list(doc) == ["segments", "word_segments", "language"]
    cues = group_cues(alignment, options.cues)
    assert [(s["start"], s["end"], s["text"]) for s in doc["segments"]] == [
        (round(c.start, 3), round(c.end, 3), c.flat_text) for c in cues
    ]
    assert [w for s in doc["segments"] for w in s["words"]] == doc["word_segments"]
    assert len(doc["word_segments"]) == len(alignment.words)
    for entry, word in zip(doc["word_segments"], alignment.words, strict=True):
        assert entry["word"] == word.label
        assert entry["start"] == round(word.start, 3) and entry["end"] == round(word.end, 3)
        if word.score is None:
            assert set(entry) == {"word", "start", "end"}
        else:
            assert entry["score"] == round(word.score, 3)
    for segment in doc["segments"]:
        assert set(segment) == {"start", "end", "text", "words"}
        assert segment["start"] < segment["end"]


@pytest.mark.parametrize(
    ("language", "code"),
    [("English", "en"), ("Chinese", "zh"), ("Cantonese", "yue"), ("Klingon", "klingon")],
)
def test_whisperx_language_is_an_iso_code(language, code):
    assert language_code(language) == code
    alignment = make_alignment("Hi", language=language)
    assert json.loads(render(alignment, "whisperx"))["language"] == code


# --- OpenAI verbose_json ------------------------------------------------------------------------


def test_verbose_json_by_hand():
    doc = json.loads(render(hand(scored=True), "verbose_json"))
    neutral = {"seek": 0, "tokens": [], "temperature": 0.0}
    neutral |= {"compression_ratio": 1.0, "no_speech_prob": 0.0}
    assert doc == {
        "task": "transcribe",
        "language": "english",
        "duration": 4.0,
        "text": "One two. Three four!",
        "words": [
            {"word": "One", "start": 0.0, "end": 0.3},
            {"word": "two", "start": 0.4, "end": 0.7},
            {"word": "Three", "start": 2.5, "end": 2.8},
            {"word": "four", "start": 2.7, "end": 3.2},
        ],
        "segments": [
            # avg_logprob: ln of the mean score, ln(0.375) and ln(0.5625)
            {"id": 0, "start": 0.0, "end": 0.7, "text": "One two.", "avg_logprob": -0.9808}
            | neutral,
            {"id": 1, "start": 2.5, "end": 3.2, "text": "Three four!", "avg_logprob": -0.5754}
            | neutral,
        ],
    }
    assert list(doc) == ["task", "language", "duration", "text", "words", "segments"]


def test_verbose_json_avg_logprob_without_scores_or_with_a_zero_mean():
    unscored = json.loads(render(hand(), "verbose_json"))
    assert [s["avg_logprob"] for s in unscored["segments"]] == [0.0, 0.0]
    zero = replace(hand(scored=True), words=tuple(replace(w, score=0.0) for w in hand().words))
    assert [s["avg_logprob"] for s in json.loads(render(zero, "verbose_json"))["segments"]] == [
        -20.0,
        -20.0,
    ]
    assert math.log(0.375) == pytest.approx(-0.9808, abs=1e-4)


@pytest.mark.parametrize("alignment", samples(), ids=IDS)
def test_verbose_json_validates_as_openais_transcription_verbose(alignment):
    text = render(alignment, "verbose_json")
    parsed = TranscriptionVerbose.model_validate_json(text)
    assert parsed.language == alignment.language.lower()
    assert parsed.duration == alignment.duration
    assert parsed.text == alignment.text
    assert [(w.word, w.start, w.end) for w in parsed.words or []] == [
        (w.text, round(w.start, 3), round(w.end, 3)) for w in alignment.words
    ]
    cues = group_cues(alignment)
    assert [(s.id, s.start, s.end, s.text) for s in parsed.segments or []] == [
        (k, round(c.start, 3), round(c.end, 3), c.flat_text) for k, c in enumerate(cues)
    ]
    # The model checks what it reads: a segment without its id is refused.
    broken = json.loads(text)
    if broken["segments"]:
        del broken["segments"][0]["id"]
        with pytest.raises(pydantic.ValidationError):
            TranscriptionVerbose.model_validate_json(json.dumps(broken))


# --- ASS ----------------------------------------------------------------------------------------

ASS_HEADER = (
    "[Script Info]\n"
    "ScriptType: v4.00+\n"
    "PlayResX: 1920\n"
    "PlayResY: 1080\n"
    "WrapStyle: 0\n"
    "ScaledBorderAndShadow: yes\n"
    "\n"
    "[V4+ Styles]\n"
    "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, "
    "Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, "
    "Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
    "Style: Default,Arial,64,&H00FFFFFF,&H00A0A0A0,&H00000000,&H80000000,0,0,0,0,100,100,0,0,1,3,1,"
    "2,80,80,60,1\n"
    "\n"
    "[Events]\n"
    "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)


def test_ass_karaoke_by_hand():
    # "Three" is cut at 2.70 where "four" starts; the 0.1 s between "One" and "two." is a tag
    # of its own.
    assert render(hand(), "ass") == ASS_HEADER + (
        "Dialogue: 0,0:00:00.00,0:00:00.70,Default,,0,0,0,,{\\k30}One{\\k10}{\\k30} two.\n"
        "Dialogue: 0,0:00:02.50,0:00:03.20,Default,,0,0,0,,{\\k20}Three{\\k50} four!\n"
    )


def test_ass_karaoke_of_a_two_line_cue_and_a_stretched_cue_by_hand():
    assert render(hand(), "ass", TWO_LINES).endswith(
        "[Events]\n"
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
        "Dialogue: 0,0:00:00.00,0:00:03.20,Default,,0,0,0,,"
        "{\\k30}One{\\k10}{\\k30} two.\\N{\\k180}{\\k20}Three{\\k50} four!\n"
    )
    # 0.2 s of speech stretched to min_duration (0.5 s): the last 0.3 s is an empty tag.
    late = make_alignment("Hi.", [(3723.004, 3723.2)])
    assert render(late, "ass").splitlines()[-1] == (
        "Dialogue: 0,1:02:03.00,1:02:03.50,Default,,0,0,0,,{\\k20}Hi.{\\k30}"
    )


def test_ass_plain_by_hand():
    assert render(hand(), "ass", replace(TWO_LINES, karaoke=False)).endswith(
        "Dialogue: 0,0:00:00.00,0:00:03.20,Default,,0,0,0,,One two.\\NThree four!\n"
    )


def test_ass_escapes_braces_and_backslashes():
    text = "a {b} c\\d"
    alignment = make_alignment(text, [(0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0)])
    assert render(alignment, "ass", WriteOptions(karaoke=False)).splitlines()[-1] == (
        "Dialogue: 0,0:00:00.00,0:00:02.00,Default,,0,0,0,,a \\{b\\} c\\\\d"
    )
    assert render(alignment, "ass").splitlines()[-1] == (
        "Dialogue: 0,0:00:00.00,0:00:02.00,Default,,0,0,0,,"
        "{\\k50}a{\\k50} \\{b\\}{\\k50} c\\\\{\\k50}d"
    )


def karaoke(text: str) -> list[tuple[int, str]]:
    """The ``{\\k<cs>}`` tags of an event's text and the text after each (the text before the
    first tag must be empty)."""
    parts = re.split(r"\{\\k(\d+)\}", text)
    assert parts[0] == "", text
    return [(int(cs), after) for cs, after in zip(parts[1::2], parts[2::2], strict=True)]


@pytest.mark.parametrize("karaoke_tags", [True, False], ids=["karaoke", "plain"])
@pytest.mark.parametrize("alignment", samples(), ids=IDS)
def test_ass_reads_back_with_pysubs2(alignment, karaoke_tags):
    options = WriteOptions(cues=CueOptions(max_chars_per_line=30), karaoke=karaoke_tags)
    subs = pysubs2.SSAFile.from_string(render(alignment, "ass", options))
    assert subs.info["PlayResX"] == "1920" and subs.info["ScriptType"] == "v4.00+"
    assert list(subs.styles) == ["Default"]
    cues = group_cues(alignment, options.cues)
    events = list(subs.events)
    assert [e.plaintext for e in events] == [c.text for c in cues]
    for event, cue in zip(events, cues, strict=True):
        start, end = cue_ms(cue)
        # Centiseconds: each time within half of one, or one later where rounding would have
        # left an event without length (and the events after it follow).
        assert -5 <= event.start - start <= 10 and -5 <= event.end - end <= 10, (event, cue)
        assert event.end > event.start and event.style == "Default"
        if karaoke_tags and cue.words:
            tags = karaoke(event.text)
            assert sum(cs for cs, _ in tags) * 10 == event.end - event.start
            spoken = [after for _, after in tags if after]
            # Each word's tag, then its piece of the line (the last of a line before a \N).
            assert [s.removesuffix("\\N") for s in spoken] == [
                piece for pieces in cue.line_pieces for piece in pieces
            ]
        else:
            assert "\\k" not in event.text
    for before, after in itertools.pairwise(events):
        assert before.end <= after.start


# --- enhanced LRC -------------------------------------------------------------------------------


def test_lrc_by_hand():
    assert render(hand(), "lrc") == (
        "[00:00.00]<00:00.00>One <00:00.40>two.<00:00.70>\n"
        "[00:02.50]<00:02.50>Three <00:02.70>four!<00:03.20>\n"
    )
    assert render(hand(), "lrc", TWO_LINES) == (
        "[00:00.00]<00:00.00>One <00:00.40>two. <00:02.50>Three <00:02.70>four!<00:03.20>\n"
    )
    late = make_alignment("So long", [(3723.004, 3723.2), (3723.3, 3724.0)])
    assert render(late, "lrc") == "[62:03.00]<62:03.00>So <62:03.30>long<62:04.00>\n"


LRC_LINE = re.compile(r"\[(\d{2,}):(\d{2})\.(\d{2})\](.*)")
LRC_TAG = re.compile(r"<(\d{2,}):(\d{2})\.(\d{2})>")


def lrc_cs(minutes: str, seconds: str, centis: str) -> int:
    assert int(seconds) < 60
    return (int(minutes) * 60 + int(seconds)) * 100 + int(centis)


def parse_lrc(text: str) -> list[tuple[int, list[tuple[int, str]]]]:
    """Enhanced LRC, read independently: each line's time and its (word time, text) pairs."""
    assert text.endswith("\n") and "\r" not in text
    lines = []
    for row in text[:-1].split("\n"):
        found = LRC_LINE.fullmatch(row)
        assert found, row
        parts = LRC_TAG.split(found.group(4))
        words = [(lrc_cs(*parts[k : k + 3]), parts[k + 3]) for k in range(1, len(parts), 4)]
        lines.append((lrc_cs(*found.groups()[:3]), [(-1, parts[0]), *words]))
    return lines


@pytest.mark.parametrize("alignment", samples(), ids=IDS)
def test_lrc_reads_back_with_monotonic_times_and_every_word(alignment):
    lines = parse_lrc(render(alignment, "lrc"))
    cues = group_cues(alignment)
    assert len(lines) == len(cues)
    for (line_time, parts), cue in zip(lines, cues, strict=True):
        start, end = cue_ms(cue)
        assert abs(line_time * 10 - start) <= 10
        (_, before), *tagged = parts
        texts = [before] + [t for _, t in tagged]
        assert "".join(texts) == cue.flat_text  # the tags removed, the cue's text is left
        # Before each word's tag, the space that leads to it; the last tag ends the line.
        *words, (last_time, last_text) = tagged
        assert last_text == "" and abs(last_time * 10 - end) <= 10
        assert [t.rstrip() for _, t in words] == [p.strip() for p in cue.pieces]
        times = [line_time] + [t for t, _ in tagged]
        assert times[1] == line_time
        assert all(a <= b for a, b in itertools.pairwise(times))
    assert all(a[0] < b[0] for a, b in itertools.pairwise(lines))


# --- WebVTT with word timestamps ----------------------------------------------------------------

WORD_TIMES = WriteOptions(word_timestamps=True)


def test_webvtt_word_timestamps_by_hand():
    assert render(hand(), "vtt", replace(TWO_LINES, word_timestamps=True)) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:03.200\n"
        "One<00:00:00.400> two.\n"
        "<00:00:02.500>Three<00:00:02.700> four!\n"
    )
    # Escaped text; the stamp goes before the text leading to the word; words at one instant
    # share the stamp of the first of them.
    same = make_alignment("a < b & c", [(0.0, 0.2), (0.5, 0.5), (0.5, 0.9)])
    assert render(same, "vtt", WORD_TIMES) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:00.900\na<00:00:00.500> &lt; b &amp; c\n"
    )


def test_webvtt_without_word_timestamps_is_unchanged():
    assert render(hand(), "vtt", TWO_LINES) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:03.200\nOne two.\nThree four!\n"
    )


VTT_STAMP = re.compile(r"<(\d{2}):(\d{2}):(\d{2})\.(\d{3})>")


@pytest.mark.parametrize("alignment", samples(), ids=IDS)
def test_webvtt_word_timestamps_lie_within_their_cue_and_increase(alignment):
    text = render(alignment, "vtt", WORD_TIMES)
    captions = webvtt.from_buffer(io.StringIO(text)).captions
    cues = group_cues(alignment)
    assert [html.unescape(c.text) for c in captions] == [c.text for c in cues]
    stamps_seen = 0
    for caption, cue in zip(captions, cues, strict=True):
        start, end = caption.start_time.in_milliseconds(), caption.end_time.in_milliseconds()
        assert (start, end) == cue_ms(cue)
        stamps = [
            ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)
            for h, m, s, ms in VTT_STAMP.findall(caption.raw_text)
        ]
        assert len(stamps) <= max(len(cue.words) - 1, 0)
        assert all(start < t < end for t in stamps), (stamps, start, end)
        assert all(a < b for a, b in itertools.pairwise(stamps))
        # Nothing else looks like a tag: the text's own "<" is escaped.
        assert "<" not in VTT_STAMP.sub("", caption.raw_text)
        stamps_seen += len(stamps)
    if alignment.text == LONG_ENGLISH:  # words 0.4 s apart: each but a cue's first has one
        assert stamps_seen == len(alignment.words) - len(cues)


# --- cues by transcript lines, in every cue format ----------------------------------------------

LYRICS = "One two.\nThree four!"  # words close together: automatic cues would make one cue
LINES = WriteOptions(cues=CueOptions(mode="lines"))


def lyrics() -> Alignment:
    return make_alignment(LYRICS, [(0.0, 0.3), (0.4, 0.7), (0.8, 1.1), (1.2, 1.5)])


def test_automatic_cues_would_join_the_lyrics():
    assert [c.flat_text for c in group_cues(lyrics())] == ["One two. Three four!"]


def test_lines_mode_in_srt_vtt_ass_and_lrc():
    expected = [(0, 700, "One two."), (800, 1500, "Three four!")]
    parsed = list(srt.parse(render(lyrics(), "srt", LINES)))
    assert [
        (round(s.start.total_seconds() * 1000), round(s.end.total_seconds() * 1000), s.content)
        for s in parsed
    ] == expected
    captions = webvtt.from_buffer(io.StringIO(render(lyrics(), "vtt", LINES))).captions
    assert [
        (c.start_time.in_milliseconds(), c.end_time.in_milliseconds(), c.text) for c in captions
    ] == expected
    events = pysubs2.SSAFile.from_string(render(lyrics(), "ass", LINES)).events
    assert [(e.start, e.end, e.plaintext) for e in events] == expected
    assert render(lyrics(), "lrc", LINES) == (
        "[00:00.00]<00:00.00>One <00:00.40>two.<00:00.70>\n"
        "[00:00.80]<00:00.80>Three <00:01.20>four!<00:01.50>\n"
    )


def test_lines_mode_in_textgrid_whisperx_and_verbose_json(tmp_path):
    path = tmp_path / "lyrics.TextGrid"
    path.write_text(render(lyrics(), "textgrid", LINES), encoding="utf-8")
    grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=False)
    assert [(e.start, e.end, e.label) for e in grid.getTier("cues").entries] == [
        (0.0, 0.7, "One two."),
        (0.8, 1.5, "Three four!"),
    ]
    doc = json.loads(render(lyrics(), "whisperx", LINES))
    assert [(s["start"], s["end"], s["text"], len(s["words"])) for s in doc["segments"]] == [
        (0.0, 0.7, "One two.", 2),
        (0.8, 1.5, "Three four!", 2),
    ]
    verbose = TranscriptionVerbose.model_validate_json(render(lyrics(), "verbose_json", LINES))
    assert [s.text for s in verbose.segments or []] == ["One two.", "Three four!"]
    assert verbose.text == LYRICS


def test_lines_mode_without_spans_is_refused_by_every_cue_format():
    alignment = make_alignment(LYRICS, spans=False)
    for name in ("srt", "vtt", "ass", "lrc", "textgrid", "whisperx", "verbose_json"):
        with pytest.raises(ValueError, match="span in the transcript"):
            render(alignment, name, LINES)
    render(alignment, "json", LINES)  # word-level formats have no cues to make
