"""Decoding and validating one inference request's tensors into an :class:`AlignRequest`.

Everything here works on the numpy arrays Triton hands to the Python backend. A request that cannot
be served raises :class:`RequestError` naming the input and the limit; the backend turns that into
an INVALID_ARG response for that request alone.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from itertools import zip_longest

import numpy as np

from .audio import MODEL_SAMPLE_RATE, normalize_peak, resampled_length
from .audio_file import AudioFileError, EncodedAudio
from .languages import resolve_language
from .params import FrontSettings

ALLOWED_CONTROL = frozenset("\t\n\r")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$")
_DATA_URI = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*,", re.IGNORECASE)
_PATH = re.compile(r"^(~|\.{1,2})?(/[^/\s]+)+/?$|^[A-Za-z]:\\\S*$|^file:\S+$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/\r\n]+={0,2}$")
SEGMENT_OVERLAP_TOLERANCE = 0.001  # seconds
BASE64_MIN_CHARS = 64  # shorter runs of letters and digits are plausible words


NO_WORDS = "no_words"  # reason of a TEXT with nothing to align (only punctuation, symbols)


class RequestError(ValueError):
    """A request that cannot be served; the message names the input and the limit.

    ``reason`` is a short, stable label for metrics (``rejected_requests_total{reason=...}``).
    """

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Segment:
    """A subtitle cue or ASR segment: align ``text`` within [start, end] seconds."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class AlignRequest:
    """One validated request: raw mono audio at its own rate, transcript and language name."""

    audio: np.ndarray  # float32, 1-D
    sample_rate: int  # Hz
    text: str
    language: str  # canonical English name, e.g. "English"
    segments: tuple[Segment, ...] | None = None  # cue-guided mode

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return self.audio.shape[0] / self.sample_rate


@dataclass(frozen=True)
class TranscribeRequest:
    """A request without TEXT (the ASR model is loaded): transcribe, then align."""

    audio: np.ndarray  # float32, 1-D
    sample_rate: int  # Hz
    language: str | None  # canonical English name to force, None to detect
    context: str = ""  # upstream's context (names, terms)

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return self.audio.shape[0] / self.sample_rate


NO_ASR_MESSAGE = (
    "input TEXT is required: this server has no ASR model to transcribe the audio; start it "
    "with ./scripts/serve --asr (the container: with ASR_MODEL set) to send requests without TEXT"
)
AUTO_LANGUAGE = "auto"  # LANGUAGE without TEXT: detect it, as an absent LANGUAGE does


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
    audio: np.ndarray | None, sample_rate: np.ndarray | None, settings: FrontSettings
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
    check_waveform(wave, rate, settings, "input AUDIO")
    return wave, rate


def _check_length(samples: int, rate: int, settings: FrontSettings, name: str) -> None:
    """Hold ``samples`` per channel at ``rate`` Hz to the audio limits; ``name`` names the input."""
    if samples > settings.max_audio_samples:
        raise RequestError(
            f"{name} has {samples} samples; the limit is {settings.max_audio_samples}",
            "audio_too_long",
        )
    resampled = resampled_length(samples, rate)
    if resampled > settings.max_audio_samples:  # what the server holds once at 16 kHz
        raise RequestError(
            f"{name} makes {resampled} samples at 16 kHz; the limit is "
            f"{settings.max_audio_samples}",
            "audio_too_long",
        )
    seconds = samples / rate
    if seconds > settings.max_audio_seconds:
        raise RequestError(
            f"{name} is {seconds:.2f} s long; the limit is {settings.max_audio_seconds:g} s",
            "audio_too_long",
        )
    if seconds < settings.min_audio_seconds:
        raise RequestError(
            f"{name} is {seconds:.3f} s long; at least {settings.min_audio_seconds:g} s "
            "is needed to align",
            "audio_too_short",
        )


def check_waveform(wave: np.ndarray, rate: int, settings: FrontSettings, name: str) -> None:
    """The checks every waveform passes, sent as ``AUDIO`` or decoded from ``AUDIO_FILE``:
    not empty, within the length limits, finite, within the amplitude limit."""
    if wave.size == 0:
        raise RequestError(f"{name} is empty", "audio_empty")
    _check_length(int(wave.size), rate, settings, name)
    if not np.isfinite(wave).all():
        raise RequestError(f"{name} contains NaN or infinite samples", "audio_not_finite")
    peak = float(np.max(np.abs(wave)))
    if peak > settings.max_amplitude:
        hint = " (scale integer PCM by 1/32768)" if name == "input AUDIO" else ""
        raise RequestError(
            f"{name} has samples up to {peak:.4g}; float samples must lie in "
            f"[-{settings.max_amplitude:g}, {settings.max_amplitude:g}]{hint}",
            "audio_out_of_range",
        )


