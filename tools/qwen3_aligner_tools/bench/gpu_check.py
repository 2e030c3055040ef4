"""``./scripts/gpu_check``: milliseconds per 30 s clip on one CUDA GPU, in one prepared run.

What it does, within a self-imposed time budget (default 7 minutes, so the whole script stays
under 8 on a machine like an H200):

1. builds the full-size random checkpoint once, rewritten in bfloat16 (cached);
2. starts a ``tritonserver`` in the served shape: the forward-only ``qwen3_aligner_core`` on the
   GPU (KIND_GPU, ``max_batch_size`` and ``max_forward_batch`` raised to the largest batch) behind
   the public front's CPU instances, while the same checkpoint loads in-process;
3. for each batch size N (1, 8, 32, 64): N distinct 30 s clips through this package's
   ``InProcessAligner`` (prepare + forward + repair), through upstream ``align()`` with list inputs,
   and through the server with N requests in flight; milliseconds per clip (median of repeats
   after one warm-up) and peak GPU memory (``torch.cuda.max_memory_allocated`` in-process, the
   server's device memory from its metrics endpoint);
4. checks parity on the GPU: upstream ``align()`` on each of the first clips alone is the
   reference; the engine's shared pass and the server's concurrent requests must give the same
   timestamps (the count of equal clips and the largest difference are reported);
5. prints one table (and ``--json``) and the served goals: >= 100 clips/s of 30 s clips at the
   largest batch, < 30 ms for one clip alone. A measurement that would overrun the budget is
   skipped and marked so.

``--paths`` picks what runs (``engine,upstream,server`` by default); a server-only run compares
against the reference of an earlier run's ``--json`` given with ``--reference``.

Without CUDA it stops at once with a message saying how to get a CUDA build of torch, unless
``--device cpu`` asks for a dry run of the same steps on the CPU (the tiny checkpoint makes that
quick; its numbers say nothing about a GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import shlex
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .stats import format_table, metric_sum

DEFAULT_BATCH_SIZES = (1, 8, 32, 64)
GIB = 1024**3
SKIPPED = float("nan")
CUDA_HELP = (
    "scripts/gpu_check needs a CUDA GPU and a CUDA build of torch.\n"
    "  On a GPU machine: TORCH_REQUIREMENT='torch==2.13.0' "
    "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cu128 ./scripts/setup-venv\n"
    "  (pick the index of the machine's CUDA version; check with\n"
    "   .venv/bin/python -c 'import torch; print(torch.version.cuda, torch.cuda.is_available())')"
)


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _batch_sizes(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return values


def _paths(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(names) - set(PATHS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(PATHS)}, got {text!r}"
        )
    return [p for p in PATHS if p in names]


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/gpu_check``."""
    parser = argparse.ArgumentParser(
        prog="scripts/gpu_check",
        description="Milliseconds per 30 s clip at several batch sizes on one CUDA GPU: "
        "engine, upstream align() and the Triton server, plus peak GPU memory.",
    )
    parser.add_argument(
        "--checkpoint",
        default="full",
        help="full (random full-size weights in bfloat16, built once) or a folder / hub id",
    )
    parser.add_argument(
        "--batch-sizes",
        type=_batch_sizes,
        default=list(DEFAULT_BATCH_SIZES),
        help="comma-separated (default 1,8,32,64)",
    )
    parser.add_argument("--clip-seconds", type=float, default=30.0, help="clip length (30)")
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="forward-only core instances on the GPU (instance_group count; default 1)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after a warm-up (3)")
    parser.add_argument("--device", default="cuda:0", help="in-process device (cuda:0)")
    parser.add_argument(
        "--attn-implementation",
        default="auto",
        choices=("auto", "sdpa", "eager", "flash_attention_2"),
        help="transformers attention, in-process and in the server (auto = sdpa)",
    )
    parser.add_argument(
        "--encoder-attention",
        default="windowed",
        choices=("windowed", "full"),
        help="the audio encoder's 8 s windows applied (windowed, as trained; the default) or "
        "not (full: qwen-asr 0.0.6 under sdpa), in-process and in the server",
    )
    parser.add_argument(
        "--protocol", choices=("grpc", "http"), default="grpc", help="served protocol (grpc)"
    )
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=420.0,
        help="skip measurements that would end later than this after start (420)",
    )
    parser.add_argument("--skip-server", action="store_true", help="in-process paths only")
    parser.add_argument(
        "--paths",
        type=_paths,
        default=list(PATHS),
        help="comma-separated subset of engine,upstream,server (default: all three)",
    )
    parser.add_argument(
        "--parity-clips",
        type=int,
        default=8,
        help="clips whose timestamps are compared with upstream's lone results (8; 0: none)",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        help="the --json of an earlier run on the same GPU and checkpoint: its upstream results "
        "are the reference when upstream does not run here",
    )
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    parser.add_argument("--server-log", type=Path, help="write tritonserver's log to this file")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.clip_seconds <= 0 or args.budget_seconds <= 0:
        parser.error("--clip-seconds and --budget-seconds must be > 0")
    if args.parity_clips < 0:
        parser.error("--parity-clips must be >= 0")
    if args.instances < 1:
        parser.error("--instances must be >= 1")
    if args.skip_server:
        args.paths = [p for p in args.paths if p != "server"]
        if not args.paths:
            parser.error("--skip-server leaves no path to measure")
    args.parity_clips = min(args.parity_clips, max(args.batch_sizes))
    return args


