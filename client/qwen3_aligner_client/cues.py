"""Grouping aligned words into subtitle cues: readable lines, sane timing.

Cue text is built from the words' ``display`` forms and the transcript between them, so
punctuation and casing survive ("Hello, world!" rather than "Hello world"). A cue holds at most
``max_lines`` lines of at most ``max_chars_per_line`` columns (full-width CJK characters take two
columns) and lasts at most ``max_duration`` seconds, except where a single word alone exceeds a
limit; a silence longer than ``max_pause`` always ends a cue. When a cue must end otherwise, it
ends after the last sentence (. ! ? 。 ...) that fits, else after a clause (, ; : 、 ...) if that
keeps the cue reasonably full, else after the last word that fits.

With ``mode="lines"`` the transcript's author decides instead: each line of the transcript that
holds more than whitespace becomes exactly one cue, of one line (its text as written, runs of
whitespace collapsed), however long; the line and duration limits and ``max_pause`` do not apply.
Units are placed on lines by their ``char_start`` in the transcript, so this mode needs a server
that sends spans. A line without any unit (only punctuation or symbols, say "♪" or "---") has no
time of its own: it is shown right after the cue before it (from 0 for the first), for
``min_duration`` at most, never past the next timed cue's start.

Times are whole milliseconds (what SRT and WebVTT can carry). Cues never run backwards and never
overlap; a cue shorter than ``min_duration`` is stretched into the silence after it, never past
the next cue's start, and a cue that would still have no length gets one millisecond.
"""

from __future__ import annotations

import bisect
import itertools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from .results import AlignedWord, Alignment

MS_PER_SECOND = 1000
SENTENCE_END = frozenset(".!?…。！？‼⁇⁈⁉")
CLAUSE_END = frozenset(",;:，、；：‚¸–—")
# Closing quotes and brackets that may follow the punctuation that ends a word ("fox.)", "好。」").
CLOSING = "\"'”’»›)]}）」』】〉》"
CLAUSE_BREAK_MIN_FILL = 0.3  # a clause break must keep at least this share of what would fit
SENTENCE_BONUS = 0.6  # line-break preference, as a share of max_chars_per_line squared
CLAUSE_BONUS = 0.3

CueMode = Literal["auto", "lines"]
CUE_MODES: tuple[str, ...] = get_args(CueMode)  # auto: the limits below; lines: the transcript's


@dataclass(frozen=True)
class CueOptions:
    """Limits for grouping words into cues, or ``mode="lines"``: one cue per transcript line."""

    max_chars_per_line: int = 42  # columns; a full-width CJK character takes two
    max_lines: int = 2
    max_duration: float = 7.0  # seconds
    min_duration: float = 0.5  # seconds; shorter cues are stretched into the silence after them
    max_pause: float = 1.5  # seconds; a longer silence between two words always ends a cue
    mode: CueMode = "auto"  # "lines": each non-blank transcript line is one cue (min_duration only)

    def __post_init__(self) -> None:
        if self.mode not in CUE_MODES:
            raise ValueError(f"cue mode must be one of {', '.join(CUE_MODES)}, got {self.mode!r}")
        if self.max_chars_per_line < 1 or self.max_lines < 1:
            raise ValueError("max_chars_per_line and max_lines must be at least 1")
        if self.max_duration <= 0 or self.min_duration < 0 or self.max_pause < 0:
            raise ValueError(
                "max_duration must be positive, min_duration and max_pause not negative"
            )


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: words ``words`` of the alignment, shown as ``lines``.

    ``pieces`` cut ``flat_text`` at the words, for formats that time each word (karaoke): one
    piece per word, its label with what stands before it in the cue (``"".join(pieces) ==
    flat_text``); free-standing punctuation after the last word goes with it. ``line_pieces`` do
    the same for each of ``lines`` (``"".join(line_pieces[k]) == lines[k]``). A cue without words
    (a transcript line holding no unit, ``mode="lines"``) has no pieces (``()``, and ``((),)``
    for its one line): its text belongs to no word.
    """

    start: float  # seconds, whole milliseconds
    end: float  # seconds, > start
    lines: tuple[str, ...]
    words: range  # indices into Alignment.words
    flat_text: str  # the cue's text on one line
    pieces: tuple[str, ...]  # one per word of ``words``
    line_pieces: tuple[tuple[str, ...], ...]  # one tuple per line, one piece per word on it

    @property
    def text(self) -> str:
        """The cue's lines joined with newlines, as subtitle formats show them."""
        return "\n".join(self.lines)