def decode_audio_file(
    audio_file: np.ndarray, sample_rate: np.ndarray | None, settings: FrontSettings
) -> tuple[np.ndarray, int]:
    """Decode ``AUDIO_FILE`` (the bytes of a WAV, FLAC, OGG or MP3 file) to a float32 mono
    waveform and its rate, held to the same limits as ``AUDIO``.

    The size is checked before anything is parsed and the header (rate, length, channels) before
    anything is decoded, so neither large bytes nor a small file claiming hours costs more than
    the limits allow. ``SAMPLE_RATE`` must be absent: the file gives its own rate."""
    name = "input AUDIO_FILE"
    if sample_rate is not None:
        raise RequestError(
            "input SAMPLE_RATE must not accompany AUDIO_FILE: the file gives its own sample "
            "rate (send SAMPLE_RATE only with AUDIO)",
            "bad_sample_rate",
        )
    data = _single_bytes("AUDIO_FILE", audio_file)
    if isinstance(data, str):  # only in-process callers hand over str
        data = data.encode("utf-8", "surrogatepass")
    if len(data) > settings.max_audio_file_bytes:
        raise RequestError(
            f"{name} has {len(data)} bytes; the limit is {settings.max_audio_file_bytes} "
            "(max_audio_file_bytes)",
            "audio_file_too_large",
        )
    try:
        with EncodedAudio(data, name) as encoded:
            header = encoded.header
            rate = header.sample_rate
            if not settings.min_sample_rate <= rate <= settings.max_sample_rate:
                raise RequestError(
                    f"{name} has a sample rate of {rate} Hz, outside the accepted range "
                    f"{settings.min_sample_rate}..{settings.max_sample_rate} Hz",
                    "bad_sample_rate",
                )
            _check_length(header.frames, rate, settings, name)  # before any sample is decoded
            wave = encoded.decode()
    except AudioFileError as e:
        raise RequestError(str(e), e.reason) from None
    # A file's samples are the decoder's, not the caller's: loud audio in a lossy file decodes to
    # peaks a little over 1, and a float file may hold any scale. Upstream scales what it decodes
    # down to a peak of 1 (then clips), and so does this.
    if np.isfinite(wave).all():
        wave = normalize_peak(wave, in_place=True)
    check_waveform(wave, rate, settings, name)
    return wave, rate


def decode_text(text: np.ndarray | None, settings: FrontSettings, allow_empty: bool = False) -> str:
    """Validate ``TEXT``: UTF-8, no control characters, within the length limit."""
    return check_text(_single_string("TEXT", text), "input TEXT", settings, allow_empty)


