"""The launcher's watchdog after a backend stub dies: the old server is killed within seconds (not
drained), restarts pause longer and longer and stop at a cap, and the restart count reaches the
new server's environment and the metrics port. Fake servers here (``bash`` and ``sleep``); the
restart of a real server is tested in test_robustness.py and test_deploy.py."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from qwen3_aligner_triton import metrics, serve, tritonserver
from qwen3_aligner_triton.triton_flags import ServerOptions
from qwen3_aligner_triton.tritonserver import (
    MAX_RESTARTS,
    RESTART_BACKOFF_MAX_SECONDS,
    RESTART_KILL_SECONDS,
    RESTART_WINDOW_SECONDS,
    RESTARTS_ENV,
    SHM_DIR,
    RestartPolicy,
    RunningServer,
    backend_stub_pids,
)

# --- the policy --------------------------------------------------------------------------------


def test_the_pause_doubles_up_to_its_ceiling():
    policy = RestartPolicy(first_delay=1.0, max_delay=30.0, max_restarts=100, window=600.0)
    delays = [policy.next_delay(now=float(i)) for i in range(8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_the_pause_starts_over_once_the_server_stayed_ready():
    policy = RestartPolicy(first_delay=1.0, max_restarts=100, stable_after=600.0)
    assert [policy.next_delay(now=t) for t in (0.0, 10.0, 20.0)] == [1.0, 2.0, 4.0]
    policy.ready(now=50.0)
    policy.ready(now=500.0)  # still ready: the first call counts
    assert policy.next_delay(now=649.0) == 8.0  # ready for 599 s only
    policy.ready(now=700.0)
    assert policy.next_delay(now=1300.0) == 1.0  # ready for 600 s: stable
    assert policy.next_delay(now=1310.0) == 2.0  # never ready in between


def test_past_the_cap_within_the_window_the_watchdog_gives_up():
    policy = RestartPolicy(max_restarts=3, window=600.0, stable_after=1e9)
    assert all(policy.next_delay(now=t) is not None for t in (0.0, 100.0, 200.0))
    assert policy.next_delay(now=599.0) is None  # a 4th within 600 s
    assert policy.recent(599.0) == 3
    # Once the first has left the window, one more is allowed (the refused one did not count).
    assert policy.next_delay(now=600.0) is not None
    assert policy.next_delay(now=601.0) is None


def test_the_defaults_are_sensible():
    policy = RestartPolicy()
    delays = [policy.next_delay(now=float(i)) for i in range(MAX_RESTARTS)]
    assert delays[0] == 1.0 and all(0 < d <= RESTART_BACKOFF_MAX_SECONDS for d in delays)
    assert policy.next_delay(now=float(MAX_RESTARTS)) is None
    assert 3 <= MAX_RESTARTS <= 10 and RESTART_WINDOW_SECONDS >= 300
    assert RESTART_KILL_SECONDS <= 10  # a few seconds, not --exit-timeout-secs


# --- the metric --------------------------------------------------------------------------------


def test_the_launcher_and_the_models_agree_on_the_variable():
    assert tritonserver.RESTARTS_ENV == metrics.RESTARTS_ENV


@pytest.mark.parametrize(
    ("environ", "count"), [({}, 0), ({RESTARTS_ENV: "3"}, 3), ({RESTARTS_ENV: "x"}, 0)]
)
def test_the_restart_count_is_read_from_the_environment(environ, count):
    assert metrics.server_restarts(environ) == count


def test_aligner_metrics_publish_the_restart_count(monkeypatch):
    import fake_pb_utils as pb

    def gauge(m: metrics.AlignerMetrics):
        family = pb.MetricFamily.families[metrics.SERVER_RESTARTS]
        assert family.kind == pb.MetricFamily.GAUGE
        (metric,) = [x for x in family.metrics if x is m._restarts]
        assert metric.labels == {"model": "qwen3_aligner", "version": "1"}
        return metric.value

    monkeypatch.delenv(RESTARTS_ENV, raising=False)
    first = metrics.AlignerMetrics(pb, "qwen3_aligner", "1")
    assert gauge(first) == 0
    monkeypatch.setenv(RESTARTS_ENV, "2")
    second = metrics.AlignerMetrics(pb, "qwen3_aligner", "1")
    assert gauge(second) == 2
    first.close()
    second.close()


# --- fake servers ------------------------------------------------------------------------------

# A "server" that ignores SIGTERM (as a tritonserver waiting for requests of a dead stub would
# not exit), with one backend "stub" (its name is all backend_stub_pids looks at) and one more
# child in its process group; it writes its restart count, then sleeps.
FAKE_SERVER = (
    "trap '' TERM\n"
    "(exec -a triton_python_backend_stub sleep 600) &\n"
    "sleep 600 &\n"
    'echo "restarts=${QWEN3_ALIGNER_SERVER_RESTARTS}"\n'
    "exec sleep 600\n"
)


class FakeServer(RunningServer):
    """A RunningServer around FAKE_SERVER that is always ready."""

    def _ready(self) -> bool:
        return True


def fake_server(tmp_path: Path, policy: RestartPolicy, **kwargs) -> FakeServer:
    opts = ServerOptions(model_repository=tmp_path)
    return FakeServer(command=["bash", "-c", FAKE_SERVER], options=opts, policy=policy, **kwargs)


def wait_until(condition, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"not within {timeout} s: {what}"
        time.sleep(0.02)
    return time.monotonic() - started


def alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def group_members(pgid: int) -> set[int]:
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.add(int(entry.name))
    return members


def stubs_noted(srv: RunningServer) -> set[int]:
    """Wait for the watchdog to note the current process's stub; returns it."""
    wait_until(lambda: srv.watch.baseline, 10, "the watchdog notes the stub")
    return set(srv.watch.baseline)