def cuda_problem() -> str | None:
    """Why this process cannot use CUDA (None when it can)."""
    try:
        import torch
    except ImportError as e:
        return f"torch does not import: {e}"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device"
    return None


@dataclass
class Cell:
    """One measured (path, batch size): ms per clip and peak memory, or why it is missing."""

    ms_per_clip: float = SKIPPED
    peak_gib: float = SKIPPED
    samples_ms: list[float] = field(default_factory=list)
    note: str = ""


@dataclass
class GpuReport:
    """Everything gpu_check measured."""

    command: str
    date: str
    gpu: str
    torch: str
    checkpoint: str
    dtype: str
    attn_implementation: str
    clip_seconds: float
    batch_sizes: list[int]
    protocol: str
    instances: int = 1  # core instances of the served path
    encoder_attention: str = "windowed"  # the audio encoder's 8 s windows applied, or "full"
    cells: dict[str, dict[int, Cell]] = field(default_factory=dict)  # path -> batch -> cell
    setup_seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    # Upstream align() on each parity clip alone: [[text, start, end], ...] per clip.
    reference: list[list[list[Any]]] = field(default_factory=list)
    parity: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> comparison
    # batch size -> where one forward pass's time goes (see forward_breakdown)
    breakdown: dict[int, dict[str, float]] = field(default_factory=dict)
    # batch size -> the server's own mean milliseconds per request by stage (see served_split)
    served_split: dict[int, dict[str, float]] = field(default_factory=dict)


Units = list[tuple[str, float, float]]
PARITY_TOLERANCE_S = 5e-4  # served times travel as float32; upstream's are Python floats


def compare_units(reference: Sequence[Sequence[Any]], got: Sequence[Sequence[Any]]) -> dict:
    """Clips whose units and times equal the reference's (within float32 rounding), and the
    largest time difference among clips whose units are the same words."""
    equal = 0
    other_units = 0
    worst = 0.0
    for ref, res in zip(reference, got, strict=True):
        if [str(u[0]) for u in ref] != [str(u[0]) for u in res]:
            other_units += 1
            continue
        diff = max(
            (
                abs(float(a) - float(b))
                for r, g in zip(ref, res, strict=True)
                for a, b in zip(r[1:3], g[1:3], strict=True)
            ),
            default=0.0,
        )
        worst = max(worst, diff)
        equal += diff <= PARITY_TOLERANCE_S
    return {
        "clips": len(reference),
        "equal": equal,
        "max_diff_ms": round(1000 * worst, 3),
        "other_units": other_units,
    }


def breakdown_lines(report: GpuReport) -> list[str]:
    """Where a clip's time goes in-process: preparation on the CPU, the forward on the device and
    the audio encoder's share of it."""
    lines = []
    for n, b in sorted(report.breakdown.items()):
        lines.append(
            f"batch {n}: preparation {b['prepare_ms_per_clip']:.1f} ms/clip (CPU, one process); "
            f"forward {b['forward_ms']:.1f} ms ({b['forward_ms'] / n:.1f} ms/clip), of which the "
            f"audio encoder {b['audio_encoder_ms']:.1f} ms "
            f"({b['audio_encoder_ms'] / max(b['forward_ms'], 1e-9):.0%})"
        )
    return lines


