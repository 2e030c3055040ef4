"""The public model's front: validation, preparation and results around the forward-only core.

One :class:`AlignerFront` per front instance. For each request it validates the inputs, prepares
the clip (resampling, word split, log-mel frames, prompt ids), sends it to the core and turns the
core's slot bins into the alignment. A recording longer than one window is sent window by window,
and cue-guided requests cue by cue: every piece is its own core request, so the core's batcher
interleaves them with other clients' clips and a short request never waits for a whole recording.

The core call is injected (``CoreCall``): in the server it is a BLS ``async_exec()``; in tests, a
fake. Nothing here raises out of :meth:`AlignerFront.serve`.

A request without TEXT (``requests.TranscribeRequest``, only where the ASR model is loaded) is
served as upstream's ``Qwen3ASRModel.transcribe(..., return_time_stamps=True)`` serves it: the
recording is cut into upstream's 180 s chunks, the chunks go to the ASR model (the injected
``AsrCallFn``: one call of up to 32 chunks, as upstream batches them), each chunk with text is
aligned as a clip of its own, and the chunks' words are offset and merged (``asr``).

Shared memory (``shared_memory.py``): in the server a request's inputs are views of the Python
backend's region. Once a request is admitted the front copies what it keeps and tells the caller
(``inputs_released``), so the region holds one request's inputs at a time; the clips in flight to
the core are bounded in bytes (:class:`InFlightBytes`).

Preparation (resampling, word splitting, log-mel frames) runs on one preparation thread, never on
the event loop: a 4-hour recording's preparation takes seconds, during which the loop still sends
other requests' answers and core calls. The audio an instance holds across its requests is
bounded (:class:`AudioBudget`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol

import numpy as np

from .asr import (
    AsrCall,
    AsrChunk,
    ChunkTranscript,
    Transcript,
    calls_for,
    merge_alignments,
    merge_transcripts,
    split_chunks,
)
from .audio import MODEL_SAMPLE_RATE, prepare_waveform, resampled_length
from .contract import CORE_MODEL_NAME as CORE_MODEL_NAME
from .contract import CORE_OUTPUTS as CORE_OUTPUTS
from .contract import FRONT_ASR_INPUTS, FRONT_INPUTS
from .core import CoreInput, SlotResult
from .errors import INVALID_ARG, describe
from .languages import LANGUAGES_BY_CODE, resolve_language
from .longform import Window
from .params import FrontSettings
from .preparation import CueJob, PreparedItem, Preparer, WindowedJob
from .requests import (
    NO_ASR_MESSAGE,
    NO_WORDS,
    AlignRequest,
    RequestError,
    TranscribeRequest,
    decode_request,
)
from .results import Alignment
from .shared_memory import asr_call_bytes, core_bytes_in_flight

REQUEST_INPUTS = (*FRONT_INPUTS, *FRONT_ASR_INPUTS)
# Upstream aligns a chunk whose language the ASR model left empty with language "": the
# aligner's generic word split (whitespace, CJK characters one by one), English's here.
GENERIC_LANGUAGE = "English"
MAX_PIECES_IN_FLIGHT = 64  # cues of one request prepared and awaiting the core at once
# Audio copied out of shared memory on the loop itself (a few ms at most); larger copies go to a
# thread.
INLINE_COPY_BYTES = 8 * 2**20
STOPPING_MESSAGE = (
    "the server is stopping and takes no new requests; send it to another replica or retry "
    "once the server is back"
)

BUSY_MESSAGE = (
    "the server holds {held} MB of audio for other requests and this one needs {needs} MB more "
    "(max_held_audio_bytes); retry shortly or send it to another replica"
)

CORE_BUSY_MESSAGE = (
    "the server's forward queue is full; retry shortly or send the request to another replica"
)

CoreCall = Callable[[CoreInput], Awaitable[SlotResult]]
AsrCallFn = Callable[[AsrCall], Awaitable[list[ChunkTranscript]]]


class AudioBudget:
    """Bytes of audio held by the requests of one front instance, within ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def reserve(self, size: int) -> bool:
        """Hold ``size`` bytes more if they fit, else hold nothing and return False."""
        with self._lock:
            if self.held + size > self.limit:
                return False
            self.held += size
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self.held -= size


