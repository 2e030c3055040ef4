import numpy as np
import pytest

from qwen3_aligner_triton.audio import (
    normalize_peak,
    prepare_waveform,
    resample_to_model_rate,
    resampled_length,
)


@pytest.fixture(scope="module")
def upstream_normalize():
    from qwen3_aligner_triton.loading import import_qwen_asr

    import_qwen_asr()
    from qwen_asr.inference.utils import normalize_audio_input

    return normalize_audio_input


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("scale", [0.3, 1.7])
def test_same_waveform_as_upstream(upstream_normalize, rate, scale):
    rng = np.random.default_rng(rate)
    audio = (rng.standard_normal(rate + 37) * scale).astype(np.float32)
    ours = prepare_waveform(audio, rate)
    theirs = upstream_normalize((audio, rate))
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)
    assert ours.shape[0] == resampled_length(audio.shape[0], rate)


def test_peak_rule():
    np.testing.assert_array_equal(normalize_peak(np.array([0.5, -2.0], np.float32)), [0.25, -1.0])
    np.testing.assert_array_equal(normalize_peak(np.zeros(3, np.float32)), np.zeros(3))
    np.testing.assert_array_equal(
        normalize_peak(np.array([0.9], np.float32)), np.array([0.9], np.float32)
    )


@pytest.mark.parametrize("rate", [1000, 7999, 8000, 11025, 22050, 44100, 48000, 96000, 384000])
def test_resampling_equals_librosa_for_every_length(rate):
    """The resampler calls soxr as librosa.resample (upstream's call) does, without its copy."""
    import librosa

    rng = np.random.default_rng(rate)
    for n in [*range(1, 400, 13), 12345, 3 * rate + 17]:
        x = (rng.standard_normal(n) * 0.3).astype(np.float32)
        expected = librosa.resample(x, orig_sr=rate, target_sr=16000).astype(np.float32)
        got = resample_to_model_rate(x, rate)
        assert got.dtype == np.float32 and np.array_equal(got, expected), (rate, n)


@pytest.mark.parametrize("rate", [1000, 16000])
def test_preparing_a_waveform_holds_one_copy_of_it(rate):
    """A 4-hour request at 16 kHz is 922 MB: preparing it allocates the result once (it was three
    full copies before: the float32 copy, the division, the clip)."""
    import tracemalloc

    loud = (np.random.default_rng(0).standard_normal(rate * 120) * 0.6).astype(np.float32)
    result_bytes = 16000 * 120 * 4
    prepare_waveform(loud[:rate], rate)  # imports and caches outside the measurement
    tracemalloc.start()
    try:
        out = prepare_waveform(loud, rate)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert float(np.max(np.abs(out))) <= 1.0
    assert peak <= 1.1 * result_bytes, peak / result_bytes
