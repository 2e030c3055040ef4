"""Encoded files against float32 samples: bytes on the wire and server CPU per request.

``python -m qwen3_aligner_tools.bench.encoded`` encodes one speech-like clip (30 s by default)
as WAV 16-bit, FLAC, OGG Vorbis, OGG Opus and MP3 and sends each, as ``AUDIO_FILE``, to a real
server, beside the float32 ``AUDIO`` (with ``SAMPLE_RATE``) that a client decoding the WAV file
itself sends: the samples at the file's rate, channels averaged. For each payload and protocol it
reports the request's size as tritonclient serialises it (the HTTP body with Triton's binary
tensor extension; the gRPC ``ModelInferRequest``; with ``--openai`` also the multipart body
uploaded to the OpenAI-style front), the server's CPU per request (tritonserver and
its stubs, from ``psutil``, as ``./scripts/bench`` measures it), the latency, and the in-process
time to decode the file (what moves from the client to the server). Requests go one at a time,
in blocks of one payload, the blocks interleaved round by round. The server's CPU is read around
each block (its clock ticks are 10 ms, so a lone request's reading would be one or two ticks)
and given as the mean per request over all blocks; latency is the median request. Every file
must give the words that its samples give.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qwen3_aligner_tools.wire import file_inputs, infer_inputs
from qwen3_aligner_triton.audio_file import EncodedAudio
from qwen3_aligner_triton.contract import MODEL_NAME

from .served import Endpoints, process_tree_cpu_seconds
from .stats import format_table
from .workload import speech_like_audio, transcript

SAMPLES = "float32 AUDIO"  # the payload that is no file
# (label, libsndfile format, subtype) of the files compared with the samples.
ENCODINGS = (
    ("WAV 16-bit", "WAV", "PCM_16"),
    ("FLAC", "FLAC", "PCM_16"),
    ("OGG Vorbis", "OGG", "VORBIS"),
    ("OGG Opus", "OGG", "OPUS"),
    ("MP3", "MP3", "MPEG_LAYER_III"),
)
PROTOCOLS = ("http", "grpc")
MS_PER_S = 1000.0


def log(message: str) -> None:
    print(f"[encoded] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Payload:
    """What one request carries: an encoded file, or the samples a client decoded."""

    label: str
    data: bytes | None  # the file; None for samples
    wave: np.ndarray | None  # float32 samples at ``sample_rate``; None for a file
    sample_rate: int

    def inputs(self, module: Any, text: str, language: str) -> list:
        if self.data is not None:
            return file_inputs(module, self.data, text, language)
        assert self.wave is not None
        return infer_inputs(module, self.wave, self.sample_rate, text, language)


def make_payloads(seconds: float, sample_rate: int, channels: int, seed: int = 0) -> list[Payload]:
    """The clip as float32 samples and as each of :data:`ENCODINGS`.

    The samples are the WAV 16-bit file decoded as the client decodes it (the source rounded to
    16 bits, channels averaged), so every payload holds the same recording."""
    import soundfile

    voice = speech_like_audio(seconds, seed, sample_rate)
    source = voice if channels == 1 else np.stack([voice, 0.8 * voice], axis=1)
    files = []
    for label, fmt, subtype in ENCODINGS:
        buffer = io.BytesIO()
        soundfile.write(buffer, source, sample_rate, format=fmt, subtype=subtype)
        files.append(Payload(label, buffer.getvalue(), None, sample_rate))
    with EncodedAudio(files[0].data or b"") as wav:
        wave = wav.decode()
    return [Payload(SAMPLES, None, wave, sample_rate), *files]


def wire_bytes(protocol: str, inputs: list) -> int:
    """The request's size as tritonclient serialises it (HTTP body; gRPC message)."""
    if protocol == "http":
        from tritonclient.http import _utils as http_utils

        body, _ = http_utils._get_inference_request(
            inputs, "", None, 0, False, False, 0, None, None
        )
        return len(body)
    from tritonclient.grpc import _utils as grpc_utils

    request = grpc_utils._get_inference_request(
        MODEL_NAME, inputs, "", "", None, 0, False, False, 0, None, None
    )
    return int(request.ByteSize())