def forward_breakdown(
    engine: Any, clips: Sequence[Any], sizes: Sequence[int], repeats: int
) -> dict:
    """Time preparation, the whole forward pass and the audio encoder alone.

    Upstream runs the audio encoder one clip at a time ("to keep precision"), so its share of a
    batched pass tells whether the pass is bound by that loop or by the batched text decoder.
    """
    import torch

    from qwen3_aligner_triton.core import ModelForward, pad_frames
    from qwen3_aligner_triton.requests import AlignRequest

    from .workload import SAMPLE_RATE

    biggest = max(sizes)
    t0 = time.perf_counter()
    items = [
        engine.prepare(AlignRequest(c.audio, SAMPLE_RATE, c.text, c.language))
        for c in clips[:biggest]
    ]
    prepare_ms = 1000 * (time.perf_counter() - t0) / biggest
    inputs = [it.core_input() for it in items]
    forward = ModelForward(engine.model, engine.pad_token_id)
    thinker = engine.model.thinker
    out: dict[int, dict[str, float]] = {}
    for n in sizes:
        batch = inputs[:n]
        features, mask = pad_frames([torch.from_numpy(b.features) for b in batch])
        features = features.to(engine.device, engine.dtype)
        mask = mask.to(engine.device)

        def encoder(features: Any = features, mask: Any = mask) -> None:
            with torch.inference_mode():
                thinker.get_audio_features(features, feature_attention_mask=mask)

        forward(batch)  # warm-up at this shape
        out[n] = {
            "prepare_ms_per_clip": prepare_ms,
            "forward_ms": 1000 * statistics.median(_timed(lambda b=batch: forward(b), repeats)),
            "audio_encoder_ms": 1000 * statistics.median(_timed(encoder, repeats)),
        }
    return out


def parity_lines(report: GpuReport) -> list[str]:
    """One line per compared path: how many clips equal upstream's lone results."""
    lines = []
    for path, cmp in report.parity.items():
        line = (
            f"parity, {path} vs upstream alone: {cmp['equal']}/{cmp['clips']} clips equal, "
            f"largest difference {cmp['max_diff_ms']:g} ms"
        )
        if cmp.get("other_units"):
            line += f", {cmp['other_units']} with other units"
        lines.append(line)
    return lines


PATHS = ("engine", "upstream", "server")
GOAL_CLIPS_PER_S = 100.0  # served, 30 s clips, at the largest batch
GOAL_LONE_MS = 30.0  # served, one clip alone
SERVER_READY_CAP_S = 240.0  # a server-only run waits at most this long for readiness


def goal_lines(report: GpuReport) -> list[str]:
    """The served path against its goals, one line each (or why it cannot be judged)."""
    cells = report.cells.get("server", {})
    lines = []
    biggest = max(report.batch_sizes)
    big = cells.get(biggest)
    if big is None or big.ms_per_clip != big.ms_per_clip:  # missing or NaN
        lines.append(f"served throughput at batch {biggest}: not measured")
    else:
        rate = 1000.0 / big.ms_per_clip
        verdict = "met" if rate >= GOAL_CLIPS_PER_S else "NOT met"
        lines.append(
            f"served throughput at batch {biggest}: {rate:.0f} clips/s "
            f"(goal >= {GOAL_CLIPS_PER_S:g}: {verdict})"
        )
    lone = cells.get(1)
    if lone is None or lone.ms_per_clip != lone.ms_per_clip:
        lines.append("served latency of one clip alone: not measured")
    else:
        verdict = "met" if lone.ms_per_clip < GOAL_LONE_MS else "NOT met"
        lines.append(
            f"served latency of one clip alone: {lone.ms_per_clip:.1f} ms "
            f"(goal < {GOAL_LONE_MS:g} ms: {verdict})"
        )
    return lines


def results_table(report: GpuReport) -> str:
    """One row per batch size: ms per clip and peak GPU memory of each path."""
    headers = [
        "batch",
        "engine ms/clip",
        "upstream ms/clip",
        "server ms/clip",
        "engine peak GiB",
        "upstream peak GiB",
        "server GPU GiB",
    ]
    rows = []
    for n in report.batch_sizes:
        cells = [report.cells.get(path, {}).get(n, Cell()) for path in PATHS]
        rows.append([n, *(c.ms_per_clip for c in cells), *(c.peak_gib for c in cells)])
    return format_table(headers, rows)


