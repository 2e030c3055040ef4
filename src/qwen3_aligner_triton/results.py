"""Typed alignment results and the documents built from them."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from .scores import summary

SCORE_DECIMALS = 6  # scores in the JSON document (SCORES carries the float32 itself)


@dataclass(frozen=True)
class AlignedUnit:
    """One aligned unit (a word, or a single character for CJK) with times in seconds."""

    text: str
    start: float
    end: float
    char_start: int = 0  # span of the unit in the submitted transcript (half-open)
    char_end: int = 0
    display_start: int = 0  # span with adjoining punctuation reattached
    display_end: int = 0
    score: float = 0.0  # confidence of the two timestamps, 0-1 (see scores.py)
    repaired: bool = False  # the repair replaced its start or end slot


@dataclass(frozen=True)
class Alignment:
    """The alignment of one request."""

    language: str
    duration: float  # seconds of audio submitted
    units: tuple[AlignedUnit, ...]
    text: str = ""  # the submitted transcript

    @property
    def scores(self) -> list[float]:
        return [u.score for u in self.units]

    @property
    def mean_score(self) -> float:
        """Mean of the units' scores (0.0 without units)."""
        return summary(self.scores, [u.repaired for u in self.units])[0]

    @property
    def repaired_share(self) -> float:
        """Share of the units whose timestamps the repair replaced (0.0 without units)."""
        return summary(self.scores, [u.repaired for u in self.units])[1]

    def to_document(self) -> dict:
        """The ``ALIGNMENT`` JSON document as a dict."""
        mean_score, repaired_share = summary(self.scores, [u.repaired for u in self.units])
        return {
            "language": self.language,
            "duration": round(self.duration, 6),
            "text": self.text,
            "mean_score": round(mean_score, SCORE_DECIMALS),
            "repaired_share": round(repaired_share, SCORE_DECIMALS),
            "words": [
                {
                    "text": u.text,
                    "start": u.start,
                    "end": u.end,
                    "char_start": u.char_start,
                    "char_end": u.char_end,
                    "display": self.text[u.display_start : u.display_end],
                    "display_start": u.display_start,
                    "display_end": u.display_end,
                    "score": round(float(np.float32(u.score)), SCORE_DECIMALS),
                    "repaired": u.repaired,
                }
                for u in self.units
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_document(), ensure_ascii=False)

    def output_arrays(self) -> dict[str, np.ndarray]:
        """The output tensors, with the leading batch dimension of 1."""
        words = np.array([[u.text.encode("utf-8") for u in self.units]], dtype=np.object_)
        return {
            "WORDS": words.reshape(1, len(self.units)),
            "START_TIMES": np.array([[u.start for u in self.units]], dtype=np.float32).reshape(
                1, len(self.units)
            ),
            "END_TIMES": np.array([[u.end for u in self.units]], dtype=np.float32).reshape(
                1, len(self.units)
            ),
            "ALIGNMENT": np.array([[self.to_json().encode("utf-8")]], dtype=np.object_),
            "SCORES": np.array([self.scores], dtype=np.float32).reshape(1, len(self.units)),
        }