async def _own_copy(audio: np.ndarray) -> np.ndarray:
    """A copy of ``audio``: on the loop up to INLINE_COPY_BYTES, else on a thread so that the loop
    goes on answering while hundreds of MB are copied."""
    if audio.nbytes <= INLINE_COPY_BYTES:
        return audio.copy()
    return await asyncio.get_running_loop().run_in_executor(None, np.copy, audio)


class InFlightBytes:
    """Bytes of clips one front instance has in flight to the core, within ``limit``: a clip
    waits until it fits (one clip alone always goes, whatever its size)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._changed: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @asynccontextmanager
    async def holding(self, size: int) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a condition serves one loop (in-process hosts make several)
            self._changed, self._loop = asyncio.Condition(), loop
        changed = self._changed
        assert changed is not None
        async with changed:
            await changed.wait_for(lambda: self.held == 0 or self.held + size <= self.limit)
            self.held += size
        try:
            yield
        finally:
            async with changed:
                self.held -= size
                changed.notify_all()


def audio_bytes(request: AlignRequest | TranscribeRequest) -> int:
    """What a request holds while it is served: its input and its 16 kHz float32 waveform."""
    samples = int(request.audio.shape[0])
    return int(request.audio.nbytes) + 4 * resampled_length(samples, request.sample_rate)


class CoreFailed(RuntimeError):
    """The core answered an error for one clip (its forward pass failed)."""

    @property
    def out_of_memory(self) -> bool:
        """The core's forward ran out of memory even for this clip alone."""
        return "out of memory" in str(self).lower()

    @property
    def queue_full(self) -> bool:
        """The core's queue was full: the server is overloaded, the request may be retried."""
        return "maximum queue size" in str(self).lower()


class AsrFailed(RuntimeError):
    """The ASR model answered an error for one call."""

    @property
    def queue_full(self) -> bool:
        """The ASR model's queue was full: the request may be retried."""
        return "maximum queue size" in str(self).lower()


def aligner_language(part: ChunkTranscript, transcript: Transcript) -> str:
    """The aligner's name for a chunk's detected language; a language the aligner does not
    cover is the client's answer (INVALID_ARG) with the transcript, never a failure."""
    if not part.language:
        return GENERIC_LANGUAGE
    try:
        return resolve_language(part.language)
    except ValueError:
        raise RequestError(
            f"the audio was transcribed in {part.language}, which the aligner does not cover "
            f"(it aligns {', '.join(LANGUAGES_BY_CODE.values())}); transcript "
            f"({transcript.language}): {transcript.text}",
            "language_not_aligned",
        ) from None


def _chunks_of(request: TranscribeRequest) -> list[AsrChunk]:
    """The request's 16 kHz waveform cut into upstream's chunks."""
    return split_chunks(prepare_waveform(request.audio, request.sample_rate))


def transcript_arrays(transcript: Transcript) -> dict[str, np.ndarray]:
    """The transcript's output tensors, with the leading batch dimension of 1."""
    return {
        "TRANSCRIPT": np.array([[transcript.text.encode("utf-8")]], dtype=np.object_),
        "TRANSCRIPT_LANGUAGE": np.array([[transcript.language.encode("utf-8")]], dtype=np.object_),
    }


class FrontMetrics(Protocol):
    """What the front reports (``metrics.AlignerMetrics`` in the server)."""

    def rejected(self, reason: str) -> None: ...

    def aligned(self, audio_seconds: float, units: int) -> None: ...

    def scored(self, mean_score: float, repaired_share: float) -> None: ...

    def stage(self, name: str, seconds: float) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """The answer to one request: output arrays, or an error message and whether it is the
    client's (INVALID_ARG), the server's (INTERNAL) or a refusal while the server stops
    (UNAVAILABLE: retry elsewhere or later)."""

    outputs: dict[str, np.ndarray] | None = None
    error: str | None = None
    invalid: bool = False
    unavailable: bool = False


