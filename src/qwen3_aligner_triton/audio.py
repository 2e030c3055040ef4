"""Audio preparation: any sample rate in, 16 kHz mono float32 out, exactly as upstream does it.

Upstream ``qwen_asr`` turns an ``(array, sample_rate)`` pair into model input by resampling with
``librosa.resample`` (its default, soxr high quality) and then scaling down by the peak when the
peak exceeds 1 and clipping to [-1, 1]. Requests must give the same numbers as upstream, so the
same steps run here, on arrays only: nothing in this module opens a path or a URL.
"""

from __future__ import annotations

import numpy as np

from .contract import MODEL_SAMPLE_RATE as MODEL_SAMPLE_RATE


def resample_to_model_rate(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Resample a mono waveform to 16 kHz (no-op at 16 kHz: float32 input is returned as is)."""
    audio = np.asarray(audio, dtype=np.float32)
    if sample_rate == MODEL_SAMPLE_RATE:
        return audio
    import soxr

    # What librosa.resample (upstream's call) does by default, without its extra full copy:
    # soxr at high quality, then the length fixed to ceil(n * ratio) (tests hold it equal).
    resampled = soxr.resample(audio, sample_rate, MODEL_SAMPLE_RATE, quality="soxr_hq")
    length = resampled_length(int(audio.shape[0]), sample_rate)
    if resampled.shape[0] > length:
        return resampled[:length].copy()
    if resampled.shape[0] < length:
        return np.pad(resampled, (0, length - resampled.shape[0]))
    return resampled


def normalize_peak(audio: np.ndarray, in_place: bool = False) -> np.ndarray:
    """Scale down by the peak if it exceeds 1, then clip to [-1, 1] (upstream's rule).

    A waveform already within [-1, 1] is returned as it is (the rule changes nothing); otherwise
    the result is a new array, or ``audio`` itself with ``in_place`` (one waveform held, not
    three: a 4-hour recording at 16 kHz is 922 MB)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0:
        return audio
    peak = float(np.max(np.abs(audio)))
    if peak <= 1.0:
        return audio
    out = audio if in_place else np.empty_like(audio)
    np.divide(audio, np.float32(peak), out=out)
    return np.clip(out, -1.0, 1.0, out=out)


def prepare_waveform(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Return the 16 kHz float32 waveform the model sees for ``audio`` at ``sample_rate``."""
    wave = resample_to_model_rate(audio, sample_rate)
    return normalize_peak(wave, in_place=wave is not audio and wave.base is None)


def resampled_length(num_samples: int, sample_rate: int) -> int:
    """Number of samples ``num_samples`` at ``sample_rate`` has after resampling to 16 kHz."""
    if sample_rate == MODEL_SAMPLE_RATE:
        return num_samples
    return int(np.ceil(num_samples * MODEL_SAMPLE_RATE / sample_rate))
