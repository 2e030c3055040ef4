"""How much of ``/dev/shm`` the served models may take, and the largest request that fits it.

Every Python-backend stub (each front instance, each core instance) exchanges tensors with
tritonserver through one region in ``/dev/shm``. A region grows to the most it has held at once
and never shrinks. If one stub's region takes what another's needs, that other stub fails every
request larger than what is left (HTTP 500 "Failed to increase the shared memory pool size") until
the server restarts: one maximal request must never do that to the next ones.

What each region can hold at once is bounded by how the front works:

- a front instance takes one request per ``execute()`` call (``preferred_batch_size: [1]``) and
  returns only once that request's inputs are copied out of shared memory, so its region holds at
  most one request's inputs, plus the clips it has in flight to the core (at most
  ``core_bytes_in_flight``), plus the answers it is sending (``STUB_SLACK_BYTES``);
- the core holds only clips that some front has in flight, so all core regions together hold at
  most ``front_instances * core_bytes_in_flight``, plus their answers;
- with the ASR model (parameter ``asr``) a front instance keeps at most the bytes of one maximal
  ASR call in flight (up to 32 chunks of one recording, :func:`asr_call_bytes`), and the ASR
  model's region holds at most that much per front instance.

:func:`plan` sizes these against the ``/dev/shm`` the server has and, when the configured request
limit does not fit, lowers the largest accepted ``AUDIO`` to what does (the front logs it), or
fails the load when not even :data:`MIN_FIT_SECONDS` of audio fits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .contract import ASR_MIN_MAX_BATCH_SIZE, MODEL_SAMPLE_RATE
from .params import FrontSettings

SHM_PATH = "/dev/shm"
MiB = 2**20
# Per stub: its answers in flight (the largest, max_words units of JSON, is a few MB), request
# metadata and the region's own bookkeeping.
STUB_SLACK_BYTES = 16 * MiB
# Clips one front instance keeps in flight to the core: at least this many bytes, and at least
# CLIPS_IN_FLIGHT of the largest clip (a whole window, as the core receives it).
MIN_CORE_BYTES_IN_FLIGHT = 32 * MiB
CLIPS_IN_FLIGHT = 2
# Below this much audio per request the server is not worth starting: the load fails instead.
MIN_FIT_SECONDS = 60.0
FLOAT32 = 4
INT64 = 8
UTF8_BYTES_PER_CHAR = 4
# Upstream cuts a recording for the ASR model near every 180 s, at the quietest point within 5 s
# of the mark: every chunk but the last holds at least 175 s and none more than 185 s.
ASR_CHUNK_MIN_SECONDS = 175.0
ASR_CHUNK_MAX_SECONDS = 185.0


def shm_size(path: str = SHM_PATH) -> int | None:
    """Bytes of the file system at ``path`` (``/dev/shm``), or None where it does not exist."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_blocks * stats.f_frsize


def largest_clip_bytes(settings: FrontSettings) -> int:
    """One core call at its largest: a whole window of 16 kHz float32 audio (the log-mel frames
    of a window are smaller) and a prompt of ``max_forward_tokens`` ids."""
    samples = int(settings.window_seconds * MODEL_SAMPLE_RATE)
    return FLOAT32 * samples + INT64 * settings.max_forward_tokens


def core_bytes_in_flight(settings: FrontSettings) -> int:
    """Bytes of clips one front instance keeps in flight to the core at once."""
    return max(MIN_CORE_BYTES_IN_FLIGHT, CLIPS_IN_FLIGHT * largest_clip_bytes(settings))


