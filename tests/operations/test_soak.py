"""A short version of ``scripts/soak`` against the session's real server."""

import pytest

from qwen3_aligner_tools.soak import MAX_GROWTH, run_soak

pytestmark = pytest.mark.integration

SHORT_SOAK_SECONDS = 20.0
WARMUP_SECONDS = 30.0  # every front instance and the core warm up on their own


def test_short_soak_has_no_unexpected_errors_and_no_memory_growth(server):
    # First contact with every request shape grows the server's heap once (in each front
    # instance and in the core); that is warm-up, not growth. The measured run starts after it.
    run_soak(server.http_url, server.grpc_url, duration=WARMUP_SECONDS, concurrency=16)
    report = run_soak(
        server.http_url,
        server.grpc_url,
        duration=SHORT_SOAK_SECONDS,
        concurrency=16,
        server_pid=server.running.process.pid,
    )
    print("\n".join(report.lines()))
    assert report.unexpected == 0, report.unexpected_examples[:5]
    assert report.valid_ok > 0
    assert report.invalid_rejected > 0
    assert report.latency_ms["p99"] >= report.latency_ms["p50"] > 0
    if report.memory_growth is not None:
        assert report.memory_growth < MAX_GROWTH


def test_report_fails_on_unexpected_errors():
    from qwen3_aligner_tools.soak import SoakReport

    report = SoakReport(duration_s=1, concurrency=1, requests=2, valid_ok=1, unexpected=1)
    assert not report.passed
    assert SoakReport(duration_s=1, concurrency=1, requests=1, valid_ok=1).passed
    grown = SoakReport(duration_s=1, concurrency=1, valid_ok=1, memory_growth=0.2)
    assert not grown.passed
