"""``./scripts/bench-shape``: the GPU-shaped pipeline measured on a CPU box, in one run.

1. ``simulated``: the server with ``--simulate-gpu 25+8.1n`` (everything real but the forward),
   ``--clips`` 30 s clips at ``--concurrency`` over gRPC, sent twice (the first pass, a server's
   start-up, reported apart): clips/s of the second against this machine's serial
   preparation capacity measured in the same run, one thread, in this process, before and after
   the server pass: upstream's preparation (what ``Qwen3ForcedAligner.align`` does before its
   forward) and the front's own (faster), and the simulated device's busy fraction
   (its passes, from the core's batch-size histogram, times their simulated cost, over the wall
   time), next to what the same load would reach in an ideal closed loop with the CPU per clip
   measured in the run (:func:`closed_loop_model`).
2. ``longform``: 5 s requests while a ``--long-minutes`` recording is aligned (tiny checkpoint on
   CPU), against their idle p95 and the median latency of a lone 180 s request (three clips,
   twice each); with 1 and with 2
   forward instances. The recording's windows are also replayed in-process, once (the same
   checkpoint cuts them the same way), so the report also gives each window's words and forward
   time: what a short request may have to wait for. With random weights (``tiny``) the model
   places few words before a window's end and the rest pile up in the last windows; with
   ``--checkpoint trained`` (the tiny checkpoint trained on synthetic speech) every request is
   that synthetic speech, whose words the model places inside each window (too early past the
   60 s it was trained on, so its windows advance in steps of ~10 s) instead of piling them at
   the end: its windows hold about what a lone 180 s request does (``--recording`` chooses the
   audio independently of the checkpoint).

Every figure comes with the load average it was measured under; the machine may be shared.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qwen3_aligner_triton.contract import CORE_MODEL_NAME
from qwen3_aligner_triton.metrics import BATCH_BUCKETS, BATCH_SIZE
from qwen3_aligner_triton.params import GpuCost, parse_gpu_cost

from .checkpoints import resolve_checkpoint
from .served import Endpoints, bench_server, run_concurrent, warm_up
from .stats import load_average, metric_sum
from .workload import SAMPLE_RATE, Clip, fixed_clips, speech_like_audio, transcript


def log(message: str) -> None:
    print(f"[bench-shape {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def serial_preparation_rate(checkpoint: str, clips: Sequence[Clip]) -> tuple[float, float]:
    """Clips per second the front's preparation reaches serially on one thread, in-process, and
    its CPU milliseconds per clip."""
    import torch

    from qwen3_aligner_triton.loading import load_preparer
    from qwen3_aligner_triton.params import FrontSettings
    from qwen3_aligner_triton.requests import AlignRequest

    torch.set_num_threads(1)
    preparer = load_preparer(checkpoint, FrontSettings(checkpoint=checkpoint))
    preparer.prepare(AlignRequest(clips[0].audio, SAMPLE_RATE, clips[0].text, clips[0].language))
    started, cpu = time.perf_counter(), time.process_time()
    for c in clips:
        preparer.prepare(AlignRequest(c.audio, SAMPLE_RATE, c.text, c.language))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return len(clips) / wall, 1000 * cpu / len(clips)


def upstream_preparation_rate(checkpoint: str, clips: Sequence[Clip]) -> tuple[float, float]:
    """Clips per second upstream's own preparation reaches serially on one thread, in-process,
    and its CPU milliseconds per clip: what ``Qwen3ForcedAligner.align`` does before its forward
    (audio to 16 kHz mono, word split, the processor's features and prompt ids)."""
    import torch
    from qwen_asr.inference.utils import normalize_audios

    from qwen3_aligner_triton.loading import load_aligner

    torch.set_num_threads(1)
    aligner = load_aligner(checkpoint, "cpu")

    def prepare(clip: Clip) -> None:
        (audio,) = normalize_audios([(clip.audio, SAMPLE_RATE)])
        _, prompt = aligner.aligner_processor.encode_timestamp(clip.text, clip.language)
        aligner.processor(text=[prompt], audio=[audio], return_tensors="pt", padding=True)

    prepare(clips[0])
    started, cpu = time.perf_counter(), time.process_time()
    for c in clips:
        prepare(c)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return len(clips) / wall, 1000 * cpu / len(clips)


def closed_loop_model(
    clients: int,
    requests_each: int,
    cpu_ms_per_clip: float,
    cores: int,
    cost: GpuCost,
    max_pass: int = 64,
) -> tuple[float, float]:
    """What a closed loop of ``clients`` allows at best when everything else is ideal: clips per
    second and the mean pass.

    Each client sends ``requests_each`` clips one after another. A clip first takes
    ``cpu_ms_per_clip`` on one of ``cores`` CPUs (first come, first served: the clip's whole CPU
    cost, server and load generator), then waits for the device, which starts a pass as soon as
    it is free over every clip waiting then (at most ``max_pass``), for ``cost``; the pass's
    clips are answered when it ends and their clients send their next clip. No overheads, no
    jitter: a reference for what the ramp-up, the tail and the alternation of passes leave.
    """
    events: list[tuple[float, int, int, tuple[int, ...]]] = []  # (time, order, kind, clients)
    order = itertools.count()
    cpu_queue = list(range(clients))
    left = dict.fromkeys(range(clients), requests_each)
    waiting: list[int] = []
    cpus_busy, device_busy = 0, False
    now, answered, passes = 0.0, 0, []
    total = clients * requests_each

    def dispatch() -> None:
        nonlocal cpus_busy, device_busy
        while cpus_busy < cores and cpu_queue:
            cpus_busy += 1
            client = cpu_queue.pop(0)
            heapq.heappush(events, (now + cpu_ms_per_clip, next(order), 0, (client,)))
        if not device_busy and waiting:
            taken = tuple(waiting[:max_pass])
            del waiting[:max_pass]
            device_busy = True
            passes.append(len(taken))
            heapq.heappush(events, (now + 1000 * cost.seconds(len(taken)), next(order), 1, taken))

    dispatch()
    while answered < total:
        now, _, kind, who = heapq.heappop(events)
        if kind == 0:  # preparation done: the clip waits for the device
            cpus_busy -= 1
            waiting.extend(who)
        else:  # a pass ended: its clients send their next clips
            device_busy = False
            for client in who:
                answered += 1
                left[client] -= 1
                if left[client]:
                    cpu_queue.append(client)
        dispatch()
    return 1000.0 * total / now, total / len(passes)


def core_copies(endpoints: Endpoints) -> tuple[int, float, float]:
    """The core's executions (Triton's calls of its execute()) and the seconds Triton spent
    copying their inputs in and their outputs out (compute_input and compute_output, summed)."""
    import tritonclient.http as httpclient

    with httpclient.InferenceServerClient(endpoints.http_url) as client:
        stats = client.get_inference_statistics(CORE_MODEL_NAME)
    executions = 0
    inputs = outputs = 0.0
    for model in stats.get("model_stats", []):
        for entry in model.get("batch_stats", []):
            executions += int(entry["compute_infer"]["count"])
            inputs += int(entry["compute_input"]["ns"]) / 1e9
            outputs += int(entry["compute_output"]["ns"]) / 1e9
    return executions, inputs, outputs


@dataclass(frozen=True)
class CorePasses:
    """The core's forward passes so far, from its batch-size histogram."""

    passes: float
    clips: float
    by_bucket: dict[int, float]  # cumulative: passes of at most this many clips (BATCH_BUCKETS)

    def since(self, before: CorePasses) -> CorePasses:
        return CorePasses(
            self.passes - before.passes,
            self.clips - before.clips,
            {le: n - before.by_bucket[le] for le, n in self.by_bucket.items()},
        )

    def ranges(self) -> dict[str, int]:
        """Passes by size range ("1", "2", "3-4", ..., "33-64"), empty ranges left out."""
        out: dict[str, int] = {}
        below, lower = 0.0, 1
        for upper, n in self.by_bucket.items():
            if n - below > 0:
                out[str(upper) if upper == lower else f"{lower}-{upper}"] = round(n - below)
            below, lower = n, upper + 1
        if self.passes - below > 0:
            out[f"{lower}+"] = round(self.passes - below)
        return out


def core_passes(endpoints: Endpoints) -> CorePasses:
    """Read the core's forward passes from the metrics port."""
    import urllib.request

    assert endpoints.metrics_url is not None, "the bench's server publishes its metrics"
    with urllib.request.urlopen(endpoints.metrics_url, timeout=10) as resp:
        return parse_core_passes(resp.read().decode())


def parse_core_passes(text: str) -> CorePasses:
    """The core's passes in a scrape of the metrics port (summed over its instances)."""
    core = (f'model="{CORE_MODEL_NAME}"',)
    return CorePasses(
        metric_sum(text, BATCH_SIZE + "_count", core),
        metric_sum(text, BATCH_SIZE + "_sum", core),
        {
            le: metric_sum(text, BATCH_SIZE + "_bucket", (*core, f'le="{le}"'))
            for le in BATCH_BUCKETS
        },
    )


def cpu_by_process(server_pid: int | None) -> dict[str, float]:
    """CPU seconds (user + system) of tritonserver and of its stubs, by model."""
    import psutil

    out: dict[str, float] = {}
    if server_pid is None:
        return out
    server = psutil.Process(server_pid)
    for proc in [server, *server.children(recursive=True)]:
        try:
            cmd = " ".join(proc.cmdline())
            times = proc.cpu_times()
        except psutil.Error:
            continue
        name = "tritonserver"
        if "triton_python_backend_stub" in cmd:
            name = "core stub" if CORE_MODEL_NAME in cmd else "front stubs"
        out[name] = out.get(name, 0.0) + times.user + times.system
    return out


def measure_simulated(args: argparse.Namespace, checkpoint: str) -> dict[str, Any]:
    cost = parse_gpu_cost(args.simulate_gpu)
    clips = fixed_clips(args.clips, 30.0, seed=args.seed)
    prep_clips = clips[: args.prep_clips]
    log(f"serial preparation of {len(prep_clips)} x 30 s clips (one thread)")
    prep_before, prep_cpu_before = serial_preparation_rate(checkpoint, prep_clips)
    log(f"upstream's serial preparation of the same {len(prep_clips)} clips (one thread)")
    upstream_before, _ = upstream_preparation_rate(checkpoint, prep_clips)
    load_before = load_average()
    log(f"server with --simulate-gpu {args.simulate_gpu} (results are placeholders)")
    with bench_server(
        checkpoint,
        "KIND_CPU",
        {"simulate_gpu": args.simulate_gpu},
        log=log,
        instances=args.simulated_instances,
        front_instances=args.front_instances,
    ) as endpoints:
        warm_up(endpoints, clips[:4])
        # A server's first burst is slower (measured: 0.6x the rate of the next): the Python
        # backend grows each stub's shared-memory region to hold the clips in flight, and each
        # front instance starts its threads. That is start-up, reported apart; the measured
        # pass is the second.
        first = run_concurrent(endpoints, "grpc", clips, args.concurrency)
        passes_before, copies_before = core_passes(endpoints), core_copies(endpoints)
        cpu_before = cpu_by_process(endpoints.server_pid)
        client_before = time.process_time()
        result = run_concurrent(endpoints, "grpc", clips, args.concurrency)
        client_cpu = time.process_time() - client_before
        cpu_after = cpu_by_process(endpoints.server_pid)
        time.sleep(0.5)  # let the last passes' metric updates reach the metrics port
        passes = core_passes(endpoints).since(passes_before)
        copies_after = core_copies(endpoints)
    cpu_ms_per_clip = {
        name: round(1000 * (cpu_after[name] - cpu_before.get(name, 0.0)) / len(clips), 1)
        for name in cpu_after
    }
    cpu_ms_per_clip["load generator"] = round(1000 * client_cpu / len(clips), 1)
    busy = (cost.fixed_ms * passes.passes + cost.per_item_ms * passes.clips) / 1000.0
    executions = max(1, copies_after[0] - copies_before[0])
    # Triton copies an execution's inputs in before the core's execute() runs: the core queues
    # its clips and returns, so the next execution's copying overlaps the device's pass.
    copies_ms = [round(1000 * (copies_after[k] - copies_before[k]) / executions, 1) for k in (1, 2)]
    log("serial preparation again, after the server pass")
    prep_after, prep_cpu_after = serial_preparation_rate(checkpoint, prep_clips)
    upstream_after, _ = upstream_preparation_rate(checkpoint, prep_clips)
    upstream_prep = (upstream_before + upstream_after) / 2
    prep = (prep_before + prep_after) / 2
    prep_cpu_ms = (prep_cpu_before + prep_cpu_after) / 2
    server_cpu_ms = sum(v for k, v in cpu_ms_per_clip.items() if k != "load generator")
    cpus = os.cpu_count() or 1
    # What the CPU work per clip allows when the machine's cores are ours alone: the server
    # (and its load generator) on every core against preparation on one.
    idle_capacity = cpus * 1000 / (server_cpu_ms + cpu_ms_per_clip["load generator"])
    served = (len(clips) - result.errors) / result.wall_seconds
    mean_batch = passes.clips / max(1.0, passes.passes)
    clients = min(args.concurrency, len(clips))
    model_rate, model_pass = closed_loop_model(
        clients,
        -(-len(clips) // clients),
        server_cpu_ms + cpu_ms_per_clip["load generator"],
        cpus,
        cost,
    )
    return {
        "clips": len(clips),
        "concurrency": args.concurrency,
        "forward_instances": args.simulated_instances,
        "errors": result.errors,
        "served_clips_per_s": round(served, 1),
        "first_pass_clips_per_s": round((len(clips) - first.errors) / first.wall_seconds, 1),
        "serial_prep_clips_per_s": round(prep, 1),
        "serial_prep_before_after": [round(prep_before, 1), round(prep_after, 1)],
        "ratio": round(served / prep, 2),
        "upstream_serial_prep_clips_per_s": round(upstream_prep, 1),
        "upstream_serial_prep_before_after": [round(upstream_before, 1), round(upstream_after, 1)],
        "ratio_to_upstream_prep": round(served / upstream_prep, 2),
        "device_busy_fraction": round(busy / result.wall_seconds, 2),
        # The same load in an ideal closed loop with this run's CPU per clip (closed_loop_model).
        "closed_loop_model_clips_per_s": round(model_rate, 1),
        "closed_loop_model_mean_pass": round(model_pass, 1),
        "served_over_model": round(served / model_rate, 2),
        "core_passes": round(passes.passes),
        "core_passes_by_size": passes.ranges(),
        "mean_core_batch": round(mean_batch, 1),
        "core_executions": executions,
        "core_input_output_ms_per_execution": copies_ms,
        "cpu_ms_per_clip": cpu_ms_per_clip,
        "serial_prep_cpu_ms_per_clip": round(prep_cpu_ms, 1),
        "server_cpu_ms_per_clip": round(server_cpu_ms, 1),
        "cpu_bound_capacity_clips_per_s": round(idle_capacity, 1),
        "cpu_bound_ratio": round(idle_capacity * prep_cpu_ms / 1000, 2),
        "load_average": [round(load_before, 2), round(result.load_average, 2)],
    }


@dataclass(frozen=True)
class LongformWorkload:
    """What every longform run sends: short requests, lone requests of one window's length and
    the long recording."""

    short: list[Clip]
    lone: list[Clip]
    recording: Clip


def synthetic_speech(seconds: float, rng: np.random.Generator, name: str) -> Clip:
    """``seconds`` of the synthetic speech the trained tiny checkpoint learned (tone-burst words
    at a natural pace, made-up syllables for the transcript); long ones are built from pieces of
    20-60 s, the lengths it was trained on at most."""
    from ..checkpoint_training import concatenate, synthetic_clip

    pieces = []
    left = seconds
    while left > 0.5:
        piece = synthetic_clip(rng, min(left, float(rng.uniform(20.0, 60.0))))
        pieces.append(piece)
        left -= piece.duration
    speech = concatenate(pieces)
    return Clip(name, speech.wave, speech.text, "English")


def longform_workload(args: argparse.Namespace) -> LongformWorkload:
    seconds = args.long_minutes * 60.0
    lone_seconds = min(179.0, args.window_seconds - 1.0)
    log(f"building a {args.long_minutes:g}-minute recording ({args.recording} audio)")
    if args.recording == "synthetic":
        rng = np.random.default_rng(args.seed + 3)
        return LongformWorkload(
            short=[synthetic_speech(5.0, rng, f"short{i:02d}") for i in range(args.short_requests)],
            lone=[synthetic_speech(lone_seconds, rng, f"lone{i}") for i in range(3)],
            recording=synthetic_speech(seconds, rng, "long"),
        )
    return LongformWorkload(
        short=fixed_clips(args.short_requests, 5.0, seed=args.seed + 1),
        lone=fixed_clips(3, lone_seconds, seed=args.seed + 2),
        recording=Clip(
            "long",
            speech_like_audio(seconds, args.seed + 3),
            transcript(seconds, "English"),
            "English",
        ),
    )


def replay_forwards(
    checkpoint: str, workload: LongformWorkload, window_seconds: float
) -> tuple[list[dict[str, Any]], float]:
    """The windows the server cuts the recording into, each with its words, prompt tokens and
    forward pass alone, and the median forward pass of a lone request: this package's engine
    in-process on the CPU, one clip per pass as a CPU core instance runs it (the windows depend
    on the model's answers, which equal the server's)."""
    from qwen3_aligner_triton.inprocess import InProcessAligner
    from qwen3_aligner_triton.loading import load_aligner
    from qwen3_aligner_triton.params import PipelineSettings
    from qwen3_aligner_triton.requests import AlignRequest

    clip = workload.recording
    settings = PipelineSettings.of(
        checkpoint=checkpoint,
        max_forward_batch=1,
        window_seconds=window_seconds,
        max_audio_seconds=max(14400.0, clip.audio.shape[0] / SAMPLE_RATE),
    )
    engine = InProcessAligner(load_aligner(checkpoint, "cpu"), settings)
    engine.warmup()
    job = engine.prepare(AlignRequest(clip.audio, SAMPLE_RATE, clip.text, clip.language))
    windows = []
    while items := engine.preparer.next_items(job):
        started = time.perf_counter()
        results = engine.forward(items)
        seconds = time.perf_counter() - started
        window = job.window
        assert window is not None
        windows.append(
            {
                "start_s": round(window.start, 1),
                "end_s": round(window.end, 1),
                "words": len(items[0].words),
                "tokens": int(items[0].input_ids.shape[0]),
                "forward_s": round(seconds, 3),
            }
        )
        engine.preparer.take_results(job, results)
    lone = []
    for c in workload.lone:
        item = engine.prepare(AlignRequest(c.audio, SAMPLE_RATE, c.text, c.language))
        started = time.perf_counter()
        engine.forward([item])
        lone.append(time.perf_counter() - started)
    return windows, statistics.median(lone)


def _send(endpoints: Endpoints, clip: Clip) -> float:
    from .served import _client, _infer

    module, client = _client("http", endpoints.http_url)
    try:
        started = time.perf_counter()
        _infer(module, client, clip, "http")
        return time.perf_counter() - started
    finally:
        client.close()


def measure_longform(
    args: argparse.Namespace,
    checkpoint: str,
    instances: int,
    workload: LongformWorkload,
    replay: tuple[list[dict[str, Any]], float],
) -> dict[str, Any]:
    short, lone, long_clip = workload.short, workload.lone, workload.recording
    seconds = long_clip.audio.shape[0] / SAMPLE_RATE
    with bench_server(
        checkpoint,
        "KIND_CPU",
        {
            "max_audio_seconds": str(max(14400.0, seconds)),
            "window_seconds": str(args.window_seconds),
        },
        log=log,
        instances=instances,
        front_instances=args.front_instances,
        ready_timeout=900.0,
    ) as endpoints:
        warm_up(endpoints, short[:2] + lone[:1])
        idle = [_send(endpoints, c) for c in short]
        lone_s = statistics.median([_send(endpoints, c) for c in lone for _ in range(2)])
        load_idle = load_average()
        long_latency: list[float] = []
        done = threading.Event()

        def run_long() -> None:
            try:
                long_latency.append(_send(endpoints, long_clip))
            finally:
                done.set()

        thread = threading.Thread(target=run_long, daemon=True)
        thread.start()
        time.sleep(args.upload_grace)  # let the recording arrive and its first window start
        during: list[float] = []
        k = 0
        while not done.is_set():
            during.append(_send(endpoints, short[k % len(short)]))
            k += 1
        thread.join()
        load_busy = load_average()
    windows, lone_forward = replay
    largest = max(w["forward_s"] for w in windows)
    extra = p95(during) - p95(idle) if during else None
    over_window = round(extra / largest, 2) if extra is not None else None
    return {
        "forward_instances": instances,
        "idle_p95_s": round(p95(idle), 3),
        "lone_180s_s": round(lone_s, 3),
        "during_p95_s": round(p95(during), 3) if during else None,
        "during_requests": len(during),
        "long_recording_s": round(long_latency[0], 1) if long_latency else None,
        "during_over_idle": round(p95(during) / p95(idle), 2) if during else None,
        "during_over_lone_180s": round(p95(during) / lone_s, 2) if during else None,
        # What a short request can wait for: the window being aligned when it arrives.
        "windows": len(windows),
        "window_words": [min(w["words"] for w in windows), max(w["words"] for w in windows)],
        "window_forward_s": {
            "median": round(statistics.median(w["forward_s"] for w in windows), 3),
            "largest": largest,
        },
        "lone_180s_forward_s": round(lone_forward, 3),
        "during_minus_idle_over_largest_window": over_window,
        "window_detail": windows,
        "load_average": [round(load_idle, 2), round(load_busy, 2)],
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/bench-shape", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoint",
        default="tiny",
        help="tiny (random, built on the fly), trained (tiny, trained on synthetic speech; cached) "
        "or a folder",
    )
    p.add_argument("--only", choices=("simulated", "longform"), help="run one measurement")
    p.add_argument("--simulate-gpu", default="25+8.1n", metavar="A+Bn")
    p.add_argument("--clips", type=int, default=96, help="30 s clips of the simulated pass (96)")
    p.add_argument("--prep-clips", type=int, default=32, help="clips timed for serial prep (32)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--front-instances", type=int, help="front instances (default: the launcher's)")
    p.add_argument("--long-minutes", type=float, default=40.0)
    p.add_argument(
        "--recording",
        choices=("speech-like", "synthetic"),
        help="audio of the longform runs: a speech-like tone with the bench's sentences, or the "
        "synthetic speech the trained checkpoint learned (default: synthetic with "
        "--checkpoint trained, speech-like otherwise)",
    )
    p.add_argument("--short-requests", type=int, default=20, help="5 s requests timed idle (20)")
    p.add_argument(
        "--window-seconds",
        type=float,
        default=180.0,
        help="the server's window_seconds for long recordings (180)",
    )
    p.add_argument("--instances", default="1,2", help="forward instances of the longform runs")
    p.add_argument(
        "--simulated-instances",
        type=int,
        default=1,
        help="forward instances sharing the simulated device (1)",
    )
    p.add_argument("--upload-grace", type=float, default=3.0, help="seconds before sampling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qwen3-aligner-shape-") as scratch:
        return _run(args, argv, Path(scratch))


def _run(args: argparse.Namespace, argv: Sequence[str] | None, scratch: Path) -> int:
    choice = resolve_checkpoint(args.checkpoint, scratch)
    if args.recording is None:
        args.recording = "synthetic" if choice.kind == "trained" else "speech-like"
    report: dict[str, Any] = {
        "command": " ".join(["scripts/bench-shape", *(argv or sys.argv[1:])]),
        "cpus": os.cpu_count(),
        "checkpoint": str(choice.location),
    }
    if args.only in (None, "longform"):
        report["recording"] = args.recording
    if args.only in (None, "simulated"):
        report["simulated"] = measure_simulated(args, str(choice.location))
        log(json.dumps(report["simulated"]))
    if args.only in (None, "longform"):
        workload = longform_workload(args)
        log("replaying the recording's windows in-process")
        replay = replay_forwards(str(choice.location), workload, args.window_seconds)
        report["longform"] = [
            measure_longform(args, str(choice.location), int(n), workload, replay)
            for n in args.instances.split(",")
        ]
        log(json.dumps(report["longform"]))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