def decode_ms(payload: Payload, repeats: int = 5) -> float:
    """Median milliseconds to decode the file in-process (0 for samples)."""
    if payload.data is None:
        return 0.0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with EncodedAudio(payload.data) as audio:
            audio.decode()
        times.append((time.perf_counter() - t0) * MS_PER_S)
    return statistics.median(times)


@dataclass
class Row:
    """One payload over one protocol: server CPU per request (mean), latency (median)."""

    protocol: str
    payload: str
    request_bytes: int
    server_cpu_ms: float
    latency_ms: float
    decode_ms: float
    words: int


def _client(protocol: str, url: str) -> tuple[Any, Any]:
    if protocol == "http":
        import tritonclient.http as http

        return http, http.InferenceServerClient(url, network_timeout=600.0)
    import tritonclient.grpc as grpc

    return grpc, grpc.InferenceServerClient(url)


def measure(
    endpoints: Endpoints,
    payloads: Sequence[Payload],
    text: str,
    language: str,
    rounds: int,
    block: int,
) -> list[Row]:
    """Send every payload ``block`` times per round over each protocol, one request at a time."""
    rows = []
    for protocol in PROTOCOLS:
        module, client = _client(protocol, endpoints.url(protocol))
        built = [p.inputs(module, text, language) for p in payloads]
        cpu: dict[str, list[float]] = {p.label: [] for p in payloads}
        latency: dict[str, list[float]] = {p.label: [] for p in payloads}
        words: dict[str, list[str]] = {}
        try:
            for k in range(rounds + 1):  # the first round warms up and is not counted
                order = list(range(len(payloads)))
                order = order[k % len(order) :] + order[: k % len(order)]
                for i in order:
                    label = payloads[i].label
                    before = process_tree_cpu_seconds(endpoints.server_pid)
                    for _ in range(block):
                        t0 = time.perf_counter()
                        result = client.infer(MODEL_NAME, built[i])
                        elapsed = time.perf_counter() - t0
                        got = [w.decode() for w in result.as_numpy("WORDS").reshape(-1)]
                        if words.setdefault(label, got) != got:
                            raise RuntimeError(f"{label} over {protocol}: the words changed")
                        if k:
                            latency[label].append(elapsed * MS_PER_S)
                    after = process_tree_cpu_seconds(endpoints.server_pid)
                    if k:
                        cpu[label].append((after - before) * MS_PER_S / block)
        finally:
            client.close()
        if any(w != words[SAMPLES] for w in words.values()):
            raise RuntimeError(f"over {protocol} a file gives other words than its samples")
        for payload, inputs in zip(payloads, built, strict=True):
            rows.append(
                Row(
                    protocol,
                    payload.label,
                    wire_bytes(protocol, inputs),
                    statistics.fmean(cpu[payload.label]),
                    statistics.median(latency[payload.label]),
                    decode_ms(payload),
                    len(words[payload.label]),
                )
            )
    return rows


def multipart_body(payload: Payload, text: str, language: str) -> tuple[bytes, str]:
    """The multipart body (and its content type) that uploads ``payload``'s file to the front."""
    import requests

    prepared = requests.Request(
        "POST",
        "http://front/v1/audio/alignments",
        data={"text": text, "language": language},
        files={"file": ("speech", payload.data or b"")},
    ).prepare()
    return bytes(prepared.body or b""), prepared.headers["Content-Type"]


