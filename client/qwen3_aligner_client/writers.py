"""Writing an :class:`~qwen3_aligner_client.results.Alignment` as JSON (ours, WhisperX's or
OpenAI's ``verbose_json``), SRT, WebVTT, ASS, LRC, Praat TextGrid, CTM, TSV, an HTML report or PNG
pictures, and saving files atomically.

Word-level formats (CTM, TSV, JSON) carry the aligner's times as they are; WhisperX's and OpenAI's
documents carry them rounded to milliseconds, grouped into the cues as segments. Subtitle formats
(SRT, WebVTT, ASS, LRC) carry cues from :func:`~qwen3_aligner_client.cues.group_cues`; ASS (karaoke
``\\k`` tags, on by default), LRC (always) and WebVTT (inline timestamps, off by default) also
time each word inside its cue, with the word times made monotonic and kept within the cue. TextGrid
has a ``words`` tier (one interval per aligned unit) and a ``cues`` tier (one interval per cue);
Praat needs intervals that tile each tier, so gaps become empty intervals and word times are made
strictly increasing with :func:`~qwen3_aligner_client.cues.tiling_intervals`.

HTML (:mod:`~qwen3_aligner_client.report`) and PNG (:mod:`~qwen3_aligner_client.plot`) picture
the alignment over its audio, so they need :attr:`WriteOptions.audio`. PNG is binary and may take
several files: write it with :func:`save`, which writes any format to a path (atomically, with
:func:`~qwen3_aligner_client.files.write_atomic`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cues import (
    MS_PER_SECOND,
    Cue,
    CueOptions,
    group_cues,
    monotonic_times,
    tiling_intervals,
    to_ms,
)
from .files import write_atomic
from .plot import PlotOptions, save_png
from .report import LANGUAGE_TAGS, html_report
from .results import AlignedWord, Alignment

TSV_COLUMNS = ("start", "end", "text", "display", "char_start", "char_end", "score", "repaired")
MS_PER_CENTISECOND = 10  # ASS and LRC count time in centiseconds
SECONDS_DECIMALS = 3  # WhisperX and verbose_json times: seconds rounded to milliseconds
SCORE_DECIMALS = 3  # WhisperX rounds its word scores so
# verbose_json segment fields that only a decoder has, given values no OpenAI rule flags: one
# window (seek 0) decoded at temperature 0, no token ids, no repetition, certainly speech.
OPENAI_SEEK = 0  # mel frames (10 ms) from the start to the window the segment came from
OPENAI_TEMPERATURE = 0.0
OPENAI_COMPRESSION_RATIO = 1.0  # OpenAI: above 2.4 the decoder repeated itself
OPENAI_NO_SPEECH_PROB = 0.0
LOGPROB_FLOOR = -20.0  # avg_logprob of a segment whose mean score is 0 (ln 0 is not JSON)

# One style for every event: white text, outlined, centred at the bottom of a 1080p frame. Karaoke
# shows a word's text in SecondaryColour (grey) until the word is spoken, then PrimaryColour.
ASS_PLAY_RES = (1920, 1080)  # PlayResX, PlayResY: the coordinate space of sizes and margins
ASS_STYLE_FIELDS = (
    "Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, "
    "Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, "
    "Alignment, MarginL, MarginR, MarginV, Encoding"
)
ASS_DEFAULT_STYLE = (
    "Default,Arial,64,&H00FFFFFF,&H00A0A0A0,&H00000000,&H80000000,0,0,0,0,100,100,0,0,1,3,1,2,"
    "80,80,60,1"
)
ASS_EVENT_FIELDS = "Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text"


@dataclass(frozen=True)
class WriteOptions:
    """Settings some formats use: cue limits (SRT, VTT, ASS, LRC, TextGrid, WhisperX and
    verbose_json segments), word timing inside cues (ASS, VTT), the recording's name (CTM's first
    column, the title of HTML and PNG), and the audio with PNG's layout (HTML, PNG)."""

    cues: CueOptions = field(default_factory=CueOptions)
    recording: str = "audio"  # usually the audio file's stem
    karaoke: bool = True  # ASS: a \k tag times each word; False: plain text
    word_timestamps: bool = False  # WebVTT: an inline <timestamp> before each word after the first
    # (samples, sample_rate) of the audio that was aligned: mono (or channels mixed down)
    audio: tuple[Any, int] | None = field(default=None, compare=False, repr=False)
    plot: PlotOptions = field(default_factory=PlotOptions)

    def require_audio(self, format_name: str) -> tuple[Any, int]:
        """The audio, or a ``ValueError`` saying that ``format_name`` needs it."""
        if self.audio is None:
            raise ValueError(
                f"the {format_name} format needs the audio: WriteOptions(audio=(samples, rate))"
            )
        return self.audio