class Budget:
    """Skips a measurement when its estimate would end past the deadline."""

    def __init__(self, seconds: float, started: float) -> None:
        self.deadline = started + seconds

    def allows(self, estimate: float) -> bool:
        return time.monotonic() + estimate <= self.deadline


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        _synchronize()
        t0 = time.perf_counter()
        fn()
        _synchronize()
        samples.append(time.perf_counter() - t0)
    return samples


def _on_cuda(args: argparse.Namespace) -> bool:
    return str(args.device).startswith("cuda")


def measure_in_process(
    name: str,
    run_batch: Callable[[int], Any],
    args: argparse.Namespace,
    budget: Budget,
    report: GpuReport,
) -> None:
    """Warm up and time ``run_batch(n)`` for every batch size; record ms/clip and peak memory."""
    import torch

    cuda = _on_cuda(args)
    cells = report.cells.setdefault(name, {})
    per_clip_estimate = 0.0
    for n in args.batch_sizes:
        estimate = per_clip_estimate * n * (args.repeats + 1)
        if not budget.allows(estimate):
            cells[n] = Cell(note="skipped: time budget")
            report.skipped.append(f"{name} batch {n} (time budget)")
            continue
        try:
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            warm = _timed(lambda n=n: run_batch(n), 1)[0]
            per_clip_estimate = warm / n
            if not budget.allows(warm * args.repeats):
                samples = [warm]
                note = "warm-up only: time budget"
            else:
                samples = _timed(lambda n=n: run_batch(n), args.repeats)
                note = ""
            peak = torch.cuda.max_memory_allocated() / GIB if cuda else SKIPPED
        except torch.cuda.OutOfMemoryError as e:
            cells[n] = Cell(note=f"out of memory: {e}".splitlines()[0])
            torch.cuda.empty_cache()
            continue
        ms = [1000 * s / n for s in samples]
        cells[n] = Cell(statistics.median(ms), peak, ms, note)
        log(f"{name:<8} batch {n:>3}: {statistics.median(ms):8.1f} ms/clip, peak {peak:.2f} GiB")


def _scrape(metrics_url: str) -> str:
    """The metrics port's text ("" when it does not answer)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as resp:
            return resp.read().decode()
    except OSError:
        return ""


def server_gpu_memory_gib(metrics_text: str) -> float:
    """Device memory in use as the server's metrics report it (whole GPU, all processes)."""
    used = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith("nv_gpu_memory_used_bytes")
    ]
    return max(used) / GIB if used else SKIPPED


def measure_server(
    endpoints: Any,
    metrics_url: str,
    clips: Sequence[Any],
    args: argparse.Namespace,
    budget: Budget,
    report: GpuReport,
) -> None:
    """N requests in flight per batch size N: ms per clip = pass wall time / requests."""
    from .served import run_concurrent

    cells = report.cells.setdefault("server", {})
    per_clip_estimate = 0.0
    for n in args.batch_sizes:
        estimate = per_clip_estimate * n * (args.repeats + 1)
        if not budget.allows(estimate):
            cells[n] = Cell(note="skipped: time budget")
            report.skipped.append(f"server batch {n} (time budget)")
            continue
        warm = run_concurrent(endpoints, args.protocol, clips[:n], n)
        per_clip_estimate = warm.wall_seconds / n
        samples: list[float] = []
        error = warm.first_error
        before = _scrape(metrics_url)
        while not error and len(samples) < args.repeats and budget.allows(warm.wall_seconds):
            result = run_concurrent(endpoints, args.protocol, clips[:n], n)
            error = result.first_error
            samples.append(1000 * result.wall_seconds / n)
        after = _scrape(metrics_url)
        if samples and before:
            report.served_split[n] = served_split(before, after)
        if error:
            cells[n] = Cell(note=f"errors: {error}")
            continue
        note = "" if samples else "warm-up only: time budget"
        samples = samples or [1000 * warm.wall_seconds / n]
        gib = server_gpu_memory_gib(after)
        cells[n] = Cell(statistics.median(samples), gib, samples, note)
        log(f"server   batch {n:>3}: {statistics.median(samples):8.1f} ms/clip, GPU {gib:.2f} GiB")


