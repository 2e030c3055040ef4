import io
import json
import re
from dataclasses import replace

import numpy as np
import pytest
import soundfile

from qwen3_aligner_triton import requests as requests_module
from qwen3_aligner_triton.audio_file import EncodedAudio
from qwen3_aligner_triton.params import FrontSettings
from qwen3_aligner_triton.requests import (
    NO_ASR_MESSAGE,
    AlignRequest,
    RequestError,
    TranscribeRequest,
    check_text,
    decode_audio,
    decode_request,
    decode_text,
)

SETTINGS = FrontSettings(
    checkpoint="x", max_audio_seconds=10.0, max_text_chars=100, max_audio_samples=3_000_000
)


def strings(value) -> np.ndarray:
    return np.array([[value]], dtype=np.object_)


def good(**overrides):
    inputs = {
        "audio": np.zeros((1, 16000), np.float32),
        "sample_rate": None,
        "text": strings(b"hello world"),
        "language": strings(b"en"),
    }
    inputs.update(overrides)
    return inputs


def test_valid_request():
    req = decode_request(**good(sample_rate=np.array([[8000]], np.int32)), settings=SETTINGS)
    assert req.sample_rate == 8000
    assert req.text == "hello world"
    assert req.language == "English"
    assert req.duration == 2.0


def test_sample_rate_defaults_to_16k():
    assert decode_request(**good(), settings=SETTINGS).sample_rate == 16000


@pytest.mark.parametrize(
    "sample_rate",
    [np.array(8000, np.int32), np.array([8000], np.int32), np.array([[8000]], np.int32)],
    ids=["scalar", "[1]", "[1, 1]"],
)
def test_sample_rate_is_read_from_any_shape_holding_one_value(sample_rate):
    req = decode_request(**good(sample_rate=sample_rate), settings=SETTINGS)
    assert req.sample_rate == 8000
    assert req.duration == 2.0


REFERENCE_TAIL = (
    ", not a transcript; send the transcript itself "
    "(the server never opens, fetches or decodes what a request names)"
)
BASE64_TEXT = b"BwkLDQ8RExUXGRsdHyEjJScpKy0vMTM1Nzk7PT9BQ0VHSUtNT1FTVVdZW11fYWNlZ2lrbW9xc3V3eXt9"

