"""Typed alignment results and the documents built from them."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np


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


@dataclass(frozen=True)
class Alignment:
    """The alignment of one request."""

    language: str
    duration: float  # seconds of audio submitted
    units: tuple[AlignedUnit, ...]
    text: str = ""  # the submitted transcript

    def to_document(self) -> dict:
        """The ``ALIGNMENT`` JSON document as a dict."""
        return {
            "language": self.language,
            "duration": round(self.duration, 6),
            "text": self.text,
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
                }
                for u in self.units
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_document(), ensure_ascii=False)

    def output_arrays(self) -> dict[str, np.ndarray]:
        """The four output tensors, with the leading batch dimension of 1."""
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
        }
