import numpy as np
import pytest

from qwen3_aligner_triton.audio import normalize_peak, prepare_waveform, resampled_length


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