INVALID_REQUESTS = [
    (
        {"audio": None},
        "input AUDIO or AUDIO_FILE is required (exactly one of them)",
        "missing_input",
    ),
    ({"text": None}, NO_ASR_MESSAGE, "missing_input"),
    ({"language": None}, "input LANGUAGE is required", "missing_input"),
    (
        {"audio": np.zeros((1, 16000), np.float64)},
        "input AUDIO must be FP32, got float64",
        "bad_dtype",
    ),
    (
        {"audio": np.zeros((2, 16000), np.float32)},
        "input AUDIO must be one mono waveform of shape [1, samples], got [2, 16000]",
        "bad_shape",
    ),
    (
        {"audio": np.zeros((1, 1, 16000), np.float32)},
        "input AUDIO must be one mono waveform of shape [1, samples], got [1, 1, 16000]",
        "bad_shape",
    ),
    ({"audio": np.zeros((1, 0), np.float32)}, "input AUDIO is empty", "audio_empty"),
    (
        {"audio": np.zeros((1, 16000 * 11), np.float32)},
        "input AUDIO is 11.00 s long; the limit is 10 s",
        "audio_too_long",
    ),
    (
        {"audio": np.zeros((1, 80), np.float32)},
        "input AUDIO is 0.005 s long; at least 0.1 s is needed to align",
        "audio_too_short",
    ),
    (
        {"audio": np.array([[0.0, np.nan] * 8000], np.float32)},
        "input AUDIO contains NaN or infinite samples",
        "audio_not_finite",
    ),
    (
        {"audio": np.array([[0.0, np.inf] * 8000], np.float32)},
        "input AUDIO contains NaN or infinite samples",
        "audio_not_finite",
    ),
    (
        {"audio": np.full((1, 16000), 1.5, np.float32)},
        "input AUDIO has samples up to 1.5; float samples must lie in [-1, 1] "
        "(scale integer PCM by 1/32768)",
        "audio_out_of_range",
    ),
    (
        {"audio": np.full((1, 16000), -32768.0, np.float32)},
        "input AUDIO has samples up to 3.277e+04; float samples must lie in [-1, 1] "
        "(scale integer PCM by 1/32768)",
        "audio_out_of_range",
    ),
    (
        {"audio": np.zeros((1, 384000 * 9), np.float32), "sample_rate": np.array([[384000]])},
        "input AUDIO has 3456000 samples; the limit is 3000000",
        "audio_too_long",
    ),
    (
        {"sample_rate": np.array([[0]], np.int32)},
        "input SAMPLE_RATE 0 Hz is outside the accepted range 1000..384000 Hz",
        "bad_sample_rate",
    ),
    (
        {"sample_rate": np.array([[-16000]], np.int32)},
        "input SAMPLE_RATE -16000 Hz is outside the accepted range 1000..384000 Hz",
        "bad_sample_rate",
    ),
    (
        {"sample_rate": np.array([[10**9]], np.int32)},
        "input SAMPLE_RATE 1000000000 Hz is outside the accepted range 1000..384000 Hz",
        "bad_sample_rate",
    ),
    (
        {"sample_rate": np.array([[16000.0]], np.float32)},
        "input SAMPLE_RATE must be one INT32 value",
        "bad_sample_rate",
    ),
    (
        {"sample_rate": np.array([[8000, 16000]], np.int32)},
        "input SAMPLE_RATE must be one INT32 value",
        "bad_sample_rate",
    ),
    ({"text": strings(b"   ")}, "input TEXT is empty", "text_empty"),
    (
        {"text": strings(b"a" * 101)},
        "input TEXT has 101 characters; the limit is 100",
        "text_too_long",
    ),
    ({"text": strings(b"ok\xff\xfe")}, "input TEXT is not valid UTF-8 (byte 2)", "bad_encoding"),
    (
        {"text": strings(b"bell\x07")},
        "input TEXT contains control character U+0007 at 4",
        "bad_text",
    ),
    (
        {"text": np.array([[b"a", b"b"]], dtype=np.object_)},
        "input TEXT must hold exactly one string, got 2",
        "bad_shape",
    ),
    (
        {"text": np.array([[7]], np.int32)},
        "input TEXT must be a string (TYPE_STRING / BYTES)",
        "bad_dtype",
    ),
    (
        {"text": strings(b"https://example.com/a.wav")},
        "input TEXT looks like a URL" + REFERENCE_TAIL,
        "text_is_reference",
    ),
    (
        {"text": strings(b"/etc/passwd")},
        "input TEXT looks like a file path" + REFERENCE_TAIL,
        "text_is_reference",
    ),
    (
        {"text": strings(b"../../secret/audio.wav")},
        "input TEXT looks like a file path" + REFERENCE_TAIL,
        "text_is_reference",
    ),
    (
        {"text": strings(b"data:audio/wav;base64,UklGRg==")},
        "input TEXT looks like a data URI" + REFERENCE_TAIL,
        "text_is_reference",
    ),
    (
        {"text": strings(BASE64_TEXT)},
        "input TEXT looks like base64 data" + REFERENCE_TAIL,
        "text_is_reference",
    ),
    (  # base64 wrapped in lines: the line breaks do not make it text; 64 characters without them
        {"text": strings(BASE64_TEXT[:32] + b"\r\n" + BASE64_TEXT[32:64] + b"\r\n")},
        "input TEXT looks like base64 data" + REFERENCE_TAIL,
        "text_is_reference",
    ),
]


@pytest.mark.parametrize(("overrides", "message", "reason"), INVALID_REQUESTS)
def test_invalid_requests_name_the_input_and_the_limit(overrides, message, reason):
    with pytest.raises(RequestError) as info:
        decode_request(**good(**overrides), settings=SETTINGS)
    assert str(info.value) == message
    assert info.value.reason == reason


def test_unsupported_language_is_named_with_the_supported_ones():
    with pytest.raises(RequestError) as info:
        decode_request(**good(language=strings(b"klingon")), settings=SETTINGS)
    assert str(info.value).startswith(
        "input LANGUAGE: unsupported language 'klingon'; use one of: "
    )
    assert "English (en)" in str(info.value)
    assert info.value.reason == "bad_language"


