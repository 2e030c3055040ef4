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
    """Resample a mono waveform to 16 kHz (no-op at 16 kHz)."""
    audio = np.asarray(audio, dtype=np.float32)
    if sample_rate == MODEL_SAMPLE_RATE:
        return audio
    import librosa  # heavy import, only needed when resampling

    return librosa.resample(audio, orig_sr=sample_rate, target_sr=MODEL_SAMPLE_RATE).astype(
        np.float32
    )


def normalize_peak(audio: np.ndarray) -> np.ndarray:
    """Scale down by the peak if it exceeds 1, then clip to [-1, 1] (upstream's rule)."""
    audio = audio.astype(np.float32)
    if audio.size == 0:
        return audio
    peak = float(np.max(np.abs(audio)))
    if peak == 0.0:
        return audio
    if peak > 1.0:
        audio = audio / peak
    return np.clip(audio, -1.0, 1.0)


def prepare_waveform(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Return the 16 kHz float32 waveform the model sees for ``audio`` at ``sample_rate``."""
    return normalize_peak(resample_to_model_rate(audio, sample_rate))


def resampled_length(num_samples: int, sample_rate: int) -> int:
    """Number of samples ``num_samples`` at ``sample_rate`` has after resampling to 16 kHz."""
    if sample_rate == MODEL_SAMPLE_RATE:
        return num_samples
    return int(np.ceil(num_samples * MODEL_SAMPLE_RATE / sample_rate))
