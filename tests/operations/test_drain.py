"""Stopping without dropping requests: the launcher's drain before tritonserver is signalled
(``tritonserver.drain_front``), the metrics it reads, and a stop of a real server with requests in
flight and clients that keep sending, over HTTP and gRPC. The front's refusal while stopping is
tested in test_front.py and test_model_py.py."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.request

import pytest

from qwen3_aligner_triton.contract import DRAIN_MARKER, MODEL_NAME
from qwen3_aligner_triton.front import STOPPING_MESSAGE
from qwen3_aligner_triton.triton_flags import ServerOptions, metrics_endpoint
from qwen3_aligner_triton.tritonserver import (
    RunningServer,
    drain_front,
    requests_arrived,
    requests_in_front,
)

SCRAPE = """\
# HELP nv_inference_pending_request_count Instantaneous number of pending requests
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{{model="qwen3_aligner",version="1"}} {pending}
nv_inference_pending_request_count{{model="qwen3_aligner_core",version="1"}} 7
# TYPE nv_inference_request_success counter
nv_inference_request_success{{model="qwen3_aligner",version="1"}} {arrived}
nv_inference_request_success{{model="qwen3_aligner_core",version="1"}} 40
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{{model="qwen3_aligner",reason="REJECTED",version="1"}} 2
# TYPE qwen3_aligner_requests_in_flight gauge
qwen3_aligner_requests_in_flight{{model="qwen3_aligner",version="1"}} {in_flight}
qwen3_aligner_requests_in_flight{{model="another_front",version="1"}} 5
"""


def scrape(pending: int, in_flight: int, arrived: int = 10) -> str:
    return SCRAPE.format(pending=pending, in_flight=in_flight, arrived=arrived)


def test_requests_in_front_adds_queued_and_in_flight_of_the_public_model_only():
    assert requests_in_front(scrape(2, 3)) == 5
    assert requests_in_front(scrape(0, 0)) == 0
    # No in-flight gauge: not a front of this project, nothing to wait on.
    without_gauge = "\n".join(ln for ln in scrape(4, 1).splitlines() if "in_flight" not in ln)
    assert requests_in_front(without_gauge) is None


def test_requests_arrived_counts_what_reached_the_public_model_refused_or_not():
    assert requests_arrived(scrape(0, 0, arrived=10)) == 12  # 10 answered + 2 rejected
    assert requests_arrived(scrape(0, 0, arrived=11)) == 13


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
    """Metrics texts in order (the last one repeats); counts the reads. Each look is the number
    of requests held, None for a read that fails, or (held, arrived)."""

    def __init__(self, *looks: int | tuple[int, int] | None):
        self.looks = list(looks)
        self.reads = 0

    def __call__(self) -> str | None:
        look = self.looks[min(self.reads, len(self.looks) - 1)]
        self.reads += 1
        if look is None:
            return None
        held, arrived = look if isinstance(look, tuple) else (look, 10)
        return scrape(0, held, arrived)


class Arriving(Scrapes):
    """A front that holds nothing while a client keeps sending: one more request on each look."""

    def __call__(self) -> str | None:
        self.reads += 1
        return scrape(0, 0, arrived=self.reads)


FAST = {"poll": 0.001, "settle": 0.05, "settle_max": 0.3}


def test_the_drain_refuses_new_requests_once_the_front_is_quiet_then_ends(tmp_path):
    """Signalled, tritonserver would go on serving (HTTP connections that clients keep open,
    gRPC) and then cut what it holds when its exit timeout runs out: so the front is told to
    refuse before the signal even when it emptied quickly."""
    said: list[str] = []
    marker = tmp_path / DRAIN_MARKER
    metrics = Scrapes(3, 2, 0, 1, 0, 0, 0)
    waited = drain_front(metrics, lambda: True, marker, 30.0, said.append, **FAST)
    assert metrics.reads >= 8  # one quiet look (then 1 again) is not enough; then 2 more
    assert marker.exists()
    assert waited >= FAST["settle"]
    assert said[0] == "stopping: serving the 3 request(s) the server holds first"
    assert said[-1].startswith("stopping: the server holds no request after")


def test_a_request_that_slipped_in_before_the_refusal_is_served_first(tmp_path):
    marker = tmp_path / DRAIN_MARKER
    metrics = Scrapes(2, 0, 0, (1, 11), (1, 11), (1, 11), (0, 11), (0, 11))
    drain_front(metrics, lambda: True, marker, 30.0, print, **FAST)
    assert marker.exists()
    assert metrics.reads >= 8  # waited until it was answered


def test_requests_that_keep_arriving_put_the_signal_off_for_a_bounded_time(tmp_path):
    marker = tmp_path / DRAIN_MARKER
    waited = drain_front(Arriving(), lambda: True, marker, 30.0, print, **FAST)
    assert FAST["settle_max"] <= waited < FAST["settle_max"] + 1
    # Once they stop arriving, a calm moment of `settle` seconds is enough.
    calm = Scrapes(0, 0, (0, 11), (0, 12), (0, 13), (0, 13))
    waited = drain_front(calm, lambda: True, tmp_path / "other", 30.0, print, **FAST)
    assert FAST["settle"] <= waited < FAST["settle_max"]


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


def test_a_failed_read_in_the_middle_does_not_end_the_drain(tmp_path):
    """A scrape that times out under load must not signal tritonserver over the requests it
    holds; metrics that stay unreadable end the wait after a few looks."""
    blip = Scrapes(2, None, None, 2, 0, 0, 0)
    drain_front(blip, lambda: True, tmp_path / DRAIN_MARKER, 30.0, print, **FAST)
    assert blip.reads >= 7
    gone = Scrapes(2, None)
    assert drain_front(gone, lambda: True, tmp_path / "other", 30.0, print, **FAST) < 1
    assert gone.reads == 4  # one good read, then three failed ones


# The launcher signals tritonserver only once the front refuses: a stand-in server that exits 0 on
# SIGTERM if the drain marker exists then, 3 if not. Metrics off: no drain to wait on.
MARKER_CHECK = """
trap 'if [ -e "$MARKER" ]; then exit 0; else exit 3; fi' TERM
echo up
while :; do sleep 0.05; done
"""


def test_the_launcher_makes_the_front_refuse_before_it_signals_tritonserver(tmp_path):
    (tmp_path / MODEL_NAME).mkdir()
    marker = tmp_path / MODEL_NAME / DRAIN_MARKER
    srv = RunningServer(
        command=["bash", "-c", MARKER_CHECK, "tritonserver", "--allow-metrics=false"],
        options=ServerOptions(model_repository=tmp_path, watchdog=False),
        env={"PATH": "/usr/bin:/bin", "MARKER": str(marker)},
    )
    try:
        deadline = time.monotonic() + 10
        while "up" not in srv.log_tail:
            assert time.monotonic() < deadline, list(srv.log_tail)
            time.sleep(0.02)
        srv.request_stop()
        assert srv.wait(timeout=10) == 0
    finally:
        srv.stop(grace=1.0)
    assert not marker.exists()  # cleaned once the server is gone


# --- a real server -----------------------------------------------------------------------------


def held_by_front(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    return requests_in_front(text) or 0


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_stop_answers_every_request_in_flight_and_refuses_what_follows(
    protocol, tmp_path, tiny_checkpoint
):
    """A stop as SIGTERM or Ctrl-C makes it (``request_stop``) with 8 long requests in flight,
    a client that keeps sending one request every 0.3 s over a connection it keeps open, and an
    idle HTTP connection held open as proxies and connection pools do. Every request in flight
    gets its full result. The follow-ups are served while the server still holds requests, then
    refused at once with UNAVAILABLE (HTTP 503) and the front's message; none is sent to a
    tritonserver that was already signalled: tritonserver 2.51 goes on serving over open HTTP
    connections and gRPC for up to --exit-timeout-secs after the signal and then cuts what is in
    flight (a connection error over HTTP; gRPC answers NOT_FOUND while the models unload).
    Finally tritonserver exits 0."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from cases import CASES
    from shared_fixtures import dedicated_server
    from triton_calls import MODEL, build_inputs, parse
    from tritonclient.utils import InferenceServerException

    module = httpclient if protocol == "http" else grpcclient
    long_case = next(c for c in CASES if c.seconds == 60.0)
    short_case = CASES[5]

    def inputs(case):
        return build_inputs(module, case.audio(), case.sample_rate, case.text, case.language)

    def client(srv):
        if protocol == "http":
            return httpclient.InferenceServerClient(srv.http_url, network_timeout=300)
        return grpcclient.InferenceServerClient(srv.grpc_url)

    def outcome(call) -> tuple[str, object]:
        try:
            return "ok", parse(call())["units"]
        except InferenceServerException as e:
            return "refused", (str(e.status()), e.message() or "")
        except Exception as e:  # a connection cut, reset or refused
            return "error", repr(e)

    with dedicated_server(tmp_path, tiny_checkpoint, max_forward_batch=1) as srv:
        signalled: list[float] = []
        srv.running.echo = lambda line: (
            signalled.append(time.monotonic()) if "Signal (15) received" in line else None
        )
        with client(srv) as c:
            reference = parse(c.infer(MODEL, inputs(long_case)))["units"]
        host, port = srv.http_url.split(":")
        proxy = http.client.HTTPConnection(host, int(port), timeout=30)
        proxy.request("GET", "/v2/health/live")
        live = proxy.getresponse()
        live.read()
        assert live.status == 200  # an idle keep-alive connection from now on

        in_flight: list[tuple[str, object]] = []

        def one() -> None:
            with client(srv) as c:
                in_flight.append(outcome(lambda: c.infer(MODEL, inputs(long_case))))

        follow_ups: list[tuple[float, float, tuple[str, object]]] = []
        stop_requested = threading.Event()

        def keep_sending() -> None:
            stop_requested.wait(60)
            with client(srv) as c:
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    sent = time.monotonic()
                    result = outcome(lambda: c.infer(MODEL, inputs(short_case)))
                    follow_ups.append((sent, time.monotonic(), result))
                    if result[0] != "ok":
                        return
                    time.sleep(0.3)

        threads = [threading.Thread(target=one) for _ in range(8)]
        threads.append(threading.Thread(target=keep_sending))
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while held_by_front(srv.metrics_url) < 3:
            assert time.monotonic() < deadline, "the server never held the requests"
            time.sleep(0.02)
        stop_at = time.monotonic()
        srv.running.request_stop()
        stop_requested.set()
        for t in threads:
            t.join(timeout=150)
        proxy.close()
        code = srv.running.wait(timeout=120)
        stopped_after = time.monotonic() - stop_at

    assert len(in_flight) == 8
    for kind, result in in_flight:
        assert kind == "ok", result
        assert result == reference
    assert follow_ups, "no follow-up request was sent"
    *served, (last_sent, last_answered, (kind, result)) = follow_ups
    for sent, _, (served_kind, units) in served:
        assert served_kind == "ok" and units
        assert not signalled or sent < signalled[0], "served by a tritonserver already signalled"
    status, message = result if kind == "refused" else ("", result)
    assert kind == "refused" and status in ("503", "StatusCode.UNAVAILABLE"), (kind, result)
    assert STOPPING_MESSAGE in message
    assert last_answered - last_sent < 5
    assert code == 0, srv.running.failure_summary()
    assert stopped_after < 60
