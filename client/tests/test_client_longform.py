"""Long recordings on the client: SRT/WebVTT cues, groups of cues per request, merged results.

Unit tests cover cue parsing (markup, overlaps, empty and over-long cues), grouping, audio slices
and merging; the integration tests run ``qwen3-align`` against the real test server with a
10-minute recording and its subtitles, and with a 6-minute plain transcript.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from datetime import timedelta

import numpy as np
import pytest
import soundfile
import srt
from client_samples import make_alignment
from qwen3_aligner_client import (
    AlignedWord,
    AlignerClient,
    Alignment,
    RequestRejectedError,
    Segment,
    SubtitleError,
    merge_alignments,
    parse_subtitles,
    plan_groups,
    subtitle_kind,
    tidy_cues,
)
from qwen3_aligner_client.cli import EXIT_OK, EXIT_USAGE, main
from qwen3_aligner_client.longform import align_groups, slice_audio
from qwen3_aligner_client.segments import clean_cue_text, to_segment

# ---------------------------------------------------------------------------------------------
# Cue text and file detection


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("<v Roger Bingham>We are in <i>New</i> York</v>", "We are in New York"),
        ("{\\an8}<i>Hello</i>\nthere", "Hello there"),
        ('<font color="#ff0000"><b>Loud</b></font>  and\tclear', "Loud and clear"),
        ("<c.yellow>hi</c> <00:00:03.500>there", "hi there"),
        ("Tom &amp; Jerry &lt;3", "Tom & Jerry <3"),
        ("a < b and c > d", "a < b and c > d"),
        ("<i> </i>\n", ""),
    ],
)
def test_markup_is_stripped_and_lines_become_spaces(raw, clean):
    assert clean_cue_text(raw) == clean


SRT_SAMPLE = """1
00:00:01,000 --> 00:00:03,000
<i>Hello</i> there,
my friend.

2
00:00:04,000 --> 00:00:05,000


3
00:00:06,000 --> 00:00:08,500
{\\an8}Second <b>cue</b> &amp; more.
"""

VTT_SAMPLE = """WEBVTT
Kind: captions

NOTE a comment that is not a cue

STYLE
::cue { color: yellow }

intro
00:01.000 --> 00:03.000 align:start position:10%
<v Roger>Hello</v> <c.loud>there</c>,
my friend.

00:00:04.000 --> 00:00:05.000
<i> </i>

