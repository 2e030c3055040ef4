"""``scripts/soak``: a bounded soak test of a running (or self-started) aligner server.

Sends a mix of valid and invalid requests at a fixed concurrency over HTTP and gRPC for a fixed
time, then reports unexpected errors (must be 0), latency percentiles, server memory growth after
warm-up (must stay under 5 %) and leftover ``/dev/shm`` regions (must be 0). Traffic goes only to
the given server, which is meant to be on this machine (loopback).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from qwen3_aligner_tools.wire import infer_inputs
from qwen3_aligner_triton.contract import MODEL_NAME
from qwen3_aligner_triton.tritonserver import shm_regions

MAX_GROWTH = 0.05  # fraction of server memory after warm-up
WARMUP_FRACTION = 0.25  # first quarter of the run is warm-up
SAMPLE_SECONDS = 0.5  # memory sampling period


@dataclass(frozen=True)
class SoakRequest:
    """One request of the mix and what must come back."""

    name: str
    audio: np.ndarray
    sample_rate: int
    text: str
    language: str
    valid: bool


def request_mix(seed: int = 0) -> list[SoakRequest]:
    """Valid requests of several lengths and languages, and invalid ones of several kinds."""
    rng = np.random.default_rng(seed)

    def speechy(seconds: float, rate: int) -> np.ndarray:
        t = np.arange(int(seconds * rate)) / rate
        wave = 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * 180 * t)
        return (wave + 0.03 * rng.standard_normal(t.size)).astype(np.float32)

    valid = [
        SoakRequest("en-2s", speechy(2.0, 16000), 16000, "Hello there, world.", "en", True),
        SoakRequest("zh-5s", speechy(5.0, 8000), 8000, "今天天气很好，我们去散步。", "zh", True),
        SoakRequest("ja-8s", speechy(8.0, 16000), 16000, "今日はいい天気ですね。", "ja", True),
        SoakRequest("ko-3s", speechy(3.0, 44100), 44100, "안녕하세요, 반갑습니다.", "ko", True),
        SoakRequest(
            "en-30s",
            speechy(30.0, 16000),
            16000,
            " ".join(["the quick brown fox jumps over the lazy dog"] * 6),
            "English",
            True,
        ),
    ]
    one = speechy(1.0, 16000)
    invalid = [
        SoakRequest("bad-language", one, 16000, "hello", "klingon", False),
        SoakRequest("nan-audio", np.full(16000, np.nan, np.float32), 16000, "hi", "en", False),
        SoakRequest("punctuation-only", one, 16000, "?!…", "en", False),
        SoakRequest("url-text", one, 16000, "http://127.0.0.1:1/x.wav", "en", False),
        SoakRequest("zero-rate", one, 0, "hello", "en", False),
        SoakRequest("too-many-words", one, 16000, " ".join(["word"] * 40), "en", False),
    ]
    return valid + invalid


@dataclass
class SoakReport:
    """What one soak run measured."""

    duration_s: float
    concurrency: int
    requests: int = 0
    valid_ok: int = 0
    invalid_rejected: int = 0
    unexpected: int = 0
    unexpected_examples: list[str] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    memory_mb_after_warmup: float | None = None
    memory_mb_at_end: float | None = None
    memory_growth: float | None = None
    leftover_shm: int | None = None

    @property
    def passed(self) -> bool:
        growth_ok = self.memory_growth is None or self.memory_growth < MAX_GROWTH
        shm_ok = not self.leftover_shm
        return self.unexpected == 0 and growth_ok and shm_ok and self.valid_ok > 0

    def lines(self) -> list[str]:
        out = [
            f"requests          {self.requests} in {self.duration_s:.0f} s at concurrency "
            f"{self.concurrency} ({self.requests / max(self.duration_s, 1e-9):.1f}/s)",
            f"valid answered    {self.valid_ok}",
            f"invalid rejected  {self.invalid_rejected} (INVALID_ARG, as expected)",
            f"unexpected errors {self.unexpected}",
        ]
        out += [f"  {e}" for e in self.unexpected_examples[:5]]
        if self.latency_ms:
            lat = self.latency_ms
            out.append(
                f"latency (valid)   p50 {lat['p50']:.1f} ms  p90 {lat['p90']:.1f} ms  "
                f"p99 {lat['p99']:.1f} ms  max {lat['max']:.1f} ms"
            )
        if self.memory_growth is not None:
            out.append(
                f"server memory     {self.memory_mb_after_warmup:.0f} MB after warm-up -> "
                f"{self.memory_mb_at_end:.0f} MB at end ({self.memory_growth * 100:+.2f} %, "
                f"limit {MAX_GROWTH * 100:.0f} %)"
            )
        if self.leftover_shm is not None:
            out.append(f"leftover /dev/shm {self.leftover_shm}")
        out.append("PASS" if self.passed else "FAIL")
        return out


def process_tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its direct children (the backend stubs), in MB."""
    total_kb = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        ppid = int(fields.get("PPid", "0").strip() or 0)
        if int(entry.name) == pid or ppid == pid:
            rss = fields.get("VmRSS", "0 kB").split()[0]
            total_kb += int(rss)
    return total_kb / 1024.0


