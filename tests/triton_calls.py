"""Minimal tritonclient calls used by the integration tests (HTTP and gRPC)."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from qwen3_aligner_tools.wire import infer_inputs

MODEL = "qwen3_aligner"


def build_inputs(module, audio: np.ndarray, sample_rate: int | None, text: str, language: str):
    return infer_inputs(module, audio, sample_rate, text, language)


def parse(result) -> dict:
    words = [w.decode("utf-8") for w in result.as_numpy("WORDS").reshape(-1)]
    starts = result.as_numpy("START_TIMES").reshape(-1)
    ends = result.as_numpy("END_TIMES").reshape(-1)
    doc = json.loads(result.as_numpy("ALIGNMENT").reshape(-1)[0])
    scores = result.as_numpy("SCORES")
    return {
        "scores": None if scores is None else scores.reshape(-1),
        "units": [(w, float(s), float(e)) for w, s, e in zip(words, starts, ends, strict=True)],
        "starts": starts,
        "ends": ends,
        "document": doc,
    }


def infer_http(url: str, audio, sample_rate, text, language) -> dict:
    with httpclient.InferenceServerClient(url) as client:
        return parse(
            client.infer(MODEL, build_inputs(httpclient, audio, sample_rate, text, language))
        )


def infer_grpc(url: str, audio, sample_rate, text, language) -> dict:
    with grpcclient.InferenceServerClient(url) as client:
        return parse(
            client.infer(MODEL, build_inputs(grpcclient, audio, sample_rate, text, language))
        )


def as_float32(units) -> list[tuple[str, float, float]]:
    """Upstream (text, start, end) with times rounded through float32, as the tensors carry them."""
    return [(t, float(np.float32(s)), float(np.float32(e))) for t, s, e in units]


def forward_passes(metrics_url: str) -> tuple[float, float]:
    """(forward passes, passes of one clip) from the core's batch-size histogram."""
    from qwen3_aligner_tools.bench.shape import parse_core_passes

    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        passes = parse_core_passes(resp.read().decode())
    return passes.passes, passes.by_bucket[1]
