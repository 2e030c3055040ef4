"""The served pipeline hosted in one process: benchmarks, warm-up and in-process use.

:class:`InProcessAligner` runs the same :class:`~qwen3_aligner_triton.front.AlignerFront` that
serves the public model, with a local core in place of the BLS call: the same
:class:`~qwen3_aligner_triton.core.CoreRunner` over the same forward, in this process. Requests
given together share forward passes as in the server: each pass takes every clip waiting once
the requests in flight all wait for the core (a round), in length buckets, so a round holds every
single-window request and the first windows of the longer ones, the next round their next
windows, and so on.

Given a loaded ASR model (``asr.load_asr``), it also serves requests without TEXT as the server
does with ``--asr``: :class:`LocalAsr` runs each ASR call of the front (one recording's chunks,
one generate call) in this process, as the ASR model beside the front runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .asr import AsrCall, AsrRunner, ChunkTranscript
from .core import CoreInput, CoreRunner, ModelForward, SlotResult
from .front import AlignerFront, FrontMetrics, Outcome
from .params import PipelineSettings
from .preparation import GPU_WARMUP_PASSES, WARMUP_SECONDS, PreparedItem, Preparer, WindowedJob
from .preparation import warmup_request as warmup_request
from .requests import AlignRequest
from .results import Alignment

__all__ = ["GPU_WARMUP_PASSES", "InProcessAligner", "LocalAsr", "LocalCore"]

QUIET_TURNS = 3  # turns of the event loop without a new clip before a round starts


class _NoMetrics:
    """The front's metrics, unrecorded."""

    def rejected(self, reason: str) -> None:
        pass

    def aligned(self, audio_seconds: float, units: int) -> None:
        pass

    def scored(self, mean_score: float, repaired_share: float) -> None:
        pass

    def stage(self, name: str, seconds: float) -> None:
        pass