def _sender(
    protocol: str, url: str
) -> tuple[Callable[[SoakRequest], tuple[bool, str]], Callable[[], None]]:
    """A function sending one request (returns (succeeded, error text)), and one closing the
    connection (an open keep-alive connection would hold up the server's shutdown)."""
    if protocol == "http":
        import tritonclient.http as client_module
    else:
        import tritonclient.grpc as client_module
    from tritonclient.utils import InferenceServerException

    client = client_module.InferenceServerClient(url)

    def send(req: SoakRequest) -> tuple[bool, str]:
        inputs = infer_inputs(client_module, req.audio, req.sample_rate, req.text, req.language)
        try:
            result = client.infer(MODEL_NAME, inputs)
        except InferenceServerException as e:
            return False, f"{e.status()} {e.message()}"
        words = result.as_numpy("WORDS")
        return (words is not None and words.size > 0), "no words"

    return send, client.close


def _is_invalid_arg(error: str) -> bool:
    return error.startswith("400 ") or error.startswith("StatusCode.INVALID_ARGUMENT")


def run_soak(
    http_url: str,
    grpc_url: str,
    duration: float,
    concurrency: int,
    server_pid: int | None = None,
    invalid_fraction: float = 0.25,
    seed: int = 0,
) -> SoakReport:
    """Run the soak against a server; memory is measured when ``server_pid`` is given."""
    mix = request_mix(seed)
    valid = [r for r in mix if r.valid]
    invalid = [r for r in mix if not r.valid]
    report = SoakReport(duration_s=duration, concurrency=concurrency)
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + duration
    memory: list[tuple[float, float]] = []
    started = time.monotonic()

    def worker(index: int) -> None:
        protocol = "http" if index % 2 == 0 else "grpc"
        send, close = _sender(protocol, http_url if protocol == "http" else grpc_url)
        rng = random.Random(seed * 1000 + index)
        try:
            while time.monotonic() < deadline:
                req = rng.choice(invalid if rng.random() < invalid_fraction else valid)
                t0 = time.perf_counter()
                ok, error = send(req)
                elapsed_ms = (time.perf_counter() - t0) * 1000.0
                with lock:
                    report.requests += 1
                    if req.valid and ok:
                        report.valid_ok += 1
                        latencies.append(elapsed_ms)
                    elif not req.valid and not ok and _is_invalid_arg(error):
                        report.invalid_rejected += 1
                    else:
                        report.unexpected += 1
                        what = "succeeded" if ok else error
                        report.unexpected_examples.append(f"{protocol} {req.name}: {what}"[:300])
        finally:
            close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if server_pid is not None:
            memory.append((time.monotonic() - started, process_tree_rss_mb(server_pid)))
        time.sleep(SAMPLE_SECONDS)
    report.duration_s = time.monotonic() - started

    if latencies:
        q = np.percentile(latencies, [50, 90, 99])
        report.latency_ms = {
            "p50": float(q[0]),
            "p90": float(q[1]),
            "p99": float(q[2]),
            "max": float(max(latencies)),
            "mean": statistics.fmean(latencies),
        }
    if memory:
        warm = [m for t, m in memory if t >= WARMUP_FRACTION * duration]
        if len(warm) >= 4:
            window = max(2, len(warm) // 10)
            report.memory_mb_after_warmup = statistics.median(warm[:window])
            report.memory_mb_at_end = statistics.median(warm[-window:])
            report.memory_growth = (
                report.memory_mb_at_end - report.memory_mb_after_warmup
            ) / report.memory_mb_after_warmup
    return report


def _start_tiny_server(work: Path):
    from qwen3_aligner_triton.repository import Placement, render_repository
    from qwen3_aligner_triton.triton_flags import loopback_options
    from qwen3_aligner_triton.tritonserver import start

    from .checkpoint_builder import build_checkpoint

    checkpoint = build_checkpoint(work / "tiny")
    repo = render_repository(
        work / "repo", Placement("KIND_CPU", 1), {"checkpoint": str(checkpoint)}
    )
    opts = loopback_options(repo)
    running = start(opts)
    running.wait_ready(300)
    return running, f"127.0.0.1:{opts.http_port}", f"127.0.0.1:{opts.grpc_port}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.splitlines()[0])
    p.add_argument("--http-url", default="127.0.0.1:8000")
    p.add_argument("--grpc-url", default="127.0.0.1:8001")
    p.add_argument("--server-pid", type=int, help="tritonserver PID, to measure its memory")
    p.add_argument("--start-server", action="store_true",
                   help="start a server with a tiny random checkpoint for the run")  # fmt: skip
    p.add_argument("--duration", type=float, default=180.0, help="seconds (default 180)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--invalid-fraction", type=float, default=0.25)
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    args = p.parse_args(argv)

    running = None
    with tempfile.TemporaryDirectory(prefix="qwen3-aligner-soak-") as tmp:
        http_url, grpc_url, pid = args.http_url, args.grpc_url, args.server_pid
        if args.start_server:
            running, http_url, grpc_url = _start_tiny_server(Path(tmp))
            pid = running.process.pid
        try:
            report = run_soak(
                http_url, grpc_url, args.duration, args.concurrency, pid, args.invalid_fraction
            )
        finally:
            if running is not None:
                running.stop()
        if running is not None:
            report.leftover_shm = len(shm_regions(running.options.shm_prefix))
    for line in report.lines():
        print(line)
    if args.json:
        args.json.write_text(json.dumps({**asdict(report), "passed": report.passed}, indent=2))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