LIMITS = FrontSettings(
    checkpoint="x",
    max_audio_seconds=1.0,
    max_audio_samples=16000,
    min_audio_seconds=0.1,
    max_amplitude=1.0,
    max_text_chars=11,
)


@pytest.mark.parametrize(
    "overrides",
    [
        {"audio": np.zeros((1, 16000), np.float32)},  # 16000 samples, 1 s: both limits
        # 8000 samples at 8 kHz: 1 s, and 16000 samples once resampled to 16 kHz
        {"audio": np.zeros((1, 8000), np.float32), "sample_rate": np.array([[8000]], np.int32)},
        {"audio": np.zeros((1, 1600), np.float32)},  # 0.1 s, the shortest accepted
        {"audio": np.array([[1.0, -1.0] * 8000], np.float32)},  # |sample| = max_amplitude
        {"text": strings(b"hello world")},  # 11 characters = max_text_chars
    ],
    ids=["samples-and-seconds", "resampled", "min-seconds", "amplitude", "text-chars"],
)
def test_a_request_exactly_at_a_limit_is_accepted(overrides):
    req = decode_request(**good(**overrides), settings=LIMITS)
    assert req.text == "hello world"
    assert req.audio.shape == (overrides.get("audio", good()["audio"]).shape[1],)


@pytest.mark.parametrize(
    "text",
    [
        "hello / world",
        "and/or",
        "C'est l'heure",
        "e-mail https is a word",
        "ABCdefGHIjkl",
        "42",
        "iPhone15",  # letters of both cases and a digit, but short
        "Xylophone" * 8,  # long and in the base64 alphabet, but no digit, '+' or '/'
        # 63 base64 characters wrapped in lines: one short of BASE64_MIN_CHARS
        "BwkLDQ8RExUXGRsdHyEjJScpKy0vMTM1\r\nNzk7PT9BQ0VHSUtNT1FTVVdZW11fYWN",
    ],
)
def test_ordinary_text_is_not_mistaken_for_a_reference(text):
    assert decode_request(**good(text=strings(text.encode())), settings=SETTINGS).text == text


def test_request_error_reason_defaults_to_invalid():
    error = RequestError("input AUDIO cannot be turned into features")
    assert error.reason == "invalid"
    assert str(error) == "input AUDIO cannot be turned into features"


def test_blank_text_is_refused_unless_allowed():
    with pytest.raises(RequestError, match=r"^input TEXT is empty$"):
        decode_text(strings(b" \n"), SETTINGS)
    with pytest.raises(RequestError, match=r"^input SEGMENTS\[0\]\.text is empty$"):
        check_text(" ", "input SEGMENTS[0].text", SETTINGS)
    assert decode_text(strings(b" \n"), SETTINGS, allow_empty=True) == " \n"
    assert check_text(" ", "input SEGMENTS[0].text", SETTINGS, allow_empty=True) == " "


def test_text_with_newlines_and_tabs_is_fine():
    req = decode_request(**good(text=strings(b"line one\n\tline two")), settings=SETTINGS)
    assert req.text == "line one\n\tline two"


# --- SEGMENTS: every malformed document is a client error naming the field --------------------

CUE_SETTINGS = FrontSettings(
    checkpoint="x", max_text_chars=100, max_segments=5, max_segments_bytes=200_000
)


def with_segments(document, text: bytes = b"", settings: FrontSettings = CUE_SETTINGS):
    """Decode a request with 10 s of audio, ``text`` and ``document`` (JSON, or the raw tensor)."""
    if isinstance(document, np.ndarray):
        segments = document
    else:
        raw = document if isinstance(document, bytes | str) else json.dumps(document)
        segments = strings(raw.encode() if isinstance(raw, str) else raw)
    inputs = good(audio=np.zeros((1, 16000 * 10), np.float32), text=strings(text))
    return decode_request(**inputs, settings=settings, segments=segments)


CUES = [{"start": 0, "end": 2, "text": "Hello, world."}, {"start": 3, "end": 5, "text": "How are"}]


def one_cue(start="0", end="1", text='"a"') -> bytes:
    return f'[{{"start": {start}, "end": {end}, "text": {text}}}]'.encode()