class LocalCore:
    """The core's forward in this process, as the front's core call.

    Clips wait until every request in flight waits for the core (``settled`` says when), then
    one round runs them through ``runner`` (length-bucketed passes, a failed pass split and
    retried) on the event loop's thread.
    """

    def __init__(
        self,
        runner: CoreRunner,
        settled: Callable[[], bool],
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.runner = runner
        self.settled = settled
        self.on_batch = on_batch
        self.waiting: list[tuple[CoreInput, asyncio.Future]] = []
        self._driver: asyncio.Task | None = None

    async def __call__(self, item: CoreInput) -> SlotResult:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self.waiting.append((item, future))
        if self._driver is None:
            self._driver = loop.create_task(self._drive())
        outcome = await future
        if isinstance(outcome, Exception):
            raise outcome  # the forward's own error, as the request's result
        return outcome

    async def _drive(self) -> None:
        try:
            while self.waiting:
                # A round starts once nothing is being prepared and no clip has arrived for a
                # few turns of the loop (a request's task takes one turn from its preparation
                # to its core call).
                seen, quiet = -1, 0
                while quiet < QUIET_TURNS:
                    settled = self.settled()
                    quiet = quiet + 1 if settled and seen == len(self.waiting) else 0
                    seen = len(self.waiting)
                    await asyncio.sleep(0 if settled else 0.001)
                batch, self.waiting = self.waiting, []
                outcomes = self.runner.run([item for item, _ in batch], self.on_batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)
                await asyncio.sleep(0)  # the answers' tasks run before the next round gathers
        finally:
            self._driver = None


class LocalAsr:
    """The ASR model in this process, as the front's ASR call: each call is one generate call of
    ``runner`` on the event loop's thread, one call at a time, as the served ASR model runs each
    request of the front on its own."""

    def __init__(self, runner: AsrRunner) -> None:
        self.runner = runner
        self.calls = 0  # ASR calls run

    async def __call__(self, call: AsrCall) -> list[ChunkTranscript]:
        self.calls += 1
        return self.runner.run(call)


class InProcessAligner:
    """Batched, batch-invariant alignment in this process, through the served pipeline.

    ``aligner`` is a loaded ``qwen_asr.Qwen3ForcedAligner`` (``loading.load_aligner``);
    ``settings`` holds both models' settings (``PipelineSettings.of(window_seconds=60.0, ...)``);
    ``asr``, a loaded ASR model (``asr.load_asr``), lets :meth:`serve` answer requests without
    TEXT.
    """

    def __init__(
        self,
        aligner: Any,
        settings: PipelineSettings | None = None,
        asr: AsrRunner | None = None,
    ) -> None:
        settings = settings if settings is not None else PipelineSettings()
        config = aligner.model.config
        if asr is not None:
            settings = replace(settings, front=replace(settings.front, asr=True))
        self.settings = settings
        self.asr = asr
        self.model = aligner.model
        self.device = self.model.device
        self.dtype = self.model.dtype
        self.preparer = Preparer(
            aligner.processor,
            aligner.aligner_processor,
            settings.front,
            float(config.timestamp_segment_time),
            int(config.thinker_config.audio_token_id),
        )
        self.timestamp_token_id = int(config.timestamp_token_id)
        tokenizer = aligner.processor.tokenizer
        self.pad_token_id = int(
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self.forward_pass = ModelForward(
            self.model,
            self.pad_token_id,
            aligner.processor.feature_extractor,
            packed_decoder=settings.core.packed_decoder,
        )
        self.runner = CoreRunner(
            self.forward_pass,
            settings.core,
            is_cuda=self.device.type == "cuda",
            oom_above_tokens=settings.simulation.simulate_oom_above_tokens,
        )

    def prepare(self, request: AlignRequest) -> PreparedItem | WindowedJob:
        """The request's model inputs, as the front prepares them."""
        return self.preparer.prepare(request)

    def align(
        self,
        prepared: Sequence[PreparedItem | WindowedJob | AlignRequest],
        on_batch: Callable[[int], None] | None = None,
    ) -> list[Alignment | Exception]:
        """Align requests (prepared or not) together; per request, its alignment or the error
        it met. ``on_batch`` gets the size of every forward pass."""
        return asyncio.run(self._align(prepared, on_batch))

    async def _align(
        self,
        prepared: Sequence[PreparedItem | WindowedJob | AlignRequest],
        on_batch: Callable[[int], None] | None,
    ) -> list[Alignment | Exception]:
        core = LocalCore(self.runner, lambda: front.preparing == 0, on_batch)
        front = AlignerFront(self.preparer, core, _NoMetrics())
        try:
            return list(
                await asyncio.gather(
                    *(
                        front.align(p) if isinstance(p, AlignRequest) else front.run(p)
                        for p in prepared
                    ),
                    return_exceptions=True,
                )
            )
        finally:
            front.close()

    def serve(
        self,
        requests: Sequence[Mapping[str, np.ndarray | None]],
        metrics: FrontMetrics | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[Outcome]:
        """Answer requests given as the public model's input arrays (``AUDIO``, ``TEXT``, ...,
        each with its batch dimension of 1), together, as the server's front answers them: per
        request, its output arrays or its error. Requests without TEXT are transcribed first
        where this aligner holds an ASR model."""
        return asyncio.run(self._serve(requests, metrics, on_batch))

    async def _serve(
        self,
        requests: Sequence[Mapping[str, np.ndarray | None]],
        metrics: FrontMetrics | None,
        on_batch: Callable[[int], None] | None,
    ) -> list[Outcome]:
        core = LocalCore(self.runner, lambda: front.preparing == 0, on_batch)
        asr = None if self.asr is None else LocalAsr(self.asr)
        front = AlignerFront(self.preparer, core, metrics or _NoMetrics(), asr=asr)
        try:
            return list(await asyncio.gather(*(front.serve(dict(r)) for r in requests)))
        finally:
            front.close()

    def forward(self, batch: Sequence[PreparedItem]) -> list[Alignment]:
        """One forward pass over prepared clips; raises if the pass fails (benchmarks and
        checks that time or alter single passes)."""
        slots = self.forward_pass([it.core_input() for it in batch])
        return [self.preparer.to_alignment(it, s) for it, s in zip(batch, slots, strict=True)]

    def warmup(self, passes: Sequence[tuple[float, int]] = ((WARMUP_SECONDS, 1),)) -> None:
        """Run alignments before traffic so kernels and lazy imports are ready: for each
        ``(seconds, clips)``, that many clips of that length in one forward pass (at most
        ``max_forward_batch``). The default is one short clip."""
        self.preparer.load_word_splitters()
        for seconds, clips in passes:
            request = warmup_request(seconds)
            count = max(1, min(clips, self.settings.core.max_forward_batch))
            for result in self.align([self.prepare(request) for _ in range(count)]):
                if isinstance(result, Exception):
                    raise RuntimeError(f"warm-up alignment failed: {result}") from result