# (series, labels) whose growth over a measurement, divided by the requests it served, is the mean
# time of one stage; seconds unless the name ends in _us.
SERVED_STAGES = {
    "front preparation": (
        "qwen3_aligner_stage_seconds_sum",
        ('model="qwen3_aligner"', 'stage="preprocess"'),
    ),
    "front results": (
        "qwen3_aligner_stage_seconds_sum",
        ('model="qwen3_aligner"', 'stage="postprocess"'),
    ),
    # Triton's queue before the core takes a clip, then the core's own until the device is free.
    "core queue": ("nv_inference_queue_duration_us", ('model="qwen3_aligner_core"',)),
    "core device queue": (
        "qwen3_aligner_stage_seconds_sum",
        ('model="qwen3_aligner_core"', 'stage="device_queue"'),
    ),
    # Handing an execution's inputs to the core (copies into its shared memory) and taking its
    # outputs back; the core's execute() only queues its clips, so these overlap the device.
    "core inputs": ("nv_inference_compute_input_duration_us", ('model="qwen3_aligner_core"',)),
    "core outputs": ("nv_inference_compute_output_duration_us", ('model="qwen3_aligner_core"',)),
    "core forward": (
        "qwen3_aligner_stage_seconds_sum",
        ('model="qwen3_aligner_core"', 'stage="forward"'),
    ),
}
REQUESTS_SERIES = ("nv_inference_request_success", ('model="qwen3_aligner"',))


def served_split(before: str, after: str) -> dict[str, float]:
    """Mean milliseconds per request of each stage between two scrapes of the metrics port."""
    requests = metric_sum(after, *REQUESTS_SERIES) - metric_sum(before, *REQUESTS_SERIES)
    if requests <= 0:
        return {}
    out = {}
    for stage, (name, labels) in SERVED_STAGES.items():
        grown = metric_sum(after, name, labels) - metric_sum(before, name, labels)
        scale = 1e-3 if name.endswith("_us") else 1e3
        out[stage] = grown * scale / requests
    return out


def split_lines(report: GpuReport) -> list[str]:
    """The served requests' time by stage, one line per measured batch size."""
    lines = []
    for n, split in sorted(report.served_split.items()):
        cell = report.cells.get("server", {}).get(n)
        if not split or cell is None:
            continue
        parts = ", ".join(f"{stage} {ms:.1f}" for stage, ms in split.items())
        if n == 1:  # one request at a time: the client's latency is the cell
            elsewhere = cell.ms_per_clip - sum(split.values())
            parts += (
                f"; of the client's {cell.ms_per_clip:.1f}, {elsewhere:.1f} elsewhere "
                "(transport, the front's queue, the calls to the core and back)"
            )
        lines.append(f"served batch {n}, mean ms per request: {parts}")
    return lines


def served_units(endpoints: Any, protocol: str, clips: Sequence[Any]) -> list[Units]:
    """Each clip's (word, start, end) as the server answers it, all clips in flight at once."""
    from concurrent.futures import ThreadPoolExecutor

    from .served import MODEL_NAME, _client, _inputs

    def one(clip: Any) -> Units:
        module, client = _client(protocol, endpoints.url(protocol))
        try:
            result = client.infer(MODEL_NAME, _inputs(module, clip))
            words = [
                w.decode() if isinstance(w, bytes) else str(w)
                for w in result.as_numpy("WORDS").reshape(-1)
            ]
            starts = result.as_numpy("START_TIMES").reshape(-1).tolist()
            ends = result.as_numpy("END_TIMES").reshape(-1).tolist()
            return list(zip(words, starts, ends, strict=True))
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=max(1, len(clips))) as pool:
        return list(pool.map(one, clips))


