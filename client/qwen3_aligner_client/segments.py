"""Cues that guide the aligner: the ``SEGMENTS`` input, and reading them from SRT or WebVTT.

A subtitle file is turned into cues the server accepts (in order, not overlapping, each at most
:data:`MAX_CUE_SECONDS` long) as follows:

* cues are sorted by start time (SRT files are not always in order);
* markup is stripped: WebVTT tags (``<v Speaker>``, ``<i>``, ``<c.yellow>``, inline timestamps),
  SRT's HTML-like tags (``<i>``, ``<b>``, ``<font color=...>``) and ASS override blocks
  (``{\\an8}``); entities such as ``&amp;`` are decoded;
* line breaks and runs of whitespace inside a cue become one space;
* cues left without text are dropped;
* overlapping cues (two speakers at once, sloppy timing) are resolved pairwise against the cue
  kept before: when the later cue ends after the earlier one and the earlier one keeps at least
  half its length, the earlier cue is **trimmed** to end where the later one starts (the usual
  few-frame overlaps of subtitle files); otherwise (a cue inside another, or two cues over the
  same words) the two are **merged** into one cue spanning both, texts joined by a space, in
  start order. A merge that would exceed :data:`MAX_CUE_SECONDS` trims instead;
* a cue longer than :data:`MAX_CUE_SECONDS` in the file is **rejected** with a
  :class:`SubtitleError` naming it: where to split its text is a guess the aligner cannot
  correct, so the file's author (or a plain transcript without cue times) should decide.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

MAX_CUE_SECONDS = 180.0  # the server's window_seconds: the longest cue it accepts
SUBTITLE_SUFFIXES = {".srt": "srt", ".vtt": "vtt"}

# WebVTT tags and SRT's HTML-like tags: "<" then a letter, "/" or a digit (VTT timestamps), so a
# free-standing "a < b" survives.
_TAG = re.compile(r"<[/A-Za-z0-9][^<>\n]*>")
_ASS_OVERRIDE = re.compile(r"\{\\[^{}]*\}")  # {\an8}, {\i1}, ...
_SRT_TIMING = re.compile(
    r"^\s*\d+:\d{2}:\d{2}[,.]\d{1,3}\s*-->\s*\d+:\d{2}:\d{2}[,.]\d{1,3}", re.MULTILINE
)


class SubtitleError(ValueError):
    """A subtitle file that cannot be parsed, or cues the server could not take."""


@dataclass(frozen=True)
class Segment:
    """A cue: align ``text`` within ``start`` to ``end`` seconds of the audio."""

    start: float
    end: float
    text: str

    @property
    def duration(self) -> float:
        """The cue's length in seconds."""
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        """The cue as one entry of the ``SEGMENTS`` JSON list."""
        return {"start": self.start, "end": self.end, "text": self.text}

    def shifted(self, seconds: float) -> Segment:
        """The same cue ``seconds`` later (earlier when negative)."""
        return Segment(self.start + seconds, self.end + seconds, self.text)


# A Segment, a (start, end, text) tuple, or a {"start", "end", "text"} mapping.
SegmentLike: TypeAlias = Segment | tuple[float, float, str] | Mapping[str, Any]


def to_segment(item: SegmentLike) -> Segment:
    """Read one cue given as a :class:`Segment`, a tuple or a mapping.

    Raises ``ValueError`` when it is none of these or its times are not numbers; order, overlap
    and length are the server's to check (it answers with a message naming the cue).
    """
    if isinstance(item, Segment):
        return item
    if isinstance(item, Mapping):
        try:
            start, end, text = item["start"], item["end"], item["text"]
        except KeyError as e:
            raise ValueError(f'a cue needs "start", "end" and "text"; {e} is missing') from None
    elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 3:
        start, end, text = item
    else:
        raise ValueError(f"a cue must be (start, end, text) or a dict, got {item!r}")
    if not isinstance(text, str):
        raise ValueError(f"a cue's text must be a string, got {text!r}")
    try:
        return Segment(float(start), float(end), text)
    except (TypeError, ValueError):
        raise ValueError(f"a cue's start and end must be seconds, got {start!r}, {end!r}") from None


def to_segments(items: Iterable[SegmentLike]) -> list[Segment]:
    """Read a list of cues (see :func:`to_segment`)."""
    return [to_segment(item) for item in items]


def clean_cue_text(raw: str) -> str:
    """A cue's text without markup, entities decoded, whitespace (line breaks too) collapsed."""
    text = _ASS_OVERRIDE.sub("", _TAG.sub("", raw))
    # A byte-order mark left inside a file (files joined together) is no text of the cue.
    return " ".join(html.unescape(text).replace("\ufeff", " ").split())


