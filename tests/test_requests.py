import json

import numpy as np
import pytest

from qwen3_aligner_triton.params import ModelSettings
from qwen3_aligner_triton.requests import RequestError, decode_request

SETTINGS = ModelSettings(
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
    ("overrides", "message"),
    [
        ({"audio": None}, "AUDIO is required"),
        ({"text": None}, "TEXT is required"),
        ({"language": None}, "LANGUAGE is required"),
        ({"audio": np.zeros((1, 16000), np.float64)}, "AUDIO must be FP32"),
        ({"audio": np.zeros((2, 16000), np.float32)}, "mono waveform"),
        ({"audio": np.zeros((1, 0), np.float32)}, "AUDIO is empty"),
        ({"audio": np.zeros((1, 16000 * 11), np.float32)}, "limit is 10 s"),
        ({"audio": np.zeros((1, 100), np.float32)}, "at least 0.1 s"),
        ({"audio": np.array([[0.0, np.nan] * 8000], np.float32)}, "NaN or infinite"),
        ({"audio": np.array([[0.0, np.inf] * 8000], np.float32)}, "NaN or infinite"),
        ({"sample_rate": np.array([[0]], np.int32)}, "SAMPLE_RATE 0 Hz is outside"),
        ({"sample_rate": np.array([[-16000]], np.int32)}, "SAMPLE_RATE -16000 Hz"),
        ({"sample_rate": np.array([[10**9]], np.int32)}, "outside the accepted range"),
        ({"sample_rate": np.array([[16000.0]], np.float32)}, "one INT32 value"),
        ({"text": strings(b"   ")}, "TEXT is empty"),
        ({"text": strings(b"a" * 101)}, "the limit is 100"),
        ({"text": strings(b"\xff\xfe")}, "not valid UTF-8"),
        ({"text": strings(b"bell\x07")}, "control character U\\+0007"),
        ({"text": np.array([[b"a", b"b"]], dtype=np.object_)}, "exactly one string"),
        ({"language": strings(b"klingon")}, "LANGUAGE: unsupported language 'klingon'"),
        ({"audio": np.full((1, 16000), 1.5, np.float32)}, "samples up to 1.5"),
        (
            {"audio": np.zeros((1, 384000 * 9), np.float32), "sample_rate": np.array([[384000]])},
            "the limit is 3000000",
        ),
        ({"audio": np.full((1, 16000), -32768.0, np.float32)}, "scale integer PCM"),
        ({"text": strings(b"https://example.com/a.wav")}, "looks like a URL"),
        ({"text": strings(b"/etc/passwd")}, "looks like a file path"),
        ({"text": strings(b"../../secret/audio.wav")}, "looks like a file path"),
        ({"text": strings(b"data:audio/wav;base64,UklGRg==")}, "looks like a data URI"),
        (
            {
                "text": strings(
                    b"BwkLDQ8RExUXGRsdHyEjJScpKy0vMTM1Nzk7PT9BQ0VHSUtNT1FTVVdZW11fYWNlZ2lrbW9xc3V3eXt9"
                )
            },
            "looks like base64",
        ),
    ],
)
def test_invalid_requests_name_the_input(overrides, message):
    with pytest.raises(RequestError, match=message):
        decode_request(**good(**overrides), settings=SETTINGS)


@pytest.mark.parametrize(
    "text",
    ["hello / world", "and/or", "C'est l'heure", "e-mail https is a word", "ABCdefGHIjkl", "42"],
)
def test_ordinary_text_is_not_mistaken_for_a_reference(text):
    assert decode_request(**good(text=strings(text.encode())), settings=SETTINGS).text == text


def test_reasons_are_stable_labels():
    with pytest.raises(RequestError) as info:
        decode_request(**good(audio=np.zeros((1, 16000 * 11), np.float32)), settings=SETTINGS)
    assert info.value.reason == "audio_too_long"


def test_text_with_newlines_and_tabs_is_fine():
    req = decode_request(**good(text=strings(b"line one\n\tline two")), settings=SETTINGS)
    assert req.text == "line one\n\tline two"


# --- SEGMENTS: every malformed document is a client error naming the field --------------------

CUE_SETTINGS = ModelSettings(
    checkpoint="x", max_text_chars=100, max_segments=5, max_segments_bytes=200_000
)