def run_in_process(
    checkpoint: str,
    clips: Sequence[Any],
    args: argparse.Namespace,
    budget: Budget,
    report: GpuReport,
    server: Any,
) -> None:
    """Load the checkpoint in-process (while ``server`` loads), then time engine and upstream
    and take upstream's lone results on the parity clips as the reference.

    Returns with the in-process model unreferenced, so its device memory can be released.
    """
    from qwen3_aligner_triton.inprocess import InProcessAligner
    from qwen3_aligner_triton.loading import load_aligner
    from qwen3_aligner_triton.params import PipelineSettings
    from qwen3_aligner_triton.requests import AlignRequest

    from .workload import SAMPLE_RATE

    biggest = max(args.batch_sizes)
    t0 = time.monotonic()
    aligner = load_aligner(
        checkpoint,
        args.device,
        report.dtype,
        attn_implementation=args.attn_implementation,
        encoder_attention=args.encoder_attention,
    )
    report.setup_seconds["load_in_process"] = time.monotonic() - t0
    engine = InProcessAligner(
        aligner, PipelineSettings.of(max_forward_batch=biggest, max_forward_tokens=1 << 20)
    )
    if server is not None:
        # Wait now, so the server's loading and warm-up never overlap a measurement.
        remaining = max(60.0, budget.deadline - time.monotonic())
        report.setup_seconds["server_ready_after_load"] = server.wait_ready(remaining)

    def engine_results(group: Sequence[Any]) -> list[Any]:
        items = [
            engine.prepare(AlignRequest(c.audio, SAMPLE_RATE, c.text, c.language)) for c in group
        ]
        results = engine.align(items)
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise failed[0]
        return results

    def upstream_results(group: Sequence[Any]) -> list[Any]:
        return aligner.align(
            audio=[(c.audio, SAMPLE_RATE) for c in group],
            text=[c.text for c in group],
            language=[c.language for c in group],
        )

    parity = clips[: args.parity_clips]
    if parity and not report.reference:
        report.reference = [
            [[it.text, it.start_time, it.end_time] for it in upstream_results([c])[0]]
            for c in parity
        ]
    if "engine" in args.paths:
        measure_in_process("engine", lambda n: engine_results(clips[:n]), args, budget, report)
        if parity:
            shared = [[(u.text, u.start, u.end) for u in r.units] for r in engine_results(parity)]
            report.parity["engine"] = compare_units(report.reference, shared)
    if "upstream" in args.paths:
        measure_in_process("upstream", lambda n: upstream_results(clips[:n]), args, budget, report)
        if parity:
            shared = [
                [(it.text, it.start_time, it.end_time) for it in r]
                for r in upstream_results(parity)
            ]
            report.parity["upstream batch"] = compare_units(report.reference, shared)
    sizes = sorted({min(args.batch_sizes), biggest})
    if "engine" in args.paths and budget.allows(30.0):
        report.breakdown = forward_breakdown(engine, clips, sizes, args.repeats)


def _checkpoint(args: argparse.Namespace, scratch: Path) -> str:
    if args.checkpoint == "full":
        from .checkpoints import full_random_checkpoint

        return str(full_random_checkpoint("bfloat16"))
    if args.checkpoint == "tiny":
        from ..checkpoint_builder import build_checkpoint

        return str(build_checkpoint(scratch / "tiny-checkpoint", flavour="tiny"))
    from qwen3_aligner_triton.hub import resolve_checkpoint

    return resolve_checkpoint(args.checkpoint)  # a hub id is downloaded before the server starts