def subtitle_kind(name: str | Path | None, content: str) -> str | None:
    """``"srt"`` or ``"vtt"`` when the transcript is a subtitle file, else ``None``.

    Decided by the file name's suffix (``.srt``, ``.vtt``), else by the content: a ``WEBVTT``
    header, or SRT's structure (an index line, then a ``00:00:01,000 --> 00:00:02,000`` line).
    """
    if name is not None and str(name) != "-":
        kind = SUBTITLE_SUFFIXES.get(Path(name).suffix.lower())
        if kind is not None:
            return kind
    head = content.lstrip("\ufeff")
    if re.match(r"WEBVTT(?:[ \t]|\r?\n|$)", head):
        return "vtt"
    lines = head.lstrip().splitlines()
    if len(lines) >= 2 and lines[0].strip().isdigit() and _SRT_TIMING.match(lines[1]):
        return "srt"
    return None


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SubtitleError(
            "reading subtitle files needs the 'subtitles' extra: "
            "pip install 'qwen3-aligner-client[subtitles]'"
        ) from None


def _parse_srt(content: str) -> list[Segment]:
    srt = _require("srt")

    try:
        subtitles = list(srt.parse(content))
    except (srt.SRTParseError, ValueError) as e:
        raise SubtitleError(f"not a valid SRT file: {e}") from None
    return [
        Segment(s.start.total_seconds(), s.end.total_seconds(), clean_cue_text(s.content))
        for s in subtitles
    ]


def _parse_vtt(content: str) -> list[Segment]:
    webvtt = _require("webvtt")
    from webvtt.errors import MalformedFileError

    try:
        captions = webvtt.from_buffer(io.StringIO(content)).captions
    except (MalformedFileError, ValueError) as e:
        raise SubtitleError(f"not a valid WebVTT file: {str(e) or 'malformed'}") from None
    return [
        Segment(
            c.start_time.in_milliseconds() / 1000.0,
            c.end_time.in_milliseconds() / 1000.0,
            clean_cue_text(c.raw_text),
        )
        for c in captions
    ]


def _describe(cue: Segment) -> str:
    return f"{cue.start:.3f}-{cue.end:.3f} s ({cue.text[:40]!r})"


def tidy_cues(cues: Iterable[Segment], max_cue: float = MAX_CUE_SECONDS) -> list[Segment]:
    """Make cues acceptable to the server: sorted, non-empty, not overlapping, not too long.

    The rules are the module docstring's. Raises :class:`SubtitleError` for a cue that runs
    backwards or is longer than ``max_cue`` seconds.
    """
    ordered: list[Segment] = []
    for cue in cues:
        if cue.end < cue.start or cue.start < 0:
            raise SubtitleError(f"cue {_describe(cue)} ends before it starts or starts before 0")
        if cue.duration > max_cue:
            raise SubtitleError(
                f"cue {_describe(cue)} is {cue.duration:.1f} s long; cues may be at most "
                f"{max_cue:g} s: split it, or align the plain text without cue times"
            )
        if cue.text and cue.end > cue.start:
            ordered.append(cue)
    ordered.sort(key=lambda c: c.start)  # stable: cues with one start keep the file's order
    out: list[Segment] = []
    for cue in ordered:
        if not out or cue.start >= out[-1].end:
            out.append(cue)
            continue
        last = out[-1]
        trim = cue.end > last.end and cue.start - last.start >= last.duration / 2
        merged_end = max(last.end, cue.end)
        if trim or merged_end - last.start > max_cue:
            out[-1] = Segment(last.start, cue.start, last.text)
            if out[-1].end <= out[-1].start:  # cannot happen after sorting; kept as a guard
                raise SubtitleError(f"cues {_describe(last)} and {_describe(cue)} collide")
            out.append(cue)
        else:
            out[-1] = Segment(last.start, merged_end, f"{last.text} {cue.text}")
    return out


def parse_subtitles(content: str, kind: str) -> list[Segment]:
    """Parse an SRT (``kind="srt"``) or WebVTT (``"vtt"``) document into tidy cues.

    Raises :class:`SubtitleError` for a malformed file, one without any cue text, or cues the
    server could not take (see :func:`tidy_cues`).
    """
    if kind == "srt":
        raw = _parse_srt(content.lstrip("\ufeff"))
    elif kind == "vtt":
        raw = _parse_vtt(content.lstrip("\ufeff"))
    else:
        raise ValueError(f"subtitle kind must be srt or vtt, got {kind!r}")
    cues = tidy_cues(raw)
    if not cues:
        raise SubtitleError(f"the {kind.upper()} file holds no cue with text")
    return cues
