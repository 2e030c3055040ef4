"""``./scripts/bench``: the served aligner vs upstream ``align()``, on the same inputs, in one run.

Modes, each covering the same mixed-length clips (2-60 s of speech-like 16 kHz audio with
English or Chinese transcripts sized to the duration):

(a) ``upstream``          upstream ``Qwen3ForcedAligner.align()`` in-process, one clip per call
(b) ``upstream-batched``  upstream ``align()`` in-process, ``--batch-size`` clips per call
    ``engine``            (optional) this package's engine in-process, same batches as (b)
(c) ``http c=N`` / ``grpc c=N``  the Triton server with at most N requests in flight

The machine is shared and noisy, so nothing is compared across minutes if it can be compared
across seconds: the one-at-a-time modes ((a) and the servers at concurrency 1) run interleaved
request by request, the other modes run as passes in rounds whose order reverses every other
round, and ratios are medians of per-round ratios. Before the rounds, one 30 s clip is timed
alone (upstream vs served, interleaved, paired ratios); after them, the timestamp-repair
speed-up on 10,000 timestamps.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .checkpoints import CheckpointChoice, resolve_checkpoint
from .repair import RepairResult, measure_repair
from .stats import ModeSummary, PassResult, format_table, load_average, paired_ratio
from .workload import Clip, fixed_clips, make_clips

UPSTREAM = "upstream"
UPSTREAM_BATCHED = "upstream-batched"
ENGINE = "engine"
# Defaults per checkpoint kind: the tiny model is cheap; a full-size one takes ~10 s per 30 s clip
# on a 2-core CPU, so its run uses few, shorter clips and one round.
DEFAULTS = {
    "tiny": {
        "clips": 16,
        "max_seconds": 60.0,
        "concurrency": "1,4,8,16",
        "rounds": 2,
        "latency_repeats": 3,
        "engine": True,
        "budget_minutes": 5.0,
    },
    "large": {
        "clips": 8,
        "max_seconds": 20.0,
        "concurrency": "1,8",
        "rounds": 1,
        "latency_repeats": 2,
        "engine": False,
        "budget_minutes": 10.0,
    },
}


def log(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the report."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/bench``; defaults that depend on the checkpoint stay None."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Served Qwen3-ForcedAligner vs upstream align(), same inputs, one run.",
    )
    parser.add_argument(
        "--checkpoint",
        default="tiny",
        help="tiny (built for this run), full (random full-size, built once into the cache), "
        "or a checkpoint folder / hub id (default: tiny)",
    )
    parser.add_argument("--clips", type=int, help="clips in the workload (tiny 16, otherwise 8)")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="shortest clip (2)")
    parser.add_argument("--max-seconds", type=float, help="longest clip (tiny 60, otherwise 20)")
    parser.add_argument("--batch-size", type=int, default=8, help="upstream batch size (8)")
    parser.add_argument(
        "--concurrency",
        type=_int_list,
        help="served concurrencies, comma-separated (tiny 1,4,8,16, otherwise 1,8)",
    )
    parser.add_argument(
        "--protocols",
        default="http,grpc",
        help="served protocols, comma-separated: http, grpc (default both)",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (tiny 2, otherwise 1)")
    parser.add_argument(
        "--engine",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time this package's engine in-process (default: on for tiny)",
    )
    parser.add_argument(
        "--latency-seconds", type=float, default=30.0, help="clip length of the latency check (30)"
    )
    parser.add_argument(
        "--latency-repeats", type=int, help="repeats of the latency check (tiny 3, otherwise 2)"
    )
    parser.add_argument(
        "--repair-timestamps",
        type=int,
        default=10_000,
        help="timestamps in the repair benchmark (10000; 0 skips it)",
    )
    parser.add_argument(
        "--url", help="HTTP host:port of a running server (default: start one on loopback)"
    )
    parser.add_argument(
        "--grpc-url", help="gRPC host:port of the running server (default: --url's host, 8001)"
    )
    parser.add_argument(
        "--budget-minutes",
        type=float,
        help="stop starting new passes past this much time (tiny 5, otherwise 10)",
    )
    parser.add_argument(
        "--instances", type=int, default=1, help="forward instances of the started server (1)"
    )
    parser.add_argument(
        "--front-instances", type=int, help="front instances of the started server (default)"
    )
    parser.add_argument(
        "--simulate-gpu",
        metavar="A+Bn",
        help="the started server's forward is a simulated device of A + B*n ms per pass: "
        "throughput of everything but the forward; results are placeholders",
    )
    parser.add_argument("--seed", type=int, default=0, help="workload seed (0)")
    parser.add_argument("--json", type=Path, help="also write all numbers to this JSON file")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line and fill the defaults that depend on the checkpoint kind."""
    parser = build_parser()
    args = parser.parse_args(argv)
    defaults = DEFAULTS["tiny" if args.checkpoint == "tiny" else "large"]
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, _int_list(value) if key == "concurrency" else value)
    args.protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    bad = [p for p in args.protocols if p not in ("http", "grpc")]
    if bad or not args.protocols:
        parser.error(f"--protocols takes http and/or grpc, got {','.join(bad) or 'nothing'}")
    if args.clips < 1 or args.batch_size < 1 or args.rounds < 1 or args.latency_repeats < 0:
        parser.error("--clips, --batch-size and --rounds must be >= 1")
    if not 0 < args.min_seconds <= args.max_seconds:
        parser.error("need 0 < --min-seconds <= --max-seconds")
    if args.grpc_url and not args.url:
        parser.error("--grpc-url needs --url")
    if args.url and not args.grpc_url:
        host = args.url.split("://")[-1].rsplit(":", 1)[0]
        args.grpc_url = f"{host}:8001"
    if args.url:
        args.url = args.url.split("://")[-1]
    return args


