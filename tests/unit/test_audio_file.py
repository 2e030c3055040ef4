"""AUDIO_FILE: the bytes of an audio file decoded in memory, held to the limits of AUDIO first."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
import soundfile

from qwen3_aligner_triton.audio_file import AudioFileError, EncodedAudio
from qwen3_aligner_triton.params import FrontSettings
from qwen3_aligner_triton.requests import RequestError, decode_request

SETTINGS = FrontSettings(checkpoint="x")


def tone(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A known signal: a 440 Hz tone plus a little noise, each channel its own."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    columns = [
        0.4 * np.sin(2 * np.pi * (440 + 110 * k) * t) + 0.05 * rng.standard_normal(t.size)
        for k in range(channels)
    ]
    wave = np.stack(columns, axis=1).astype(np.float32)
    return wave[:, 0] if channels == 1 else wave


def encode(wave: np.ndarray, rate: int, format: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format=format, subtype=subtype)
    return buffer.getvalue()


def strings(value) -> np.ndarray:
    return np.array([[value]], dtype=np.object_)


def request(data, settings: FrontSettings = SETTINGS, **overrides):
    inputs = {
        "audio": None,
        "sample_rate": None,
        "text": strings(b"hello world"),
        "language": strings(b"en"),
        "audio_file": strings(data),
    }
    inputs.update(overrides)
    return decode_request(settings=settings, **inputs)


def refusal(data, settings: FrontSettings = SETTINGS, **overrides) -> RequestError:
    with pytest.raises(RequestError) as info:
        request(data, settings, **overrides)
    return info.value


# -- formats --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subtype", "rate"),
    [("PCM_16", 16000), ("PCM_16", 8000), ("PCM_16", 44100), ("FLOAT", 44100), ("FLOAT", 8000)],
)
def test_wav_decodes_to_its_samples_at_its_rate(subtype, rate):
    wave = tone(1.5, rate)
    req = request(encode(wave, rate, "WAV", subtype))
    assert req.sample_rate == rate and req.audio.dtype == np.float32
    if subtype == "FLOAT":
        np.testing.assert_array_equal(req.audio, wave)
    else:  # 16-bit PCM: the samples as libsndfile scales them, within one step of the source
        np.testing.assert_allclose(req.audio, wave, rtol=0, atol=1 / 32768)
        np.testing.assert_array_equal(req.audio * 32768, np.round(req.audio * 32768))


def test_stereo_is_mixed_down_by_averaging_the_channels():
    wave = tone(1.0, 44100, channels=2)
    req = request(encode(wave, 44100, "WAV", "FLOAT"))
    np.testing.assert_array_equal(req.audio, (wave[:, 0] + wave[:, 1]) / np.float32(2))


def test_six_channels_are_averaged_across_blocks(monkeypatch):
    from qwen3_aligner_triton import audio_file

    monkeypatch.setattr(audio_file, "BLOCK_FRAMES", 1000)  # many blocks, a partial last one
    wave = tone(0.55, 16000, channels=6)
    req = request(encode(wave, 16000, "WAV", "FLOAT"))
    np.testing.assert_allclose(req.audio, wave.mean(axis=1), rtol=0, atol=1e-7)
    assert req.audio.shape == (8800,)


def test_flac_is_lossless():
    wave = tone(2.0, 16000)
    pcm = np.round(wave * 32767) / 32768  # exactly representable in 16 bits
    req = request(encode(pcm.astype(np.float32), 16000, "FLAC", "PCM_16"))
    np.testing.assert_array_equal(req.audio, pcm.astype(np.float32))
    stereo = tone(1.0, 48000, channels=2)
    req = request(encode(stereo, 48000, "FLAC"))
    assert req.sample_rate == 48000 and req.audio.shape == (48000,)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """The best normalised correlation of ``a`` and ``b`` within a shift of 0.1 s either way
    (lossy codecs delay or pad the signal)."""
    n = min(a.size, b.size) - 4000
    best = 0.0
    for shift in range(-1600, 1601, 1):
        x = a[2000 + shift : 2000 + shift + n - 4000]
        y = b[2000 : 2000 + n - 4000]
        best = max(best, float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12)))
        if best > 0.95:
            break
    return best


@pytest.mark.parametrize(
    ("format", "subtype", "rate"),
    [("OGG", "VORBIS", 16000), ("OGG", "OPUS", 48000), ("MP3", "MPEG_LAYER_III", 16000)],
)
def test_lossy_formats_decode_close_to_their_source(format, subtype, rate):
    if subtype not in soundfile.available_subtypes(format):
        pytest.skip(f"this libsndfile does not write {format} {subtype}")
    wave = tone(2.0, rate)
    req = request(encode(wave, rate, format, subtype))
    assert req.sample_rate == rate
    assert abs(req.audio.shape[0] - wave.shape[0]) <= 0.05 * rate
    assert correlation(req.audio, wave) > 0.9


# -- not audio ------------------------------------------------------------------------------------

NOT_AUDIO = [
    b"",
    b"RIFF",
    bytes(range(256)) * 40,
    b"/data/recordings/speech.wav",
    b"https://example.com/speech.flac",
    b"file:///etc/passwd",
]


@pytest.mark.parametrize("data", NOT_AUDIO, ids=["empty", "RIFF", "garbage", "path", "url", "file"])
def test_bytes_that_are_not_an_audio_file_are_refused_without_echoing_them(data):
    error = refusal(data)
    assert error.reason == "bad_audio_file"
    assert str(error) == (
        "input AUDIO_FILE is not a readable audio file (Format not recognised); send the bytes "
        "of a WAV, FLAC, OGG (Vorbis, Opus) or MP3 file"
    )


def test_random_bytes_are_refused():
    rng = np.random.default_rng(1)
    for _ in range(20):
        error = refusal(rng.bytes(int(rng.integers(1, 50000))))
        assert error.reason in ("bad_audio_file", "audio_empty")
        assert "BytesIO" not in str(error)


def test_a_format_outside_the_accepted_ones_is_named_and_refused():
    error = refusal(encode(tone(1.0, 16000), 16000, "AIFF"))
    assert str(error) == (
        "input AUDIO_FILE is a AIFF file; the accepted formats are WAV, FLAC, OGG (Vorbis, "
        "Opus) or MP3"
    )
    assert error.reason == "bad_audio_file"


def test_an_audio_file_with_no_frames_is_refused():
    error = refusal(encode(np.zeros(0, np.float32), 16000, "WAV"))
    assert (str(error), error.reason) == (
        "input AUDIO_FILE holds no audio (0 frames)",
        "audio_empty",
    )


def test_too_many_channels_are_refused_from_the_header():
    error = refusal(encode(np.zeros((1600, 9), np.float32), 16000, "WAV", "FLOAT"))
    assert str(error) == "input AUDIO_FILE has 9 channels; the limit is 8"
    assert error.reason == "bad_audio_file"


def test_eight_channels_are_accepted_and_averaged():
    columns = np.tile(np.arange(8, dtype=np.float32) / 16, (3200, 1))  # rows 0, 1/16 .. 7/16
    req = request(encode(columns, 16000, "WAV", "FLOAT"))
    np.testing.assert_array_equal(req.audio, np.full(3200, 28 / 16 / 8, np.float32))  # 0.21875


# -- limits, before anything is decoded -----------------------------------------------------------


def test_bytes_over_the_limit_are_refused_before_they_are_parsed(monkeypatch):
    from qwen3_aligner_triton import requests as requests_module

    opened = []
    monkeypatch.setattr(requests_module, "EncodedAudio", lambda *a: opened.append(a))
    data = encode(tone(1.0, 16000), 16000, "WAV")
    settings = replace(SETTINGS, max_audio_file_bytes=len(data) - 1)
    error = refusal(data, settings)
    assert str(error) == (
        f"input AUDIO_FILE has {len(data)} bytes; the limit is {len(data) - 1} "
        "(max_audio_file_bytes)"
    )
    assert error.reason == "audio_file_too_large" and opened == []
    monkeypatch.undo()
    assert request(data, replace(SETTINGS, max_audio_file_bytes=len(data))).audio.size == 16000


def _flac_claiming(frames: int) -> bytes:
    """A 1 s FLAC whose STREAMINFO announces ``frames`` samples."""
    data = bytearray(encode(tone(1.0, 16000), 16000, "FLAC"))
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first
    field = int.from_bytes(data[18:26], "big")  # rate, channels, bits, then 36 bits of samples
    field = (field & ~((1 << 36) - 1)) | frames
    data[18:26] = field.to_bytes(8, "big")
    return bytes(data)


def test_a_small_flac_claiming_hours_is_refused_from_its_header_fast_and_small():
    data = _flac_claiming(16000 * 3600 * 5)  # 5 h at 16 kHz
    assert len(data) < 100_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        error = refusal(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(error) == "input AUDIO_FILE has 288000000 samples; the limit is 230400000"
    assert error.reason == "audio_too_long"
    assert time.perf_counter() - started < 1.0
    assert peak < 5_000_000  # 5 h of float32 would be 1.15 GB
    seconds = refusal(_flac_claiming(16000 * 3600 * 3), replace(SETTINGS, max_audio_seconds=3600))
    assert str(seconds) == "input AUDIO_FILE is 10800.00 s long; the limit is 3600 s"


def test_the_files_rate_is_held_to_the_accepted_range():
    data = encode(tone(1.0, 8000), 8000, "WAV")
    error = refusal(data, replace(SETTINGS, min_sample_rate=16000))
    assert str(error) == (
        "input AUDIO_FILE has a sample rate of 8000 Hz, outside the accepted range 16000..384000 Hz"
    )
    assert error.reason == "bad_sample_rate"


def test_resampled_length_is_held_to_the_sample_limit():
    data = encode(tone(1.0, 8000), 8000, "WAV")
    error = refusal(data, replace(SETTINGS, max_audio_samples=10000))
    assert str(error) == "input AUDIO_FILE makes 16000 samples at 16 kHz; the limit is 10000"


def test_a_file_shorter_than_the_minimum_is_refused():
    error = refusal(encode(tone(0.05, 16000), 16000, "FLAC"))
    assert str(error) == ("input AUDIO_FILE is 0.050 s long; at least 0.1 s is needed to align")


def test_a_decoded_waveform_over_full_scale_is_scaled_to_a_peak_of_1_as_upstream_does():
    loud = tone(1.0, 16000) * 4
    decoded = request(encode(loud, 16000, "WAV", "FLOAT")).audio
    np.testing.assert_array_equal(decoded, loud / np.float32(np.abs(loud).max()))
    assert np.abs(decoded).max() == 1.0
    within = tone(1.0, 16000) * 0.5
    np.testing.assert_array_equal(request(encode(within, 16000, "WAV", "FLOAT")).audio, within)


def test_the_decoded_waveform_passes_the_checks_of_audio():
    bad = tone(1.0, 16000)
    bad[100] = np.nan
    error = refusal(encode(bad, 16000, "WAV", "FLOAT"))
    assert str(error) == "input AUDIO_FILE contains NaN or infinite samples"


# -- which inputs -----------------------------------------------------------------------------


def test_both_audio_inputs_are_refused_naming_them():
    data = encode(tone(1.0, 16000), 16000, "WAV")
    error = refusal(data, audio=np.zeros((1, 16000), np.float32))
    assert str(error) == (
        "inputs AUDIO and AUDIO_FILE were both sent; a request carries exactly one of them"
    )


def test_neither_audio_input_is_refused_naming_both():
    error = refusal(None, audio_file=None)
    assert str(error) == "input AUDIO or AUDIO_FILE is required (exactly one of them)"
    assert error.reason == "missing_input"


def test_sample_rate_must_not_accompany_an_audio_file():
    data = encode(tone(1.0, 16000), 16000, "WAV")
    error = refusal(data, sample_rate=np.array([[16000]], np.int32))
    assert str(error) == (
        "input SAMPLE_RATE must not accompany AUDIO_FILE: the file gives its own sample rate "
        "(send SAMPLE_RATE only with AUDIO)"
    )
    assert error.reason == "bad_sample_rate"


def test_an_audio_file_of_several_strings_is_refused():
    data = encode(tone(1.0, 16000), 16000, "WAV")
    error = refusal(data, audio_file=np.array([[data, data]], dtype=np.object_))
    assert str(error) == "input AUDIO_FILE must hold exactly one string, got 2"


# -- damaged and lying files ----------------------------------------------------------------------


def _wav_with_data_size(wave: np.ndarray, size: int) -> bytes:
    data = bytearray(encode(wave, 16000, "WAV", "PCM_16"))
    at = data.index(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", size)
    return bytes(data)


def test_a_wav_announcing_more_data_than_it_holds_decodes_what_it_holds():
    wave = tone(1.0, 16000)
    req = request(_wav_with_data_size(wave, 10**9))
    assert req.audio.shape == (16000,)
    np.testing.assert_allclose(req.audio, wave, rtol=0, atol=1 / 32768)


def test_a_wav_announcing_less_data_than_it_holds_decodes_its_announcement_only():
    wave = tone(1.0, 16000)
    req = request(_wav_with_data_size(wave, 2 * 4000))
    assert req.audio.shape == (4000,)
    np.testing.assert_allclose(req.audio, wave[:4000], rtol=0, atol=1 / 32768)


def test_a_cut_wav_decodes_as_far_as_it_goes_and_a_cut_too_short_is_refused():
    wave = tone(1.0, 16000)
    data = encode(wave, 16000, "WAV", "PCM_16")
    req = request(data[: 44 + 2 * 6000])
    assert req.audio.shape == (6000,)
    np.testing.assert_allclose(req.audio, wave[:6000], rtol=0, atol=1 / 32768)
    error = refusal(data[: 44 + 2 * 800])
    assert str(error) == "input AUDIO_FILE is 0.050 s long; at least 0.1 s is needed to align"


def test_a_cut_flac_is_refused_as_damaged():
    data = encode(tone(20.0, 16000), 16000, "FLAC")
    error = refusal(data[: len(data) // 2])
    # cut near 10 s: two blocks of 64512 frames (8.064 s) decode, the third loses sync
    assert str(error) == (
        "input AUDIO_FILE is damaged: decoding failed after 8.06 s of the 20.00 s its header "
        "announces (Error : flac decoder lost sync)"
    )
    assert error.reason == "bad_audio_file"


def test_a_decoding_failure_libsndfile_does_not_describe_is_called_unreadable(monkeypatch):
    wave = tone(1.0, 16000)
    with EncodedAudio(encode(wave, 16000, "WAV", "PCM_16")) as encoded:

        def failing(frames, **kwargs):
            raise soundfile.SoundFileRuntimeError("no libsndfile code")

        monkeypatch.setattr(encoded._sound, "read", failing)
        with pytest.raises(AudioFileError) as info:
            encoded.decode()
    assert str(info.value) == (
        "input AUDIO_FILE is damaged: decoding failed after 0.00 s of the 1.00 s its header "
        "announces (unreadable)"
    )
    assert info.value.reason == "bad_audio_file"


@pytest.mark.parametrize("rate", [22050, 24000])
def test_mpeg2_mp3_decodes_without_glitches_where_blocks_meet(rate):
    """libsndfile 1.2.2's MP3 reader glitches where a read ends inside an MPEG-2 frame (576
    samples): with 65,536-frame reads this 10 s file was off by up to 0.04 after the third
    block. Blocks of whole frames decode what one read of the whole file decodes, within the
    rounding that the read size moves (one float32 step)."""
    t = np.arange(10 * rate) / rate
    rng = np.random.default_rng(0)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    wave = 0.3 * envelope * np.sin(2 * np.pi * 200 * t) + 0.03 * rng.standard_normal(t.size)
    data = encode(wave.astype(np.float32), rate, "MP3")
    whole = soundfile.read(io.BytesIO(data), dtype="float32")[0]
    req = request(data)
    assert req.audio.shape == whole.shape
    np.testing.assert_allclose(req.audio, whole, rtol=0, atol=1e-6)


def test_a_cut_mp3_decodes_as_far_as_it_goes():
    wave = tone(10.0, 16000)
    data = encode(wave, 16000, "MP3")
    req = request(data[: len(data) // 2])
    assert 3.0 < req.duration < 7.0


def test_decoding_never_reads_past_the_announced_frames(monkeypatch):
    """A header that announces fewer frames than the file's data: the decoder asks for no more
    than announced, whatever each read could give."""
    wave = tone(1.0, 16000)
    asked: list[int] = []
    with EncodedAudio(_wav_with_data_size(wave, 2 * 5000)) as encoded:
        read = encoded._sound.read

        def counting(frames, **kwargs):
            asked.append(frames)
            return read(frames, **kwargs)

        monkeypatch.setattr(encoded._sound, "read", counting)
        assert encoded.decode().shape == (5000,)
    assert sum(asked) == 5000


def test_encoded_audio_reads_the_header_before_decoding():
    data = encode(tone(1.5, 44100, channels=2), 44100, "FLAC")
    with EncodedAudio(data) as encoded:
        header = encoded.header
    assert (header.format, header.subtype, header.frames, header.sample_rate, header.channels) == (
        "FLAC",
        "PCM_16",
        66150,
        44100,
        2,
    )
    assert header.seconds == 1.5
    with pytest.raises(AudioFileError) as info:
        EncodedAudio(b"not audio")
    assert str(info.value) == (
        "input AUDIO_FILE is not a readable audio file (Format not recognised); send the bytes "
        "of a WAV, FLAC, OGG (Vorbis, Opus) or MP3 file"
    )
    assert info.value.reason == "bad_audio_file"


def test_an_audio_file_error_is_a_bad_audio_file_unless_told_otherwise():
    assert AudioFileError("input AUDIO_FILE is odd").reason == "bad_audio_file"
    assert AudioFileError("input AUDIO_FILE is empty", "audio_empty").reason == "audio_empty"


def test_a_file_of_one_frame_decodes_to_its_one_sample():
    with EncodedAudio(encode(np.array([0.25], np.float32), 16000, "WAV", "FLOAT")) as encoded:
        assert encoded.header.frames == 1
        np.testing.assert_array_equal(encoded.decode(), np.array([0.25], np.float32))


def test_a_rate_of_one_hz_is_read_from_the_header_and_decoded():
    samples = np.array([0.5, -0.25, 0.125], np.float32)
    with EncodedAudio(encode(samples, 1, "WAV", "FLOAT")) as encoded:
        assert (encoded.header.sample_rate, encoded.header.seconds) == (1, 3.0)
        np.testing.assert_array_equal(encoded.decode(), samples)


def test_a_header_without_a_sample_rate_is_refused_and_closed(monkeypatch):
    """libsndfile 1.2.2 itself refuses a rate of 0 ("SF_INFO struct incomplete"); a libsndfile
    that let one through must still not reach a division by it."""
    from qwen3_aligner_triton import audio_file

    data = encode(tone(1.0, 16000), 16000, "WAV")
    opened: list[soundfile.SoundFile] = []

    class NoSampleRate(soundfile.SoundFile):
        samplerate = property(lambda self: 0)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(audio_file.soundfile, "SoundFile", NoSampleRate)
    with pytest.raises(AudioFileError) as info:
        EncodedAudio(data)
    assert str(info.value) == "input AUDIO_FILE has no sample rate in its header"
    assert info.value.reason == "bad_audio_file"
    assert len(opened) == 1 and opened[0].closed


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_decoding_takes_the_waveform_and_one_float32_block_of_memory(channels):
    """Mono decodes straight into the waveform; more channels go through one float32 block of
    BLOCK_FRAMES frames; a complete decode returns that waveform, not a copy."""
    data = encode(tone(10.0, 16000, channels), 16000, "WAV", "FLOAT")
    block = 0 if channels == 1 else 65536 * channels * 4
    with EncodedAudio(data) as encoded:
        tracemalloc.start()
        try:
            wave = encoded.decode()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert wave.shape == (160000,) and wave.nbytes == 640000
    assert peak < 640000 + block + 100_000  # any second array would be 256 kB or more
