"""Alignments built by hand for the client's unit tests, shaped like the server's documents."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import replace

from qwen3_aligner_client import AlignedWord, Alignment


def _word_char(ch: str) -> bool:
    return ch == "'" or unicodedata.category(ch)[0] in "LN"


def _ideograph(ch: str) -> bool:
    return "CJK UNIFIED IDEOGRAPH" in unicodedata.name(ch, "") or "HIRAGANA" in unicodedata.name(
        ch, ""
    )


def unit_spans(text: str) -> list[tuple[int, int]]:
    """Units as the aligner makes them, roughly: runs of letters/digits, CJK one by one."""
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(text):
        if not _word_char(text[i]):
            i += 1
            continue
        if _ideograph(text[i]):
            spans.append((i, i + 1))
            i += 1
            continue
        j = i
        while j < len(text) and _word_char(text[j]) and not _ideograph(text[j]):
            j += 1
        spans.append((i, j))
        i = j
    return spans


def sample_score(k: int) -> tuple[float, bool]:
    """A made-up (score, repaired) for unit ``k``: scores spread over [0, 1], every 7th repaired."""
    return round(((k * 37) % 101) / 100, 4), k % 7 == 3


def make_alignment(
    text: str,
    times: Sequence[tuple[float, float]] | None = None,
    *,
    spans: bool = True,
    language: str = "English",
    duration: float | None = None,
    scored: bool = False,
) -> Alignment:
    """An alignment of ``text`` with display spans (punctuation reattached) like the server's.

    ``times`` default to 0.3 s per unit with 0.1 s gaps. ``scored`` gives every unit a score
    and repair flag as a server that sends them does (see :func:`sample_score`).
    """
    cores = unit_spans(text)
    if times is None:
        times = [(0.4 * k, 0.4 * k + 0.3) for k in range(len(cores))]
    assert len(times) == len(cores), (len(times), len(cores))
    n = len(cores)
    ends = []
    for k, (_, end) in enumerate(cores):
        upper = cores[k + 1][0] if k + 1 < n else len(text)
        e = end
        while e < upper and not text[e].isspace():
            e += 1
        ends.append(e)
    starts = []
    for k, (start, _) in enumerate(cores):
        lower = ends[k - 1] if k else 0
        s = start
        while s > lower and not text[s - 1].isspace():
            s -= 1
        starts.append(s)
    words = []
    for k, ((cs, ce), (t0, t1)) in enumerate(zip(cores, times, strict=True)):
        if spans:
            words.append(
                AlignedWord(
                    text=text[cs:ce],
                    start=t0,
                    end=t1,
                    char_start=cs,
                    char_end=ce,
                    display=text[starts[k] : ends[k]],
                    display_start=starts[k],
                    display_end=ends[k],
                )
            )
        else:
            words.append(AlignedWord(text=text[cs:ce], start=t0, end=t1))
    if scored:
        words = [
            replace(w, score=sample_score(k)[0], repaired=sample_score(k)[1])
            for k, w in enumerate(words)
        ]
    last = max((t for _, t in times), default=0.0)
    return Alignment(
        language=language,
        duration=duration if duration is not None else last + 0.5,
        text=text,
        words=tuple(words),
    )


LONG_ENGLISH = (
    "Hello, world! This is the quick brown fox; it jumps over the lazy dog. Then, after a long "
    "pause, the dog, who was not amused, barked loudly at the fox, which ran away into the "
    "forest and was never seen again. The end."
)
CHINESE = "今天天气很好，我们去公园散步吧。明天也许会下雨，所以我们今天一定要出去玩一玩，好不好？"
