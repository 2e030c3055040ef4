"""In-process baselines: the upstream library's ``align()`` and this package's engine.

Each function runs the whole workload once and returns a :class:`PassResult`. A request's latency
is the time until its own result exists: for a batched call that is the whole call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .stats import PassResult, load_average
from .workload import SAMPLE_RATE, Clip


def upstream_one_at_a_time(
    aligner: Any, clips: Sequence[Clip], mode: str = "upstream"
) -> PassResult:
    """``aligner.align()`` called once per clip, in order."""
    latencies: list[float] = []
    cpu = time.process_time()
    started = time.perf_counter()
    for clip in clips:
        t0 = time.perf_counter()
        aligner.align(audio=(clip.audio, SAMPLE_RATE), text=clip.text, language=clip.language)
        latencies.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    return PassResult(
        mode,
        wall,
        sum(c.seconds for c in clips),
        latencies,
        cpu_seconds=time.process_time() - cpu,
        load_average=load_average(),
    )


def upstream_single(aligner: Any, clip: Clip) -> tuple[float, float]:
    """One ``align()`` call on ``clip``: (wall seconds, CPU seconds of this process)."""
    cpu = time.process_time()
    t0 = time.perf_counter()
    aligner.align(audio=(clip.audio, SAMPLE_RATE), text=clip.text, language=clip.language)
    return time.perf_counter() - t0, time.process_time() - cpu


def upstream_batched(
    aligner: Any, clips: Sequence[Clip], batch_size: int, mode: str = "upstream-batched"
) -> PassResult:
    """``aligner.align()`` with list inputs, ``batch_size`` consecutive clips per call.

    Upstream pads every clip of a call to the call's longest; consecutive clips are taken as they
    come (mixed lengths), which is what a caller batching independent files gets.
    """
    latencies: list[float] = []
    cpu = time.process_time()
    started = time.perf_counter()
    for i in range(0, len(clips), batch_size):
        group = clips[i : i + batch_size]
        t0 = time.perf_counter()
        aligner.align(
            audio=[(c.audio, SAMPLE_RATE) for c in group],
            text=[c.text for c in group],
            language=[c.language for c in group],
        )
        latencies.extend([time.perf_counter() - t0] * len(group))
    wall = time.perf_counter() - started
    return PassResult(
        mode,
        wall,
        sum(c.seconds for c in clips),
        latencies,
        cpu_seconds=time.process_time() - cpu,
        load_average=load_average(),
    )


def engine_batched(
    engine: Any, clips: Sequence[Clip], batch_size: int, mode: str = "engine"
) -> PassResult:
    """``InProcessAligner.prepare`` + ``align`` over ``batch_size`` clips per call.

    Requests are prepared one by one (as the server does) and the engine groups them into forward
    passes by prompt length, so this is the server's work without Triton around it.
    """
    from qwen3_aligner_triton.requests import AlignRequest

    latencies: list[float] = []
    errors = 0
    first_error = ""
    cpu = time.process_time()
    started = time.perf_counter()
    for i in range(0, len(clips), batch_size):
        group = clips[i : i + batch_size]
        t0 = time.perf_counter()
        items = [
            engine.prepare(
                AlignRequest(
                    audio=c.audio, sample_rate=SAMPLE_RATE, text=c.text, language=c.language
                )
            )
            for c in group
        ]
        results = engine.align(items)
        elapsed = time.perf_counter() - t0
        for result in results:
            if isinstance(result, Exception):
                errors += 1
                first_error = first_error or repr(result)
            else:
                latencies.append(elapsed)
    wall = time.perf_counter() - started
    return PassResult(
        mode,
        wall,
        sum(c.seconds for c in clips),
        latencies,
        errors,
        first_error,
        cpu_seconds=time.process_time() - cpu,
        load_average=load_average(),
    )
