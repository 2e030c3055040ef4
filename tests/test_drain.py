"""Stopping without dropping requests: the launcher's drain before tritonserver is signalled
(``tritonserver.drain_front``) and the metrics it reads. The front's refusal while stopping is
tested in test_front.py and test_model_py.py, the drain against a real server in
test_robustness.py."""

from __future__ import annotations

import time

import pytest

from qwen3_aligner_triton.tritonserver import (
    DRAIN_MARKER,
    drain_front,
    metrics_endpoint,
    requests_in_front,
)

SCRAPE = """\
# HELP nv_inference_pending_request_count Instantaneous number of pending requests
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{{model="qwen3_aligner",version="1"}} {pending}
nv_inference_pending_request_count{{model="qwen3_aligner_core",version="1"}} 7
# TYPE qwen3_aligner_requests_in_flight gauge
qwen3_aligner_requests_in_flight{{model="qwen3_aligner",version="1"}} {in_flight}
qwen3_aligner_requests_in_flight{{model="another_front",version="1"}} 5
"""


def scrape(pending: int, in_flight: int) -> str:
    return SCRAPE.format(pending=pending, in_flight=in_flight)


def test_requests_in_front_adds_queued_and_in_flight_of_the_public_model_only():
    assert requests_in_front(scrape(2, 3)) == 5
    assert requests_in_front(scrape(0, 0)) == 0
    # No in-flight gauge: not a front of this project, nothing to wait on.
    without_gauge = "\n".join(ln for ln in scrape(4, 1).splitlines() if "in_flight" not in ln)
    assert requests_in_front(without_gauge) is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ("127.0.0.1", 8002)),
        (["--metrics-port=9", "--metrics-port=9102"], ("127.0.0.1", 9102)),
        (["--http-address=10.0.0.5"], ("10.0.0.5", 8002)),
        (["--http-address=10.0.0.5", "--metrics-address=[::]"], ("::1", 8002)),
        (["--allow-metrics=false"], None),
        (["--allow-metrics=false", "--allow-metrics=true"], ("127.0.0.1", 8002)),
    ],
)
def test_metrics_endpoint_follows_the_last_flag(args, expected):
    assert metrics_endpoint(["tritonserver", *args]) == expected


class Scrapes:
    """Metrics texts in order (the last one repeats); counts the reads."""

    def __init__(self, *held: int | None):
        self.held = list(held)
        self.reads = 0

    def __call__(self) -> str | None:
        value = self.held[min(self.reads, len(self.held) - 1)]
        self.reads += 1
        return None if value is None else scrape(0, value)


def test_the_drain_ends_once_the_front_is_quiet_twice(tmp_path):
    said: list[str] = []
    marker = tmp_path / DRAIN_MARKER
    metrics = Scrapes(3, 2, 0, 1, 0, 0, 9)
    drain_front(metrics, lambda: True, marker, 30.0, said.append, poll=0.001)
    assert metrics.reads == 6  # one quiet look (then 1 again) is not enough
    assert not marker.exists()  # quiet well inside half the budget: nothing was refused
    assert said[0] == "stopping: serving the 3 request(s) the server holds first"
    assert said[-1].startswith("stopping: the server holds no request after")


def test_a_busy_front_refuses_new_requests_after_half_the_budget_then_gives_up(tmp_path):
    said: list[str] = []
    marker = tmp_path / DRAIN_MARKER
    started = time.monotonic()
    waited = drain_front(Scrapes(4), lambda: True, marker, 0.4, said.append, poll=0.01)
    assert 0.4 <= waited < 5 and time.monotonic() - started >= 0.4
    assert marker.exists()
    assert "stopping: 4 request(s) still held; refusing new ones" in said
    assert said[-1] == "stopping: 4 request(s) still held after 0 s"


def test_the_drain_does_not_wait_on_what_it_cannot_see(tmp_path):
    marker = tmp_path / DRAIN_MARKER
    unreadable = Scrapes(None)
    assert drain_front(unreadable, lambda: True, marker, 30.0, print, poll=0.001) < 1
    assert unreadable.reads == 1
    exited = Scrapes(5)
    assert drain_front(exited, lambda: False, marker, 30.0, print, poll=0.001) < 1
    assert exited.reads == 0 and not marker.exists()