def cue_list(n: int, text: str) -> str:
    return json.dumps([{"start": k, "end": k + 0.5, "text": text} for k in range(n)])


def cues(*spans) -> str:
    return json.dumps([{"start": s, "end": e, "text": t} for s, e, t in spans])


NOT_A_LIST = 'input SEGMENTS must be a non-empty JSON list of {"start", "end", "text"}'
NOT_A_CUE = 'must be an object with "start", "end" and "text"'

MALFORMED_SEGMENTS = [
    (
        one_cue(start="1" + "0" * 400),
        "input SEGMENTS[0].start must be a finite number",
        "bad_segments",
    ),
    (
        b"[" * 200_000 + b"]" * 200_000,
        "input SEGMENTS has 400000 bytes; the limit is 200000",
        "segments_too_large",
    ),
    (
        b"[" * 50_000 + b"]" * 50_000,
        "input SEGMENTS is not a flat JSON list of cues (too deeply nested or malformed)",
        "bad_segments",
    ),
    (one_cue(end="Infinity"), "input SEGMENTS[0].end must be a finite number", "bad_segments"),
    (one_cue(start="NaN"), "input SEGMENTS[0].start must be a finite number", "bad_segments"),
    (
        one_cue(text='"a\\ud800"'),
        "input SEGMENTS[0].text contains control character U+D800 at 1",
        "bad_text",
    ),
    (
        one_cue(text="5"),
        "input SEGMENTS[0].text must be a string, got a number",
        "bad_segments",
    ),
    (
        one_cue(text='["a"]'),
        "input SEGMENTS[0].text must be a string, got a list",
        "bad_segments",
    ),
    (
        one_cue(start="[0]"),
        "input SEGMENTS[0].start must be a number of seconds, got a list",
        "bad_segments",
    ),
    (
        one_cue(start="null"),
        "input SEGMENTS[0].start must be a number of seconds, got null",
        "bad_segments",
    ),
    (
        one_cue(start="true"),
        "input SEGMENTS[0].start must be a number of seconds, got a boolean",
        "bad_segments",
    ),
    (
        one_cue(start="{}"),
        "input SEGMENTS[0].start must be a number of seconds, got an object",
        "bad_segments",
    ),
    (
        one_cue(end='"1"'),
        "input SEGMENTS[0].end must be a number of seconds, got a string",
        "bad_segments",
    ),
    (b'[{"start": 0, "end": 1}]', f"input SEGMENTS[0] {NOT_A_CUE} (missing text)", "bad_segments"),
    (b'[{"start": 0}]', f"input SEGMENTS[0] {NOT_A_CUE} (missing end, text)", "bad_segments"),
    (
        b'[{"start": 0, "end": 1, "text": "a"}, 7]',
        f"input SEGMENTS[1] {NOT_A_CUE}, got a number",
        "bad_segments",
    ),
    (
        b'[\n  {"start": 0 "end": 1, "text": "a"}\n]',
        "input SEGMENTS is not valid JSON: Expecting ',' delimiter at line 2 column 15",
        "bad_segments",
    ),
    (b"\xff[]", "input SEGMENTS is not valid UTF-8 (byte 0)", "bad_encoding"),
    (b"[]", NOT_A_LIST, "bad_segments"),
    (b'{"start": 0, "end": 1, "text": "a"}', NOT_A_LIST, "bad_segments"),
    (b'"a"', NOT_A_LIST, "bad_segments"),
    (cue_list(6, "a"), "input SEGMENTS has 6 cues; the limit is 5", "bad_segments"),
    (
        cue_list(3, "x" * 40),
        "input SEGMENTS: the cue texts up to SEGMENTS[2] hold 122 characters; "
        "the limit is 100 for all cues together",
        "text_too_long",
    ),
    (  # 50 + newline + 50: one over the limit
        cues((0, 1, "a" * 50), (2, 3, "b" * 50)),
        "input SEGMENTS: the cue texts up to SEGMENTS[1] hold 101 characters; "
        "the limit is 100 for all cues together",
        "text_too_long",
    ),
    (
        one_cue(text='"http://example.com/a"'),
        "input SEGMENTS[0].text looks like a URL" + REFERENCE_TAIL,
        "text_is_reference",
    ),
    (
        one_cue(start="1", end="1"),
        "input SEGMENTS[0]: start 1 s must be >= 0 and before end 1 s",
        "bad_segments",
    ),
    (
        one_cue(start="-0.5", end="1"),
        "input SEGMENTS[0]: start -0.5 s must be >= 0 and before end 1 s",
        "bad_segments",
    ),
    (
        one_cue(start="10", end="11"),
        "input SEGMENTS[0] starts at 10 s, after the end of the 10.00 s of AUDIO",
        "bad_segments",
    ),
    (
        one_cue(start="1", end="182"),
        "input SEGMENTS[0] is 181.0 s long; the limit is 180 s per cue",
        "bad_segments",
    ),
    (
        cues((0, 1, "a"), (2, 3, "b"), (4, 5, "c"), (4.5, 6, "d")),
        "input SEGMENTS[3] (4.5-6 s) overlaps or precedes the cue before it (4-5 s); "
        "cues must be in order and disjoint",
        "bad_segments",
    ),
    (
        np.array([[b"[]", b"[]"]], dtype=np.object_),
        "input SEGMENTS must hold exactly one string, got 2",
        "bad_shape",
    ),
    (
        np.array([[5]], dtype=np.object_),
        "input SEGMENTS must be a string (TYPE_STRING / BYTES)",
        "bad_dtype",
    ),
]


