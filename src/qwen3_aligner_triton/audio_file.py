"""Decoding the ``AUDIO_FILE`` input: the bytes of an audio file, in memory, to a mono waveform.

libsndfile (through ``soundfile``) reads the bytes from an in-memory buffer: nothing here opens a
path or a URL. :class:`EncodedAudio` opens the file and reads its header only (format, frames,
sample rate, channels), so the caller can hold the header to its limits before any memory is
taken for the samples; :meth:`EncodedAudio.decode` then decodes in blocks of ``BLOCK_FRAMES`` into
one float32 array of the announced length, mixing the channels down to mono by averaging them.

What damaged or lying files do (libsndfile 1.2.2, measured by ``tests/unit/test_audio_file.py``):

- Decoding is bounded by the header: the loop asks for the announced frames and no more, into
  the array allocated for them (libsndfile's reads stop at its reported count too), so whatever
  a file holds past its announced length is ignored, never decoded. A WAV whose data chunk
  claims more bytes than the file holds is reported (and decoded) with the frames the file
  holds; one whose data chunk claims fewer is decoded to its claim (chunks may follow the data).
- A file that ends cleanly before its announced length (a cut WAV, OGG or MP3; an MP3's length
  is partly estimated) is decoded as far as it goes; the waveform's own checks (at least
  ``min_audio_seconds``) then apply to what was decoded.
- A decoder error part-way (a cut FLAC: "flac decoder lost sync") refuses the file as damaged:
  its header's length cannot be trusted and the transcript would be aligned to a part of it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import soundfile

# libsndfile's major formats accepted, each with the family the messages name. WAVEX (extensible
# WAV: multichannel and float files of many tools) and RF64 (WAV over 4 GB) are WAV files too.
ACCEPTED_FORMATS = {
    "WAV": "WAV",
    "WAVEX": "WAV",
    "RF64": "WAV",
    "FLAC": "FLAC",
    "OGG": "OGG",
    "MP3": "MP3",
}
ACCEPTED_NAMES = "WAV, FLAC, OGG (Vorbis, Opus) or MP3"
MAX_CHANNELS = 8  # more channels than 7.1 surround: not a speech recording
# Frames decoded per read (a few MB at most, whatever the channels): a whole number of MP3 frames
# (56 MPEG-1 Layer III frames of 1152 samples, 112 MPEG-2 ones of 576). libsndfile 1.2.2's MP3
# reader glitches (errors up to 0.15) where a read ends inside an MPEG-2 frame, as 65,536-frame
# reads did; the client decodes in the same blocks (its audio.DECODE_BLOCK_FRAMES).
BLOCK_FRAMES = 64512


class AudioFileError(ValueError):
    """Bytes that cannot be served as an audio file; the message says why (never the bytes).

    ``reason`` is a short, stable label for metrics, like ``requests.RequestError``'s.
    """

    def __init__(self, message: str, reason: str = "bad_audio_file") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AudioFileHeader:
    """What an audio file's header announces, before anything is decoded."""

    format: str  # libsndfile's major format: WAV, WAVEX, RF64, FLAC, OGG, MP3
    subtype: str  # e.g. PCM_16, FLOAT, VORBIS, OPUS, MPEG_LAYER_III
    frames: int  # samples per channel
    sample_rate: int  # Hz
    channels: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def _libsndfile_says(error: Exception) -> str:
    """libsndfile's own short description of a failure (never the bytes, nor a repr of the
    buffer that ``str(error)`` names)."""
    text = getattr(error, "error_string", "") or ""
    return text.strip().rstrip(".") or "unreadable"


class EncodedAudio:
    """An audio file in memory, opened by libsndfile with its header read; close it (or use
    ``with``) to let libsndfile's state go."""

    def __init__(self, data: bytes, name: str = "input AUDIO_FILE") -> None:
        self.name = name
        try:
            self._sound = soundfile.SoundFile(io.BytesIO(data))
        except (RuntimeError, ValueError, TypeError) as e:  # LibsndfileError is a RuntimeError
            raise AudioFileError(
                f"{name} is not a readable audio file ({_libsndfile_says(e)}); send the bytes "
                f"of a {ACCEPTED_NAMES} file",
                "bad_audio_file",
            ) from None
        try:
            self.header = self._read_header()
        except AudioFileError:
            self.close()
            raise

    def _read_header(self) -> AudioFileHeader:
        sound = self._sound
        header = AudioFileHeader(
            format=str(sound.format),
            subtype=str(sound.subtype),
            frames=int(sound.frames),
            sample_rate=int(sound.samplerate),
            channels=int(sound.channels),
        )
        if header.format not in ACCEPTED_FORMATS:
            raise AudioFileError(
                f"{self.name} is a {header.format} file; the accepted formats are {ACCEPTED_NAMES}",
                "bad_audio_file",
            )
        if header.channels < 1 or header.channels > MAX_CHANNELS:
            raise AudioFileError(
                f"{self.name} has {header.channels} channels; the limit is {MAX_CHANNELS}",
                "bad_audio_file",
            )
        if header.sample_rate <= 0:
            raise AudioFileError(f"{self.name} has no sample rate in its header", "bad_audio_file")
        if header.frames <= 0:
            raise AudioFileError(f"{self.name} holds no audio (0 frames)", "audio_empty")
        return header

    def decode(self) -> np.ndarray:
        """The whole file as one mono float32 waveform (channels averaged), at most the header's
        frames long; shorter where the file ends early (see the module's text)."""
        header = self.header
        wave = np.empty(header.frames, np.float32)
        block = None if header.channels == 1 else np.empty((BLOCK_FRAMES, header.channels), "f4")
        done = 0
        while True:
            want = min(BLOCK_FRAMES, header.frames - done)
            if want == 0:
                break
            try:
                if block is None:  # mono: straight into the waveform
                    got = self._sound.read(want, dtype="float32", out=wave[done : done + want])
                else:
                    got = self._sound.read(want, dtype="float32", out=block[:want])
            except (RuntimeError, ValueError, TypeError) as e:
                raise AudioFileError(
                    f"{self.name} is damaged: decoding failed after {done / header.sample_rate:.2f}"
                    f" s of the {header.seconds:.2f} s its header announces "
                    f"({_libsndfile_says(e)})",
                    "bad_audio_file",
                ) from None
            n = int(got.shape[0])
            if n == 0:
                break
            if block is not None:
                np.mean(got, axis=1, dtype=np.float32, out=wave[done : done + n])
            done += n
        return wave if done == header.frames else wave[:done].copy()

    def close(self) -> None:
        self._sound.close()

    def __enter__(self) -> EncodedAudio:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
