"""Turning audio files, encoded bytes or arrays into the mono float32 waveform the model takes.

Decoding uses soundfile (libsndfile, bundled with its wheels), which reads WAV, FLAC, OGG
(Vorbis, Opus) and, from libsndfile 1.1 on, MP3. Nothing is resampled here: the waveform is sent
at its own rate with ``SAMPLE_RATE`` and the server resamples it exactly as upstream does.

A file can also be sent as it is (``AUDIO_FILE``, see :func:`read_audio_file`); the server then
decodes it with libsndfile itself. Both sides decode the same way (blocks of
:data:`DECODE_BLOCK_FRAMES` frames, channels averaged in float32), so with the same libsndfile a
file gives the server the very samples this module would have sent: libsndfile's MP3 decoder
rounds differently, and for some MPEG-2 files glitches, depending on how many frames each read
asks for.

The server accepts samples in [-1, 1] only. Lossy decoders can overshoot that slightly and arrays
may be louder, so a waveform whose peak exceeds 1 is divided by its peak, which is what upstream
``qwen_asr`` does to such audio itself: the alignment is the one upstream would give.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

import numpy as np
import soundfile

# File suffixes that batch mode treats as audio.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")
# libsndfile's major formats that the server decodes from AUDIO_FILE (the server's
# ``audio_file.ACCEPTED_FORMATS``, copied: a test holds them equal). WAVEX and RF64 are WAV files.
SERVER_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "FLAC", "OGG", "MP3"})
# Frames per libsndfile read, as the server reads AUDIO_FILE (``audio_file.BLOCK_FRAMES``): 56
# MPEG-1 Layer III frames of 1152 samples, 112 MPEG-2 ones of 576.
DECODE_BLOCK_FRAMES = 64512

# A path, the encoded bytes of a file, an open binary file, or ``(samples, sample_rate)``.
AudioSource: TypeAlias = (
    str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO | tuple[Any, int]
)


class AudioError(ValueError):
    """Audio that cannot be read or decoded, or that holds no samples."""


@dataclass(frozen=True)
class AudioFile:
    """The bytes of an encoded audio file and what its header announces; sent as ``AUDIO_FILE``."""

    data: bytes = field(repr=False)
    name: str  # the path, or "<N bytes>", for messages
    format: str  # libsndfile's major format: WAV, FLAC, OGG, MP3, AIFF, ...
    subtype: str  # PCM_16, VORBIS, OPUS, MPEG_LAYER_III, ...
    frames: int  # per channel; an estimate for MP3
    sample_rate: int  # Hz
    channels: int

    @property
    def seconds(self) -> float:
        """The duration the header announces."""
        return self.frames / self.sample_rate

    @property
    def server_decodes(self) -> bool:
        """Whether the server accepts this format as ``AUDIO_FILE`` (see :data:`SERVER_FORMATS`)."""
        return self.format in SERVER_FORMATS


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
            wave, sample_rate = _decode(handle)
        except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
            reason = getattr(e, "error_string", None) or str(e)  # libsndfile's own words
            raise AudioError(f"cannot decode audio {name}: {reason}") from e
        except OSError as e:
            raise AudioError(f"cannot read audio {name}: {e}") from e
    if wave.size == 0:
        raise AudioError(f"audio {_describe(source)} holds no samples")
    if not np.isfinite(wave).all():
        raise AudioError(f"audio {_describe(source)} contains NaN or infinite samples")
    return fit_peak(wave), int(sample_rate)


def _decode(handle: Any) -> tuple[np.ndarray, int]:
    """Decode an opened source as the server decodes ``AUDIO_FILE``: reads of
    :data:`DECODE_BLOCK_FRAMES` frames up to the header's length (or the file's end), each block's
    channels averaged in float32."""
    blocks: list[np.ndarray] = []
    with soundfile.SoundFile(handle) as sound:
        while True:
            block = sound.read(DECODE_BLOCK_FRAMES, dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                break
            if block.shape[1] == 1:
                blocks.append(block[:, 0])
            else:
                blocks.append(block.mean(axis=1, dtype=np.float32))
        sample_rate = int(sound.samplerate)
    wave = np.concatenate(blocks) if blocks else np.empty(0, np.float32)
    return np.ascontiguousarray(wave, dtype=np.float32), sample_rate


def read_audio_file(source: AudioSource) -> AudioFile:
    """The bytes of ``source`` (a path, encoded bytes or an open binary file) with its header.

    Only the header is parsed (nothing is decoded), so this is cheap. Raises
    :class:`AudioError` when the file cannot be read or libsndfile does not recognise it, and
    for ``(samples, sample_rate)``, which is no file.
    """
    if isinstance(source, tuple):
        raise AudioError("audio given as (samples, sample_rate) is not an encoded file")
    name = _describe(source)
    try:
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise AudioError(f"audio file not found: {path}")
            data = path.read_bytes()
        elif isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        else:
            data = source.read()
            if not isinstance(data, bytes):
                raise AudioError(f"audio {name} must be opened in binary mode")
    except OSError as e:
        raise AudioError(f"cannot read audio {name}: {e}") from e
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as sound:
            header = (sound.format, sound.subtype, sound.frames, sound.samplerate, sound.channels)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        reason = getattr(e, "error_string", None) or str(e)
        raise AudioError(f"cannot decode audio {name}: {reason}") from e
    fmt, subtype, frames, rate, channels = header
    if frames <= 0:
        raise AudioError(f"audio {name} holds no samples")
    return AudioFile(data, name, str(fmt), str(subtype), int(frames), int(rate), int(channels))