@pytest.mark.parametrize(("document", "message", "reason"), MALFORMED_SEGMENTS)
def test_malformed_segments_are_client_errors_naming_the_field(document, message, reason):
    with pytest.raises(RequestError) as info:
        with_segments(document)
    assert str(info.value) == message
    assert info.value.reason == reason


def test_segments_size_is_checked_before_parsing(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("json.loads ran on an over-size document")

    monkeypatch.setattr(json, "loads", never)
    with pytest.raises(RequestError, match="200001 bytes; the limit is 200000"):
        with_segments(b" " * 200_001)


def test_segments_within_the_limits_are_accepted():
    cues = with_segments(CUES).segments
    assert [(c.start, c.end, c.text) for c in cues] == [(0, 2, "Hello, world."), (3, 5, "How are")]


def test_segments_of_exactly_max_segments_bytes_are_accepted():
    document = one_cue()  # 37 bytes
    req = with_segments(document, settings=replace(CUE_SETTINGS, max_segments_bytes=37))
    assert [(c.start, c.end, c.text) for c in req.segments] == [(0, 1, "a")]
    with pytest.raises(RequestError, match=r"^input SEGMENTS has 37 bytes; the limit is 36$"):
        with_segments(document, settings=replace(CUE_SETTINGS, max_segments_bytes=36))


def test_exactly_max_segments_cues_are_accepted():
    assert len(with_segments(cue_list(5, "a")).segments) == 5


def test_cue_texts_of_exactly_max_text_chars_together_are_accepted():
    req = with_segments(cues((0, 1, "a" * 50), (2, 3, "b" * 49)))  # 50 + newline + 49 = 100
    assert req.text == "a" * 50 + "\n" + "b" * 49


def test_cue_of_exactly_the_window_is_accepted_and_clipped_to_the_audio():
    req = with_segments(cues((0, 2, "a"), (3, 183, "b")))  # 180 s = window_seconds
    assert [(c.start, c.end) for c in req.segments] == [(0, 2), (3, 10)]


def test_cues_may_touch_or_overlap_by_the_tolerance():
    req = with_segments(cues((0, 2, "a"), (1.999, 3, "b"), (3, 4, "c")))
    assert [(c.start, c.end) for c in req.segments] == [(0, 2), (1.999, 3), (3, 4)]


def test_cues_with_empty_text_are_kept():
    req = with_segments(cues((0, 1, "a"), (2, 3, ""), (4, 5, "  ")))
    assert [c.text for c in req.segments] == ["a", "", "  "]
    assert req.text == "a\n\n  "


# --- cue mode: TEXT may be the cue texts joined by any whitespace -----------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world.\nHow are",
        "Hello, world. How are",
        "Hello, world.How are",
        "  Hello,\tworld.\n\nHow   are \n",
        "Hello,world.Howare",
    ],
)
def test_text_equal_to_the_cues_up_to_whitespace_is_accepted(text):
    req = with_segments(CUES, text.encode())
    assert req.text == text  # character spans refer to the transcript the client sent
    assert len(req.segments) == 2