def _timestamp(ms: int, decimal: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{decimal}{millis:03d}"


def to_json(alignment: Alignment, options: WriteOptions) -> str:
    """The ``ALIGNMENT`` document, indented."""
    return alignment.to_json(indent=2) + "\n"


def to_srt(alignment: Alignment, options: WriteOptions) -> str:
    """SubRip: numbered cues, ``HH:MM:SS,mmm`` times."""
    blocks = []
    for number, cue in enumerate(group_cues(alignment, options.cues), start=1):
        span = f"{_timestamp(to_ms(cue.start), ',')} --> {_timestamp(to_ms(cue.end), ',')}"
        blocks.append(f"{number}\n{span}\n{cue.text}\n")
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _vtt_timed_text(cue: Cue, times: Sequence[tuple[int, int]]) -> str:
    """The cue's lines with a ``<HH:MM:SS.mmm>`` timestamp before each word after the first (before
    the space that leads to it, as YouTube writes them). WebVTT wants each strictly inside the cue
    and later than the one before, so a word that starts no later than that (words at one
    instant) or outside the cue has none and shows with the word before it."""
    start, end = to_ms(cue.start), to_ms(cue.end)
    last = start
    word = cue.words.start
    lines = []
    for pieces in cue.line_pieces:
        parts = []
        for piece in pieces:
            at = times[word][0]
            if word > cue.words.start and last < at < end:
                parts.append(f"<{_timestamp(at, '.')}>")
                last = at
            parts.append(_vtt_escape(piece))
            word += 1
        lines.append("".join(parts))
    return "\n".join(lines)


def to_vtt(alignment: Alignment, options: WriteOptions) -> str:
    """WebVTT: ``HH:MM:SS.mmm`` times, cue text with ``&``, ``<`` and ``>`` escaped; with
    ``options.word_timestamps``, inline timestamps where words start (karaoke-style captions)."""
    blocks = ["WEBVTT\n"]
    times = monotonic_times(alignment.words)
    for cue in group_cues(alignment, options.cues):
        span = f"{_timestamp(to_ms(cue.start), '.')} --> {_timestamp(to_ms(cue.end), '.')}"
        timed = options.word_timestamps and cue.words
        text = _vtt_timed_text(cue, times) if timed else _vtt_escape(cue.text)
        blocks.append(f"{span}\n{text}\n")
    return "\n".join(blocks)


def _centiseconds(ms: int) -> int:
    """Milliseconds to the nearest centisecond (halves up), as ASS and LRC count time."""
    return (ms + MS_PER_CENTISECOND // 2) // MS_PER_CENTISECOND


def _cue_centiseconds(cues: Sequence[Cue]) -> list[tuple[int, int]]:
    """The cues' spans in centiseconds, still ordered, disjoint and non-empty after rounding."""
    return tiling_intervals(
        [(_centiseconds(to_ms(c.start)), _centiseconds(to_ms(c.end))) for c in cues]
    )


def _word_centiseconds(
    cue: Cue, span: tuple[int, int], times: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Start and end (cs) of each word of ``cue`` within ``span``: starts never going backwards,
    each end between its start and the next word's start."""
    low, high = span
    starts: list[int] = []
    for k in cue.words:
        low = min(max(_centiseconds(times[k][0]), low), high)
        starts.append(low)
    ends = []
    for n, k in enumerate(cue.words):
        limit = starts[n + 1] if n + 1 < len(starts) else high
        ends.append(min(max(_centiseconds(times[k][1]), starts[n]), limit))
    return list(zip(starts, ends, strict=True))


def _ass_time(cs: int) -> str:
    hours, rest = divmod(cs, 360_000)
    minutes, rest = divmod(rest, 6000)
    seconds, centis = divmod(rest, 100)
    return f"{hours:d}:{minutes:02d}:{seconds:02d}.{centis:02d}"


def _ass_escape(text: str) -> str:
    """Text that ASS renderers show as it is: ``\\``, ``{`` and ``}`` escaped with a backslash,
    as ffmpeg writes them."""
    return text.replace("\\", "\\\\").replace("{", "\\{").replace("}", "\\}")


def _ass_karaoke(cue: Cue, span: tuple[int, int], times: Sequence[tuple[int, int]]) -> str:
    """The cue's lines with a ``{\\k<cs>}`` before each word; silences before and between words,
    and after the last, are ``{\\k<cs>}`` tags of their own, so the tags add up to the event."""
    words = _word_centiseconds(cue, span, times)
    cursor = span[0]
    word = 0
    lines = []
    for pieces in cue.line_pieces:
        parts = []
        for piece in pieces:
            start, end = words[word]
            if start > cursor:
                parts.append(f"{{\\k{start - cursor}}}")
            parts.append(f"{{\\k{end - start}}}{_ass_escape(piece)}")
            cursor = end
            word += 1
        lines.append("".join(parts))
    if span[1] > cursor:
        lines[-1] += f"{{\\k{span[1] - cursor}}}"
    return "\\N".join(lines)


def to_ass(alignment: Alignment, options: WriteOptions) -> str:
    """Advanced SubStation Alpha (v4.00+): one Dialogue event per cue in one Default style, lines
    broken with ``\\N``, ``H:MM:SS.cc`` times; karaoke ``\\k`` tags per word unless
    ``options.karaoke`` is False."""
    cues = group_cues(alignment, options.cues)
    times = monotonic_times(alignment.words)
    width, height = ASS_PLAY_RES
    lines = [
        "[Script Info]",
        "ScriptType: v4.00+",
        f"PlayResX: {width}",
        f"PlayResY: {height}",
        "WrapStyle: 0",
        "ScaledBorderAndShadow: yes",
        "",
        "[V4+ Styles]",
        f"Format: {ASS_STYLE_FIELDS}",
        f"Style: {ASS_DEFAULT_STYLE}",
        "",
        "[Events]",
        f"Format: {ASS_EVENT_FIELDS}",
    ]
    for cue, span in zip(cues, _cue_centiseconds(cues), strict=True):
        if options.karaoke and cue.words:
            text = _ass_karaoke(cue, span, times)
        else:
            text = "\\N".join(_ass_escape(line) for line in cue.lines)
        start, end = _ass_time(span[0]), _ass_time(span[1])
        lines.append(f"Dialogue: 0,{start},{end},Default,,0,0,0,,{text}")
    return "\n".join(lines) + "\n"


def _lrc_time(cs: int) -> str:
    minutes, rest = divmod(cs, 6000)
    return f"{minutes:02d}:{rest // 100:02d}.{rest % 100:02d}"


def to_lrc(alignment: Alignment, options: WriteOptions) -> str:
    """Enhanced LRC: one ``[mm:ss.xx]`` line per cue (its lines joined), a ``<mm:ss.xx>`` tag
    where each word starts (after the space before it) and a last one where the cue ends."""
    cues = group_cues(alignment, options.cues)
    times = monotonic_times(alignment.words)
    rows = []
    for cue, span in zip(cues, _cue_centiseconds(cues), strict=True):
        if not cue.words:
            rows.append(f"[{_lrc_time(span[0])}]{cue.flat_text}")
            continue
        parts = [f"[{_lrc_time(span[0])}]"]
        for piece, (start, _) in zip(cue.pieces, _word_centiseconds(cue, span, times), strict=True):
            word = piece.lstrip()
            parts.append(f"{piece[: len(piece) - len(word)]}<{_lrc_time(start)}>{word}")
        parts.append(f"<{_lrc_time(span[1])}>")
        rows.append("".join(parts))
    return "".join(row + "\n" for row in rows)


def _seconds(value: float) -> float:
    return round(value, SECONDS_DECIMALS)


def _whisperx_word(word: AlignedWord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "word": word.label,
        "start": _seconds(word.start),
        "end": _seconds(word.end),
    }
    if word.score is not None:  # WhisperX leaves "score" out of words it could not align
        out["score"] = round(word.score, SCORE_DECIMALS)
    return out


def language_code(language: str) -> str:
    """The ISO 639-1 code of a language's English name (``yue`` for Cantonese, which has none);
    a name not known here comes back lowercased."""
    return LANGUAGE_TAGS.get(language, language.lower())


def to_whisperx(alignment: Alignment, options: WriteOptions) -> str:
    """WhisperX's aligned-result JSON: ``segments`` (the cues, each with its ``words``),
    ``word_segments`` (every word) and ``language`` (an ISO 639-1 code). A word is
    ``{"word", "start", "end", "score"}``: its display form, seconds to the millisecond and its
    score (0-1, 3 decimals; left out when the server sent none)."""
    segments = [
        {
            "start": _seconds(cue.start),
            "end": _seconds(cue.end),
            "text": cue.flat_text,
            "words": [_whisperx_word(alignment.words[k]) for k in cue.words],
        }
        for cue in group_cues(alignment, options.cues)
    ]
    document = {
        "segments": segments,
        "word_segments": [_whisperx_word(w) for w in alignment.words],
        "language": language_code(alignment.language),
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def _avg_logprob(words: Sequence[AlignedWord]) -> float:
    """ln of the words' mean score, so that OpenAI's rule (below -1, the transcription failed)
    flags segments with a mean score below 1/e; 0.0 without words or scores."""
    scores = [w.score for w in words]
    if not scores or any(score is None for score in scores):
        return 0.0
    mean = sum(score or 0.0 for score in scores) / len(scores)
    return round(math.log(mean), 4) if mean > 0 else LOGPROB_FLOOR


def to_verbose_json(alignment: Alignment, options: WriteOptions) -> str:
    """OpenAI's ``verbose_json`` transcription (``openai.types.audio.TranscriptionVerbose``):
    ``language`` as a lowercase English name, ``duration``, the transcript as ``text``, ``words``
    (each ``{"word", "start", "end"}``: the unit as aligned, seconds to the millisecond) and the
    cues as ``segments``. A segment's decoder fields carry neutral values (seek 0, no tokens,
    temperature 0, compression ratio 1, no-speech probability 0) except ``avg_logprob`` (see
    :func:`_avg_logprob`)."""
    segments = []
    for number, cue in enumerate(group_cues(alignment, options.cues)):
        segments.append(
            {
                "id": number,
                "seek": OPENAI_SEEK,
                "start": _seconds(cue.start),
                "end": _seconds(cue.end),
                "text": cue.flat_text,
                "tokens": [],
                "temperature": OPENAI_TEMPERATURE,
                "avg_logprob": _avg_logprob([alignment.words[k] for k in cue.words]),
                "compression_ratio": OPENAI_COMPRESSION_RATIO,
                "no_speech_prob": OPENAI_NO_SPEECH_PROB,
            }
        )
    document = {
        "task": "transcribe",  # what OpenAI's API sends; its SDK ignores it
        "language": alignment.language.lower(),
        "duration": alignment.duration,
        "text": alignment.text,
        "words": [
            {"word": w.text, "start": _seconds(w.start), "end": _seconds(w.end)}
            for w in alignment.words
        ],
        "segments": segments,
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def _praat_string(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _praat_number(ms: int) -> str:
    return format(ms / MS_PER_SECOND, ".3f").rstrip("0").rstrip(".")


def _interval_tier(name: str, intervals: Sequence[tuple[int, int, str]], xmax: int) -> list[str]:
    """One IntervalTier in Praat's long text format, with gaps filled by empty intervals."""
    filled: list[tuple[int, int, str]] = []
    cursor = 0
    for start, end, text in intervals:
        if start > cursor:
            filled.append((cursor, start, ""))
        filled.append((start, end, text))
        cursor = end
    if cursor < xmax or not filled:
        filled.append((cursor, xmax, ""))
    lines = [
        '        class = "IntervalTier"',
        f"        name = {_praat_string(name)}",
        "        xmin = 0",
        f"        xmax = {_praat_number(xmax)}",
        f"        intervals: size = {len(filled)}",
    ]
    for number, (start, end, text) in enumerate(filled, start=1):
        lines += [
            f"        intervals [{number}]:",
            f"            xmin = {_praat_number(start)}",
            f"            xmax = {_praat_number(end)}",
            f"            text = {_praat_string(text)}",
        ]
    return lines


def to_textgrid(alignment: Alignment, options: WriteOptions) -> str:
    """Praat TextGrid (long text format) with a ``words`` and a ``cues`` interval tier."""
    words = tiling_intervals(monotonic_times(alignment.words))
    cues = group_cues(alignment, options.cues)
    cue_spans = [(to_ms(c.start), to_ms(c.end), c.flat_text) for c in cues]
    word_spans = [(s, e, w.text) for (s, e), w in zip(words, alignment.words, strict=True)]
    ends = [e for _, e, _ in word_spans] + [e for _, e, _ in cue_spans]
    xmax = max([to_ms(alignment.duration), 1, *ends])
    lines = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        "xmin = 0",
        f"xmax = {_praat_number(xmax)}",
        "tiers? <exists>",
        "size = 2",
        "item []:",
    ]
    for number, (name, spans) in enumerate((("words", word_spans), ("cues", cue_spans)), 1):
        lines.append(f"    item [{number}]:")
        lines += _interval_tier(name, spans, xmax)
    return "\n".join(lines) + "\n"


def _recording_id(name: str) -> str:
    return re.sub(r"\s+", "_", name.strip()) or "audio"


def to_ctm(alignment: Alignment, options: WriteOptions) -> str:
    """NIST CTM: ``recording channel start duration word confidence`` per unit, times in seconds.

    The confidence column is the unit's score (0-1); it is left out for servers that send none.
    """
    recording = _recording_id(options.recording)
    rows = [
        f"{recording} 1 {w.start:.3f} {max(w.end - w.start, 0.0):.3f} {w.text}"
        + ("" if w.score is None else f" {w.score:.4f}")
        for w in alignment.words
    ]
    return "".join(row + "\n" for row in rows)


def to_tsv(alignment: Alignment, options: WriteOptions) -> str:
    """Tab-separated values with a header: times in seconds, unit, display form, span, score
    (0-1) and repaired (``true``/``false``); fields a server did not send are empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(TSV_COLUMNS)
    for w in alignment.words:
        writer.writerow(
            [
                f"{w.start:.3f}",
                f"{w.end:.3f}",
                w.text,
                w.label,
                "" if w.char_start is None else w.char_start,
                "" if w.char_end is None else w.char_end,
                "" if w.score is None else f"{w.score:.4f}",
                "" if w.repaired is None else str(w.repaired).lower(),
            ]
        )
    return buffer.getvalue()


def to_html(alignment: Alignment, options: WriteOptions) -> str:
    """A self-contained HTML page to see and hear the alignment (needs ``options.audio``)."""
    samples, rate = options.require_audio("html")
    return html_report(alignment, samples, rate, title=options.recording)


def _png_is_binary(alignment: Alignment, options: WriteOptions) -> str:
    raise ValueError("png is an image, not text: write it with save(alignment, 'png', path)")


def _save_png(alignment: Alignment, options: WriteOptions, path: Path) -> list[Path]:
    samples, rate = options.require_audio("png")
    return save_png(path, alignment, samples, rate, options.plot, title=options.recording)


@dataclass(frozen=True)
class Format:
    """An output format: its name on the command line, file suffix and renderer.

    ``render`` gives text formats' text. Formats with a ``save`` are written to files only (by
    :func:`save`); ``needs_audio`` formats picture the audio and need ``WriteOptions.audio``.
    """

    name: str
    suffix: str
    render: Callable[[Alignment, WriteOptions], str]
    needs_audio: bool = False
    save: Callable[[Alignment, WriteOptions, Path], list[Path]] | None = None


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("json", ".json", to_json),
        Format("whisperx", ".whisperx.json", to_whisperx),
        Format("verbose_json", ".verbose.json", to_verbose_json),
        Format("srt", ".srt", to_srt),
        Format("vtt", ".vtt", to_vtt),
        Format("ass", ".ass", to_ass),
        Format("lrc", ".lrc", to_lrc),
        Format("textgrid", ".TextGrid", to_textgrid),
        Format("ctm", ".ctm", to_ctm),
        Format("tsv", ".tsv", to_tsv),
        Format("html", ".html", to_html, needs_audio=True),
        Format("png", ".png", _png_is_binary, needs_audio=True, save=_save_png),
    )
}


def formats_without_audio() -> list[Format]:
    """The formats that need no audio, in :data:`FORMATS` order (what ``qwen3-align -f all``
    writes): every text format but HTML."""
    return [f for f in FORMATS.values() if not f.needs_audio]


def format_of_path(path: str | os.PathLike[str]) -> Format | None:
    """The format whose suffix ends the file name of ``path`` (case-insensitive, the longest
    suffix first: ``a.whisperx.json`` is ``whisperx``, ``a.json`` is ``json``), or None."""
    name = Path(path).name.lower()
    by_length = sorted(FORMATS.values(), key=lambda f: len(f.suffix), reverse=True)
    return next((f for f in by_length if name.endswith(f.suffix.lower())), None)


def get_format(format_name: str) -> Format:
    """The format named ``format_name`` (a key of :data:`FORMATS`), or a ``ValueError``."""
    try:
        return FORMATS[format_name]
    except KeyError:
        raise ValueError(
            f"unknown format {format_name!r}; use one of: {', '.join(FORMATS)}"
        ) from None


def render(alignment: Alignment, format_name: str, options: WriteOptions | None = None) -> str:
    """``alignment`` as text in the format named ``format_name`` (a key of :data:`FORMATS`).

    ``html`` needs ``options.audio``; ``png`` is not text (use :func:`save`).
    """
    return get_format(format_name).render(alignment, options or WriteOptions())


def save(
    alignment: Alignment,
    format_name: str,
    path: str | os.PathLike[str],
    options: WriteOptions | None = None,
) -> list[Path]:
    """Write ``alignment`` to ``path`` in any format, atomically; returns the files written.

    That is ``path`` alone, except for PNG recordings longer than a page (see
    :func:`qwen3_aligner_client.plot.page_paths`).
    """
    fmt = get_format(format_name)
    options = options or WriteOptions()
    if fmt.save is not None:
        return fmt.save(alignment, options, Path(path))
    write_atomic(path, fmt.render(alignment, options))
    return [Path(path)]
