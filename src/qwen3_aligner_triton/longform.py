"""Aligning recordings longer than the model's window.

The aligner sees at most a few minutes at once (upstream cuts 180 s windows; beyond ~270 s the
trailing words collapse). A long recording is aligned window by window, sequentially:

1. A window starts where the last accepted word ended (or at 0) and ends near ``window`` seconds
   later, cut at the quietest 100 ms frame of the last ``cut_search`` seconds, so a cut rarely
   falls inside a word.
2. It is given MORE words than it probably holds: the words left, scaled by the share of the
   remaining audio the window covers, times ``overshoot``, plus ``extra_words``.
3. The model places the words that are inside the window and piles the others at its end. Words
   that end at least ``guard`` seconds before the window's end are accepted; the first word that
   does not is where the next window starts (at the end of the last accepted word).
4. A window in which no word can be accepted (silence, music) is skipped; the last window takes
   every remaining word.
5. No window is given more words than its audio holds (one per timestamp slot) or than fit one
   forward pass's prompt. Words that even the last window cannot take (a transcript with text
   the audio never speaks) are placed at the end of the last placed word with zero length, score
   0 and ``repaired`` set: the request succeeds, and the words say they were not placed.

A wrong estimate only costs time: too few words and the next window starts earlier; too many and
the extra ones are piled up and carried over. Every word is placed exactly once, in order, with
monotonic times inside the recording.

Each accepted word keeps the score and repair flag of the window that placed it; a word whose times
the merge had to move (to keep the recording's times monotonic) counts as repaired too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

FRAME_SECONDS = 0.1  # energy envelope resolution for choosing cut points
MOVED_SECONDS = 1e-6  # a merged time further than this from the window's own was moved


@dataclass(frozen=True)
class LongformSettings:
    """How long recordings are cut (seconds) and how words are handed out."""

    window: float = 180.0
    cut_search: float = 20.0  # look for a quiet cut point in the window's last seconds
    guard: float = 2.0  # accept only words ending this long before a (non-final) window's end
    overshoot: float = 1.5
    extra_words: int = 16
    min_last_window: float = 30.0  # do not leave a tail shorter than this for a last window
    max_units_per_second: float | None = None  # words a window's audio holds (its slots)


@dataclass(frozen=True)
class Window:
    """One piece of the recording and the words handed to it."""

    start: float  # seconds in the recording
    end: float
    first_word: int
    n_words: int
    is_last: bool


def place(
    offset: float, start: float, end: float, floor: float, ceiling: float
) -> tuple[float, float, bool]:
    """A word's times from its window (``start``, ``end`` after ``offset``) merged into the
    recording: not before ``floor`` (the end of the word before it), not after ``ceiling`` (the
    end of its window or of the recording), end not before start; and whether that moved them
    (the merge of long recordings and of cues)."""
    placed_start = min(max(offset + start, floor), ceiling)
    placed_end = min(max(offset + end, placed_start), ceiling)
    moved = (
        abs(placed_start - (offset + start)) > MOVED_SECONDS
        or abs(placed_end - (offset + end)) > MOVED_SECONDS
    )
    return placed_start, placed_end, moved


def energy_envelope(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS per 100 ms frame."""
    hop = max(1, round(FRAME_SECONDS * sample_rate))
    n = wave.shape[0] // hop
    if n == 0:
        return np.zeros(1, dtype=np.float32)
    frames = wave[: n * hop].astype(np.float32).reshape(n, hop)
    return np.sqrt(np.mean(frames * frames, axis=1))


@dataclass
class LongformPlan:
    """Window-by-window state of one long recording's alignment."""

    duration: float  # seconds
    n_words: int
    envelope: np.ndarray  # energy per FRAME_SECONDS
    settings: LongformSettings = field(default_factory=LongformSettings)
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # of the window that placed each word
    repaired: list[bool] = field(default_factory=list)
    position: float = 0.0  # where the next window starts
    windows: int = 0
    unplaced: int = 0  # words no window could take (placed at the end, flagged repaired)

    @property
    def done(self) -> bool:
        return len(self.starts) >= self.n_words

    def _cut(self, start: float) -> tuple[float, bool]:
        s = self.settings
        target = start + s.window
        # A tail kept for the last window never takes more than half of this one: otherwise a
        # short window could shrink below the guard and never place a word.
        min_last = min(s.min_last_window, s.window / 2)
        if target >= self.duration - min_last:
            if self.duration - start <= s.window:
                return self.duration, True
            target = min(target, self.duration - min_last)
        lo = max(start + s.window / 2, target - s.cut_search)
        a, b = (
            int(lo / FRAME_SECONDS),
            max(int(target / FRAME_SECONDS), int(lo / FRAME_SECONDS) + 1),
        )
        segment = self.envelope[a:b]
        if segment.size == 0:
            return target, False
        cut = (a + int(np.argmin(segment)) + 0.5) * FRAME_SECONDS
        return min(cut, target), False

    def next_window(self) -> Window | None:
        """The next window to align, or None when every word is placed."""
        if self.done:
            return None
        first = len(self.starts)
        left = self.n_words - first
        end, is_last = self._cut(self.position)
        if is_last:
            n = left
        else:
            share = (end - self.position) / max(self.duration - self.position, 1e-9)
            n = min(
                left, math.ceil(left * share * self.settings.overshoot) + self.settings.extra_words
            )
        if self.settings.max_units_per_second is not None:
            n = min(
                n, max(1, math.floor((end - self.position) * self.settings.max_units_per_second))
            )
        return Window(self.position, end, first, n, is_last)

    def accept(
        self,
        window: Window,
        starts: list[float],
        ends: list[float],
        scores: list[float] | None = None,
        repaired: list[bool] | None = None,
    ) -> None:
        """Take the model's times (relative to the window) for the words handed to ``window``,
        with their scores and repair flags (default 0.0 and False)."""
        if len(starts) != window.n_words or len(ends) != window.n_words:
            raise ValueError("one start and one end per word of the window")
        scores = list(scores) if scores is not None else [0.0] * window.n_words
        repaired = list(repaired) if repaired is not None else [False] * window.n_words
        if len(scores) != window.n_words or len(repaired) != window.n_words:
            raise ValueError("one score and one repair flag per word of the window")
        self.windows += 1
        limit = window.end - window.start - self.settings.guard
        floor = self.ends[-1] if self.ends else 0.0
        kept = 0
        for s, e, score, fixed in zip(starts, ends, scores, repaired, strict=True):
            if not window.is_last and e > limit:
                break
            start, end, moved = place(window.start, s, e, floor, self.duration)
            self.starts.append(start)
            self.ends.append(end)
            self.scores.append(score)
            self.repaired.append(fixed or moved)
            floor = end
            kept += 1
        if window.is_last:
            self._place_the_rest()
            return
        if kept:
            self.position = max(self.ends[-1], window.start)
            if self.position <= window.start:  # every kept word is zero-length at the start
                self.position = window.start + FRAME_SECONDS
        else:
            # Nothing could be placed well inside: skip ahead, keeping an overlap for safety (and
            # always moving on, however short the window).
            self.position = max(window.end - self.settings.guard, window.start + FRAME_SECONDS)

    def _place_the_rest(self) -> None:
        """After the last window: words it could not take get zero length at the end of the last
        placed word (inside the recording), score 0 and the repaired flag."""
        at = min(self.ends[-1] if self.ends else 0.0, self.duration)
        rest = self.n_words - len(self.starts)
        self.unplaced += rest
        self.starts += [at] * rest
        self.ends += [at] * rest
        self.scores += [0.0] * rest
        self.repaired += [True] * rest