def test_empty_text_becomes_the_cues_joined_by_newlines():
    assert with_segments(CUES, b"").text == "Hello, world.\nHow are"
    assert with_segments(CUES, b" \n").text == "Hello, world.\nHow are"


LONG_CUE = [{"start": 0, "end": 5, "text": "one two three four five six seven"}]

FIRST_DIFFERENCES = [
    (CUES, "Hello, world. How are you", "TEXT has 'you' at character 22 after the last cue's text"),
    (
        CUES,
        "Hello, world. Who are",
        "TEXT has 'Who are' at character 14 where SEGMENTS[1].text has 'How are'",
    ),
    (CUES, "Hello, world.", "TEXT ends at character 13 where SEGMENTS[1].text has 'How are'"),
    (
        CUES,
        "Hello world. How",
        "TEXT has 'world. How' at character 6 where SEGMENTS[0].text has ', world.'",
    ),
    (  # more than 20 characters follow: the first 20 and an ellipsis
        LONG_CUE,
        "one two three four five six seven eight nine ten eleven twelve",
        "TEXT has 'eight nine ten eleve...' at character 34 after the last cue's text",
    ),
    (  # exactly 20 characters follow: all of them, no ellipsis
        LONG_CUE,
        "one two three four five six seven abcdefghijklmnopqrst",
        "TEXT has 'abcdefghijklmnopqrst' at character 34 after the last cue's text",
    ),
]


@pytest.mark.parametrize(("document", "text", "where"), FIRST_DIFFERENCES)
def test_text_with_other_words_is_refused_at_the_first_difference(document, text, where):
    with pytest.raises(RequestError) as info:
        with_segments(document, text.encode())
    assert str(info.value) == (
        f"input TEXT differs from the cue texts of SEGMENTS: {where}; with SEGMENTS, "
        "TEXT must be empty or the cue texts joined by any whitespace"
    )
    assert info.value.reason == "bad_segments"


def test_the_sample_limit_counts_the_resampled_waveform_too():
    """4 h at 1 kHz is 14.4 M samples on the wire but 230 M once resampled: the limit counts what
    the server then holds."""
    settings = FrontSettings(checkpoint="x", max_audio_seconds=14400.0, max_audio_samples=1_000_000)
    low_rate = good(
        audio=np.zeros((1, 200_000), np.float32), sample_rate=np.array([[1000]], np.int32)
    )
    with pytest.raises(RequestError) as info:
        decode_request(**low_rate, settings=settings)
    assert str(info.value) == ("input AUDIO makes 3200000 samples at 16 kHz; the limit is 1000000")
    assert info.value.reason == "audio_too_long"
    same_on_the_wire = good(audio=np.zeros((1, 200_000), np.float32))
    assert decode_request(**same_on_the_wire, settings=settings).duration == 12.5


# --- AUDIO_FILE: the bytes of an audio file instead of AUDIO, held to the same limits -----------


def wav(wave: np.ndarray, rate: int = 16000) -> bytes:
    """The bytes of a float32 WAV file (80 bytes of header) that holds ``wave`` exactly."""
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def ramp(samples: int) -> np.ndarray:
    return np.linspace(-0.5, 0.5, samples, dtype=np.float32)


def with_file(data: bytes | str, settings: FrontSettings = SETTINGS):
    """Decode a request whose audio is the AUDIO_FILE ``data`` (a str: in-process callers)."""
    return decode_request(**good(audio=None, audio_file=strings(data)), settings=settings)


def file_refusal(data: bytes | str, settings: FrontSettings = SETTINGS) -> RequestError:
    with pytest.raises(RequestError) as info:
        with_file(data, settings)
    return info.value


def test_an_audio_file_request_carries_the_files_samples_at_its_rate():
    wave = ramp(16000)  # 2 s at 8 kHz
    req = with_file(wav(wave, 8000))
    assert req.sample_rate == 8000 and req.duration == 2.0
    assert req.audio.dtype == np.float32 and np.array_equal(req.audio, wave)
    assert (req.text, req.language, req.segments) == ("hello world", "English", None)


