"""Splitting a transcript into the aligner's units at a cost linear in its length.

The units are upstream's (``Qwen3ForceAlignProcessor.encode_timestamp``): Japanese through nagisa,
Korean through soynlp's ``LTokenizer``, other languages by spaces and CJK characters. Two of those
cost more than the length of the text suggests:

* ``LTokenizer`` scores every prefix of a space-separated token, building all of them first, so one
  token of n characters costs O(n^2) time and memory (60,000 characters: minutes and gigabytes).
  :class:`LinearLTokenizer` picks the same split looking only at prefixes as long as the longest
  dictionary word, so a token costs O(n).
* nagisa is linear but slow (a BiLSTM over every character, ~0.2 ms each) and its result is only
  counted afterwards. :func:`japanese_chars_exceed` lets the caller refuse a Japanese text that is
  far longer than the units it may hold before nagisa runs.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any

from soynlp.tokenizer import LTokenizer

DEFAULT_JAPANESE_CHARS_PER_UNIT = 4.0


class LinearLTokenizer(LTokenizer):
    """soynlp's ``LTokenizer`` with the same splits, in time linear in each token's length.

    ``LTokenizer`` splits a token into a left part (a prefix of at least two characters) and the
    rest, choosing the highest-scoring prefix, the longest among equals. A prefix longer than every
    scored word has the default score, and the longest of those is the whole token; so only the
    prefixes up to the longest scored word and the whole token need a look.
    """

    def __init__(self, scores: Mapping[str, float] | None = None, default_score: float = 0.0):
        super().__init__(scores=dict(scores or {}), default_score=default_score)
        self._longest = max((len(word) for word in self._scores), default=0)

    def split_token(self, token: str) -> tuple[str, str]:
        """The (left, right) split ``LTokenizer`` chooses for one token with no tolerance."""
        length = len(token)
        if length <= 2:
            return token, ""
        best = (self._scores.get(token, self._ds), length)
        for end in range(2, min(length - 1, self._longest) + 1):
            candidate = (self._scores.get(token[:end], self._ds), end)
            if candidate > best:
                best = candidate
        return token[: best[1]], token[best[1] :]

    def tokenize(
        self, sentence: str, tolerance: float = 0.0, flatten: bool = True, remove_r: bool = False
    ) -> Any:
        """Split ``sentence`` as ``LTokenizer.tokenize`` does (the upstream call's arguments)."""
        if tolerance > 0:
            return super().tokenize(sentence, tolerance, flatten, remove_r)
        tokens = [self.split_token(token) for token in sentence.split()]
        if remove_r:
            return [left for left, _ in tokens]
        if flatten:
            return [part for pair in tokens for part in pair if part]
        return tokens


def use_linear_splitters(processor: Any) -> None:
    """Give an upstream ``Qwen3ForceAlignProcessor`` the linear Korean splitter (idempotent)."""
    if not isinstance(getattr(processor, "ko_tokenizer", None), LinearLTokenizer):
        processor.ko_tokenizer = LinearLTokenizer(scores=processor.ko_score)


def split_units(processor: Any, text: str, language: str) -> list[str]:
    """The aligner's units of ``text``, as upstream's ``encode_timestamp`` returns them."""
    use_linear_splitters(processor)
    words, _ = processor.encode_timestamp(text, language)
    return list(words)


def japanese_chars_exceed(text: str, language: str, units: int, chars_per_unit: float) -> int:
    """Characters the Japanese splitter would read, if more than ``chars_per_unit * units``; else 0.

    nagisa reads the NFKC form of the text. Ordinary Japanese holds two or three characters per
    unit (punctuation and spaces included), so a text over the bound cannot be aligned within
    ``units`` and is refused before nagisa spends its time on it. Other languages return 0.
    """
    if language.lower() != "japanese":
        return 0
    bound = chars_per_unit * units
    if len(text) * 18 <= bound:  # NFKC expands one character into at most 18
        return 0
    count = len(unicodedata.normalize("NFKC", text))
    return count if count > bound else 0