00:00:06.000 --> 00:00:08.500
<v.first Ann>Second <00:00:07.000>cue &amp; more.
"""


def test_subtitle_kind_by_suffix_then_by_content():
    assert subtitle_kind("talk.SRT", "whatever") == "srt"
    assert subtitle_kind("talk.vtt", "") == "vtt"
    assert subtitle_kind("-", SRT_SAMPLE) == "srt"
    assert subtitle_kind("talk.txt", VTT_SAMPLE) == "vtt"
    assert subtitle_kind(None, "\ufeffWEBVTT\n\n") == "vtt"
    assert subtitle_kind("talk.txt", "\n\n12\n00:01:02.5 --> 00:01:03,000\nhi\n") == "srt"
    assert subtitle_kind("talk.txt", "Hello, world.\nThe end.") is None
    assert subtitle_kind("talk.txt", "WEBVTTX is a word") is None
    assert subtitle_kind("talk.txt", "1\nfish, 2 fish\n") is None


@pytest.mark.parametrize(("content", "kind"), [(SRT_SAMPLE, "srt"), (VTT_SAMPLE, "vtt")])
def test_srt_and_vtt_give_the_same_clean_cues(content, kind):
    assert parse_subtitles(content, kind) == [
        Segment(1.0, 3.0, "Hello there, my friend."),
        Segment(6.0, 8.5, "Second cue & more."),
    ]


def test_malformed_and_empty_files_are_rejected():
    with pytest.raises(SubtitleError, match="not a valid SRT"):
        parse_subtitles("1\n00:00:01,000 --> garbage\nhello\n", "srt")
    with pytest.raises(SubtitleError, match="not a valid WebVTT"):
        parse_subtitles("hello\n", "vtt")
    with pytest.raises(SubtitleError, match="no cue with text"):
        parse_subtitles("1\n00:00:01,000 --> 00:00:02,000\n<i></i>\n", "srt")


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        ("\ufeff\ufeff1\n00:00:01,000 --> 00:00:02,500\nhi\n", "srt"),
        ("\ufeff\ufeffWEBVTT\n\n00:00:01.000 --> 00:00:02.500\nhi\n", "vtt"),
    ],
)
def test_a_file_saved_with_its_byte_order_mark_twice_still_parses(content, kind):
    assert parse_subtitles(content, kind) == [Segment(1.0, 2.5, "hi")]


def test_text_before_the_first_cue_or_the_header_is_rejected():
    srt_file = "X1\n00:00:01,000 --> 00:00:02,000\nhi\n"
    with pytest.raises(SubtitleError, match=r"^not a valid SRT file: .*unmatched content: 'X'"):
        parse_subtitles(srt_file, "srt")
    vtt_file = "XWEBVTT\n\n00:00:01.000 --> 00:00:02.000\nhi\n"
    with pytest.raises(SubtitleError) as error:
        parse_subtitles(vtt_file, "vtt")
    assert str(error.value) == "not a valid WebVTT file: Invalid format"


def test_an_unknown_kind_and_a_file_without_text_are_named_in_the_error():
    with pytest.raises(ValueError) as error:
        parse_subtitles("1\n00:00:01,000 --> 00:00:02,000\nhi\n", "ass")
    assert str(error.value) == "subtitle kind must be srt or vtt, got 'ass'"
    with pytest.raises(SubtitleError) as error:
        parse_subtitles("1\n00:00:01,000 --> 00:00:02,000\n<i></i>\n", "srt")
    assert str(error.value) == "the SRT file holds no cue with text"
    with pytest.raises(SubtitleError) as error:
        parse_subtitles("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n<b> </b>\n", "vtt")
    assert str(error.value) == "the VTT file holds no cue with text"


@pytest.mark.parametrize(
    ("module", "content", "kind"),
    [
        ("srt", "1\n00:00:01,000 --> 00:00:02,000\nhi\n", "srt"),
        ("webvtt", "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nhi\n", "vtt"),
    ],
)
def test_without_the_subtitles_extra_the_error_says_how_to_install_it(
    monkeypatch, module, content, kind
):
    monkeypatch.setitem(sys.modules, module, None)  # makes importing it fail
    with pytest.raises(SubtitleError) as error:
        parse_subtitles(content, kind)
    assert str(error.value) == (
        "reading subtitle files needs the 'subtitles' extra: "
        "pip install 'qwen3-aligner-client[subtitles]'"
    )


# ---------------------------------------------------------------------------------------------
# Overlaps, order and long cues


def test_cues_are_sorted_and_empty_or_zero_length_ones_dropped():
    cues = [Segment(5, 6, "b"), Segment(1, 2, "a"), Segment(3, 4, ""), Segment(7, 7, "c")]
    assert tidy_cues(cues) == [Segment(1, 2, "a"), Segment(5, 6, "b")]


def test_a_small_overlap_trims_the_earlier_cue():
    cues = [Segment(1.0, 3.04, "one"), Segment(3.0, 5.0, "two"), Segment(4.5, 9.0, "three")]
    assert tidy_cues(cues) == [
        Segment(1.0, 3.0, "one"),
        Segment(3.0, 4.5, "two"),
        Segment(4.5, 9.0, "three"),
    ]


def test_a_cue_inside_another_or_over_the_same_time_is_merged():
    inside = [Segment(10, 20, "outer words"), Segment(12, 15, "inner")]
    assert tidy_cues(inside) == [Segment(10, 20, "outer words inner")]
    same = [Segment(1, 4, "Speaker one."), Segment(1, 4, "Speaker two.")]
    assert tidy_cues(same) == [Segment(1, 4, "Speaker one. Speaker two.")]
    early = [Segment(0, 10, "first"), Segment(2, 12, "second")]  # keeps < half: merged
    assert tidy_cues(early) == [Segment(0, 12, "first second")]


def test_a_merge_past_the_cue_limit_trims_instead():
    cues = [Segment(0, 170, "long"), Segment(1, 175, "a"), Segment(10, 185, "b")]
    out = tidy_cues(cues)
    assert out == [Segment(0, 10, "long a"), Segment(10, 185, "b")]
    assert all(b.start >= a.end for a, b in itertools.pairwise(out))
    assert all(c.duration <= 180 for c in out)


def test_a_cue_over_180_seconds_is_rejected_with_its_times():
    with pytest.raises(SubtitleError, match=r"10\.000-200\.000 s .* 190\.0 s long.*at most 180"):
        tidy_cues([Segment(10, 200, "a monologue")])
    with pytest.raises(SubtitleError, match="ends before it starts"):
        tidy_cues([Segment(5, 4, "backwards")])


def test_a_cue_or_a_merge_of_exactly_180_seconds_is_kept():
    assert tidy_cues([Segment(0, 180, "whole")]) == [Segment(0, 180, "whole")]
    cues = [Segment(0, 170, "long"), Segment(1, 180, "a")]  # merged: 0 to 180 s
    assert tidy_cues(cues) == [Segment(0, 180, "long a")]


@pytest.mark.parametrize(
    ("cues", "tidy"),
    [
        # the later cue starts at exactly half of the earlier one: trimmed
        ([Segment(0, 10, "a"), Segment(5, 12, "b")], [Segment(0, 5, "a"), Segment(5, 12, "b")]),
        # starts after a third but before half of the earlier one: merged
        ([Segment(0, 12, "a"), Segment(5, 14, "b")], [Segment(0, 14, "a b")]),
        # starts late but ends with the earlier one: it is inside it, merged
        ([Segment(0, 10, "outer"), Segment(6, 10, "tail")], [Segment(0, 10, "outer tail")]),
        # the same early overlap 100 s into the recording: merged
        (
            [Segment(100, 110, "first"), Segment(102, 112, "second")],
            [Segment(100, 112, "first second")],
        ),
    ],
)
def test_where_an_overlap_turns_from_a_merge_into_a_trim(cues, tidy):
    assert tidy_cues(cues) == tidy


def test_a_long_cue_is_named_by_its_first_40_characters():
    text = "And so, friends, this monologue runs on far past the limit"
    with pytest.raises(SubtitleError) as error:
        tidy_cues([Segment(10, 200, text)])
    assert str(error.value) == (
        "cue 10.000-200.000 s ('And so, friends, this monologue runs on ') is 190.0 s long; "
        "cues may be at most 180 s: split it, or align the plain text without cue times"
    )


def test_a_three_character_string_or_a_cue_without_text_is_not_a_cue():
    with pytest.raises(ValueError) as error:
        to_segment("123")  # type: ignore[arg-type]
    assert str(error.value) == "a cue must be (start, end, text) or a dict, got '123'"
    with pytest.raises(ValueError) as error:
        to_segment((1, 2, 3))  # type: ignore[arg-type]
    assert str(error.value) == "a cue's text must be a string, got 3"


def test_cues_given_as_tuples_dicts_or_segments():
    assert to_segment((1, 2.5, "a")) == Segment(1.0, 2.5, "a")
    assert to_segment({"start": 1, "end": 2, "text": "b", "speaker": "x"}) == Segment(1, 2, "b")
    assert to_segment(Segment(0, 1, "c")) == Segment(0, 1, "c")
    with pytest.raises(ValueError, match='"start", "end" and "text"'):
        to_segment({"start": 1, "text": "b"})
    with pytest.raises(ValueError, match="must be seconds"):
        to_segment(("one", 2, "b"))
    with pytest.raises(ValueError, match=r"\(start, end, text\)"):
        to_segment("1 2 three")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Groups, slices and merging


def spaced_cues(count: int, every: float, length: float) -> list[Segment]:
    return [Segment(k * every + 1, k * every + 1 + length, f"cue {k}") for k in range(count)]


def test_groups_cover_at_most_five_minutes_and_keep_every_cue_in_order():
    cues = spaced_cues(40, 15.0, 9.0)  # 1 s .. 595 s
    groups = plan_groups(cues, duration=600.0)
    assert [c for g in groups for c in g.cues] == cues
    assert len(groups) == 2
    for k, group in enumerate(groups):
        assert group.cues[-1].end - group.cues[0].start <= 300
        assert group.start == max(0.0, group.cues[0].start - 2.0)
        assert group.end == min(600.0, group.cues[-1].end + 2.0)
        if k:
            assert group.start >= groups[k - 1].cues[-1].end
    assert (groups[0].start, groups[-1].end) == (0.0, 597.0)


def test_slices_stop_at_the_neighbouring_groups_cues():
    cues = [Segment(0.5, 100, "a"), Segment(100.5, 299, "b"), Segment(300, 310, "c")]
    first, second = plan_groups(cues, duration=311.0)
    assert (first.start, first.end) == (0.0, 300.0)  # 1 s gap: not 2 s of padding
    assert (second.start, second.end) == (299.0, 311.0)
    single = plan_groups([Segment(0, 180, "x"), Segment(180, 360, "y")], duration=400)
    assert [len(g.cues) for g in single] == [1, 1]  # a cue is never split


def test_cues_past_the_end_of_the_audio():
    (group,) = plan_groups([Segment(1, 5, "a"), Segment(8, 12, "b")], duration=10.0)
    assert group.cues[-1] == Segment(8, 10.0, "b")
    with pytest.raises(SubtitleError, match=r"starts after the end of the 10\.00 s"):
        plan_groups([Segment(1, 5, "a"), Segment(10.5, 12, "b")], duration=10.0)


def test_a_slice_holds_its_cues_in_its_own_time():
    rate = 8000
    wave = np.arange(600 * rate, dtype=np.float32)
    cues = spaced_cues(40, 15.0, 9.0)
    for group in plan_groups(cues, 600.0):
        piece, offset, relative = slice_audio(wave, rate, group)
        assert piece[0] == offset * rate  # the slice's first sample is at ``offset`` seconds
        assert offset <= group.start and piece.shape[0] / rate >= group.end - offset
        for absolute, rel in zip(group.cues, relative, strict=True):
            assert rel.text == absolute.text
            assert rel.start == pytest.approx(absolute.start - offset, abs=1e-9)
            assert 0 <= rel.start < rel.end <= piece.shape[0] / rate


def test_merging_shifts_times_and_char_spans_and_rebuilds_the_joined_text():
    texts = [["Hello, world!", "Second cue."], ["Third, and (last) one?"]]
    parts = []
    for k, group in enumerate(texts):
        text = "\n".join(group)
        parts.append((100.0 * k + 0.5, make_alignment(text)))
    merged = merge_alignments(parts, duration=250.0)
    assert merged.text == "Hello, world!\nSecond cue.\nThird, and (last) one?"
    assert merged.duration == 250.0 and merged.language == "English"
    originals = [w for _, a in parts for w in a.words]
    assert [w.text for w in merged.words] == [w.text for w in originals]
    for word in merged.words:
        assert merged.text[word.char_start : word.char_end] == word.text
        assert merged.text[word.display_start : word.display_end] == word.display
    third = merged.words[4]
    assert third.text == "Third" and third.start == pytest.approx(100.5)
    assert merged.words[0].start == pytest.approx(0.5)
    with pytest.raises(ValueError):
        merge_alignments([], 1.0)


def test_merging_keeps_scores_and_summarises_them_over_all_words():
    parts = [(0.0, make_alignment("One two three.", scored=True)), (9.0, make_alignment("Four."))]
    assert merge_alignments(parts, 10.0).mean_score is None  # a part without scores
    parts[1] = (9.0, make_alignment("Four five six seven.", scored=True))
    merged = merge_alignments(parts, duration=20.0)
    originals = [w for _, a in parts for w in a.words]
    assert [(w.score, w.repaired) for w in merged.words] == [
        (w.score, w.repaired) for w in originals
    ]
    scores = [w.score for w in originals]
    assert merged.mean_score == pytest.approx(sum(scores) / len(scores))
    assert merged.repaired_share == pytest.approx(sum(w.repaired for w in originals) / 7)
    assert json.loads(merged.to_json())["mean_score"] == pytest.approx(merged.mean_score, abs=1e-6)


class CueEcho(AlignerClient):
    """Answers every cue request locally: each cue's words at its start, 80 ms each."""

    def __init__(self) -> None:
        super().__init__("fake:1")
        self.requests: list[tuple[float, list[Segment]]] = []

    def align(self, audio, text, language, segments=None, send=None):
        samples, rate = audio
        cues = [to_segment(s) for s in segments]
        self.requests.append((len(samples) / rate, cues))
        if all("♪" in c.text for c in cues):
            raise RequestRejectedError("input SEGMENTS has no alignable words")
        if any("boom" in c.text for c in cues):
            raise RequestRejectedError("input SEGMENTS[0] overlaps")
        joined = "\n".join(c.text for c in cues)
        words, base = [], 0
        for cue in cues:
            for m in re.finditer(r"\w+", cue.text):
                if "♪" in cue.text:
                    break
                t = cue.start + 0.08 * len([w for w in words if w.start >= cue.start])
                words.append(
                    AlignedWord(
                        m.group(), t, t + 0.08, base + m.start(), base + m.end(),
                        m.group(), base + m.start(), base + m.end(),
                    )
                )  # fmt: skip
            base += len(cue.text) + 1
        return Alignment("English", len(samples) / rate, joined, tuple(words))


