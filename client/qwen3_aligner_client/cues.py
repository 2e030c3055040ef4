"""Grouping aligned words into subtitle cues: readable lines, sane timing.

Cue text is built from the words' ``display`` forms and the transcript between them, so
punctuation and casing survive ("Hello, world!" rather than "Hello world"). A cue holds at most
``max_lines`` lines of at most ``max_chars_per_line`` columns (full-width CJK characters take two
columns) and lasts at most ``max_duration`` seconds, except where a single word alone exceeds a
limit; a silence longer than ``max_pause`` always ends a cue. When a cue must end otherwise, it
ends after the last sentence (. ! ? 。 ...) that fits, else after a clause (, ; : 、 ...) if that
keeps the cue reasonably full, else after the last word that fits.

Times are whole milliseconds (what SRT and WebVTT can carry). Cues never run backwards and never
overlap; a cue shorter than ``min_duration`` is stretched into the silence after it, never past
the next cue's start, and a cue that would still have no length gets one millisecond.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from .results import AlignedWord, Alignment

MS_PER_SECOND = 1000
SENTENCE_END = frozenset(".!?…。！？‼⁇⁈⁉")
CLAUSE_END = frozenset(",;:，、；：‚¸–—")
# Closing quotes and brackets that may follow the punctuation that ends a word ("fox.)", "好。」").
CLOSING = "\"'”’»›)]}）」』】〉》"
CLAUSE_BREAK_MIN_FILL = 0.3  # a clause break must keep at least this share of what would fit
SENTENCE_BONUS = 0.6  # line-break preference, as a share of max_chars_per_line squared
CLAUSE_BONUS = 0.3


@dataclass(frozen=True)
class CueOptions:
    """Limits for grouping words into cues."""

    max_chars_per_line: int = 42  # columns; a full-width CJK character takes two
    max_lines: int = 2
    max_duration: float = 7.0  # seconds
    min_duration: float = 0.5  # seconds; shorter cues are stretched into the silence after them
    max_pause: float = 1.5  # seconds; a longer silence between two words always ends a cue

    def __post_init__(self) -> None:
        if self.max_chars_per_line < 1 or self.max_lines < 1:
            raise ValueError("max_chars_per_line and max_lines must be at least 1")
        if self.max_duration <= 0 or self.min_duration < 0 or self.max_pause < 0:
            raise ValueError(
                "max_duration must be positive, min_duration and max_pause not negative"
            )


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: words ``words`` of the alignment, shown as ``lines``."""

    start: float  # seconds, whole milliseconds
    end: float  # seconds, > start
    lines: tuple[str, ...]
    words: range  # indices into Alignment.words
    flat_text: str  # the cue's text on one line

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
            seps.append(re.sub(r"\s+", " ", text[left.display_end : right.display_start]))
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

    def text(self, a: int, b: int) -> str:
        """Words ``a..b-1`` on one line, with what stands between them in the transcript."""
        parts = [self.labels[a]]
        for k in range(a + 1, b):
            parts.append(self.seps[k - 1])
            parts.append(self.labels[k])
        if b - 1 < len(self.seps):
            # Free-standing punctuation after the last word ("word — next") stays on this line.
            trailing = self.seps[b - 1].strip()
            if trailing:
                parts.append((" " if self.seps[b - 1][:1].isspace() else "") + trailing)
        return "".join(parts)

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


def group_cues(alignment: Alignment, options: CueOptions | None = None) -> list[Cue]:
    """Group the alignment's words into subtitle cues (see the module docstring for the rules)."""
    options = options or CueOptions()
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
    return _timed_cues(layout, times, groups, options)


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


def _timed_cues(
    layout: _Layout,
    times: list[tuple[int, int]],
    groups: list[tuple[int, int]],
    options: CueOptions,
) -> list[Cue]:
    min_ms = to_ms(options.min_duration)
    natural_starts = [times[a][0] for a, _ in groups]
    cues: list[Cue] = []
    last_end = 0
    for index, (a, b) in enumerate(groups):
        start = max(natural_starts[index], last_end)
        end = max(t[1] for t in times[a:b])
        next_start = natural_starts[index + 1] if index + 1 < len(groups) else None
        if next_start is not None and end > next_start:
            end = next_start  # words that overlap the next cue's first word end where it starts
        if end - start < min_ms:
            wanted = start + min_ms
            end = max(end, wanted if next_start is None else min(wanted, next_start))
        end = max(end, start + 1)
        lines = layout.wrap(a, b) or [(a, b)]  # a lone over-long word is its own line
        cues.append(
            Cue(
                start=start / MS_PER_SECOND,
                end=end / MS_PER_SECOND,
                lines=tuple(layout.text(x, y).strip() for x, y in lines),
                words=range(a, b),
                flat_text=layout.text(a, b).strip(),
            )
        )
        last_end = end
    return cues
