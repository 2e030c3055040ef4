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
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

# Punctuation that belongs to the FOLLOWING unit when it sits between two units.
_LEADING_EXTRA = frozenset("¿¡")
_DIRECT_SCAN = 8  # characters a lookup scans before it consults the index


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


class _Scanner:
    """Finds unit characters in ``text`` in amortised constant time per lookup.

    A lookup scans a few characters directly (ordinary text matches at once); past that it uses
    an index of every position's possible matches, built on first need, so a unit that is not in
    the text verbatim (a character the splitter expanded, such as "㍿" into "株式" and "会社")
    costs a few bisections instead of a scan to the end of the text: total work is linear in the
    text and the units.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._stops: list[int] | None = None
        self._visible: list[int] | None = None
        self._index: dict[tuple[int, str], list[int]] | None = None

    def _build(self) -> None:
        text, n = self.text, len(self.text)
        stops = [n] * (n + 1)  # first blocking (word) character at or after each position
        visible = [n] * (n + 1)  # first non-space character at or after each position
        index: dict[tuple[int, str], list[int]] = {}
        for q in range(n - 1, -1, -1):
            ch = text[q]
            stops[q] = q if _blocks(ch) else stops[q + 1]
            visible[q] = visible[q + 1] if ch.isspace() else q
        for q, ch in enumerate(text):
            norm = unicodedata.normalize("NFKC", ch)
            keys = {(0, ch), (0, norm), (1, norm.casefold())}
            if q + 1 < n:
                keys.add((0, unicodedata.normalize("NFKC", text[q : q + 2])))
            for key in keys:
                index.setdefault(key, []).append(q)
        self._stops, self._visible, self._index = stops, visible, index

    def find(self, unit_char: str, pos: int) -> tuple[int, int] | None:
        """Span of the next ``unit_char`` at or after ``pos``, skipping only non-word characters."""
        text = self.text
        q = pos
        for q in range(pos, min(len(text), pos + _DIRECT_SCAN)):
            width = _match_length(text, q, unit_char)
            if width:
                return q, q + width
            if _blocks(text[q]):
                return None
        else:
            if pos + _DIRECT_SCAN >= len(text):
                return None
        if self._index is None:
            self._build()
        assert self._stops is not None and self._index is not None
        limit = self._stops[pos]  # a match may sit on the blocking character itself
        best = len(text)
        for key in ((0, unit_char), (1, unit_char.casefold())):
            positions = self._index.get(key)
            if positions:
                k = bisect_left(positions, pos)
                if k < len(positions):
                    best = min(best, positions[k])
        if best > limit or best >= len(text):
            return None
        return best, best + _match_length(text, best, unit_char)

    def next_visible(self, pos: int) -> int:
        """First non-space position at or after ``pos`` (``len(text)`` if none)."""
        text = self.text
        for q in range(pos, min(len(text), pos + _DIRECT_SCAN)):
            if not text[q].isspace():
                return q
        if pos + _DIRECT_SCAN >= len(text):
            return len(text)
        if self._visible is None:
            self._build()
        assert self._visible is not None
        return self._visible[pos]


def _blocks(ch: str) -> bool:
    """A word character that a unit cannot skip over."""
    return _is_word_char(ch) and unicodedata.category(ch) not in ("Mn", "Mc", "Lm")


def _core_spans(text: str, units: Sequence[str]) -> list[tuple[int, int]]:
    scanner = _Scanner(text)
    spans: list[tuple[int, int]] = []
    pos = 0
    for unit in units:
        first: int | None = None
        cursor = pos
        for ch in unit:
            found = scanner.find(ch, cursor)
            if found is None:
                # Out of step (a spelling the splitter changed): take the next visible character.
                q = scanner.next_visible(cursor)
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