def test_groups_are_sent_with_their_slices_and_merged_in_recording_order():
    rate = 8000
    wave = np.zeros(620 * rate, dtype=np.float32)
    cues = spaced_cues(40, 15.0, 9.0)
    cues[20] = Segment(cues[20].start, cues[20].end, "♪ ♪")
    groups = plan_groups(cues, 620.0, max_seconds=100.0)
    done = []
    client = CueEcho()
    merged = align_groups(client, wave, rate, groups, "en", concurrency=3, on_done=done.append)
    assert sorted(done, key=lambda g: g.start) == groups
    assert len(client.requests) == len(groups) > 5
    assert all(seconds <= 104 for seconds, _ in client.requests)
    assert merged.text == "\n".join(c.text for c in cues)
    assert merged.duration == 620.0
    expected = [(w, c) for c in cues if "♪" not in c.text for w in c.text.split()]
    assert [w.text for w in merged.words] == [w for w, _ in expected]
    for word, (_, cue) in zip(merged.words, expected, strict=True):
        assert cue.start <= word.start < cue.end
        assert merged.text[word.char_start : word.char_end] == word.text


def test_a_group_of_music_only_is_kept_as_text_and_other_failures_stop_the_run():
    rate = 8000
    wave = np.zeros(400 * rate, dtype=np.float32)
    music = [Segment(1, 5, "♪ ♪"), Segment(350, 355, "hello there")]
    merged = align_groups(CueEcho(), wave, rate, plan_groups(music, 400.0), "en")
    assert merged.text == "♪ ♪\nhello there"
    assert [(w.text, w.char_start) for w in merged.words] == [("hello", 4), ("there", 10)]
    with pytest.raises(RequestRejectedError, match="no alignable words"):
        align_groups(CueEcho(), wave, rate, plan_groups(music[:1], 400.0), "en")
    broken = [Segment(1, 5, "fine"), Segment(350, 355, "boom")]
    with pytest.raises(RequestRejectedError, match="overlaps"):
        align_groups(CueEcho(), wave, rate, plan_groups(broken, 400.0), "en")