@pytest.fixture
def fast_watchdog(monkeypatch):
    monkeypatch.setattr(tritonserver, "WATCHDOG_INTERVAL_SECONDS", 0.05)


def test_a_server_that_lost_a_stub_is_killed_within_seconds_and_started_again(
    tmp_path, fast_watchdog
):
    said: list[str] = []
    srv = fake_server(tmp_path, RestartPolicy(first_delay=0.0), echo=said.append)
    region = SHM_DIR / f"{srv.options.shm_prefix}core_1"
    try:
        assert srv.restart_kill_grace == RESTART_KILL_SECONDS
        wait_until(lambda: "restarts=0" in srv.log_tail, 10, "the first server's count")
        (stub,) = stubs_noted(srv)
        old = srv.process
        members = group_members(old.pid)
        assert len(members) == 3, members  # the server, its stub and the other child
        region.write_bytes(b"x")
        os.kill(stub, signal.SIGKILL)
        took = wait_until(lambda: srv.restarts == 1, RESTART_KILL_SECONDS + 10, "a restart")
        # SIGTERM is ignored: it took the kill grace, and not much more; no --exit-timeout-secs.
        assert RESTART_KILL_SECONDS - 0.5 <= took < RESTART_KILL_SECONDS + 3, took
        assert old.returncode == -signal.SIGKILL
        assert not any(alive(p) for p in members), "the whole process group is killed"
        assert not region.exists(), "the old server's shared memory is cleaned"
        assert srv.process is not old and srv.process.poll() is None
        wait_until(lambda: "restarts=1" in srv.log_tail, 10, "the count in the new server")
        environ = Path(f"/proc/{srv.process.pid}/environ").read_bytes().split(b"\0")
        assert f"{RESTARTS_ENV}=1".encode() in environ
        assert backend_stub_pids(srv.process.pid).isdisjoint({stub})
        assert srv.wait(timeout=0) is None, "a restart is not an exit"
        assert srv.gave_up is None
        text = "\n".join(said)
        assert "restarting tritonserver (restart 1, after a 0 s pause)" in text
        assert f"watchdog: tritonserver (pid {old.pid}) stopped in" in text
        assert "watchdog: tritonserver restarted" in text
    finally:
        srv.stop(grace=1.0)
        region.unlink(missing_ok=True)
    assert srv.process.returncode == -signal.SIGKILL