@dataclass
class Report:
    """Everything a run measured, as written to ``--json``."""

    command: str
    date: str
    machine: dict[str, Any]
    checkpoint: dict[str, str]
    workload: dict[str, Any]
    modes: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    repair: dict[str, Any] = field(default_factory=dict)
    server_batch_sizes: dict[int, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    errors: int = 0


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


class Budget:
    """Wall-clock budget of a run: a pass is skipped when it would likely end past the budget."""

    def __init__(self, minutes: float) -> None:
        self.deadline = time.monotonic() + 60.0 * minutes

    def allows(self, estimate_seconds: float) -> bool:
        return time.monotonic() + estimate_seconds <= self.deadline


@dataclass
class Mode:
    """A named way of running the workload."""

    name: str
    run: Callable[[], PassResult]
    in_flight: int  # most requests in flight at once
    # One request at a time (latency, CPU seconds): such modes run interleaved request by request.
    single: Callable[[Clip], tuple[float, float]] | None = None
    passes: list[PassResult] = field(default_factory=list)


def build_modes(
    args: argparse.Namespace,
    aligner: Any,
    engine: Any,
    endpoints: Any,
    clips: Sequence[Clip],
    requesters: dict[str, Any],
) -> list[Mode]:
    """Every mode of the run; ``requesters`` holds one open connection per protocol."""
    from . import inprocess, served

    modes = [
        Mode(
            UPSTREAM,
            lambda: inprocess.upstream_one_at_a_time(aligner, clips, UPSTREAM),
            1,
            single=lambda clip: inprocess.upstream_single(aligner, clip),
        ),
        Mode(
            UPSTREAM_BATCHED,
            lambda: inprocess.upstream_batched(aligner, clips, args.batch_size, UPSTREAM_BATCHED),
            min(args.batch_size, len(clips)),
        ),
    ]
    if engine is not None:
        modes.append(
            Mode(
                ENGINE,
                lambda: inprocess.engine_batched(engine, clips, args.batch_size, ENGINE),
                min(args.batch_size, len(clips)),
            )
        )
    for c in args.concurrency:
        for protocol in args.protocols:
            name = f"{protocol} c={c}"
            modes.append(
                Mode(
                    name,
                    lambda p=protocol, c=c, n=name: served.run_concurrent(
                        endpoints, p, clips, c, n
                    ),
                    min(c, len(clips)),
                    single=requesters[protocol] if c == 1 else None,
                )
            )
    return modes


def run_interleaved(
    modes: list[Mode], clips: Sequence[Clip], rotation: int, budget: Budget
) -> dict[str, PassResult]:
    """One request at a time, clip by clip, every mode in turn (the order rotating per clip).

    Each mode's pass is the sum of its own requests, so all of them ran under the same
    conditions to within seconds. Stops early (partial passes) when the budget runs out.
    """
    latencies: dict[str, list[float]] = {m.name: [] for m in modes}
    cpu: dict[str, float] = {m.name: 0.0 for m in modes}
    errors: dict[str, list[str]] = {m.name: [] for m in modes}
    audio = 0.0
    for i, clip in enumerate(clips):
        last = sum(v[-1] for v in latencies.values() if v)
        if not budget.allows(last):
            log(f"interleaved one-at-a-time pass stopped after {i} clips: time budget")
            break
        k = (i + rotation) % len(modes)
        for mode in modes[k:] + modes[:k]:
            assert mode.single is not None
            try:
                latency, used = mode.single(clip)
            except Exception as e:  # counted and reported like a failed request of a pass
                errors[mode.name].append(f"{clip.name}: {e}")
                continue
            latencies[mode.name].append(latency)
            cpu[mode.name] += used
        audio += clip.seconds
    return {
        m.name: PassResult(
            m.name,
            sum(latencies[m.name]),
            audio,
            latencies[m.name],
            errors=len(errors[m.name]),
            first_error=errors[m.name][0] if errors[m.name] else "",
            cpu_seconds=cpu[m.name],
            load_average=load_average(),
        )
        for m in modes
    }


def run_rounds(
    modes: list[Mode], clips: Sequence[Clip], rounds: int, budget: Budget, skipped: list[str]
) -> None:
    """Per round: the one-at-a-time modes interleaved request by request, then every other mode
    as a pass of its own, in an order reversed every other round."""
    for r in range(rounds):
        single = [m for m in modes if m.single is not None]
        if len(single) > 1:
            for name, result in run_interleaved(single, clips, r, budget).items():
                mode = next(m for m in single if m.name == name)
                mode.passes.append(result)
                log(
                    f"round {r + 1}: {name:<16} {result.wall_seconds:7.2f} s  "
                    f"{result.audio_per_second:7.2f} x real time (interleaved)"
                )
        else:
            single = []
        rest = [m for m in modes if m not in single]
        order = rest if r % 2 == 0 else list(reversed(rest))
        for mode in order:
            estimate = mode.passes[-1].wall_seconds if mode.passes else 0.0
            if not budget.allows(estimate):
                skipped.append(f"round {r + 1}: {mode.name} (time budget)")
                log(f"round {r + 1}: skipping {mode.name}: time budget")
                continue
            result = mode.run()
            mode.passes.append(result)
            note = f", {result.errors} errors ({result.first_error})" if result.errors else ""
            log(
                f"round {r + 1}: {mode.name:<16} {result.wall_seconds:7.2f} s  "
                f"{result.audio_per_second:7.2f} x real time{note}"
            )


def latency_check(
    args: argparse.Namespace,
    aligner: Any,
    requesters: dict[str, Any],
    budget: Budget,
    skipped: list[str],
) -> dict[str, Any]:
    """One ``--latency-seconds`` clip, alone: upstream vs served at concurrency 1, interleaved."""
    from . import inprocess

    if args.latency_repeats == 0:
        return {}
    clip = fixed_clips(1, args.latency_seconds, seed=args.seed + 7)[0]
    paths: dict[str, Callable[[Clip], tuple[float, float]]] = {
        UPSTREAM: lambda c: inprocess.upstream_single(aligner, c),
        **requesters,
    }
    samples: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    for r in range(args.latency_repeats):
        names = list(paths) if r % 2 == 0 else list(reversed(paths))
        for name in names:
            estimate = max(samples[name], default=0.0)
            if not budget.allows(estimate):
                skipped.append(f"latency repeat {r + 1}: {name} (time budget)")
                continue
            latency, used = paths[name](clip)
            samples[name].append(latency)
            cpu[name].append(used)
    out: dict[str, Any] = {
        "clip_seconds": args.latency_seconds,
        "samples": samples,
        "cpu_samples": cpu,
        "median_cpu": {name: _median(values) for name, values in cpu.items()},
    }
    out["median"] = {name: _median(values) for name, values in samples.items()}
    # Each served sample is compared with the upstream sample of the same repeat (seconds apart,
    # so under the same load from other work); the median of those ratios is reported.
    out["vs_upstream"] = {
        name: _median([v / u for v, u in zip(values, samples[UPSTREAM], strict=False) if u > 0])
        for name, values in samples.items()
    }
    return out


def _median(values: Sequence[float]) -> float:
    import statistics

    return statistics.median(values) if values else float("nan")


THROUGHPUT_HEADERS = (
    "mode",
    "in flight",
    "audio s/s",
    "req/s",
    "p50 s",
    "p99 s",
    "vs (a)",
    "vs (b)",
    "CPU s/audio s",
    "load",
    "errors",
)


def throughput_table(records: dict[str, dict[str, Any]]) -> str:
    """The modes table from the per-mode records of a report."""
    rows = [
        [
            name,
            r["in_flight"],
            r["audio_seconds_per_second"],
            r["requests_per_second"],
            r["p50_seconds"],
            r["p99_seconds"],
            r["vs_upstream"],
            r["vs_upstream_batched"],
            r["cpu_seconds_per_audio_second"],
            r["load_average"],
            r["errors"],
        ]
        for name, r in records.items()
    ]
    return format_table(THROUGHPUT_HEADERS, rows)


def latency_table(latency: dict[str, Any]) -> str:
    """The single-clip latency check as a table."""
    rows = [
        [
            name,
            len(latency["samples"][name]),
            latency["median"][name],
            min(latency["samples"][name], default=float("nan")),
            latency["vs_upstream"][name],
            latency["median_cpu"][name],
        ]
        for name in latency["samples"]
    ]
    return format_table(
        ["path", "repeats", "median s", "best s", "vs upstream (paired)", "median CPU s"], rows
    )


def repair_table(result: RepairResult) -> str:
    """The timestamp-repair comparison as a one-row table."""
    return format_table(
        ["timestamps", "ours ms", "upstream ms", "speed-up", "identical output"],
        [
            [
                result.timestamps,
                1000 * result.ours_seconds,
                1000 * result.upstream_seconds,
                result.speedup,
                result.identical,
            ]
        ],
    )


def describe_workload(clips: Sequence[Clip]) -> dict[str, Any]:
    """Counts and lengths of the workload, for the report."""
    seconds = [c.seconds for c in clips]
    return {
        "clips": len(clips),
        "audio_seconds": round(sum(seconds), 2),
        "min_seconds": min(seconds),
        "max_seconds": max(seconds),
        "languages": sorted({c.language for c in clips}),
        "units": sum(c.units for c in clips),
    }


def _mode_record(mode: Mode, a: list[PassResult], b: list[PassResult]) -> dict[str, Any]:
    summary = ModeSummary(mode.name, mode.passes)
    return {
        "in_flight": mode.in_flight,
        "audio_seconds_per_second": summary.audio_per_second,
        "requests_per_second": summary.requests_per_second,
        "p50_seconds": summary.p50,
        "p99_seconds": summary.p99,
        "vs_upstream": paired_ratio(mode.passes, a),
        "vs_upstream_batched": paired_ratio(mode.passes, b),
        "cpu_seconds_per_audio_second": summary.cpu_per_audio_second,
        "load_average": summary.load_average,
        "errors": summary.errors,
        "passes": [
            {
                **asdict(p),
                "audio_seconds_per_second": p.audio_per_second,
                "cpu_seconds_per_audio_second": p.cpu_per_audio_second,
            }
            for p in mode.passes
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every request succeeded and repair outputs matched, else 1."""
    args = parse_args(argv)
    command = "./scripts/bench " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    budget = Budget(args.budget_minutes)
    with tempfile.TemporaryDirectory(prefix="qwen3-aligner-bench-") as scratch:
        log(f"checkpoint {args.checkpoint}: preparing")
        choice = resolve_checkpoint(args.checkpoint, Path(scratch))
        clips = make_clips(args.clips, args.min_seconds, args.max_seconds, seed=args.seed)
        report = Report(
            command=command,
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            machine=machine_info(),
            checkpoint=asdict(choice),
            workload=describe_workload(clips),
        )
        log(
            f"workload: {len(clips)} clips, {report.workload['audio_seconds']:.0f} s of audio; "
            f"{choice.description}"
        )
        with _server(args, choice) as endpoints:
            code = _measure(args, choice, clips, endpoints, budget, report)
    _print_report(report, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_jsonable(report), indent=2, sort_keys=True) + "\n")
        log(f"numbers written to {args.json}")
    return code


@contextlib.contextmanager
def _server(args: argparse.Namespace, choice: CheckpointChoice):
    from . import served

    if args.url:
        yield served.Endpoints(args.url, args.grpc_url)
        return
    log("starting tritonserver (CPU placement, loopback, free ports)")
    parameters = {}
    if args.simulate_gpu:
        log(f"SIMULATED GPU ({args.simulate_gpu} ms per pass): served results are placeholders")
        parameters["simulate_gpu"] = args.simulate_gpu
    with served.bench_server(
        choice.location,
        "KIND_CPU",
        parameters,
        log=log,
        instances=args.instances,
        front_instances=args.front_instances,
    ) as endpoints:
        yield endpoints


def _measure(
    args: argparse.Namespace,
    choice: CheckpointChoice,
    clips: Sequence[Clip],
    endpoints: Any,
    budget: Budget,
    report: Report,
) -> int:
    from qwen3_aligner_triton.inprocess import InProcessAligner
    from qwen3_aligner_triton.loading import load_aligner
    from qwen3_aligner_triton.params import PipelineSettings

    from . import served

    log("loading upstream Qwen3ForcedAligner in-process (CPU, float32)")
    aligner = load_aligner(choice.location, "cpu")
    engine = InProcessAligner(aligner, PipelineSettings.of()) if args.engine else None
    log("warming up both sides")
    aligner.align(audio=(clips[0].audio, 16000), text=clips[0].text, language=clips[0].language)
    served.warm_up(endpoints, clips)
    requesters = {p: served.Requester(endpoints, p) for p in args.protocols}
    try:
        log(f"latency of one {args.latency_seconds:g} s clip, concurrency 1")
        report.latency = latency_check(args, aligner, requesters, budget, report.skipped)
        stats_before = served.executed_batch_sizes(served.server_statistics(endpoints))
        modes = build_modes(args, aligner, engine, endpoints, clips, requesters)
        run_rounds(modes, clips, args.rounds, budget, report.skipped)
    finally:
        for requester in requesters.values():
            requester.close()
    stats_after = served.executed_batch_sizes(served.server_statistics(endpoints))
    report.server_batch_sizes = {
        size: count - stats_before.get(size, 0)
        for size, count in sorted(stats_after.items())
        if count - stats_before.get(size, 0) > 0
    }
    by_name = {m.name: m for m in modes}
    a, b = by_name[UPSTREAM].passes, by_name[UPSTREAM_BATCHED].passes
    report.modes = {m.name: _mode_record(m, a, b) for m in modes if m.passes}
    report.errors = sum(r["errors"] for r in report.modes.values())

    if args.repair_timestamps > 0:
        log(f"timestamp repair on {args.repair_timestamps} timestamps")
        result = measure_repair(args.repair_timestamps)
        report.repair = {**asdict(result), "speedup": result.speedup}
    failed = report.errors > 0 or (report.repair and not report.repair["identical"])
    return 1 if failed else 0


def _print_report(report: Report, args: argparse.Namespace) -> None:
    m = report.machine
    w = report.workload
    print(f"# scripts/bench, {report.date}")
    print(f"command:    {report.command}")
    print(
        f"machine:    {m['cpu']}, {m['cpu_count']} CPUs, "
        f"torch {m['torch']} ({m['torch_threads']} threads)"
    )
    print(f"checkpoint: {report.checkpoint['description']}")
    print(
        f"workload:   {w['clips']} clips, {w['min_seconds']:g}-{w['max_seconds']:g} s, "
        f"{w['audio_seconds']:g} s of audio, {', '.join(w['languages'])}; "
        f"upstream batch size {args.batch_size}; {args.rounds} round(s), interleaved"
    )
    print()
    print("Throughput. audio s/s: seconds of audio aligned per wall-clock second; vs (a), vs (b):")
    print("per-round medians of audio s/s against (a) upstream one at a time and (b) upstream")
    print("batched; CPU s/audio s: CPU time used per audio second (in-process: this process;")
    print("served: client + tritonserver + stub); load: 1-minute load average at the end of the")
    print(f"pass: above {report.machine['cpu_count']} (the CPU count), other work competed and")
    print("wall and CPU time both grow (descheduled threads leave their peers spinning).")
    print()
    if report.modes:
        print(throughput_table(report.modes))
    if report.server_batch_sizes:
        sizes = ", ".join(f"{k}: {v}" for k, v in report.server_batch_sizes.items())
        print(f"\nserver executions by batch size (during the passes): {sizes}")
    if report.latency:
        print(f"\nLatency of one {report.latency['clip_seconds']:g} s clip, alone:\n")
        print(latency_table(report.latency))
    if report.repair:
        print("\nTimestamp repair (ours vs upstream Qwen3ForceAlignProcessor.fix_timestamp):\n")
        print(
            repair_table(RepairResult(**{k: v for k, v in report.repair.items() if k != "speedup"}))
        )
    if report.skipped:
        print("\nskipped: " + "; ".join(report.skipped))
    if report.errors:
        first = next(
            (p["first_error"] for r in report.modes.values() for p in r["passes"] if p["errors"]),
            "",
        )
        print(f"\n{report.errors} request(s) failed; first: {first}")


def _jsonable(report: Report) -> dict[str, Any]:
    data = asdict(report)
    data["server_batch_sizes"] = {str(k): v for k, v in report.server_batch_sizes.items()}
    return _clean(data)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