UNREADABLE = (
    "input AUDIO_FILE is not a readable audio file (Format not recognised); send the bytes of a "
    "WAV, FLAC, OGG (Vorbis, Opus) or MP3 file"
)

AUDIO_FILE_REFUSALS = [
    (
        {"audio": np.zeros((1, 16000), np.float32)},
        "inputs AUDIO and AUDIO_FILE were both sent; a request carries exactly one of them",
        "audio_inputs",
    ),
    (
        {"sample_rate": np.array([[16000]], np.int32)},
        "input SAMPLE_RATE must not accompany AUDIO_FILE: the file gives its own sample rate "
        "(send SAMPLE_RATE only with AUDIO)",
        "bad_sample_rate",
    ),
    (
        {"audio_file": np.array([[b"a", b"b"]], dtype=np.object_)},
        "input AUDIO_FILE must hold exactly one string, got 2",
        "bad_shape",
    ),
    (
        {"audio_file": np.array([[7]], dtype=np.object_)},
        "input AUDIO_FILE must be a string (TYPE_STRING / BYTES)",
        "bad_dtype",
    ),
    ({"audio_file": strings(b"RIFF but not audio")}, UNREADABLE, "bad_audio_file"),
    # a str (in-process callers only) is encoded as UTF-8, lone surrogates included
    ({"audio_file": strings("\ud800 not audio")}, UNREADABLE, "bad_audio_file"),
    (
        {"audio_file": strings(wav(np.zeros(0, np.float32)))},
        "input AUDIO_FILE holds no audio (0 frames)",
        "audio_empty",
    ),
    (
        {"audio_file": strings(wav(np.array([0.0, np.nan] * 8000, np.float32)))},
        "input AUDIO_FILE contains NaN or infinite samples",
        "audio_not_finite",
    ),
]


@pytest.mark.parametrize(("overrides", "message", "reason"), AUDIO_FILE_REFUSALS)
def test_invalid_audio_files_name_the_input_and_the_reason(overrides, message, reason):
    inputs = good(**{"audio": None, "audio_file": strings(wav(ramp(16000))), **overrides})
    with pytest.raises(RequestError) as info:
        decode_request(**inputs, settings=SETTINGS)
    assert (str(info.value), info.value.reason) == (message, reason)


def test_an_audio_file_over_max_audio_file_bytes_is_refused_before_it_is_opened(monkeypatch):
    data = wav(ramp(16000))  # 64_080 bytes
    with monkeypatch.context() as patch:
        patch.setattr(requests_module, "EncodedAudio", lambda *args: pytest.fail("opened"))
        error = file_refusal(data, replace(SETTINGS, max_audio_file_bytes=64_079))
    assert (
        str(error) == "input AUDIO_FILE has 64080 bytes; the limit is 64079 (max_audio_file_bytes)"
    )
    assert error.reason == "audio_file_too_large"
    assert with_file(data, replace(SETTINGS, max_audio_file_bytes=64_080)).audio.size == 16000


def test_an_audio_file_given_as_str_is_measured_in_utf8_bytes():
    error = file_refusal("é" * 600, replace(SETTINGS, max_audio_file_bytes=1000))
    assert str(error) == "input AUDIO_FILE has 1200 bytes; the limit is 1000 (max_audio_file_bytes)"


@pytest.mark.parametrize(
    ("rate", "accepted"), [(7999, False), (8000, True), (16000, True), (16001, False)]
)
def test_an_audio_files_rate_is_held_to_the_accepted_range(rate, accepted):
    settings = replace(SETTINGS, min_sample_rate=8000, max_sample_rate=16000)
    data = wav(ramp(rate), rate)  # 1 s
    if accepted:
        assert with_file(data, settings).sample_rate == rate
        return
    error = file_refusal(data, settings)
    assert str(error) == (
        f"input AUDIO_FILE has a sample rate of {rate} Hz, outside the accepted range "
        "8000..16000 Hz"
    )
    assert error.reason == "bad_sample_rate"


