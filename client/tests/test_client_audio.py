"""Audio loading: WAV, FLAC, OGG and MP3 files and bytes, arrays, mixdown, errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
from qwen3_aligner_client import AudioError, load_audio
from qwen3_aligner_client.audio import to_mono_float32

RATE = 22050  # Hz, deliberately not 16 kHz: the client never resamples
SECONDS = 1.5
# (format, subtype, largest sample error after decoding): lossy codecs only approximate.
CODECS = [
    ("wav", "PCM_16", 1e-4),
    ("flac", "PCM_24", 1e-6),
    ("ogg", "VORBIS", 0.05),
    ("mp3", "MPEG_LAYER_III", 0.05),
]


def stereo_tone() -> np.ndarray:
    t = np.arange(int(RATE * SECONDS)) / RATE
    left = 0.4 * np.sin(2 * np.pi * 440 * t)
    right = 0.2 * np.sin(2 * np.pi * 440 * t)
    return np.stack([left, right], axis=1).astype(np.float32)


@pytest.mark.parametrize(("fmt", "subtype", "tolerance"), CODECS, ids=[c[0] for c in CODECS])
def test_files_of_every_format_decode_to_mono_at_their_own_rate(tmp_path, fmt, subtype, tolerance):
    stereo = stereo_tone()
    path = tmp_path / f"tone.{fmt}"
    soundfile.write(path, stereo, RATE, format=fmt.upper(), subtype=subtype)
    wave, rate = load_audio(path)
    assert rate == RATE
    assert wave.dtype == np.float32 and wave.ndim == 1
    # Lossy codecs may pad a little at the ends; the length is the clip's within 0.1 s.
    assert abs(wave.size - stereo.shape[0]) < RATE * 0.1
    expected = stereo.mean(axis=1)  # the mixdown averages channels: amplitude 0.3
    middle = slice(RATE // 4, RATE)
    if fmt in ("wav", "flac"):
        assert np.max(np.abs(wave[middle] - expected[middle])) < tolerance
    else:
        # Encoder delay shifts lossy audio; compare loudness instead of samples.
        rms = float(np.sqrt(np.mean(wave[middle] ** 2)))
        assert rms == pytest.approx(0.3 / np.sqrt(2), rel=0.1)
    # The same file as bytes, as str path and as an open file gives the same samples.
    data = path.read_bytes()
    for source in (data, str(path), io.BytesIO(data)):
        again, again_rate = load_audio(source)
        assert again_rate == RATE
        np.testing.assert_array_equal(again, wave)


def test_arrays_are_mixed_down_whichever_axis_holds_the_channels():
    stereo = stereo_tone()
    frames_first, rate = load_audio((stereo, RATE))
    channels_first, _ = load_audio((stereo.T, RATE))
    assert rate == RATE
    np.testing.assert_allclose(frames_first, stereo.mean(axis=1), atol=1e-7)
    np.testing.assert_array_equal(frames_first, channels_first)


def test_integer_pcm_is_scaled_to_unit_range():
    pcm = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    wave = to_mono_float32(pcm)
    np.testing.assert_allclose(wave, [0.0, 0.5, -1.0, 32767 / 32768])
    unsigned = to_mono_float32(np.array([0, 128, 255], dtype=np.uint8))
    np.testing.assert_allclose(unsigned, [-1.0, 0.0, 127 / 128])


def test_loud_arrays_are_scaled_to_a_peak_of_one_like_upstream():
    loud = np.array([0.5, -2.0, 1.0], dtype=np.float64)
    wave, _ = load_audio((loud, 16000))
    np.testing.assert_allclose(wave, [0.25, -1.0, 0.5])
    quiet, _ = load_audio((np.array([0.1, -0.2]), 16000))
    np.testing.assert_allclose(quiet, [0.1, -0.2])


def test_bad_audio_is_reported_clearly(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match=r"cannot decode audio .*junk\.mp3"):
        load_audio(junk)
    with pytest.raises(AudioError, match="cannot decode audio <"):
        load_audio(b"\x00\x01")
    with pytest.raises(AudioError, match="no samples"):
        load_audio((np.zeros(0, dtype=np.float32), 16000))
    with pytest.raises(AudioError, match="NaN"):
        load_audio((np.array([0.0, np.nan]), 16000))
    with pytest.raises(AudioError, match="sample rate"):
        load_audio((np.zeros(10), 0))
    with pytest.raises(AudioError, match="1-D or 2-D"):
        load_audio((np.zeros((2, 2, 2)), 16000))
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(empty)
