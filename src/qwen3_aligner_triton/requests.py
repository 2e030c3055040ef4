"""Decoding and validating one inference request's tensors into an :class:`AlignRequest`.

Everything here works on the numpy arrays Triton hands to the Python backend. A request that cannot
be served raises :class:`RequestError` naming the input and the limit; the backend turns that into
an INVALID_ARG response for that request alone.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

from .audio import MODEL_SAMPLE_RATE
from .languages import resolve_language
from .params import ModelSettings

ALLOWED_CONTROL = frozenset("\t\n\r")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$")
_DATA_URI = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*,", re.IGNORECASE)
_PATH = re.compile(r"^(~|\.{1,2})?(/[^/\s]+)+/?$|^[A-Za-z]:\\\S*$|^file:\S+$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/\r\n]+={0,2}$")
BASE64_MIN_CHARS = 64  # shorter runs of letters and digits are plausible words


class RequestError(ValueError):
    """A request that cannot be served; the message names the input and the limit.

    ``reason`` is a short, stable label for metrics (``rejected_requests_total{reason=...}``).
    """

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AlignRequest:
    """One validated request: raw mono audio at its own rate, transcript and language name."""

    audio: np.ndarray  # float32, 1-D
    sample_rate: int  # Hz
    text: str
    language: str  # canonical English name, e.g. "English"

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return self.audio.shape[0] / self.sample_rate


def _single_string(name: str, array: np.ndarray | None) -> str:
    if array is None:
        raise RequestError(f"input {name} is required", "missing_input")
    flat = np.asarray(array).reshape(-1)
    if flat.size != 1:
        raise RequestError(
            f"input {name} must hold exactly one string, got {flat.size}", "bad_shape"
        )
    value = flat[0]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError(
                f"input {name} is not valid UTF-8 (byte {e.start})", "bad_encoding"
            ) from None
    if isinstance(value, str):
        return value
    raise RequestError(f"input {name} must be a string (TYPE_STRING / BYTES)", "bad_dtype")


def reference_kind(text: str) -> str | None:
    """What a TEXT that is a single token naming something else looks like, if anything.

    A transcript sent as a URL, a file path or base64 data is a client mistake (the upstream
    helpers would fetch or open it); say so instead of aligning the characters of the name.
    """
    token = text.strip()
    if any(ch.isspace() for ch in token.replace("\r", "").replace("\n", "")):
        return None
    if _URL.match(token):
        return "a URL"
    if _DATA_URI.match(token):
        return "a data URI"
    if _PATH.match(token):
        return "a file path"
    compact = token.replace("\r", "").replace("\n", "")
    if (
        len(compact) >= BASE64_MIN_CHARS
        and _BASE64.match(compact)
        and any(c.isdigit() or c in "+/" for c in compact)
        and any(c.isupper() for c in compact)
        and any(c.islower() for c in compact)
    ):
        return "base64 data"
    return None


def decode_audio(
    audio: np.ndarray | None, sample_rate: np.ndarray | None, settings: ModelSettings
) -> tuple[np.ndarray, int]:
    """Validate ``AUDIO`` and ``SAMPLE_RATE``; return a float32 1-D waveform and its rate."""
    if audio is None:
        raise RequestError("input AUDIO is required", "missing_input")
    audio = np.asarray(audio)
    if audio.dtype != np.float32:
        raise RequestError(f"input AUDIO must be FP32, got {audio.dtype}", "bad_dtype")
    if audio.ndim > 2 or (audio.ndim == 2 and audio.shape[0] != 1):
        raise RequestError(
            f"input AUDIO must be one mono waveform of shape [1, samples], got {list(audio.shape)}",
            "bad_shape",
        )
    wave = np.ascontiguousarray(audio.reshape(-1))

    rate = MODEL_SAMPLE_RATE
    if sample_rate is not None:
        flat = np.asarray(sample_rate).reshape(-1)
        if flat.size != 1 or not np.issubdtype(flat.dtype, np.integer):
            raise RequestError("input SAMPLE_RATE must be one INT32 value", "bad_sample_rate")
        rate = int(flat[0])
    if not settings.min_sample_rate <= rate <= settings.max_sample_rate:
        raise RequestError(
            f"input SAMPLE_RATE {rate} Hz is outside the accepted range "
            f"{settings.min_sample_rate}..{settings.max_sample_rate} Hz",
            "bad_sample_rate",
        )

    if wave.size == 0:
        raise RequestError("input AUDIO is empty", "audio_empty")
    if wave.size > settings.max_audio_samples:
        raise RequestError(
            f"input AUDIO has {wave.size} samples; the limit is {settings.max_audio_samples}",
            "audio_too_long",
        )
    seconds = wave.size / rate
    if seconds > settings.max_audio_seconds:
        raise RequestError(
            f"input AUDIO is {seconds:.2f} s long; the limit is {settings.max_audio_seconds:g} s",
            "audio_too_long",
        )
    if seconds < settings.min_audio_seconds:
        raise RequestError(
            f"input AUDIO is {seconds:.3f} s long; at least {settings.min_audio_seconds:g} s "
            "is needed to align",
            "audio_too_short",
        )
    if not np.isfinite(wave).all():
        raise RequestError("input AUDIO contains NaN or infinite samples", "audio_not_finite")
    peak = float(np.max(np.abs(wave)))
    if peak > settings.max_amplitude:
        raise RequestError(
            f"input AUDIO has samples up to {peak:.4g}; float samples must lie in "
            f"[-{settings.max_amplitude:g}, {settings.max_amplitude:g}] (scale integer PCM by "
            "1/32768)",
            "audio_out_of_range",
        )
    return wave, rate


def decode_text(text: np.ndarray | None, settings: ModelSettings) -> str:
    """Validate ``TEXT``: UTF-8, no control characters, within the length limit."""
    value = _single_string("TEXT", text)
    if len(value) > settings.max_text_chars:
        raise RequestError(
            f"input TEXT has {len(value)} characters; the limit is {settings.max_text_chars}",
            "text_too_long",
        )
    for pos, ch in enumerate(value):
        if ch not in ALLOWED_CONTROL and unicodedata.category(ch) in ("Cc", "Cs"):
            raise RequestError(
                f"input TEXT contains control character U+{ord(ch):04X} at {pos}", "bad_text"
            )
    if not value.strip():
        raise RequestError("input TEXT is empty", "text_empty")
    kind = reference_kind(value)
    if kind is not None:
        raise RequestError(
            f"input TEXT looks like {kind}, not a transcript; send the transcript itself "
            "(the server never opens, fetches or decodes what a request names)",
            "text_is_reference",
        )
    return value


def decode_language(language: np.ndarray | None) -> str:
    """Validate ``LANGUAGE`` and return the canonical English name."""
    value = _single_string("LANGUAGE", language)
    try:
        return resolve_language(value)
    except ValueError as e:
        raise RequestError(f"input LANGUAGE: {e}", "bad_language") from None


def decode_request(
    audio: np.ndarray | None,
    sample_rate: np.ndarray | None,
    text: np.ndarray | None,
    language: np.ndarray | None,
    settings: ModelSettings,
) -> AlignRequest:
    """Validate all inputs of one request."""
    wave, rate = decode_audio(audio, sample_rate, settings)
    return AlignRequest(
        audio=wave,
        sample_rate=rate,
        text=decode_text(text, settings),
        language=decode_language(language),
    )
