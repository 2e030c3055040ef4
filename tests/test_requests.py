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
