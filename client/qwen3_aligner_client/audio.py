"""Turning audio files, encoded bytes or arrays into the mono float32 waveform the model takes.

Decoding uses soundfile (libsndfile, bundled with its wheels), which reads WAV, FLAC, OGG
(Vorbis, Opus) and, from libsndfile 1.1 on, MP3. Nothing is resampled here: the waveform is sent
at its own rate with ``SAMPLE_RATE`` and the server resamples it exactly as upstream does.

The server accepts samples in [-1, 1] only. Lossy decoders can overshoot that slightly and arrays
may be louder, so a waveform whose peak exceeds 1 is divided by its peak, which is what upstream
``qwen_asr`` does to such audio itself: the alignment is the one upstream would give.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

import numpy as np
import soundfile

# File suffixes that batch mode treats as audio.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")

# A path, the encoded bytes of a file, an open binary file, or ``(samples, sample_rate)``.
AudioSource: TypeAlias = (
    str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO | tuple[Any, int]
)


class AudioError(ValueError):
    """Audio that cannot be read or decoded, or that holds no samples."""


def to_mono_float32(samples: Any) -> np.ndarray:
    """Return ``samples`` as a 1-D float32 waveform.

    A 2-D array is mixed down by averaging its channels; the channel axis is the shorter one, so
    both soundfile's ``(frames, channels)`` and librosa's ``(channels, frames)`` layouts work.
    Integer PCM is scaled to [-1, 1] by its type's range.
    """
    array = np.asarray(samples)
    if array.ndim == 0 or array.ndim > 2:
        raise AudioError(f"audio must be a 1-D or 2-D array, got shape {list(array.shape)}")
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        # Signed PCM spans [min, -min); unsigned PCM is centred on (max + 1) / 2.
        half = -float(info.min) if info.min < 0 else (int(info.max) + 1) / 2
        offset = 0.0 if info.min < 0 else half
        array = (array.astype(np.float64) - offset) / half
    elif not np.issubdtype(array.dtype, np.floating):
        raise AudioError(f"audio samples must be numbers, got dtype {array.dtype}")
    if array.ndim == 2:
        channel_axis = 0 if array.shape[0] < array.shape[1] else 1
        array = array.mean(axis=channel_axis)
    return np.ascontiguousarray(array, dtype=np.float32)


def fit_peak(wave: np.ndarray) -> np.ndarray:
    """Divide ``wave`` by its peak when the peak exceeds 1 (upstream's rule); else return it."""
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak > 1.0:
        return (wave / peak).astype(np.float32)
    return wave


def _describe(source: object) -> str:
    if isinstance(source, tuple):
        return "array"
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return getattr(source, "name", None) or "<file object>"


def load_audio(source: AudioSource) -> tuple[np.ndarray, int]:
    """Decode ``source`` into ``(mono float32 waveform, sample_rate)``.

    ``source`` is a path, the bytes of an encoded file, an open binary file, or a
    ``(samples, sample_rate)`` pair (mixed down to mono). A peak above 1 is scaled down to 1 (see
    :func:`fit_peak`). Raises :class:`AudioError` with the reason when the audio cannot be read,
    holds no samples or holds NaN or infinite ones.
    """
    if isinstance(source, tuple):
        if len(source) != 2:
            raise AudioError("audio given as a tuple must be (samples, sample_rate)")
        samples, rate = source
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise AudioError(f"sample rate must be a positive integer, got {rate!r}")
        wave, sample_rate = to_mono_float32(samples), int(rate)
    else:
        name = _describe(source)
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise AudioError(f"audio file not found: {path}")
            handle: Any = path
        elif isinstance(source, (bytes, bytearray, memoryview)):
            handle = io.BytesIO(bytes(source))
        else:
            handle = source
        try:
            data, sample_rate = soundfile.read(handle, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
            reason = getattr(e, "error_string", None) or str(e)  # libsndfile's own words
            raise AudioError(f"cannot decode audio {name}: {reason}") from e
        except OSError as e:
            raise AudioError(f"cannot read audio {name}: {e}") from e
        wave = to_mono_float32(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0])
    if wave.size == 0:
        raise AudioError(f"audio {_describe(source)} holds no samples")
    if not np.isfinite(wave).all():
        raise AudioError(f"audio {_describe(source)} contains NaN or infinite samples")
    return fit_peak(wave), int(sample_rate)