def test_align_sends_segments_as_json_with_an_empty_text(monkeypatch):
    sent = {}

    def capture(self, payload, text, language, segments=None, context=None):
        sent.update(text=text, segments=segments)
        raise RequestRejectedError("stop here")

    monkeypatch.setattr(AlignerClient, "_inputs", capture)
    client = AlignerClient("fake:1")
    with pytest.raises(RequestRejectedError):
        client.align(
            (np.zeros(800), 8000), "ignored", "en", segments=[(0, 0.05, "a"), {"start": 0.05,
            "end": 0.1, "text": "b"}],
        )  # fmt: skip
    assert sent["text"] == ""
    assert json.loads(sent["segments"]) == [
        {"start": 0.0, "end": 0.05, "text": "a"},
        {"start": 0.05, "end": 0.1, "text": "b"},
    ]
    with pytest.raises(RequestRejectedError):
        client.align((np.zeros(800), 8000), "plain", "en")
    assert sent == {"text": "plain", "segments": None}


def test_progress_can_be_forced_or_hidden_but_not_both(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["a.wav", "t.srt", "-l", "en", "--progress", "--no-progress"])
    assert stop.value.code == EXIT_USAGE
    assert "not allowed with argument" in capsys.readouterr().err


def test_the_cli_rejects_bad_subtitles_before_contacting_a_server(tmp_path, capsys):
    audio = tmp_path / "a.wav"
    soundfile.write(audio, np.zeros(8000 * 10, dtype=np.float32), 8000)
    long_cue = tmp_path / "long.srt"
    long_cue.write_text("1\n00:00:00,000 --> 00:03:30,000\nhi\n", encoding="utf-8")
    late = tmp_path / "late.vtt"
    late.write_text("WEBVTT\n\n00:00:20.000 --> 00:00:21.000\nhi\n", encoding="utf-8")
    url = "127.0.0.1:9"  # nothing is contacted: these fail first
    assert main([str(audio), str(long_cue), "-l", "en", "--url", url]) == EXIT_USAGE
    assert "210.0 s long" in capsys.readouterr().err
    assert main([str(audio), str(late), "-l", "en", "--url", url]) == EXIT_USAGE
    assert "starts after the end of the 10.00 s of audio" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Against the real test server

