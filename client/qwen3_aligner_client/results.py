"""Typed alignment results, built from (and turned back into) the server's ``ALIGNMENT`` JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

# Scores are float32 probabilities; the same request's scores may differ by float32 rounding between
# a lone forward pass and one shared with other clips (its sums run in another order), never by
# more than this. Timestamps, texts and spans are always equal.
SCORE_TOLERANCE = 1e-5

WORD_OPTIONAL_KEYS = (
    "char_start",
    "char_end",
    "display",
    "display_start",
    "display_end",
    "score",
    "repaired",
)


@dataclass(frozen=True)
class AlignedWord:
    """One aligned unit: a word, a morpheme (Japanese, Korean) or a single CJK character.

    ``text`` is the unit as the aligner timed it (letters, digits and apostrophes only). When the
    server reports where the unit sits in the submitted transcript, ``char_start:char_end`` is that
    half-open span and ``display`` (``transcript[display_start:display_end]``) is the unit with its
    adjoining punctuation and original spelling, e.g. ``"Hello,"`` for the unit ``"Hello"``. Older
    servers send neither; then the spans are ``None`` and :attr:`label` falls back to ``text``.

    ``score`` (0-1) is how sure the model was of the unit's start and end, and ``repaired`` says
    that the server's monotonic repair replaced one of them: the audio and the transcript disagree
    there (a word never spoken, a mis-transcription, a long silence). Both are ``None`` from
    servers that do not send them.
    """

    text: str
    start: float  # seconds from the start of the audio
    end: float  # seconds
    char_start: int | None = None
    char_end: int | None = None
    display: str | None = None
    display_start: int | None = None
    display_end: int | None = None
    score: float | None = None
    repaired: bool | None = None

    @property
    def label(self) -> str:
        """What to show for this unit: ``display`` when the server sent one, else ``text``."""
        return self.display or self.text

    @property
    def has_spans(self) -> bool:
        """Whether the unit carries its character and display spans in the transcript."""
        return None not in (self.char_start, self.char_end, self.display_start, self.display_end)

    def to_dict(self) -> dict[str, Any]:
        """The word as in the ``ALIGNMENT`` document (span fields only when known)."""
        out: dict[str, Any] = {"text": self.text, "start": self.start, "end": self.end}
        for key in WORD_OPTIONAL_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlignedWord:
        """Read one entry of the document's ``words`` list; unknown keys are ignored."""

        def optional_int(key: str) -> int | None:
            value = data.get(key)
            return None if value is None else int(value)

        display = data.get("display")
        score = data.get("score")
        repaired = data.get("repaired")
        return cls(
            text=str(data["text"]),
            start=float(data["start"]),
            end=float(data["end"]),
            char_start=optional_int("char_start"),
            char_end=optional_int("char_end"),
            display=None if display is None else str(display),
            display_start=optional_int("display_start"),
            display_end=optional_int("display_end"),
            score=None if score is None else float(score),
            repaired=None if repaired is None else bool(repaired),
        )


@dataclass(frozen=True)
class Alignment:
    """The alignment of one transcript against one recording.

    ``text`` is the transcript that was sent, or, when the request had none (``transcribed``),
    the transcript the server's ASR model made of the audio (its ``TRANSCRIPT`` output);
    ``language`` is then the language it detected or was told (``TRANSCRIPT_LANGUAGE``).
    """

    language: str  # canonical English name, e.g. "English"
    duration: float  # seconds of audio submitted
    text: str  # the transcript as submitted, or as the server transcribed the audio
    words: tuple[AlignedWord, ...]
    transcribed: bool = False  # whether the server transcribed the audio (no transcript sent)

    def matches(self, other: Alignment, score_tolerance: float = SCORE_TOLERANCE) -> bool:
        """Equal to ``other`` in everything, scores within ``score_tolerance``.

        ``==`` compares scores exactly; this is the equality the service promises for one request
        whatever it shares a forward pass with (:data:`SCORE_TOLERANCE`)."""
        head = (self.language, self.duration, self.text, self.transcribed)
        if head != (other.language, other.duration, other.text, other.transcribed):
            return False
        if len(self.words) != len(other.words):
            return False
        for mine, theirs in zip(self.words, other.words, strict=True):
            if replace(mine, score=None) != replace(theirs, score=None):
                return False
            if (mine.score is None) != (theirs.score is None):
                return False
            if mine.score is not None and abs(mine.score - theirs.score) > score_tolerance:
                return False
        return True

    @property
    def has_spans(self) -> bool:
        """Whether every word carries its spans in :attr:`text`."""
        return all(w.has_spans for w in self.words)

    @property
    def has_scores(self) -> bool:
        """Whether every word carries its score and repair flag (servers that send them)."""
        return all(w.score is not None and w.repaired is not None for w in self.words)

    @property
    def mean_score(self) -> float | None:
        """Mean of the words' scores; 0.0 without words, ``None`` when the server sent none."""
        if not self.has_scores:
            return None
        return sum(w.score or 0.0 for w in self.words) / len(self.words) if self.words else 0.0

    @property
    def repaired_share(self) -> float | None:
        """Share of the words whose times were repaired; ``None`` when the server sent no flags."""
        if not self.has_scores:
            return None
        return sum(1 for w in self.words if w.repaired) / len(self.words) if self.words else 0.0

    def low_confidence(self, below: float) -> list[int]:
        """Indices of the words with a score below ``below`` or repaired times, in order."""
        return [
            k
            for k, w in enumerate(self.words)
            if w.repaired or (w.score is not None and w.score < below)
        ]

    def to_dict(self) -> dict[str, Any]:
        """The alignment as the server's ``ALIGNMENT`` document."""
        out: dict[str, Any] = {
            "language": self.language,
            "duration": self.duration,
            "text": self.text,
        }
        if self.has_scores:
            out["mean_score"] = round(self.mean_score or 0.0, 6)
            out["repaired_share"] = round(self.repaired_share or 0.0, 6)
        out["words"] = [w.to_dict() for w in self.words]
        return out

    def to_json(self, indent: int | None = None) -> str:
        """The document as JSON text (UTF-8 characters kept, not escaped)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], text: str | None = None) -> Alignment:
        """Build from an ``ALIGNMENT`` document.

        ``text`` is the transcript that was submitted; it is used when the document has none
        (servers from before the transcript was echoed back).
        """
        doc_text = data.get("text")
        if doc_text is None:
            doc_text = text if text is not None else ""
        return cls(
            language=str(data["language"]),
            duration=float(data["duration"]),
            text=str(doc_text),
            words=tuple(AlignedWord.from_dict(w) for w in data["words"]),
        )

    @classmethod
    def from_json(cls, document: str | bytes, text: str | None = None) -> Alignment:
        """Parse an ``ALIGNMENT`` JSON document (see :meth:`from_dict`)."""
        return cls.from_dict(json.loads(document), text=text)