def with_segments(document, text: bytes = b"", settings: ModelSettings = CUE_SETTINGS):
    raw = document if isinstance(document, bytes | str) else json.dumps(document)
    raw = raw.encode() if isinstance(raw, str) else raw
    inputs = good(audio=np.zeros((1, 16000 * 10), np.float32), text=strings(text))
    return decode_request(**inputs, settings=settings, segments=strings(raw))


CUES = [{"start": 0, "end": 2, "text": "Hello, world."}, {"start": 3, "end": 5, "text": "How are"}]


def one_cue(start="0", end="1", text='"a"') -> bytes:
    return f'[{{"start": {start}, "end": {end}, "text": {text}}}]'.encode()


def cue_list(n: int, text: str) -> str:
    return json.dumps([{"start": k, "end": k + 0.5, "text": text} for k in range(n)])


MALFORMED_SEGMENTS = [
    (one_cue(start="1" + "0" * 400), "[0].start must be a finite", "bad_segments"),
    (b"[" * 200_000 + b"]" * 200_000, "the limit is 200000", "segments_too_large"),
    (b"[" * 50_000 + b"]" * 50_000, "too deeply nested", "bad_segments"),
    (one_cue(end="Infinity"), "[0].end must be a finite", "bad_segments"),
    (one_cue(start="NaN"), "[0].start must be a finite", "bad_segments"),
    (one_cue(text='"a\\ud800"'), "SEGMENTS[0].text contains control", "bad_text"),
    (one_cue(text="5"), "[0].text must be a string, got a number", "bad_segments"),
    (one_cue(text='["a"]'), "[0].text must be a string, got a list", "bad_segments"),
    (one_cue(start="[0]"), "[0].start must be a number of seconds, got a list", "bad_segments"),
    (one_cue(start="null"), "got null", "bad_segments"),
    (one_cue(start="true"), "got a boolean", "bad_segments"),
    (b'[{"start": 0, "end": 1}]', "(missing text)", "bad_segments"),
    (b'[{"start": 0, "end": 1, "text": "a"}, 7]', "SEGMENTS[1] must be an object", "bad_segments"),
    (b'[{"start": 0, "end": 1, "text": "a"}', "not valid JSON", "bad_segments"),
    (b"\xff[]", "not valid UTF-8", "bad_encoding"),
    (cue_list(6, "a"), "6 cues; the limit is 5", "bad_segments"),
    (cue_list(3, "x" * 40), "for all cues together", "text_too_long"),
    (one_cue(text='"http://example.com/a"'), "[0].text looks like a URL", "text_is_reference"),
]


@pytest.mark.parametrize(("document", "message", "reason"), MALFORMED_SEGMENTS)
def test_malformed_segments_are_client_errors_naming_the_field(document, message, reason):
    with pytest.raises(RequestError) as info:
        with_segments(document)
    assert message in str(info.value)
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


FIRST_DIFFERENCES = [
    ("Hello, world. How are you", "TEXT has 'you' at character 22 after the last cue's text"),
    ("Hello, world. Who are", "'Who are' at character 14 where SEGMENTS[1].text has 'How are'"),
    ("Hello, world.", "TEXT ends at character 13 where SEGMENTS[1].text has 'How are'"),
    ("Hello world. How", "'world. How' at character 6 where SEGMENTS[0].text has ', world.'"),
]


@pytest.mark.parametrize(("text", "where"), FIRST_DIFFERENCES)
def test_text_with_other_words_is_refused_at_the_first_difference(text, where):
    with pytest.raises(RequestError) as info:
        with_segments(CUES, text.encode())
    assert where in str(info.value)
    assert "joined by any whitespace" in str(info.value)
    assert info.value.reason == "bad_segments"


def test_the_sample_limit_counts_the_resampled_waveform_too():
    """4 h at 1 kHz is 14.4 M samples on the wire but 230 M once resampled: the limit counts what
    the server then holds."""
    settings = ModelSettings(checkpoint="x", max_audio_seconds=14400.0, max_audio_samples=1_000_000)
    low_rate = good(
        audio=np.zeros((1, 200_000), np.float32), sample_rate=np.array([[1000]], np.int32)
    )
    with pytest.raises(RequestError, match="makes 3200000 samples at 16 kHz; the limit is 1000000"):
        decode_request(**low_rate, settings=settings)
    same_on_the_wire = good(audio=np.zeros((1, 200_000), np.float32))
    assert decode_request(**same_on_the_wire, settings=settings).duration == 12.5
