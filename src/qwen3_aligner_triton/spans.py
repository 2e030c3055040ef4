"""Where each aligned unit sits in the submitted transcript.

The aligner's units are cleaned tokens (letters, digits and apostrophes only; Japanese units may
also be NFKC-normalised by the word splitter). This module finds each unit's characters in the
original transcript, in order, giving a half-open character span, and a *display* span that
reattaches the adjoining punctuation with the original spelling, so clients can show "Hello,"
rather than "Hello" and rebuild the transcript exactly: displays are in order, never overlap, and
the text between two displays holds no letter or digit.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

# Punctuation that belongs to the FOLLOWING unit when it sits between two units.
_LEADING_EXTRA = frozenset("¿¡")


@dataclass(frozen=True)
class UnitSpan:
    """Character spans of one unit in the transcript (half-open)."""

    char_start: int
    char_end: int
    display_start: int
    display_end: int


def _match_length(text: str, q: int, unit_char: str) -> int:
    """How many transcript characters at ``q`` spell ``unit_char`` (0: no match).

    Besides equality, a character or a pair of characters whose NFKC form is ``unit_char``
    matches: the Japanese splitter turns full-width "!" into ASCII and half-width kana into
    full-width ones.
    """
    ch = text[q]
    if ch == unit_char:
        return 1
    norm = unicodedata.normalize("NFKC", ch)
    if norm == unit_char or norm.casefold() == unit_char.casefold():
        return 1
    if q + 1 < len(text) and unicodedata.normalize("NFKC", text[q : q + 2]) == unit_char:
        return 2
    return 0


def _is_word_char(ch: str) -> bool:
    return ch == "'" or unicodedata.category(ch)[0] in ("L", "N")


def _find(text: str, unit_char: str, pos: int) -> tuple[int, int] | None:
    """Span of the next ``unit_char`` at or after ``pos``, skipping only non-word characters."""
    q = pos
    while q < len(text):
        width = _match_length(text, q, unit_char)
        if width:
            return q, q + width
        ch = text[q]
        if _is_word_char(ch) and unicodedata.category(ch) not in ("Mn", "Mc", "Lm"):
            return None
        q += 1
    return None


def _core_spans(text: str, units: Sequence[str]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    pos = 0
    for unit in units:
        first: int | None = None
        cursor = pos
        for ch in unit:
            found = _find(text, ch, cursor)
            if found is None:
                # Out of step (a spelling the splitter changed): take the next visible character.
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


def _attaches_forward(ch: str) -> bool:
    return ch in _LEADING_EXTRA or unicodedata.category(ch) in ("Ps", "Pi")


def locate_units(text: str, units: Sequence[str]) -> list[UnitSpan]:
    """Spans of ``units`` (in order) within ``text``."""
    cores = _core_spans(text, units)
    n = len(cores)
    display_start = [s for s, _ in cores]
    display_end = [e for _, e in cores]
    for i, (start, end) in enumerate(cores):
        lower = cores[i - 1][1] if i > 0 else 0
        upper = cores[i + 1][0] if i + 1 < n else len(text)
        # Leading punctuation: a run of non-space characters between a space (or the start)
        # and the unit; directly after the previous unit, only opening brackets/quotes and ¿¡.
        k = start
        while k > lower and not text[k - 1].isspace():
            k -= 1
        if k == lower and i > 0 and (k == 0 or not text[k - 1].isspace()):
            k = start
            while k > lower and _attaches_forward(text[k - 1]):
                k -= 1
        display_start[i] = k
        # Trailing punctuation: everything non-space up to the next space or the next unit.
        e = end
        while e < upper and not text[e].isspace() and not _attaches_forward(text[e]):
            e += 1
        display_end[i] = e
    # Keep displays ordered and disjoint.
    for i in range(1, n):
        if display_start[i] < display_end[i - 1]:
            display_start[i] = display_end[i - 1]
    return [
        UnitSpan(cores[i][0], cores[i][1], min(display_start[i], cores[i][0]), display_end[i])
        for i in range(n)
    ]