def test_restarts_pause_and_past_the_cap_the_server_is_stopped_for_good(tmp_path, fast_watchdog):
    said: list[str] = []
    policy = RestartPolicy(first_delay=0.5, max_restarts=1)
    srv = fake_server(tmp_path, policy, echo=said.append, restart_kill_grace=0.2)
    try:
        (stub,) = stubs_noted(srv)
        os.kill(stub, signal.SIGKILL)
        took = wait_until(lambda: srv.restarts == 1, 10, "a restart")
        assert took >= 0.5 + 0.2 - 0.05, took  # the kill grace, then the pause
        (stub,) = stubs_noted(srv)
        last = srv.process
        os.kill(stub, signal.SIGKILL)
        wait_until(lambda: srv.wait(timeout=0) is not None, 10, "the server stopped for good")
        assert srv.wait(timeout=0) == -signal.SIGKILL
        assert srv.process is last and srv.restarts == 1
        assert srv.gave_up and "restarted 1 time(s) within the last 600 s" in srv.gave_up
        assert any("giving up: stopping tritonserver for good" in line for line in said)
        # The launcher reports the exit as a failure (serve.main then exits 1).
        assert serve.wait_for_exit(srv, threading.Event()) == -signal.SIGKILL
    finally:
        srv.stop(grace=1.0)


def test_a_stop_during_the_pause_starts_nothing(tmp_path, fast_watchdog):
    srv = fake_server(tmp_path, RestartPolicy(first_delay=60.0), restart_kill_grace=0.2)
    try:
        (stub,) = stubs_noted(srv)
        old = srv.process
        os.kill(stub, signal.SIGKILL)
        wait_until(lambda: old.returncode is not None, 10, "the old server killed")
        time.sleep(0.2)
        assert srv.wait(timeout=0) is None, "pausing before the restart is not an exit"
        srv.request_stop()
        assert srv.wait(timeout=5) == -signal.SIGKILL
        assert srv.process is old and srv.restarts == 0
    finally:
        srv.stop(grace=1.0)


# --- a real server -----------------------------------------------------------------------------


@pytest.mark.integration
def test_a_real_server_restarts_quickly_and_counts_the_restart_on_its_metrics_port(
    tmp_path, tiny_checkpoint
):
    """Kill the forward's stub: the server is stopped without waiting for the dead stub's
    requests, started again and ready, and both models publish the restart count."""
    import urllib.request

    from shared_fixtures import SERVER_READY_TIMEOUT, dedicated_server

    from qwen3_aligner_triton.contract import CORE_MODEL_NAME, MODEL_NAME
    from qwen3_aligner_triton.tritonserver import http_ready

    def restarts_published(url: str) -> dict[str, float] | None:
        try:  # the metrics port opens a moment after the HTTP port
            with urllib.request.urlopen(url, timeout=10) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        found = {}
        for line in text.splitlines():
            if line.startswith(metrics.SERVER_RESTARTS + "{"):
                labels, value = line.rsplit(" ", 1)
                model = labels.split('model="', 1)[1].split('"', 1)[0]
                found[model] = float(value)
        return found

    with dedicated_server(tmp_path, tiny_checkpoint) as srv:
        none_yet = {MODEL_NAME: 0.0, CORE_MODEL_NAME: 0.0}
        wait_until(lambda: restarts_published(srv.metrics_url) == none_yet, 30, "a count of 0")
        first = srv.running.process.pid
        (core,) = [
            p
            for p in backend_stub_pids(first)
            if CORE_MODEL_NAME.encode() in Path(f"/proc/{p}/cmdline").read_bytes()
        ]
        os.kill(core, signal.SIGKILL)
        started = time.monotonic()
        wait_until(lambda: srv.running.restarts == 1, 60, "the restart")
        stopped = time.monotonic() - started
        wait_until(
            lambda: http_ready("127.0.0.1", srv.running.http_port),
            SERVER_READY_TIMEOUT,
            "ready again",
        )
        print(f"old server stopped after {stopped:.1f} s, ready {time.monotonic() - started:.1f} s")
        # Stub noticed within a second, SIGTERM, SIGKILL after the grace; no 30 s drain.
        assert stopped < RESTART_KILL_SECONDS + 10, stopped
        counted = {MODEL_NAME: 1.0, CORE_MODEL_NAME: 1.0}
        wait_until(lambda: restarts_published(srv.metrics_url) == counted, 30, "the count")
        assert srv.running.process.pid != first and srv.running.wait(timeout=0) is None