def core_request_arrays(item: CoreInput) -> dict[str, np.ndarray]:
    """The core's input tensors for one clip, with the batch dimension of 1: the prompt ids and
    either the log-mel frames (FEATURES) or the 16 kHz waveform (AUDIO)."""
    ids = np.ascontiguousarray(item.input_ids, dtype=np.int64)[None, :]
    if item.features is not None:
        return {
            "INPUT_IDS": ids,
            "FEATURES": np.ascontiguousarray(item.features, dtype=np.float32)[None, :, :],
        }
    return {"INPUT_IDS": ids, "AUDIO": np.ascontiguousarray(item.wave, dtype=np.float32)[None, :]}


def slots_from_arrays(arrays: Mapping[str, np.ndarray]) -> SlotResult:
    """A :class:`SlotResult` from the core's output tensors."""
    return SlotResult(
        bins=np.asarray(arrays["TIMESTAMP_BINS"]).reshape(-1).astype(np.int32),
        confidence=np.asarray(arrays["SLOT_CONFIDENCE"]).reshape(-1).astype(np.float32),
    )


class AlignerFront:
    """Serves requests of one front instance; the forward runs elsewhere (``core``)."""

    def __init__(
        self,
        preparer: Preparer,
        core: CoreCall,
        metrics: FrontMetrics,
        log_error: Callable[[str], None] = lambda message: None,
        stopping: Callable[[], bool] = lambda: False,
        thread_setup: Callable[[], None] | None = None,
        asr: AsrCallFn | None = None,
    ) -> None:
        self.preparer = preparer
        self.asr = asr  # the ASR model's call; None where it is not loaded
        self.settings: FrontSettings = preparer.settings
        self.core = core
        self.metrics = metrics
        self.log_error = log_error
        self.stopping = stopping  # true once the launcher drains the server before it stops
        self.budget = AudioBudget(self.settings.max_held_audio_bytes)
        self.in_flight = InFlightBytes(core_bytes_in_flight(self.settings))
        # ASR calls in flight: one maximal call at most, as shared_memory.plan counts them.
        self.asr_in_flight = InFlightBytes(asr_call_bytes(self.settings))
        # One thread prepares, so the tokenizer and the feature extractor never run concurrently
        # and a long preparation holds up neither the loop nor more than one core.
        self.preparing = 0  # preparations running or queued on the preparation thread
        self._preparation = ThreadPoolExecutor(
            1, thread_name_prefix="prepare", initializer=thread_setup
        )

    def close(self) -> None:
        """Let the preparation thread end (the instance is being unloaded)."""
        self._preparation.shutdown(wait=False)

    async def _prepared(self, function: Callable, *args):
        """``function(*args)`` on the preparation thread."""
        self.preparing += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._preparation, function, *args
            )
        finally:
            self.preparing -= 1

    async def align(self, request: AlignRequest) -> Alignment:
        """Prepare and align one decoded request; raises what it meets (a ``RequestError`` for
        the client's mistakes)."""
        return await self.run(await self._prepared(self.preparer.prepare, request))

    async def run(self, prepared: PreparedItem | WindowedJob) -> Alignment:
        """Align a prepared request: its clip, or its windows or cues one core call each."""
        if isinstance(prepared, WindowedJob):
            return await self._windowed(prepared)
        return await self._clip(prepared)

    async def serve(
        self,
        arrays: MutableMapping[str, np.ndarray | None],
        inputs_released: Callable[[], None] | None = None,
    ) -> Outcome:
        """Answer one request given its input arrays (missing optional inputs as None).

        With ``inputs_released`` the arrays are views of memory the caller wants back (the
        server's shared memory): once the request is admitted, or refused, the front holds its
        own copy of what it keeps, empties ``arrays`` and calls ``inputs_released``; it never
        touches the views after that."""
        released = False

        def release() -> None:
            nonlocal released
            if not released and inputs_released is not None:
                released = True
                arrays.clear()
                inputs_released()

        try:
            return await self._admit(arrays, release if inputs_released is not None else None)
        finally:
            release()

    async def _admit(
        self,
        arrays: MutableMapping[str, np.ndarray | None],
        release: Callable[[], None] | None,
    ) -> Outcome:
        """``serve``'s work; ``release``, where the arrays are the caller's to take back, is
        called once what the front keeps is its own."""
        started = time.perf_counter()
        if self.stopping():
            self.metrics.rejected("stopping")
            return Outcome(error=STOPPING_MESSAGE, unavailable=True)
        encoded = arrays.get("AUDIO_FILE") is not None
        decode = partial(
            decode_request,
            arrays.get("AUDIO"),
            arrays.get("SAMPLE_RATE"),
            arrays.get("TEXT"),
            arrays.get("LANGUAGE"),
            self.settings,
            arrays.get("SEGMENTS"),
            arrays.get("AUDIO_FILE"),
            arrays.get("CONTEXT"),
        )
        try:
            if encoded:  # decoding a file takes up to seconds: a thread, the loop goes on
                request = await asyncio.get_running_loop().run_in_executor(None, decode)
            else:
                request = decode()
        except RequestError as e:
            self.metrics.rejected(e.reason)
            return Outcome(error=str(e), invalid=True)
        except Exception as e:  # never let one request fail the instance
            return self._failed(e, "preparing a request", "internal")
        size = audio_bytes(request)
        if size > self.budget.limit:
            self.metrics.rejected("audio_too_long")
            return Outcome(
                error=f"input {'AUDIO_FILE' if encoded else 'AUDIO'} needs {size // 2**20} MB "
                f"on the server; the limit is {self.budget.limit // 2**20} MB "
                "(max_held_audio_bytes)",
                invalid=True,
            )
        if not self.budget.reserve(size):
            self.metrics.rejected("busy")
            held = self.budget.held
            return Outcome(
                error=BUSY_MESSAGE.format(held=held // 2**20, needs=size // 2**20),
                unavailable=True,
            )
        try:
            if release is not None:
                if not encoded:  # a decoded file's waveform is already the front's
                    request = replace(request, audio=await _own_copy(request.audio))
                release()
            return await self._serve(request, started)
        finally:
            self.budget.release(size)

    async def _serve(self, request: AlignRequest | TranscribeRequest, started: float) -> Outcome:
        if isinstance(request, TranscribeRequest):
            return await self._transcribe(request, started)
        try:
            prepared = await self._prepared(self.preparer.prepare, request)
        except RequestError as e:
            self.metrics.rejected(e.reason)
            return Outcome(error=str(e), invalid=True)
        except Exception as e:  # never let one request fail the instance
            return self._failed(e, "preparing a request", "internal")
        self.metrics.stage("preprocess", time.perf_counter() - started)
        try:
            alignment = await self.run(prepared)
        except Exception as e:
            return self._alignment_failed(e)
        finished = time.perf_counter()
        outputs = alignment.output_arrays()
        self.metrics.stage("postprocess", time.perf_counter() - finished)
        self.metrics.aligned(alignment.duration, len(alignment.units))
        self.metrics.scored(alignment.mean_score, alignment.repaired_share)
        return Outcome(outputs=outputs)

    async def _transcribe(self, request: TranscribeRequest, started: float) -> Outcome:
        """Transcribe, then align, as upstream's ``transcribe(..., return_time_stamps=True)``."""
        if self.asr is None:
            self.metrics.rejected("missing_input")
            return Outcome(error=NO_ASR_MESSAGE, invalid=True)
        try:
            chunks = await self._prepared(_chunks_of, request)
        except Exception as e:
            return self._failed(e, "preparing a request", "internal")
        self.metrics.stage("preprocess", time.perf_counter() - started)
        transcribing = time.perf_counter()
        parts: list[ChunkTranscript] = []
        try:
            for call in calls_for(chunks, request.context, request.language):
                async with self.asr_in_flight.holding(sum(w.nbytes for w in call.waves)):
                    parts.extend(await self.asr(call))
        except Exception as e:
            if isinstance(e, AsrFailed) and e.queue_full:
                self.metrics.rejected("asr_queue_full")
                return Outcome(error=CORE_BUSY_MESSAGE, unavailable=True)
            return self._failed(e, "transcribing a request", "asr_failed")
        self.metrics.stage("transcribe", time.perf_counter() - transcribing)
        if len(parts) != len(chunks):
            return self._failed(
                RuntimeError(f"{len(parts)} transcripts for {len(chunks)} chunks"),
                "transcribing a request",
                "asr_failed",
            )
        try:
            alignments = await self._align_chunks(chunks, parts)
        except RequestError as e:
            self.metrics.rejected(e.reason)
            return Outcome(error=str(e), invalid=True)
        except Exception as e:
            return self._alignment_failed(e)
        finished = time.perf_counter()
        transcript, alignment = merge_alignments(chunks, parts, alignments, request.duration)
        outputs = {**alignment.output_arrays(), **transcript_arrays(transcript)}
        self.metrics.stage("postprocess", time.perf_counter() - finished)
        self.metrics.aligned(alignment.duration, len(alignment.units))
        self.metrics.scored(alignment.mean_score, alignment.repaired_share)
        return Outcome(outputs=outputs)

    async def _align_chunks(
        self, chunks: list[AsrChunk], parts: list[ChunkTranscript]
    ) -> list[Alignment | None]:
        """Each chunk with text aligned on its own audio as one clip (None for the others)."""
        transcript = merge_transcripts(parts)
        languages = [aligner_language(p, transcript) if p.text.strip() else "" for p in parts]

        async def one(chunk: AsrChunk, part: ChunkTranscript, language: str) -> Alignment | None:
            if not part.text.strip():
                return None
            request = AlignRequest(chunk.wave, MODEL_SAMPLE_RATE, part.text, language)
            try:
                item = await self._prepared(self.preparer.prepare, request, True)
            except RequestError as e:
                if e.reason == NO_WORDS:  # "..." or symbols: upstream's aligner gives no items
                    return None
                raise
            assert isinstance(item, PreparedItem)
            return await self._clip(item)

        pieces = zip(chunks, parts, languages, strict=True)
        return list(await asyncio.gather(*(one(c, p, lang) for c, p, lang in pieces)))

    def _alignment_failed(self, e: Exception) -> Outcome:
        """The answer to a request whose clips the core did not align: UNAVAILABLE while the
        core's queue is full (retry), else an internal error."""
        if isinstance(e, CoreFailed) and e.queue_full:
            self.metrics.rejected("core_queue_full")
            return Outcome(error=CORE_BUSY_MESSAGE, unavailable=True)
        return self._failed(e, "aligning a request", "forward_failed")

    def _failed(self, error: Exception, stage: str, internal_reason: str) -> Outcome:
        """The client's answer for a failed request: its own mistake, or an internal error whose
        details go to the log only (under the id the client is told)."""
        reply = describe(error, stage, internal_reason)
        if reply.log is not None:
            self.log_error(reply.log)
        self.metrics.rejected(reply.reason)
        return Outcome(error=reply.message, invalid=reply.code == INVALID_ARG)

    async def _clip(self, item: PreparedItem) -> Alignment:
        core_input = item.core_input()
        await asyncio.sleep(0)  # let answers of other requests go out before waiting
        async with self.in_flight.holding(core_input.nbytes):
            slots = await self.core(core_input)
        return self.preparer.to_alignment(item, slots)

    async def _windowed(self, job: WindowedJob) -> Alignment:
        if isinstance(job, CueJob):
            limit = asyncio.Semaphore(MAX_PIECES_IN_FLIGHT)

            async def cue(window: Window, words: list[str]) -> Alignment:
                async with limit:
                    item = await self._prepared(self.preparer.window_item, job, window, words)
                    return await self._clip(item)

            results = await asyncio.gather(*(cue(w, words) for w, words in job.cues))
            self.preparer.take_results(job, list(results))
        else:
            # A long recording: each window starts where the last one's accepted words end.
            while items := await self._prepared(self.preparer.next_items, job):
                self.preparer.take_results(job, [await self._clip(item) for item in items])
        return self.preparer.finish(job)