def measure_multipart(
    endpoints: Endpoints,
    payloads: Sequence[Payload],
    text: str,
    language: str,
    rounds: int,
    block: int,
) -> list[Row]:
    """Upload every file ``block`` times per round to the OpenAI-style front (started here beside
    the server), one request at a time; the CPU is the server's and the front's together."""
    import requests

    from qwen3_aligner_triton.openai_front.launch import FrontOptions, FrontProcess
    from qwen3_aligner_triton.triton_flags import free_ports

    files = [p for p in payloads if p.data is not None]
    bodies = [multipart_body(p, text, language) for p in files]
    (port,) = free_ports(1)
    front = FrontProcess.start(
        FrontOptions(port=port, triton_url=endpoints.grpc_url, host="127.0.0.1"),
        extra=["--log-level", "warning"],
    )
    url = f"http://127.0.0.1:{port}/v1/audio/alignments"
    session = requests.Session()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if session.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            if front.exited() is not None or time.monotonic() > deadline:
                raise RuntimeError("the OpenAI-style front did not start")
            time.sleep(0.2)

        def cpu_seconds() -> float:
            return process_tree_cpu_seconds(endpoints.server_pid) + process_tree_cpu_seconds(
                front.process.pid
            )

        cpu: dict[str, list[float]] = {p.label: [] for p in files}
        latency: dict[str, list[float]] = {p.label: [] for p in files}
        words: dict[str, list[str]] = {}
        for k in range(rounds + 1):
            order = list(range(len(files)))
            order = order[k % len(order) :] + order[: k % len(order)]
            for i in order:
                label = files[i].label
                body, content_type = bodies[i]
                before = cpu_seconds()
                for _ in range(block):
                    t0 = time.perf_counter()
                    response = session.post(
                        url, data=body, headers={"Content-Type": content_type}, timeout=600
                    )
                    elapsed = time.perf_counter() - t0
                    if response.status_code != 200:
                        raise RuntimeError(f"{label}: the front answered {response.text}")
                    got = [w["text"] for w in response.json()["words"]]
                    if words.setdefault(label, got) != got:
                        raise RuntimeError(f"{label} over the front: the words changed")
                    if k:
                        latency[label].append(elapsed * MS_PER_S)
                after = cpu_seconds()
                if k:
                    cpu[label].append((after - before) * MS_PER_S / block)
    finally:
        session.close()
        front.stop()
    return [
        Row(
            "openai multipart",
            p.label,
            len(body),
            statistics.fmean(cpu[p.label]),
            statistics.median(latency[p.label]),
            decode_ms(p),
            len(words[p.label]),
        )
        for p, (body, _) in zip(files, bodies, strict=True)
    ]


def table(rows: Sequence[Row]) -> str:
    """The rows as a table, with each request's size relative to the samples' (over HTTP for the
    front's uploads, which carry files only)."""
    base = {r.protocol: r.request_bytes for r in rows if r.payload == SAMPLES}
    for r in rows:
        base.setdefault(r.protocol, base["http"])
    headers = [
        "protocol",
        "payload",
        "request bytes",
        "of samples",
        "server CPU ms",
        "latency ms",
        "decode ms",
    ]
    cells = [
        [
            r.protocol,
            r.payload,
            r.request_bytes,
            f"{r.request_bytes / base[r.protocol]:.3f}",
            r.server_cpu_ms,
            r.latency_ms,
            r.decode_ms,
        ]
        for r in rows
    ]
    return format_table(headers, cells)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m qwen3_aligner_tools.bench.encoded",
        description="AUDIO_FILE (WAV, FLAC, OGG, MP3) against float32 AUDIO: request bytes and "
        "server CPU per request, over HTTP and gRPC, against a tiny-checkpoint server.",
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="clip length (30)")
    parser.add_argument(
        "--rate",
        type=int,
        default=16000,
        help="the files' rate in Hz (16000; Opus takes 8000, 12000, 16000, 24000 or 48000)",
    )
    parser.add_argument("--channels", type=int, choices=(1, 2), default=1)
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds (6)")
    parser.add_argument("--block", type=int, default=5, help="requests per block (5)")
    parser.add_argument(
        "--checkpoint", default="tiny", help="tiny, trained, full or a folder / hub id (tiny)"
    )
    parser.add_argument(
        "--openai",
        action="store_true",
        help="also upload each file as multipart to the OpenAI-style front (its CPU counted)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Start a server, measure, print the table; 0 on success."""
    args = build_parser().parse_args(argv)
    from .checkpoints import resolve_checkpoint
    from .served import bench_server

    language = "English"
    text = transcript(args.seconds, language)
    payloads = make_payloads(args.seconds, args.rate, args.channels)
    log(f"{args.seconds:g} s at {args.rate} Hz, {args.channels} channel(s); {len(text)} chars")
    with tempfile.TemporaryDirectory(prefix="qwen3-aligner-encoded-") as tmp:
        choice = resolve_checkpoint(args.checkpoint, Path(tmp))
        log(f"starting tritonserver with the {choice.description}")
        with bench_server(choice.location, "KIND_CPU", log=log) as endpoints:
            rows = measure(endpoints, payloads, text, language, args.rounds, args.block)
            if args.openai:
                rows += measure_multipart(
                    endpoints, payloads, text, language, args.rounds, args.block
                )
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