@pytest.mark.parametrize(
    ("samples", "rate", "settings", "message", "reason"),
    [
        (
            16000 * 11,
            16000,
            SETTINGS,
            "input AUDIO_FILE is 11.00 s long; the limit is 10 s",
            "audio_too_long",
        ),
        (
            9000,
            8000,
            replace(SETTINGS, max_audio_samples=16000),
            "input AUDIO_FILE makes 18000 samples at 16 kHz; the limit is 16000",
            "audio_too_long",
        ),
        (
            800,
            16000,
            SETTINGS,
            "input AUDIO_FILE is 0.050 s long; at least 0.1 s is needed to align",
            "audio_too_short",
        ),
    ],
    ids=["seconds", "resampled-samples", "too-short"],
)
def test_an_audio_files_length_is_held_to_the_limits_from_its_header_before_decoding(
    monkeypatch, samples, rate, settings, message, reason
):
    monkeypatch.setattr(EncodedAudio, "decode", lambda self: pytest.fail("decoded"))
    error = file_refusal(wav(np.zeros(samples, np.float32), rate), settings)
    assert (str(error), error.reason) == (message, reason)


def test_decode_audio_without_audio_is_refused_as_missing():
    with pytest.raises(RequestError) as info:
        decode_audio(None, None, SETTINGS)
    assert (str(info.value), info.value.reason) == ("input AUDIO is required", "missing_input")


# --- requests without TEXT (the ASR model loaded) ---------------------------------------------

ASR_SETTINGS = FrontSettings(checkpoint="x", max_audio_seconds=10.0, max_text_chars=100, asr=True)


@pytest.mark.parametrize(
    ("language", "expected"),
    [(None, None), (b"auto", None), (b"AUTO", None), (b"", None), (b"fr", "French")],
)
def test_without_text_the_asr_server_transcribes(language, expected):
    inputs = good(text=None, language=None if language is None else strings(language))
    req = decode_request(**inputs, settings=ASR_SETTINGS)
    assert isinstance(req, TranscribeRequest)
    assert (req.language, req.context, req.sample_rate) == (expected, "", 16000)
    assert req.duration == 1.0


def test_context_goes_with_a_request_without_text():
    inputs = good(text=None, language=None)
    req = decode_request(**inputs, settings=ASR_SETTINGS, context=strings(b"Names: Ada."))
    assert isinstance(req, TranscribeRequest)
    assert (req.context, req.language) == ("Names: Ada.", None)
    np.testing.assert_array_equal(req.audio, inputs["audio"].reshape(-1))


def test_with_text_an_asr_server_aligns_as_before():
    req = decode_request(**good(), settings=ASR_SETTINGS)
    assert isinstance(req, AlignRequest) and req.text == "hello world"
    with pytest.raises(RequestError, match="input LANGUAGE is required"):
        decode_request(**good(language=None), settings=ASR_SETTINGS)
    with pytest.raises(RequestError, match="'auto'"):
        decode_request(**good(language=strings(b"auto")), settings=ASR_SETTINGS)


@pytest.mark.parametrize(
    ("overrides", "settings", "message", "reason"),
    [
        ({"text": None}, SETTINGS, "start it with ./scripts/serve --asr", "missing_input"),
        (
            {"text": None, "context": strings(b"x")},
            SETTINGS,
            "start it with ./scripts/serve --asr",
            "missing_input",
        ),
        (
            {"context": strings(b"Names")},
            ASR_SETTINGS,
            "input CONTEXT is for requests without TEXT",
            "bad_context",
        ),
        (
            {"text": None, "language": strings(b"Thai")},
            ASR_SETTINGS,
            "input LANGUAGE",
            "bad_language",
        ),
        (
            {"text": None, "context": strings(b"a\x00b")},
            ASR_SETTINGS,
            "input CONTEXT",
            None,
        ),
        (
            {"text": None, "context": strings(b"x" * 101)},
            ASR_SETTINGS,
            "input CONTEXT",
            "text_too_long",
        ),
    ],
)
def test_requests_without_text_that_cannot_be_served(overrides, settings, message, reason):
    with pytest.raises(RequestError, match=re.escape(message)) as info:
        decode_request(**good(**overrides), settings=settings)
    if reason is not None:
        assert info.value.reason == reason