def _load_reference(path: Path, report: GpuReport) -> None:
    data = json.loads(path.read_text())
    same = {k: data.get(k) for k in ("checkpoint", "dtype", "clip_seconds")}
    mine = {k: getattr(report, k) for k in same}
    if same != mine:
        raise SystemExit(f"gpu_check: {path} was measured with {same}, this run is {mine}")
    report.reference = data.get("reference") or []


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; 0 when it ran, 2 without CUDA, 1 when the server did not start."""
    args = parse_args(argv)
    started = time.monotonic()
    cuda = _on_cuda(args)
    problem = cuda_problem() if cuda else None
    if problem:
        print(f"gpu_check: {problem}.\n{CUDA_HELP}", file=sys.stderr)
        return 2
    import torch

    from qwen3_aligner_triton.triton_flags import loopback_options
    from qwen3_aligner_triton.triton_install import ServerError
    from qwen3_aligner_triton.tritonserver import start

    from .served import Endpoints, render_bench_repository
    from .workload import fixed_clips

    budget = Budget(args.budget_seconds, started)
    biggest = max(args.batch_sizes)
    report = GpuReport(
        command="./scripts/gpu_check " + shlex.join(sys.argv[1:] if argv is None else list(argv)),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        gpu=torch.cuda.get_device_name(torch.device(args.device)) if cuda else "none (CPU dry run)",
        torch=f"{torch.__version__} (CUDA {torch.version.cuda})",
        checkpoint=args.checkpoint,
        dtype="bfloat16" if cuda else "float32",
        attn_implementation=args.attn_implementation,
        encoder_attention=args.encoder_attention,
        clip_seconds=args.clip_seconds,
        batch_sizes=list(args.batch_sizes),
        protocol=args.protocol,
        instances=args.instances,
    )
    if args.reference is not None:
        _load_reference(args.reference, report)
    in_process = bool({"engine", "upstream"} & set(args.paths))
    if not in_process and args.parity_clips and not report.reference:
        in_process = True  # the reference comes from upstream here, before the server runs
    clips = fixed_clips(biggest, args.clip_seconds, seed=3)

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="qwen3-aligner-gpu-check-"))
        log("building / finding the checkpoint")
        checkpoint = _checkpoint(args, Path(tmp))
        report.setup_seconds["checkpoint"] = time.monotonic() - started
        running = None
        endpoints = None
        metrics_url = ""
        if "server" in args.paths:
            repo = render_bench_repository(
                Path(tmp) / "repo",
                checkpoint,
                "KIND_GPU" if cuda else "KIND_CPU",
                {
                    "dtype": report.dtype,
                    "attn_implementation": args.attn_implementation,
                    "encoder_attention": args.encoder_attention,
                    "max_forward_batch": str(biggest),
                    "max_forward_tokens": str(1 << 20),
                },
                max_batch_size=max(biggest, 16),
                instances=args.instances,
            )
            opts = loopback_options(repo, gpu=cuda)
            http, grpc, metrics = opts.http_port, opts.grpc_port, opts.metrics_port
            log(f"starting tritonserver ({'KIND_GPU' if cuda else 'KIND_CPU'}) in the background")
            log_file = args.server_log.open("a", encoding="utf-8") if args.server_log else None
            stack.callback(lambda: log_file and log_file.close())
            running = start(
                opts,
                echo=(lambda line: print(line, file=log_file, flush=True)) if log_file else None,
            )
            endpoints = Endpoints(f"127.0.0.1:{http}", f"127.0.0.1:{grpc}")
            metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        try:
            if in_process:
                run_in_process(checkpoint, clips, args, budget, report, running)
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()  # the in-process model is gone: the server has the GPU
            elif running is not None:
                remaining = min(SERVER_READY_CAP_S, max(60.0, budget.deadline - time.monotonic()))
                report.setup_seconds["server_ready"] = running.wait_ready(remaining)
            if endpoints is not None:
                measure_server(endpoints, metrics_url, clips, args, budget, report)
                if report.reference:
                    got = served_units(endpoints, args.protocol, clips[: len(report.reference)])
                    report.parity["server"] = compare_units(report.reference, got)
        except ServerError as e:
            print(f"gpu_check: the server did not come up: {e}", file=sys.stderr)
            return 1
        finally:
            if running is not None:
                running.stop()

    print(f"# scripts/gpu_check, {report.date}")
    print(f"command:    {report.command}")
    print(f"GPU:        {report.gpu}; torch {report.torch}")
    print(
        f"model:      {report.checkpoint} checkpoint in {report.dtype}, attention "
        f"{report.attn_implementation}, encoder {report.encoder_attention}; "
        f"{report.clip_seconds:g} s clips; server via "
        f"{report.protocol}, N requests in flight, {report.instances} core instance(s)"
    )
    print()
    print(results_table(report))
    notes = [
        f"{path} batch {n}: {cell.note}"
        for path, cells in report.cells.items()
        for n, cell in cells.items()
        if cell.note
    ]
    print("\n" + "\n".join(goal_lines(report)))
    if report.parity:
        print("\n".join(parity_lines(report)))
    if report.breakdown:
        print("\n" + "\n".join(breakdown_lines(report)))
    if report.served_split:
        print("\n" + "\n".join(split_lines(report)))
    if notes:
        print("\n" + "\n".join(notes))
    print(f"\ntotal {time.monotonic() - started:.0f} s (budget {args.budget_seconds:.0f} s)")
    if args.json:
        data = asdict(report)
        args.json.write_text(json.dumps(_clean(data), indent=2, sort_keys=True) + "\n")
    return 0


def _clean(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