def asr_call_bytes(settings: FrontSettings, audio_samples: int | None = None) -> int:
    """One ASR call at its largest (0 without the ASR model): up to 32 chunks of a recording of
    ``audio_samples`` 16 kHz samples (default ``max_audio_samples``), each row padded to the
    longest chunk, with its context (``max_text_chars``)."""
    if not settings.asr:
        return 0
    samples = settings.max_audio_samples if audio_samples is None else audio_samples
    if samples <= 0:
        return 0
    chunks = min(
        ASR_MIN_MAX_BATCH_SIZE,
        -(-samples // int(ASR_CHUNK_MIN_SECONDS * MODEL_SAMPLE_RATE)),
    )
    row = min(samples, int(ASR_CHUNK_MAX_SECONDS * MODEL_SAMPLE_RATE))
    return chunks * (FLOAT32 * row + UTF8_BYTES_PER_CHAR * settings.max_text_chars)


def request_bytes(
    settings: FrontSettings, audio_samples: int | None = None, file_bytes: int | None = None
) -> int:
    """A request's inputs at their largest: its audio, ``TEXT`` and ``SEGMENTS``. The audio is
    ``AUDIO`` (``audio_samples`` float32 samples, by default ``max_audio_samples``) or
    ``AUDIO_FILE`` (``file_bytes``, by default ``max_audio_file_bytes``), never both: the larger
    of the two."""
    samples = settings.max_audio_samples if audio_samples is None else audio_samples
    encoded = settings.max_audio_file_bytes if file_bytes is None else file_bytes
    text = UTF8_BYTES_PER_CHAR * settings.max_text_chars
    return max(FLOAT32 * samples, encoded) + text + settings.max_segments_bytes


def needed_bytes(
    settings: FrontSettings,
    front_instances: int,
    audio_samples: int | None = None,
    file_bytes: int | None = None,
) -> int:
    """``/dev/shm`` that every region at its largest takes together (see the module's text)."""
    in_flight = core_bytes_in_flight(settings)
    asr = asr_call_bytes(settings, audio_samples)
    fronts = front_instances * (
        request_bytes(settings, audio_samples, file_bytes) + in_flight + asr
    )
    cores = front_instances * in_flight
    asr_model = front_instances * asr + (STUB_SLACK_BYTES if settings.asr else 0)
    return fronts + cores + asr_model + (front_instances + 1) * STUB_SLACK_BYTES


@dataclass(frozen=True)
class SharedMemoryPlan:
    """The request limit a server's ``/dev/shm`` holds for its front instances."""

    available: int | None  # bytes of /dev/shm; None: unknown (no /dev/shm)
    front_instances: int
    configured_samples: int  # max_audio_samples as configured
    max_audio_samples: int  # what fits (the configured value when it does)
    needed: int  # /dev/shm that the configured limits need
    configured_file_bytes: int = 0  # max_audio_file_bytes as configured
    max_audio_file_bytes: int = 0  # what fits (the configured value when it does)

    @property
    def lowered(self) -> bool:
        return (
            self.max_audio_samples < self.configured_samples
            or self.max_audio_file_bytes < self.configured_file_bytes
        )

    def describe(self) -> str:
        """One line for the log: what was lowered and why, and how to keep the configured limit."""
        fit = self.max_audio_samples / MODEL_SAMPLE_RATE / 60
        configured = self.configured_samples / MODEL_SAMPLE_RATE / 60
        lowered = []
        if self.max_audio_samples < self.configured_samples:
            lowered.append(
                f"max_audio_samples lowered from {self.configured_samples} to "
                f"{self.max_audio_samples} ({configured:.0f} to {fit:.0f} min at 16 kHz)"
            )
        if self.max_audio_file_bytes < self.configured_file_bytes:
            lowered.append(
                f"max_audio_file_bytes lowered from {self.configured_file_bytes} to "
                f"{self.max_audio_file_bytes}"
            )
        return (
            f"{' and '.join(lowered)}: /dev/shm "
            f"holds {(self.available or 0) // MiB} MiB and {self.front_instances} front "
            f"instances need {self.needed // MiB} MiB for the configured limits; give the "
            f"container that much (docker --shm-size, a Kubernetes memory emptyDir's sizeLimit) "
            f"or fewer front instances to keep them"
        )


def plan(settings: FrontSettings, front_instances: int, available: int | None) -> SharedMemoryPlan:
    """The largest ``max_audio_samples`` and ``max_audio_file_bytes`` (at most the configured
    ones) for which every region fits ``available`` bytes together. Raises ValueError when not
    even ``MIN_FIT_SECONDS`` of 16 kHz audio does. ``available`` None (no ``/dev/shm``) keeps
    the configured limits."""
    if front_instances < 1:
        raise ValueError("a server needs at least one front instance")
    configured = settings.max_audio_samples
    configured_file = settings.max_audio_file_bytes
    needed = needed_bytes(settings, front_instances)
    if available is None or needed <= available:
        return SharedMemoryPlan(
            available,
            front_instances,
            configured,
            configured,
            needed,
            configured_file,
            configured_file,
        )
    if settings.asr:  # the ASR calls grow with the audio too, not in proportion: search
        samples, file_bytes = _fit_with_asr(settings, front_instances, available)
    else:
        # The bytes one request's audio input may take in each front region: as AUDIO or
        # AUDIO_FILE.
        spare = available - needed_bytes(settings, front_instances, audio_samples=0, file_bytes=0)
        room = max(0, spare // front_instances)
        samples = min(configured, room // FLOAT32)
        file_bytes = min(configured_file, room)
    minimum = int(MIN_FIT_SECONDS * MODEL_SAMPLE_RATE)
    if samples < minimum:
        least = needed_bytes(
            settings,
            front_instances,
            audio_samples=minimum,
            file_bytes=min(configured_file, FLOAT32 * minimum),
        )
        raise ValueError(
            f"/dev/shm holds {available // MiB} MiB; {front_instances} front instances need "
            f"{least // MiB} MiB for requests of {MIN_FIT_SECONDS:g} s and {needed // MiB} MiB "
            f"for the configured max_audio_samples ({configured}): give the container more "
            f"(docker --shm-size, a Kubernetes memory emptyDir's sizeLimit) or run fewer front "
            f"instances"
        )
    return SharedMemoryPlan(
        available,
        front_instances,
        configured,
        int(samples),
        needed,
        configured_file,
        int(file_bytes),
    )


def _fit_with_asr(settings: FrontSettings, front_instances: int, available: int) -> tuple[int, int]:
    """The largest ``(max_audio_samples, max_audio_file_bytes)`` that fit ``available`` with the
    ASR model's calls counted: a file's limit is its decoded audio's bytes at most."""

    def fits(samples: int) -> bool:
        file_bytes = min(settings.max_audio_file_bytes, FLOAT32 * samples)
        return needed_bytes(settings, front_instances, samples, file_bytes) <= available

    low, high = 0, settings.max_audio_samples
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low, min(settings.max_audio_file_bytes, FLOAT32 * low)


def front_instances(config: dict) -> int:
    """Front instances a model configuration starts (the sum of its instance groups' counts;
    Triton starts one instance where a group gives no count)."""
    groups = config.get("instance_group") or [{}]
    return sum(max(1, int(group.get("count", 1) or 1)) for group in groups)
