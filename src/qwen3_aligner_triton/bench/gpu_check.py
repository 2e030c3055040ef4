"""``./scripts/gpu_check``: milliseconds per 30 s clip on one CUDA GPU, in one prepared run.

What it does, within a self-imposed time budget (default 7 minutes, so the whole script stays
under 8 on a machine like an H200):

1. builds the full-size random checkpoint once, rewritten in bfloat16 (cached);
2. starts a ``tritonserver`` with the model on the GPU (KIND_GPU, ``max_batch_size`` and
   ``max_forward_batch`` raised to the largest batch) while the same checkpoint loads in-process;
3. for each batch size N (1, 8, 32, 64): N distinct 30 s clips through this package's
   ``AlignerEngine`` (prepare + forward + repair), through upstream ``align()`` with list inputs,
   and through the server with N requests in flight; milliseconds per clip (median of repeats
   after one warm-up) and peak GPU memory (``torch.cuda.max_memory_allocated`` in-process, the
   server's device memory from its metrics endpoint);
4. prints one table (and ``--json``). A measurement that would overrun the budget is skipped and
   marked so.

Without CUDA it stops at once with a message saying how to get a CUDA build of torch.
"""

from __future__ import annotations

import argparse
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

from .stats import format_table

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
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after a warm-up (3)")
    parser.add_argument("--device", default="cuda:0", help="in-process device (cuda:0)")
    parser.add_argument(
        "--attn-implementation",
        default="auto",
        choices=("auto", "sdpa", "eager", "flash_attention_2"),
        help="transformers attention, in-process and in the server (auto = sdpa)",
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
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.clip_seconds <= 0 or args.budget_seconds <= 0:
        parser.error("--clip-seconds and --budget-seconds must be > 0")
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
    cells: dict[str, dict[int, Cell]] = field(default_factory=dict)  # path -> batch -> cell
    setup_seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


PATHS = ("engine", "upstream", "server")


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


def _timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    import torch

    samples = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        samples.append(time.perf_counter() - t0)
    return samples


def measure_in_process(
    name: str,
    run_batch: Callable[[int], Any],
    args: argparse.Namespace,
    budget: Budget,
    report: GpuReport,
) -> None:
    """Warm up and time ``run_batch(n)`` for every batch size; record ms/clip and peak memory."""
    import torch

    cells = report.cells.setdefault(name, {})
    per_clip_estimate = 0.0
    for n in args.batch_sizes:
        estimate = per_clip_estimate * n * (args.repeats + 1)
        if not budget.allows(estimate):
            cells[n] = Cell(note="skipped: time budget")
            report.skipped.append(f"{name} batch {n} (time budget)")
            continue
        try:
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
            peak = torch.cuda.max_memory_allocated() / GIB
        except torch.cuda.OutOfMemoryError as e:
            cells[n] = Cell(note=f"out of memory: {e}".splitlines()[0])
            torch.cuda.empty_cache()
            continue
        ms = [1000 * s / n for s in samples]
        cells[n] = Cell(statistics.median(ms), peak, ms, note)
        log(f"{name:<8} batch {n:>3}: {statistics.median(ms):8.1f} ms/clip, peak {peak:.2f} GiB")


def server_gpu_memory_gib(metrics_url: str) -> float:
    """Device memory in use as the server's metrics report it (whole GPU, all processes)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return SKIPPED
    used = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
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
        while not error and len(samples) < args.repeats and budget.allows(warm.wall_seconds):
            result = run_concurrent(endpoints, args.protocol, clips[:n], n)
            error = result.first_error
            samples.append(1000 * result.wall_seconds / n)
        if error:
            cells[n] = Cell(note=f"errors: {error}")
            continue
        note = "" if samples else "warm-up only: time budget"
        samples = samples or [1000 * warm.wall_seconds / n]
        gib = server_gpu_memory_gib(metrics_url)
        cells[n] = Cell(statistics.median(samples), gib, samples, note)
        log(f"server   batch {n:>3}: {statistics.median(samples):8.1f} ms/clip, GPU {gib:.2f} GiB")


def run_in_process(
    checkpoint: str,
    clips: Sequence[Any],
    args: argparse.Namespace,
    budget: Budget,
    report: GpuReport,
    server: Any,
) -> None:
    """Load the checkpoint in-process (while ``server`` loads), then time engine and upstream.

    Returns with the in-process model unreferenced, so its GPU memory can be released.
    """
    from ..engine import AlignerEngine
    from ..loading import load_aligner
    from ..params import ModelSettings
    from ..requests import AlignRequest
    from .workload import SAMPLE_RATE

    biggest = max(args.batch_sizes)
    t0 = time.monotonic()
    aligner = load_aligner(
        checkpoint, args.device, "bfloat16", attn_implementation=args.attn_implementation
    )
    report.setup_seconds["load_in_process"] = time.monotonic() - t0
    engine = AlignerEngine(
        aligner, ModelSettings(max_forward_batch=biggest, max_forward_tokens=1 << 20)
    )
    if server is not None:
        # Wait now, so the server's loading and warm-up never overlap a measurement.
        remaining = max(60.0, budget.deadline - time.monotonic())
        report.setup_seconds["server_ready_after_load"] = server.wait_ready(remaining)

    def engine_batch(n: int) -> None:
        items = [
            engine.prepare(AlignRequest(c.audio, SAMPLE_RATE, c.text, c.language))
            for c in clips[:n]
        ]
        failed = [r for r in engine.align(items) if isinstance(r, Exception)]
        if failed:
            raise failed[0]

    def upstream_batch(n: int) -> None:
        group = clips[:n]
        aligner.align(
            audio=[(c.audio, SAMPLE_RATE) for c in group],
            text=[c.text for c in group],
            language=[c.language for c in group],
        )

    measure_in_process("engine", engine_batch, args, budget, report)
    measure_in_process("upstream", upstream_batch, args, budget, report)


def _checkpoint(args: argparse.Namespace) -> str:
    if args.checkpoint == "full":
        from .checkpoints import full_random_checkpoint

        return str(full_random_checkpoint("bfloat16"))
    from ..hub import resolve_checkpoint

    return resolve_checkpoint(args.checkpoint)  # a hub id is downloaded before the server starts


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; 0 when it ran, 2 without CUDA, 1 when the server did not start."""
    args = parse_args(argv)
    started = time.monotonic()
    problem = cuda_problem()
    if problem:
        print(f"gpu_check: {problem}.\n{CUDA_HELP}", file=sys.stderr)
        return 2
    import torch

    from ..tritonserver import ServerError, loopback_options, start
    from .served import Endpoints, render_bench_repository
    from .workload import fixed_clips

    budget = Budget(args.budget_seconds, started)
    biggest = max(args.batch_sizes)
    report = GpuReport(
        command="./scripts/gpu_check " + shlex.join(sys.argv[1:] if argv is None else list(argv)),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        gpu=torch.cuda.get_device_name(torch.device(args.device)),
        torch=f"{torch.__version__} (CUDA {torch.version.cuda})",
        checkpoint=args.checkpoint,
        dtype="bfloat16",
        attn_implementation=args.attn_implementation,
        clip_seconds=args.clip_seconds,
        batch_sizes=list(args.batch_sizes),
        protocol=args.protocol,
    )
    log("building / finding the checkpoint")
    checkpoint = _checkpoint(args)
    report.setup_seconds["checkpoint"] = time.monotonic() - started
    clips = fixed_clips(biggest, args.clip_seconds, seed=3)

    with tempfile.TemporaryDirectory(prefix="qwen3-aligner-gpu-check-") as tmp:
        running = None
        endpoints = None
        metrics_url = ""
        if not args.skip_server:
            repo = render_bench_repository(
                Path(tmp) / "repo",
                checkpoint,
                "KIND_GPU",
                {
                    "dtype": "bfloat16",
                    "attn_implementation": args.attn_implementation,
                    "max_forward_batch": str(biggest),
                    "max_forward_tokens": str(1 << 20),
                },
                max_batch_size=max(biggest, 16),
            )
            opts = loopback_options(repo, gpu=True)
            http, grpc, metrics = opts.http_port, opts.grpc_port, opts.metrics_port
            log("starting tritonserver (KIND_GPU) in the background")
            running = start(opts)
            endpoints = Endpoints(f"127.0.0.1:{http}", f"127.0.0.1:{grpc}")
            metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        try:
            run_in_process(checkpoint, clips, args, budget, report, running)
            gc.collect()
            torch.cuda.empty_cache()  # the in-process model is gone: the server has the GPU
            if endpoints is not None:
                measure_server(endpoints, metrics_url, clips, args, budget, report)
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
        f"{report.attn_implementation}; {report.clip_seconds:g} s clips; server via "
        f"{report.protocol}, N requests in flight"
    )
    print()
    print(results_table(report))
    notes = [
        f"{path} batch {n}: {cell.note}"
        for path, cells in report.cells.items()
        for n, cell in cells.items()
        if cell.note
    ]
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
