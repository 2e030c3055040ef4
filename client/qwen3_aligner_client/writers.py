"""Writing an :class:`~qwen3_aligner_client.results.Alignment` as JSON, SRT, WebVTT, Praat
TextGrid, CTM, TSV, an HTML report or PNG pictures, and saving files atomically.

Word-level formats (CTM, TSV, JSON) carry the aligner's times as they are. Subtitle formats
(SRT, WebVTT) carry cues from :func:`~qwen3_aligner_client.cues.group_cues`. TextGrid has a
``words`` tier (one interval per aligned unit) and a ``cues`` tier (one interval per cue); Praat
needs intervals that tile each tier, so gaps become empty intervals and word times are made
strictly increasing with :func:`~qwen3_aligner_client.cues.tiling_intervals`.

HTML (:mod:`~qwen3_aligner_client.report`) and PNG (:mod:`~qwen3_aligner_client.plot`) picture
the alignment over its audio, so they need :attr:`WriteOptions.audio`. PNG is binary and may take
several files: write it with :func:`save`, which writes any format to a path (atomically, with
:func:`~qwen3_aligner_client.files.write_atomic`).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cues import (
    MS_PER_SECOND,
    CueOptions,
    group_cues,
    monotonic_times,
    tiling_intervals,
    to_ms,
)
from .files import write_atomic
from .plot import PlotOptions, save_png
from .report import html_report
from .results import Alignment

TSV_COLUMNS = ("start", "end", "text", "display", "char_start", "char_end")


@dataclass(frozen=True)
class WriteOptions:
    """Settings some formats use: cue limits (SRT, VTT, TextGrid), the recording's name (CTM's
    first column, the title of HTML and PNG), and the audio with PNG's layout (HTML, PNG)."""

    cues: CueOptions = field(default_factory=CueOptions)
    recording: str = "audio"  # usually the audio file's stem
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


def to_vtt(alignment: Alignment, options: WriteOptions) -> str:
    """WebVTT: ``HH:MM:SS.mmm`` times, cue text with ``&``, ``<`` and ``>`` escaped."""
    blocks = ["WEBVTT\n"]
    for cue in group_cues(alignment, options.cues):
        span = f"{_timestamp(to_ms(cue.start), '.')} --> {_timestamp(to_ms(cue.end), '.')}"
        blocks.append(f"{span}\n{_vtt_escape(cue.text)}\n")
    return "\n".join(blocks)


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
    """NIST CTM: ``recording channel start duration word`` per unit, times in seconds."""
    recording = _recording_id(options.recording)
    rows = [
        f"{recording} 1 {w.start:.3f} {max(w.end - w.start, 0.0):.3f} {w.text}"
        for w in alignment.words
    ]
    return "".join(row + "\n" for row in rows)


def to_tsv(alignment: Alignment, options: WriteOptions) -> str:
    """Tab-separated values with a header: times in seconds, unit, display form and span."""
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
        Format("srt", ".srt", to_srt),
        Format("vtt", ".vtt", to_vtt),
        Format("textgrid", ".TextGrid", to_textgrid),
        Format("ctm", ".ctm", to_ctm),
        Format("tsv", ".tsv", to_tsv),
        Format("html", ".html", to_html, needs_audio=True),
        Format("png", ".png", _png_is_binary, needs_audio=True, save=_save_png),
    )
}


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
