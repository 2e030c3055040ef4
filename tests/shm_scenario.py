"""A server in a /dev/shm of a given size, sent maximal requests (test_shared_memory_server.py).

Run inside a mount namespace whose /dev/shm is a small tmpfs (``unshare -m``, then ``mount -t
tmpfs -o size=... tmpfs /dev/shm``): starts a real tritonserver on the tiny checkpoint with two
front instances, reads the longest audio it accepts from its log, then sends, in turn, a maximal
request to each front, a burst of simultaneous maximal requests, a request one sample over the
limit and a run of ordinary requests. Prints one JSON document: the outcome of every request
(``ok``, or the HTTP status and message) and the Python-backend regions' sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from qwen3_aligner_triton.repository import Placement, render_repository  # noqa: E402
from qwen3_aligner_triton.triton_flags import loopback_options  # noqa: E402
from qwen3_aligner_triton.tritonserver import shm_regions, start  # noqa: E402

LOWERED = re.compile(r"max_audio_samples lowered from \d+ to (\d+)")


def inputs(samples: int, text: str) -> list:
    audio = (np.random.default_rng(samples).standard_normal(samples) * 0.1).astype(np.float32)
    tensors = []
    for name, array, dtype in (
        ("AUDIO", audio[None, :], "FP32"),
        ("TEXT", np.array([[text.encode()]], dtype=object), "BYTES"),
        ("LANGUAGE", np.array([[b"English"]], dtype=object), "BYTES"),
    ):
        tensor = httpclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array, binary_data=True)
        tensors.append(tensor)
    return tensors


def outcome(url: str, samples: int, text: str) -> str:
    client = httpclient.InferenceServerClient(url, network_timeout=600, connection_timeout=600)
    try:
        client.infer("qwen3_aligner", inputs(samples, text))
        return "ok"
    except InferenceServerException as e:
        return f"{e.status()}: {e.message()}"
    finally:
        client.close()


def region_bytes(prefix: str) -> dict[str, int]:
    return {os.path.basename(path): os.stat(path).st_size for path in shm_regions(prefix)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--max-audio-seconds", default="600")
    parser.add_argument("--burst", type=int, default=6)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="qwen3-aligner-shm-"))
    parameters = {
        "checkpoint": args.checkpoint,
        "max_audio_seconds": args.max_audio_seconds,
        "max_text_chars": "1000",
        "max_segments_bytes": "10000",
        "warmup": "false",
    }
    repo = render_repository(
        folder / "repo", Placement("KIND_CPU", 1), parameters, front_instances=2
    )
    opts = loopback_options(repo)
    server = start(opts)
    report: dict = {}
    try:
        server.wait_ready(180.0)
        lowered = [int(m.group(1)) for m in LOWERED.finditer("\n".join(server.log_tail))]
        limit = lowered[0] if lowered else int(float(args.max_audio_seconds) * 16000)
        report["limit"] = limit
        report["lowered"] = bool(lowered)
        url = f"127.0.0.1:{opts.http_port}"
        text = " ".join(["hello world"] * 40)
        report["maximal"] = [outcome(url, limit, text) for _ in range(4)]
        with ThreadPoolExecutor(args.burst) as pool:
            burst = pool.map(lambda _: outcome(url, limit, text), range(args.burst))
            report["burst"] = list(burst)
        report["over"] = outcome(url, limit + 1, text)
        report["ordinary"] = [outcome(url, 16000 * 5, "hello world again") for _ in range(8)]
        report["regions"] = region_bytes(opts.shm_prefix)
    finally:
        report["exit"] = server.stop()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