RATE = 8000
WORDS = [
    "river",
    "stone",
    "garden",
    "window",
    "paper",
    "silver",
    "morning",
    "yellow",
    "candle",
    "forest",
    "little",
    "bright",
    "orange",
    "pocket",
    "winter",
    "summer",
    "thunder",
    "valley",
    "copper",
    "meadow",
]


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Noise under a syllable-rate envelope over a tone, at 8 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    wave = 0.3 * envelope * np.sin(2 * np.pi * 180.0 * t) + 0.05 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def recording_cues(seed: int = 7) -> list[tuple[float, float, list[str]]]:
    """About 40 cues over 10 minutes: (start, end, words), gaps of 2-8 s between them."""
    rng = np.random.default_rng(seed)
    cues, t = [], 2.0
    while True:
        length = float(rng.uniform(6.0, 12.0))
        if t + length > 595.0:
            return cues
        words = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), int(rng.integers(4, 12)))]
        cues.append((round(t, 3), round(t + length, 3), words))
        t += length + float(rng.uniform(2.0, 8.0))


def cue_line(words: list[str], k: int) -> str:
    """How cue ``k`` reads in the file: two lines, some markup, a full stop."""
    half = len(words) // 2
    first, second = " ".join(words[:half]), " ".join(words[half:])
    if k % 3 == 0:
        first = f"<i>{first}</i>"
    return f"{first}\n{second}."