def to_ms(seconds: float) -> int:
    """Seconds to whole milliseconds (never negative)."""
    return max(0, round(seconds * MS_PER_SECOND))


def monotonic_times(words: Sequence[AlignedWord]) -> list[tuple[int, int]]:
    """Word times in milliseconds with starts never going backwards and each end >= its start."""
    out: list[tuple[int, int]] = []
    last_start = 0
    for word in words:
        start = max(to_ms(word.start), last_start)
        out.append((start, max(to_ms(word.end), start)))
        last_start = start
    return out


def tiling_intervals(times: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Turn ``(start, end)`` ms pairs into strictly increasing, disjoint, non-empty intervals.

    A start before the previous end moves to it, and an empty interval gets one millisecond
    (pushing what follows), so formats such as TextGrid that need proper intervals can hold them.
    """
    out: list[tuple[int, int]] = []
    last_end = 0
    for start, end in times:
        start = max(start, last_end)
        end = max(end, start + 1)
        out.append((start, end))
        last_end = end
    return out


def display_width(text: str) -> int:
    """Columns ``text`` takes on screen: wide and full-width characters count two, marks none."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def _ends_with(label: str, marks: frozenset[str]) -> bool:
    stripped = label.rstrip(CLOSING)
    return bool(stripped) and stripped[-1] in marks


def _unspaced(ch: str) -> bool:
    """Whether ``ch`` belongs to a script written without spaces between words."""
    name = unicodedata.name(ch, "")
    return name.startswith(("CJK", "HIRAGANA", "KATAKANA")) or "IDEOGRAPH" in name


def _collapsed(text: str) -> str:
    """``text`` with each run of whitespace (line breaks too) turned into one space."""
    return re.sub(r"\s+", " ", text)


def separators(alignment: Alignment) -> list[str]:
    """What goes between consecutive words' labels: the transcript between their displays
    (whitespace collapsed to one space) when the server sent spans, else a space, or nothing
    between characters of scripts written without spaces."""
    words = alignment.words
    text = alignment.text
    seps: list[str] = []
    for left, right in itertools.pairwise(words):
        if (
            left.display_end is not None
            and right.display_start is not None
            and left.display
            and right.display
            and 0 <= left.display_end <= right.display_start <= len(text)
        ):
            seps.append(_collapsed(text[left.display_end : right.display_start]))
        elif _unspaced(left.label[-1]) and _unspaced(right.label[0]):
            seps.append("")
        else:
            seps.append(" ")
    return seps


class _Layout:
    """Widths and texts of word runs, for fitting runs into lines."""

    def __init__(self, labels: list[str], seps: list[str], options: CueOptions) -> None:
        self.labels = labels
        self.seps = seps
        self.options = options
        self.token_prefix = [0]
        for label in labels:
            self.token_prefix.append(self.token_prefix[-1] + display_width(label))
        self.sep_prefix = [0]
        for sep in seps:
            self.sep_prefix.append(self.sep_prefix[-1] + display_width(sep))
        limit = options.max_chars_per_line
        self.bonus = [
            SENTENCE_BONUS * limit * limit
            if _ends_with(label, SENTENCE_END)
            else CLAUSE_BONUS * limit * limit
            if _ends_with(label, CLAUSE_END)
            else 0.0
            for label in labels
        ]

    def width(self, a: int, b: int) -> int:
        """Columns of words ``a..b-1`` on one line."""
        tokens = self.token_prefix[b] - self.token_prefix[a]
        return tokens + self.sep_prefix[b - 1] - self.sep_prefix[a]

    def pieces(self, a: int, b: int) -> list[str]:
        """Words ``a..b-1`` on one line, one piece per word: its label after what stands before
        it in the transcript (nothing for the first)."""
        parts = [self.labels[a]] + [self.seps[k - 1] + self.labels[k] for k in range(a + 1, b)]
        if b - 1 < len(self.seps):
            # Free-standing punctuation after the last word ("word — next") stays on this line.
            trailing = self.seps[b - 1].strip()
            if trailing:
                parts[-1] += (" " if self.seps[b - 1][:1].isspace() else "") + trailing
        return parts

    def text(self, a: int, b: int) -> str:
        """Words ``a..b-1`` on one line, with what stands between them in the transcript."""
        return "".join(self.pieces(a, b))

    def wrap(self, a: int, b: int) -> list[tuple[int, int]] | None:
        """Best split of words ``a..b-1`` into at most ``max_lines`` lines, or None if they do not
        fit. Fewer, balanced lines are preferred, and line breaks after punctuation."""
        limit = self.options.max_chars_per_line
        max_lines = self.options.max_lines
        infinity = float("inf")
        # best[k][m]: (cost, back pointer) for words a..k-1 laid out in m lines
        best: list[list[tuple[float, int]]] = [
            [(infinity, -1)] * (max_lines + 1) for _ in range(b + 1)
        ]
        best[a][0] = (0.0, -1)
        for end in range(a + 1, b + 1):
            for start in range(end - 1, a - 1, -1):
                width = self.width(start, end)
                if width > limit and end - start > 1:
                    break
                slack = max(limit - width, 0)
                bonus = self.bonus[end - 1] if end < b else 0.0
                line_cost = slack * slack - bonus
                for m in range(1, max_lines + 1):
                    before = best[start][m - 1][0]
                    if before + line_cost < best[end][m][0]:
                        best[end][m] = (before + line_cost, start)
        lines_used = min(range(1, max_lines + 1), key=lambda m: best[b][m][0])
        if best[b][lines_used][0] == infinity:
            return None
        spans: list[tuple[int, int]] = []
        end, m = b, lines_used
        while end > a:
            start = best[end][m][1]
            spans.append((start, end))
            end, m = start, m - 1
        return spans[::-1]


def _trimmed(parts: Sequence[str]) -> tuple[str, ...]:
    """``parts`` without the whitespace around their concatenation: ``"".join`` of the result is
    ``"".join(parts).strip()``."""
    out = list(parts)
    for k in range(len(out)):
        out[k] = out[k].lstrip()
        if out[k]:
            break
    for k in range(len(out) - 1, -1, -1):
        out[k] = out[k].rstrip()
        if out[k]:
            break
    return tuple(out)


def group_cues(alignment: Alignment, options: CueOptions | None = None) -> list[Cue]:
    """Group the alignment's words into subtitle cues (see the module docstring for the rules).

    Raises ``ValueError`` for ``mode="lines"`` when the words carry no spans in the transcript.
    """
    options = options or CueOptions()
    if options.mode == "lines":
        return _line_cues(alignment, options)
    words = alignment.words
    if not words:
        return []
    layout = _Layout([w.label for w in words], separators(alignment), options)
    times = monotonic_times(words)
    max_ms = to_ms(options.max_duration)
    pause_ms = to_ms(options.max_pause)

    def fits(a: int, b: int) -> bool:
        """Whether words a..b-1 fit one cue's duration and lines."""
        if times[b - 1][1] - times[a][0] > max_ms:
            return False
        return layout.wrap(a, b) is not None

    groups: list[tuple[int, int]] = []
    a = 0
    while a < len(words):
        b = a + 1
        latest_end = times[a][1]
        paused = False
        while b < len(words):
            if times[b][0] - latest_end > pause_ms:
                paused = True
                break
            if not fits(a, b + 1):
                break
            latest_end = max(latest_end, times[b][1])
            b += 1
        if b < len(words) and not paused:
            b = _best_break(layout, a, b)
        groups.append((a, b))
        a = b
    cues = []
    for (a, b), (start, end) in zip(groups, _cue_times(times, groups, options), strict=True):
        spans = layout.wrap(a, b) or [(a, b)]  # a lone over-long word is its own line
        line_pieces = tuple(_trimmed(layout.pieces(x, y)) for x, y in spans)
        pieces = _trimmed(layout.pieces(a, b))
        cues.append(
            Cue(
                start=start / MS_PER_SECOND,
                end=end / MS_PER_SECOND,
                lines=tuple("".join(p) for p in line_pieces),
                words=range(a, b),
                flat_text="".join(pieces),
                pieces=pieces,
                line_pieces=line_pieces,
            )
        )
    return cues


def _best_break(layout: _Layout, a: int, b: int) -> int:
    """Where to end a cue that cannot take words past ``b``: after the last sentence end, else
    after the last clause end that keeps the cue reasonably full, else at ``b``."""
    for k in range(b, a, -1):
        if _ends_with(layout.labels[k - 1], SENTENCE_END):
            return k
    full = layout.width(a, b)
    for k in range(b, a, -1):
        if layout.width(a, k) < CLAUSE_BREAK_MIN_FILL * full:
            break
        if _ends_with(layout.labels[k - 1], CLAUSE_END):
            return k
    return b


def _cue_times(
    times: list[tuple[int, int]], groups: list[tuple[int, int]], options: CueOptions
) -> list[tuple[int, int]]:
    """Start and end (ms) of the cues holding words ``a..b-1`` for each ``(a, b)`` of ``groups``,
    by the module docstring's rules; an empty group (``a == b``) follows the cue before it."""
    min_ms = to_ms(options.min_duration)
    natural_starts = [times[a][0] if b > a else None for a, b in groups]
    next_starts: list[int | None] = []  # the natural start of the next cue with words
    upcoming: int | None = None
    for natural in reversed(natural_starts):
        next_starts.append(upcoming)
        if natural is not None:
            upcoming = natural
    next_starts.reverse()
    spans: list[tuple[int, int]] = []
    last_end = 0
    for (a, b), natural, next_start in zip(groups, natural_starts, next_starts, strict=True):
        start = last_end if natural is None else max(natural, last_end)
        end = max((t[1] for t in times[a:b]), default=start)
        if next_start is not None and end > next_start:
            end = next_start  # words that overlap the next cue's first word end where it starts
        if end - start < min_ms:
            wanted = start + min_ms
            end = max(end, wanted if next_start is None else min(wanted, next_start))
        end = max(end, start + 1)
        spans.append((start, end))
        last_end = end
    return spans


def transcript_lines(text: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` character spans of the lines of ``text`` that hold more than
    whitespace, line breaks excluded (breaks as ``str.splitlines`` finds them)."""
    spans: list[tuple[int, int]] = []
    offset = 0
    for line in text.splitlines(keepends=True):
        content = line.splitlines()[0]
        if content.strip():
            spans.append((offset, offset + len(content)))
        offset += len(line)
    return spans


def _line_cues(alignment: Alignment, options: CueOptions) -> list[Cue]:
    """One cue per non-blank line of the transcript (``mode="lines"``)."""
    words = alignment.words
    text = alignment.text
    lines = transcript_lines(text)
    line_starts = [start for start, _ in lines]
    line_of: list[int] = []
    display_ends: list[int] = []
    for k, word in enumerate(words):
        if word.char_start is None or word.display_end is None:
            raise ValueError(
                "cues by transcript lines need each unit's span in the transcript, which this "
                "server did not send (use the automatic cues)"
            )
        line = bisect.bisect_right(line_starts, word.char_start) - 1
        if line < 0 or word.char_start >= lines[line][1] or (line_of and line < line_of[-1]):
            raise ValueError(
                f"unit {k} ({word.text!r}) at character {word.char_start} is not on a line "
                "of the transcript after the units before it"
            )
        line_of.append(line)
        display_ends.append(word.display_end)
    groups = []
    for line in range(len(lines)):
        a = bisect.bisect_left(line_of, line)
        groups.append((a, bisect.bisect_right(line_of, line)))
    cues = []
    times = monotonic_times(words)
    for (a, b), (line_start, line_end), (start, end) in zip(
        groups, lines, _cue_times(times, groups, options), strict=True
    ):
        cut = line_start
        parts: list[str] = []
        for display_end in display_ends[a:b]:
            word_end = min(max(display_end, cut), line_end)
            parts.append(_collapsed(text[cut:word_end]))
            cut = word_end
        tail = _collapsed(text[cut:line_end])
        if parts:
            parts[-1] += tail
        pieces = _trimmed(parts)
        flat_text = "".join(pieces) if parts else tail.strip()
        cues.append(
            Cue(
                start=start / MS_PER_SECOND,
                end=end / MS_PER_SECOND,
                lines=(flat_text,),
                words=range(a, b),
                flat_text=flat_text,
                pieces=pieces,
                line_pieces=(pieces,),
            )
        )
    return cues
