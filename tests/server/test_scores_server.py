"""Integration: SCORES, score/repaired and the quality metrics from a real tritonserver."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from cases import CASES
from qwen3_aligner_client.results import SCORE_TOLERANCE
from triton_calls import MODEL, build_inputs, infer_grpc, infer_http, parse

pytestmark = pytest.mark.integration

BATCH_TOLERANCE = SCORE_TOLERANCE


def check_scores(result: dict) -> None:
    scores = result["scores"]
    doc = result["document"]
    assert scores is not None and scores.dtype == np.float32
    assert scores.shape == (len(result["units"]),)
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    assert [w["score"] for w in doc["words"]] == pytest.approx(scores.tolist(), abs=1e-6)
    flags = [w["repaired"] for w in doc["words"]]
    assert all(isinstance(f, bool) for f in flags)
    assert doc["mean_score"] == pytest.approx(float(scores.mean()), abs=1e-6)
    assert doc["repaired_share"] == pytest.approx(sum(flags) / len(flags), abs=1e-6)


def flags(result: dict) -> list[bool]:
    return [w["repaired"] for w in result["document"]["words"]]


@pytest.fixture(scope="module")
def lone(server) -> dict[str, dict]:
    """Each case alone over HTTP."""
    return {
        c.name: infer_http(server.http_url, c.audio(), c.sample_rate, c.text, c.language)
        for c in CASES
    }


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_scores_in_range_deterministic_and_equal_over_http_and_grpc(server, lone, case):
    first = lone[case.name]
    check_scores(first)
    args = (case.audio(), case.sample_rate, case.text, case.language)
    again = infer_http(server.http_url, *args)
    over_grpc = infer_grpc(server.grpc_url, *args)
    for other in (again, over_grpc):
        check_scores(other)
        assert other["units"] == first["units"]
        np.testing.assert_array_equal(other["scores"], first["scores"])
        assert flags(other) == flags(first)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_scores_do_not_depend_on_batch_mates(server, lone, protocol):
    """24 requests in flight at once: each request's scores equal its lone ones (1e-5)."""
    picked = (CASES * 3)[:24]
    results: dict[int, dict] = {}
    if protocol == "http":
        with httpclient.InferenceServerClient(server.http_url, concurrency=24) as client:
            futures = {
                i: client.async_infer(
                    MODEL, build_inputs(httpclient, c.audio(), c.sample_rate, c.text, c.language)
                )
                for i, c in enumerate(picked)
            }
            results = {i: parse(f.get_result()) for i, f in futures.items()}
    else:
        done: dict[int, object] = {}
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            for i, c in enumerate(picked):
                client.async_infer(
                    MODEL,
                    build_inputs(grpcclient, c.audio(), c.sample_rate, c.text, c.language),
                    callback=lambda result, error, i=i: done.__setitem__(i, error or result),
                )
            deadline = time.monotonic() + 120
            while len(done) < len(picked) and time.monotonic() < deadline:
                time.sleep(0.05)
        assert len(done) == len(picked)
        results = {i: parse(r) for i, r in done.items()}
    for i, case in enumerate(picked):
        got, want = results[i], lone[case.name]
        assert got["units"] == want["units"], case.name
        assert flags(got) == flags(want), case.name
        np.testing.assert_allclose(got["scores"], want["scores"], rtol=0, atol=BATCH_TOLERANCE)


def test_cue_mode_requests_carry_scores(server):
    rate = 16000
    t = np.arange(12 * rate) / rate
    audio = (0.3 * np.sin(2 * np.pi * 3 * t) * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    cues = [
        {"start": 0.5, "end": 4.0, "text": "Hello there, world!"},
        {"start": 6.0, "end": 11.0, "text": "A second cue with more words."},
    ]
    inputs = build_inputs(httpclient, audio, rate, "", "en")
    segments = httpclient.InferInput("SEGMENTS", [1, 1], "BYTES")
    segments.set_data_from_numpy(np.array([[json.dumps(cues).encode()]], dtype=np.object_))
    with httpclient.InferenceServerClient(server.http_url) as client:
        result = parse(client.infer(MODEL, [*inputs, segments]))
    check_scores(result)
    assert len(result["units"]) == 9


def histogram_counts(metrics_url: str) -> dict[str, float]:
    counts = {}
    for line in requests.get(metrics_url, timeout=10).text.splitlines():
        for name in ("qwen3_aligner_request_mean_score", "qwen3_aligner_request_repaired_share"):
            if line.startswith(f"{name}_count{{") and f'model="{MODEL}"' in line:
                counts[name] = float(line.rsplit(" ", 1)[1])
    return counts


def test_quality_histograms_count_each_aligned_request(server):
    before = histogram_counts(server.metrics_url)
    case = CASES[4]
    for _ in range(3):
        infer_http(server.http_url, case.audio(), case.sample_rate, case.text, case.language)
    after = histogram_counts(server.metrics_url)
    assert set(after) == {
        "qwen3_aligner_request_mean_score",
        "qwen3_aligner_request_repaired_share",
    }
    for name, count in after.items():
        assert count - before.get(name, 0.0) >= 3, name