def check_text(value: str, name: str, settings: FrontSettings, allow_empty: bool = False) -> str:
    """Validate a transcript (``TEXT`` or a cue's text) that ``name`` names in messages."""
    if allow_empty and not value.strip():
        return value
    if len(value) > settings.max_text_chars:
        raise RequestError(
            f"{name} has {len(value)} characters; the limit is {settings.max_text_chars}",
            "text_too_long",
        )
    for pos, ch in enumerate(value):
        if ch not in ALLOWED_CONTROL and unicodedata.category(ch) in ("Cc", "Cs"):
            raise RequestError(
                f"{name} contains control character U+{ord(ch):04X} at {pos}", "bad_text"
            )
    if not value.strip():
        raise RequestError(f"{name} is empty", "text_empty")
    kind = reference_kind(value)
    if kind is not None:
        raise RequestError(
            f"{name} looks like {kind}, not a transcript; send the transcript itself "
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


def decode_context(context: np.ndarray, settings: FrontSettings) -> str:
    """Validate ``CONTEXT``: UTF-8, no control characters, within the text length limit."""
    return check_text(_single_string("CONTEXT", context), "input CONTEXT", settings, True)


def _transcript_language(language: np.ndarray | None) -> str | None:
    """``LANGUAGE`` of a request without TEXT: a forced language, or None (absent, empty or
    ``auto``) to detect it."""
    if language is None:
        return None
    value = _single_string("LANGUAGE", language)
    if value.strip() == "" or value.strip().lower() == AUTO_LANGUAGE:
        return None
    return decode_language(language)


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(
            f"input SEGMENTS{what} must be a number of seconds, got {_json_type(value)}",
            "bad_segments",
        )
    number = float(value)  # integers arrive as floats (see _parse_segments)
    if not np.isfinite(number):
        raise RequestError(f"input SEGMENTS{what} must be a finite number", "bad_segments")
    return number


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _parse_segments(raw: bytes | str, settings: FrontSettings) -> object:
    """Parse the SEGMENTS document with its size bounded and every failure a client error."""
    size = len(raw)  # bytes as sent (a str here only from tests)
    if size > settings.max_segments_bytes:
        raise RequestError(
            f"input SEGMENTS has {size} bytes; the limit is {settings.max_segments_bytes}",
            "segments_too_large",
        )
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError(
                f"input SEGMENTS is not valid UTF-8 (byte {e.start})", "bad_encoding"
            ) from None
    try:
        # Numbers become floats as they are read: a 400-digit integer is simply too large (not
        # an OverflowError later), and NaN/Infinity literals are refused as non-finite times.
        return json.loads(raw, parse_int=float, parse_constant=float)
    except json.JSONDecodeError as e:
        raise RequestError(
            f"input SEGMENTS is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
            "bad_segments",
        ) from None
    except (RecursionError, ValueError):
        raise RequestError(
            "input SEGMENTS is not a flat JSON list of cues (too deeply nested or malformed)",
            "bad_segments",
        ) from None


def decode_segments(
    segments: np.ndarray | None, duration: float, settings: FrontSettings
) -> tuple[Segment, ...] | None:
    """Validate the optional ``SEGMENTS`` input: a JSON list of ``{"start", "end", "text"}``.

    The document's size is checked before it is parsed, and the cue texts together are held to
    ``max_text_chars`` like one ``TEXT``.
    """
    if segments is None:
        return None
    items = _parse_segments(_single_bytes("SEGMENTS", segments), settings)
    if not isinstance(items, list) or not items:
        raise RequestError(
            'input SEGMENTS must be a non-empty JSON list of {"start", "end", "text"}',
            "bad_segments",
        )
    if len(items) > settings.max_segments:
        raise RequestError(
            f"input SEGMENTS has {len(items)} cues; the limit is {settings.max_segments}",
            "bad_segments",
        )
    out: list[Segment] = []
    total_chars = -1  # the cue texts joined by newlines
    for k, item in enumerate(items):
        if not isinstance(item, dict):
            raise RequestError(
                f'input SEGMENTS[{k}] must be an object with "start", "end" and "text", got '
                f"{_json_type(item)}",
                "bad_segments",
            )
        missing = [key for key in ("start", "end", "text") if key not in item]
        if missing:
            raise RequestError(
                f'input SEGMENTS[{k}] must be an object with "start", "end" and "text" (missing '
                f"{', '.join(missing)})",
                "bad_segments",
            )
        if not isinstance(item["text"], str):
            raise RequestError(
                f"input SEGMENTS[{k}].text must be a string, got {_json_type(item['text'])}",
                "bad_segments",
            )
        start = _number(item.get("start"), f"[{k}].start")
        end = _number(item.get("end"), f"[{k}].end")
        if not 0.0 <= start < end:
            raise RequestError(
                f"input SEGMENTS[{k}]: start {start:g} s must be >= 0 and before end {end:g} s",
                "bad_segments",
            )
        if start >= duration:
            raise RequestError(
                f"input SEGMENTS[{k}] starts at {start:g} s, after the end of the "
                f"{duration:.2f} s of AUDIO",
                "bad_segments",
            )
        if end - start > settings.window_seconds:
            raise RequestError(
                f"input SEGMENTS[{k}] is {end - start:.1f} s long; the limit is "
                f"{settings.window_seconds:g} s per cue",
                "bad_segments",
            )
        if out and start < out[-1].end - SEGMENT_OVERLAP_TOLERANCE:
            raise RequestError(
                f"input SEGMENTS[{k}] ({start:g}-{end:g} s) overlaps or precedes the cue before "
                f"it ({out[-1].start:g}-{out[-1].end:g} s); cues must be in order and disjoint",
                "bad_segments",
            )
        text = check_text(item["text"], f"input SEGMENTS[{k}].text", settings, allow_empty=True)
        total_chars += len(text) + 1
        if total_chars > settings.max_text_chars:
            raise RequestError(
                f"input SEGMENTS: the cue texts up to SEGMENTS[{k}] hold {total_chars} "
                f"characters; the limit is {settings.max_text_chars} for all cues together",
                "text_too_long",
            )
        out.append(Segment(start, min(end, duration), text))
    return tuple(out)


def _single_bytes(name: str, array: np.ndarray | None) -> bytes | str:
    """The one element of a BYTES input, undecoded (so its size can be checked first)."""
    flat = np.asarray(array).reshape(-1)
    if flat.size != 1:
        raise RequestError(
            f"input {name} must hold exactly one string, got {flat.size}", "bad_shape"
        )
    value = flat[0]
    if isinstance(value, bytes | str):
        return value
    raise RequestError(f"input {name} must be a string (TYPE_STRING / BYTES)", "bad_dtype")


def first_difference(text: str, cues: tuple[Segment, ...]) -> str | None:
    """Where ``text`` stops matching the cue texts, ignoring whitespace; None if it matches.

    Returns a description naming the position in ``text`` and the differing text on both sides.
    """
    mine = ((i, ch) for i, ch in enumerate(text) if not ch.isspace())
    theirs = (
        (k, j, ch)
        for k, cue in enumerate(cues)
        for j, ch in enumerate(cue.text)
        if not ch.isspace()
    )
    for got, want in zip_longest(mine, theirs):
        if got is not None and want is not None and got[1] == want[2]:
            continue
        if want is None:
            assert got is not None
            return (
                f"TEXT has {_snippet(text, got[0])} at character {got[0]} after the last cue's text"
            )
        k, j, _ = want
        cue_part = f"SEGMENTS[{k}].text has {_snippet(cues[k].text, j)}"
        if got is None:
            return f"TEXT ends at character {len(text)} where {cue_part}"
        return f"TEXT has {_snippet(text, got[0])} at character {got[0]} where {cue_part}"
    return None


def _snippet(text: str, pos: int, width: int = 20) -> str:
    piece = text[pos : pos + width]
    return repr(piece + "..." if pos + width < len(text) else piece)


def decode_request(
    audio: np.ndarray | None,
    sample_rate: np.ndarray | None,
    text: np.ndarray | None,
    language: np.ndarray | None,
    settings: FrontSettings,
    segments: np.ndarray | None = None,
    audio_file: np.ndarray | None = None,
    context: np.ndarray | None = None,
) -> AlignRequest | TranscribeRequest:
    """Validate all inputs of one request; the audio comes from exactly one of ``AUDIO`` and
    ``AUDIO_FILE``. Without ``TEXT`` (and ``SEGMENTS``) the request is a
    :class:`TranscribeRequest` when the ASR model is loaded (``settings.asr``); ``CONTEXT``
    belongs to such requests only."""
    if text is None and segments is None and not settings.asr:
        raise RequestError(NO_ASR_MESSAGE, "missing_input")
    if context is not None and (text is not None or segments is not None):
        raise RequestError(
            "input CONTEXT is for requests without TEXT (it guides the transcription); "
            "leave it out when TEXT is sent",
            "bad_context",
        )
    if audio is not None and audio_file is not None:
        raise RequestError(
            "inputs AUDIO and AUDIO_FILE were both sent; a request carries exactly one of them",
            "audio_inputs",
        )
    if audio_file is not None:
        wave, rate = decode_audio_file(audio_file, sample_rate, settings)
    elif audio is not None:
        wave, rate = decode_audio(audio, sample_rate, settings)
    else:
        raise RequestError(
            "input AUDIO or AUDIO_FILE is required (exactly one of them)", "missing_input"
        )
    if text is None and segments is None:
        return TranscribeRequest(
            audio=wave,
            sample_rate=rate,
            language=_transcript_language(language),
            context="" if context is None else decode_context(context, settings),
        )
    cues = decode_segments(segments, wave.shape[0] / rate, settings)
    value = decode_text(text, settings, allow_empty=cues is not None)
    if cues is not None:
        joined = "\n".join(c.text for c in cues)
        if value.strip():
            difference = first_difference(value, cues)
            if difference is not None:
                raise RequestError(
                    f"input TEXT differs from the cue texts of SEGMENTS: {difference}; with "
                    "SEGMENTS, TEXT must be empty or the cue texts joined by any whitespace",
                    "bad_segments",
                )
        else:
            value = joined
    return AlignRequest(
        audio=wave,
        sample_rate=rate,
        text=value,
        language=decode_language(language),
        segments=cues,
    )
