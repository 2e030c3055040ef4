"""``./scripts/perf``: NVIDIA perf_analyzer against the aligner, with real-length input data.

Builds an ``--input-data`` JSON of speech-like clips with transcripts sized to them (the same
workload as ``./scripts/bench``), finds or installs perf_analyzer (see :mod:`.perf_analyzer`),
runs a concurrency sweep against ``--url`` (or a tiny-checkpoint server it starts itself with
``--start-server``), and prints perf_analyzer's report, a summary table with audio seconds per
second, and the equivalent command for the NGC SDK container. Exits non-zero when perf_analyzer
cannot run or reports errors.

With ``--audio-files`` the requests carry real audio files instead, as ``AUDIO_FILE`` (the
server decodes them): each file with the transcript in ``STEM.txt`` beside it, or else a
transcript of ``--language`` sized to the file's length.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from qwen3_aligner_triton.audio_file import AudioFileError, EncodedAudio

from . import perf_analyzer as pa
from .stats import format_table
from .workload import Clip, make_clips, transcript

# Suffixes of the files a folder given to --audio-files contributes (what AUDIO_FILE accepts).
AUDIO_FILE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")

DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
CSV_COLUMNS = (
    ("Concurrency", "concurrency"),
    ("Inferences/Second", "infer/s"),
    ("p50 latency", "p50 ms"),
    ("p90 latency", "p90 ms"),
    ("p99 latency", "p99 ms"),
    ("Server Queue", "queue ms"),
    ("Server Compute Infer", "compute ms"),
)
US_PER_MS = 1000.0  # perf_analyzer's CSV gives times in microseconds


def log(message: str) -> None:
    print(f"[perf] {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/perf``."""
    parser = argparse.ArgumentParser(
        prog="scripts/perf",
        description="perf_analyzer against qwen3_aligner with real-length audio and transcripts.",
        epilog="Arguments after -- go to perf_analyzer unchanged.",
    )
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    parser.add_argument(
        "--url", help="host:port of the server (default localhost:8000 for http, :8001 for grpc)"
    )
    parser.add_argument(
        "--start-server",
        action="store_true",
        help="start a server on loopback for this run (tiny checkpoint unless --checkpoint)",
    )
    parser.add_argument(
        "--checkpoint",
        default="tiny",
        help="with --start-server: tiny, full or a checkpoint folder / hub id (default tiny)",
    )
    parser.add_argument("--concurrency-range", default="1:4", help="start:end[:step] (default 1:4)")
    parser.add_argument(
        "--measurement-interval",
        type=int,
        default=5000,
        help="measurement window in ms (default 5000; raise it for slow models)",
    )
    parser.add_argument(
        "--measurement-mode",
        choices=("time_windows", "count_windows"),
        default="count_windows",
        help="count_windows (default): every window holds several rounds of the mixed-length "
        "input data, so windows are comparable; time_windows uses --measurement-interval",
    )
    parser.add_argument(
        "--window-requests",
        type=int,
        help="requests per window in count_windows mode (default 8 x --clips, or 8 x the "
        "files of --audio-files)",
    )
    parser.add_argument(
        "--total-requests",
        type=int,
        default=0,
        help="send exactly this many requests at a single concurrency and report them, with no "
        "search for stable windows (perf_analyzer's --request-count); a quick smoke run",
    )
    parser.add_argument(
        "--stability-percentage",
        type=float,
        default=25.0,
        help="perf_analyzer's -s: allowed spread between the last 3 windows (default 25, for a "
        "shared machine; perf_analyzer's own default is 10)",
    )
    parser.add_argument("--max-trials", type=int, default=10, help="perf_analyzer's -r (10)")
    parser.add_argument("--clips", type=int, default=8, help="entries in the input data (8)")
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--audio-files",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="send these audio files (or the WAV, FLAC, OGG and MP3 files of these folders) as "
        "AUDIO_FILE instead of synthetic samples; transcripts from STEM.txt beside each, else "
        "sized to the file (--clips, --min/--max-seconds and --seed are then unused)",
    )
    parser.add_argument(
        "--language",
        default="English",
        choices=("English", "Chinese"),
        help="with --audio-files: the language of the made-up transcripts and of STEM.txt ones "
        "(default English)",
    )
    parser.add_argument(
        "--input-data-out",
        type=Path,
        help="also keep the input-data JSON here (for the SDK container command)",
    )
    parser.add_argument(
        "--write-input-data-only",
        action="store_true",
        help="write --input-data-out and exit without running perf_analyzer",
    )
    parser.add_argument("--csv", type=Path, help="keep perf_analyzer's CSV report here")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="give up on the sweep after this (900 s)"
    )
    parser.add_argument("extra", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line, fill defaults that depend on other options, reject conflicts."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.extra and args.extra[0] == "--":
        args.extra = args.extra[1:]
    if args.url and args.start_server:
        parser.error("--url and --start-server exclude each other")
    if args.write_input_data_only and not args.input_data_out:
        parser.error("--write-input-data-only needs --input-data-out")
    if args.url:
        args.url = args.url.split("://")[-1]
    if args.window_requests is None and not args.audio_files:  # files: once they are counted
        args.window_requests = 8 * args.clips
    if args.total_requests and not re.fullmatch(r"\d+(:(\d+))?(:\d+)?", args.concurrency_range):
        parser.error(f"bad --concurrency-range {args.concurrency_range!r}")
    if args.total_requests and len(set(args.concurrency_range.split(":")[:2])) > 1:
        parser.error("--total-requests needs a single concurrency (e.g. --concurrency-range 4)")
    if args.clips < 1 or not 0 < args.min_seconds <= args.max_seconds:
        parser.error("need --clips >= 1 and 0 < --min-seconds <= --max-seconds")
    return args


def audio_file_paths(paths: Sequence[Path]) -> list[Path]:
    """The files of ``paths``: files as given, folders as their audio files (sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_FILE_SUFFIXES
            )
        elif path.is_file():
            found.append(path)
        else:
            raise ValueError(f"{path} is neither a file nor a folder")
    if not found:
        raise ValueError("--audio-files names no audio files")
    return found


def file_clips(paths: Sequence[Path], language: str) -> list[pa.FileClip]:
    """A :class:`~.perf_analyzer.FileClip` per audio file, its length from its header and its
    transcript from ``STEM.txt`` (else made up to the length, see :func:`.workload.transcript`).
    Raises ``ValueError`` for a file the server would not decode."""
    clips = []
    for k, path in enumerate(audio_file_paths(paths)):
        data = path.read_bytes()
        try:
            with EncodedAudio(data, str(path)) as audio:
                seconds = audio.header.seconds
        except AudioFileError as e:
            raise ValueError(str(e)) from None
        text_file = path.with_suffix(".txt")
        if text_file.is_file():
            text = text_file.read_text(encoding="utf-8").strip()
        else:
            text = transcript(seconds, language, offset=k)
        clips.append(pa.FileClip(path.name, data, seconds, text, language))
    return clips


def summary_table(rows: Sequence[dict[str, str]], mean_clip_seconds: float) -> str:
    """perf_analyzer's CSV rows as a table, with audio seconds per second added.

    perf_analyzer sends the input-data entries round-robin, so over a window the mean clip length
    times inferences per second is the audio throughput.
    """
    headers = [label for _, label in CSV_COLUMNS] + ["audio s/s"]
    table = []
    # perf_analyzer orders its CSV by throughput; the table goes by concurrency.
    for row in sorted(rows, key=lambda r: float(r.get("Concurrency", "0") or 0)):
        cells: list[object] = []
        for key, _ in CSV_COLUMNS:
            value = float(row.get(key, "nan") or "nan")
            if key == "Concurrency":
                cells.append(int(value))
            elif key == "Inferences/Second":
                cells.append(value)
            else:
                cells.append(value / US_PER_MS)
        cells.append(float(row.get("Inferences/Second", "nan")) * mean_clip_seconds)
        table.append(cells)
    return format_table(headers, table)


@contextlib.contextmanager
def _target(args: argparse.Namespace, scratch: Path) -> Iterator[str]:
    if not args.start_server:
        yield args.url or f"localhost:{DEFAULT_PORTS[args.protocol]}"
        return
    from .checkpoints import resolve_checkpoint
    from .served import bench_server

    choice = resolve_checkpoint(args.checkpoint, scratch)
    log(f"starting tritonserver with the {choice.description}")
    with bench_server(choice.location, "KIND_CPU", log=log) as endpoints:
        yield endpoints.url(args.protocol)


def settings_from(args: argparse.Namespace, url: str) -> pa.PerfSettings:
    """The perf_analyzer sweep the command line asks for, against ``url``."""
    return pa.PerfSettings(
        url=url,
        protocol=args.protocol,
        concurrency_range=args.concurrency_range,
        measurement_interval_ms=args.measurement_interval,
        measurement_mode=args.measurement_mode,
        measurement_request_count=args.window_requests,
        request_count=args.total_requests,
        stability_percentage=args.stability_percentage,
        max_trials=args.max_trials,
        extra_args=tuple(args.extra),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep; 0 on success, 1 when perf_analyzer reports errors, 2 when it cannot run."""
    args = parse_args(argv)
    clips: list[Clip] | list[pa.FileClip]
    if args.audio_files:
        try:
            clips = file_clips(args.audio_files, args.language)
        except (OSError, ValueError) as e:
            log(f"cannot use --audio-files: {e}")
            return 2
        what = "audio files sent as AUDIO_FILE"
    else:
        clips = make_clips(args.clips, args.min_seconds, args.max_seconds, args.seed)
        what = "clips"
    if args.window_requests is None:
        args.window_requests = 8 * len(clips)
    mean_seconds = sum(c.seconds for c in clips) / len(clips)
    with tempfile.TemporaryDirectory(prefix="qwen3-aligner-perf-") as tmp:
        scratch = Path(tmp)
        data_file = pa.write_input_data(clips, args.input_data_out or scratch / "perf-input.json")
        log(f"input data: {len(clips)} {what}, mean {mean_seconds:.1f} s -> {data_file}")
        if args.write_input_data_only:
            print(pa.sdk_command(settings_from(args, "localhost:8000"), data_file))
            return 0
        try:
            analyzer = pa.locate()
        except pa.PerfAnalyzerError as e:
            log(f"cannot run perf_analyzer: {e}")
            return 2
        log(f"perf_analyzer: {analyzer.source} ({analyzer.version().splitlines()[-1]})")
        csv_file = args.csv or scratch / "perf.csv"
        with _target(args, scratch) as url:
            settings = settings_from(args, url)
            log(
                "running: "
                + shlex.join(analyzer.command(pa.perf_arguments(settings, data_file, csv_file)))
            )
            result = pa.run(analyzer, settings, data_file, csv_file, args.timeout, echo=print)
        print()
        if result.rows:
            print(summary_table(result.rows, mean_seconds))
        print("\nThe same sweep in NVIDIA's SDK container (keep the data with --input-data-out):")
        print(pa.sdk_command(settings, data_file))
        if not result.ok:
            reasons = result.errors or [f"exit code {result.returncode}"]
            log("perf_analyzer reported errors:\n  " + "\n  ".join(reasons[:10]))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