def write_subtitles(path, cues, kind: str) -> None:
    if kind == "srt":
        subs = [
            srt.Subtitle(k + 1, timedelta(seconds=a), timedelta(seconds=b), cue_line(w, k))
            for k, (a, b, w) in enumerate(cues)
        ]
        path.write_text(srt.compose(subs, reindex=False), encoding="utf-8")
        return

    def stamp(seconds: float) -> str:
        ms = round(seconds * 1000)
        return (
            f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"
        )

    blocks = ["WEBVTT\n"]
    for k, (a, b, w) in enumerate(cues):
        blocks.append(f"{stamp(a)} --> {stamp(b)}\n<v Speaker {k % 2}>{cue_line(w, k)}</v>\n")
    path.write_text("\n".join(blocks), encoding="utf-8")


@pytest.fixture(scope="module")
def lecture(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lecture")
    audio = folder / "lecture.wav"
    soundfile.write(audio, speechlike(600.0, 1), RATE, subtype="PCM_16")
    return folder, audio, recording_cues()


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["srt", "vtt"])
def test_a_ten_minute_recording_with_subtitles_through_the_cli(server, lecture, kind, capsys):
    folder, audio, cues = lecture
    assert 35 <= len(cues) <= 50
    subtitles = folder / f"lecture.{kind}"
    write_subtitles(subtitles, cues, kind)
    out = folder / f"lecture.{kind}.json"
    argv = [audio, subtitles, "-l", "en", "-o", out, "--url", server.http_url, "--progress"]
    assert main([str(a) for a in argv]) == EXIT_OK
    groups = len(plan_groups([Segment(a, b, "x") for a, b, _ in cues], 600.0))
    assert groups >= 2
    err = capsys.readouterr().err
    assert f"{groups}/{groups}" in err  # the progress bar over the 5-minute groups reached its end

    alignment = Alignment.from_json(out.read_text(encoding="utf-8"))
    assert alignment.text == "\n".join(" ".join(w) + "." for _, _, w in cues)
    assert alignment.duration == pytest.approx(600.0)
    expected = [(word, a, b) for a, b, words in cues for word in words]
    assert [w.text for w in alignment.words] == [word for word, _, _ in expected]
    previous = 0.0
    for word, (_, a, b) in zip(alignment.words, expected, strict=True):
        assert previous <= word.start <= word.end
        assert a - 1.0 - 1e-6 <= word.start and word.end <= b + 1.0 + 1e-6
        assert alignment.text[word.char_start : word.char_end] == word.text
        previous = word.start


@pytest.mark.integration
def test_a_six_minute_plain_transcript_through_the_cli(server, tmp_path, capsys):
    audio = tmp_path / "talk.wav"
    soundfile.write(audio, speechlike(360.0, 2), RATE, subtype="PCM_16")
    rng = np.random.default_rng(3)
    words = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), 600)]
    text = " ".join(words)
    transcript = tmp_path / "talk.txt"
    transcript.write_text(text, encoding="utf-8")
    json_out = tmp_path / "talk.json"
    argv = [audio, transcript, "-l", "en", "-o", json_out, "--url", server.http_url, "--progress"]
    assert main([str(a) for a in argv]) == EXIT_OK
    assert "elapsed" in capsys.readouterr().err  # the spinner showed the time waited
    alignment = Alignment.from_json(json_out.read_text(encoding="utf-8"))
    assert [w.text for w in alignment.words] == words
    starts = [w.start for w in alignment.words]
    assert starts == sorted(starts) and starts[0] >= 0 and alignment.words[-1].end <= 360.0


@pytest.mark.parametrize("kind", ["srt", "vtt"])
def test_a_byte_order_mark_inside_a_file_is_no_text_of_its_cue(kind):
    head = "WEBVTT\n\n" if kind == "vtt" else "1\n"
    stamp = "00:00:01.000 --> 00:00:02.000" if kind == "vtt" else "00:00:01,000 --> 00:00:02,000"
    (cue,) = parse_subtitles(f"{head}{stamp}\nhi\n\ufeff", kind)
    assert cue.text == "hi"


def test_a_webvtt_error_without_words_is_called_malformed(monkeypatch):
    import webvtt

    def fail(*args, **kwargs):
        raise webvtt.errors.MalformedFileError()

    monkeypatch.setattr(webvtt, "from_buffer", fail)
    with pytest.raises(SubtitleError, match=r"^not a valid WebVTT file: malformed$"):
        parse_subtitles("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nhi\n", "vtt")
