"""Starting, watching, draining and stopping a real ``tritonserver`` (the supervisor).

:func:`start` runs the server found by :mod:`~qwen3_aligner_triton.triton_install` with the
command line of :mod:`~qwen3_aligner_triton.triton_flags`; :class:`RunningServer` waits for it to
be ready, restarts it when a backend stub dies (the watchdog), drains the front before a stop and
cleans the server's shared-memory regions afterwards.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .contract import CORE_MODEL_NAME, DRAIN_MARKER, MODEL_NAME
from .triton_flags import (
    EXIT_TIMEOUT_SECONDS,
    SHM_PREFIX,
    ServerOptions,
    build_command,
    flag_values,
    http_endpoint,
    metrics_endpoint,
)
from .triton_install import ServerError, TritonInstallation, locate, server_environment

MODELS = (CORE_MODEL_NAME, MODEL_NAME)  # load order: the public model needs the core
SHM_DIR = Path("/dev/shm")
READY_POLL_SECONDS = 0.25
LOG_TAIL_LINES = 400
# A stop drains the front first (up to the exit timeout), then tritonserver drains what is left.
STOP_GRACE_SECONDS = 2.0 * EXIT_TIMEOUT_SECONDS + 15  # after a stop request, SIGKILL
DRAIN_POLL_SECONDS = 0.1
# Once signalled, tritonserver 2.51 goes on serving over HTTP connections that clients keep open
# (and over gRPC) for up to --exit-timeout-secs, then cuts them. So the drain ends with the front
# refusing (UNAVAILABLE) and tritonserver is signalled once the front has held nothing and no
# request has reached it for DRAIN_SETTLE_SECONDS; with clients that keep sending (each refused
# at once), DRAIN_SETTLE_MAX_SECONDS after the refusing began.
DRAIN_SETTLE_SECONDS = 0.5
DRAIN_SETTLE_MAX_SECONDS = 2.0
DRAIN_UNREADABLE_LOOKS = 3  # failed metric reads in a row that end a drain (after one succeeded)
IN_FLIGHT_METRIC = "qwen3_aligner_requests_in_flight"  # metrics.IN_FLIGHT
PENDING_METRIC = "nv_inference_pending_request_count"
# Triton counts each request that reached a model in one of these (refused ones included).
ARRIVAL_METRICS = ("nv_inference_request_success", "nv_inference_request_failure")
WATCHDOG_INTERVAL_SECONDS = 1.0
SHUTDOWN_GRACE_SECONDS = 10.0  # stubs gone, server not ready and still running: a crash
RESTART_READY_TIMEOUT_SECONDS = 900.0  # a restarted server must be ready again within this
# A server that lost a stub is not drained: the dead stub's requests can never finish, so waiting
# --exit-timeout-secs for them only delays the restart. SIGTERM, then SIGKILL after this.
RESTART_KILL_SECONDS = 5.0
# Pause before each restart: 1 s, doubled for each restart since the server last stayed up for
# RESTART_STABLE_SECONDS, at most RESTART_BACKOFF_MAX_SECONDS.
RESTART_BACKOFF_FIRST_SECONDS = 1.0
RESTART_BACKOFF_MAX_SECONDS = 30.0
RESTART_STABLE_SECONDS = 600.0
# More than MAX_RESTARTS restarts within RESTART_WINDOW_SECONDS: the watchdog gives up, stops the
# server and the launcher exits non-zero, for the orchestrator to restart the container.
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 600.0
# How often the watchdog has restarted the server, in the environment of each server it starts
# (the models publish it as the gauge metrics.SERVER_RESTARTS).
RESTARTS_ENV = "QWEN3_ALIGNER_SERVER_RESTARTS"  # metrics.RESTARTS_ENV
STUB_NAME = b"triton_python_backend_stub"


def _model_series(
    metrics_text: str, names: Sequence[str], model: str
) -> Iterable[tuple[str, float]]:
    """(metric name, value) of each series of ``names`` labelled with ``model``."""
    for line in metrics_text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("{")
        if name not in names:
            continue
        labels, _, value = rest.rpartition("}")
        if f'model="{model}"' not in labels.split(","):
            continue
        try:
            yield name, float(value.split()[0])
        except (IndexError, ValueError):
            continue


def requests_in_front(metrics_text: str, model: str = MODEL_NAME) -> int | None:
    """Requests the public model holds, from a Prometheus scrape: those waiting in Triton's queue
    plus those the front instances have accepted and not answered. None when the front does not
    export its in-flight gauge (metrics of another repository)."""
    total = 0.0
    seen = False
    for name, value in _model_series(metrics_text, (IN_FLIGHT_METRIC, PENDING_METRIC), model):
        seen = seen or name == IN_FLIGHT_METRIC
        total += value
    return round(total) if seen else None


def requests_arrived(metrics_text: str, model: str = MODEL_NAME) -> int:
    """How many requests have reached the public model so far (answered, refused or failed), from
    a Prometheus scrape; it changes whenever one more arrives."""
    return round(sum(value for _, value in _model_series(metrics_text, ARRIVAL_METRICS, model)))


def scrape(host: str, port: int, timeout: float = 2.0) -> str | None:
    """The Prometheus text of the server whose metrics are at ``host:port``; None when they
    cannot be read."""
    where = f"[{host}]" if ":" in host else host
    try:
        with urllib.request.urlopen(f"http://{where}:{port}/metrics", timeout=timeout) as r:
            return r.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


def http_ready(host: str, port: int, path: str = "/v2/health/ready", timeout: float = 2.0) -> bool:
    """True when ``GET path`` answers 200."""
    try:
        where = f"[{host}]" if ":" in host else host
        with urllib.request.urlopen(f"http://{where}:{port}{path}", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def backend_stub_pids(server_pid: int) -> set[int]:
    """PIDs of the Python-backend stub processes started by the server ``server_pid``."""
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if STUB_NAME not in cmdline or "State:\tZ" in status:
            continue
        for line in status.splitlines():
            if line.startswith("PPid:") and int(line.split()[1]) == server_pid:
                pids.add(int(entry.name))
    return pids


def shm_regions(prefix: str = SHM_PREFIX) -> set[str]:
    """Python-backend shared-memory regions in ``/dev/shm`` whose names start with ``prefix``
    (default: every server's)."""
    return {str(p) for p in SHM_DIR.glob(glob.escape(prefix) + "*")}


def close_front(marker: Path, say: Callable[[str], None], why: str) -> bool:
    """Create ``marker``: the front refuses what reaches it from then on with UNAVAILABLE. Says
    ``why`` when it creates it; False when it cannot."""
    if marker.exists():
        return True
    try:
        marker.touch()
    except OSError as e:
        say(f"stopping: cannot refuse new requests ({e})")
        return False
    if why:
        say(why)
    return True


def drain_front(
    read_metrics: Callable[[], str | None],
    running: Callable[[], bool],
    marker: Path,
    budget: float,
    say: Callable[[str], None],
    poll: float = DRAIN_POLL_SECONDS,
    settle: float = DRAIN_SETTLE_SECONDS,
    settle_max: float = DRAIN_SETTLE_MAX_SECONDS,
) -> float:
    """Wait until the public model holds no request, before a stop signals tritonserver (Triton
    2.51 refuses the front's calls to the core once it unloads the models, and cuts the HTTP
    connections still open when its own exit timeout runs out). Returns the seconds it took.

    While the front holds requests everything is served, requests that keep arriving included
    (behind a load balancer they stop once the endpoint is withdrawn). If the front is still
    busy after half of ``budget``, ``marker`` is created: the front refuses what reaches it from
    then on with UNAVAILABLE, and the requests it holds get the rest of the budget. Once the front
    holds nothing on two looks in a row, ``marker`` is created as well (whatever reaches the
    server after this is refused, never accepted and then cut by tritonserver's own stop), and
    the wait ends when the front has again held nothing on two looks (a request that passed the
    front's check just before is served) and no request has reached the model for ``settle``
    seconds, or ``settle_max`` seconds after the refusing began when clients keep sending. Every
    wait ends at ``budget``. Metrics that cannot be read end it at once (nothing to wait on);
    once they could be read, DRAIN_UNREADABLE_LOOKS failed reads in a row do."""
    started = time.monotonic()
    quiet = 0  # looks in a row at a front holding nothing
    unreadable = 0  # failed reads in a row
    readable = False
    announced = False
    closing_since: float | None = None  # the front held nothing: refusing before the signal
    arrived: int | None = None
    calm_since = started  # when the last request reached the model (or closing began)
    last_held: int | None = None
    while running():
        text = read_metrics()
        held = None if text is None else requests_in_front(text)
        now = time.monotonic()
        waited = now - started
        if held is None:
            unreadable += 1
            if not readable or unreadable >= DRAIN_UNREADABLE_LOOKS:
                break
        else:
            readable, unreadable, last_held = True, 0, held
            quiet = quiet + 1 if held == 0 else 0
            count = requests_arrived(text)
            if count != arrived:
                arrived, calm_since = count, now
            if held and not announced:
                say(f"stopping: serving the {held} request(s) the server holds first")
                announced = True
            if closing_since is None:
                if quiet >= 2:
                    close_front(marker, say, "")
                    closing_since = calm_since = now
                    quiet = 0
            elif quiet >= 2 and (now - calm_since >= settle or now - closing_since >= settle_max):
                break
            if held and waited >= budget / 2:
                busy = f"stopping: {held} request(s) still held; refusing new ones"
                close_front(marker, say, busy)
        if waited >= budget:
            say(f"stopping: {last_held} request(s) still held after {budget:.0f} s")
            break
        time.sleep(poll)
    waited = time.monotonic() - started
    if announced and closing_since is not None and quiet >= 2:
        say(f"stopping: the server holds no request after {waited:.1f} s")
    return waited


@dataclass
class StubWatch:
    """Tells from the backend stub PIDs (and readiness) when the server has lost a stub.

    Triton 2.51 goes on serving after a stub dies and fails every request of that model instance;
    it may go on reporting ready or not (a forward-only model called through BLS turns the server
    not ready). Stubs are noted once the server is ready; while none is seen (not yet started, or
    another process model) the watch keeps looking instead of giving up. A stub lost while the
    server reports ready is a crash at once; one lost while it is not ready may belong to a
    shutdown, which ends the process within seconds, so it counts as a crash only when the stubs
    stay missing for ``grace`` seconds with the server still running.
    """

    baseline: set[int] | None = None
    grace: float = SHUTDOWN_GRACE_SECONDS
    missing_since: float | None = None

    def observe(
        self, stubs: set[int], ready: Callable[[], bool], now: float | None = None
    ) -> set[int]:
        """The stubs lost since the last observation, once they count as a crash."""
        if not self.baseline:
            if stubs and ready():
                self.baseline = set(stubs)
            return set()
        lost = self.baseline - stubs
        if not lost:
            self.baseline = set(stubs)
            self.missing_since = None
            return set()
        if ready():
            return lost
        now = time.monotonic() if now is None else now
        if self.missing_since is None:
            self.missing_since = now
        return lost if now - self.missing_since >= self.grace else set()


@dataclass
class RestartPolicy:
    """Whether the watchdog may restart the server once more, and after what pause.

    The pause is ``first_delay`` seconds, doubled for every restart since the server last counted
    as stable (ready for ``stable_after`` seconds after its last restart), at most ``max_delay``.
    A restart asked for when ``max_restarts`` were already granted within the last ``window``
    seconds is refused: a server that keeps losing its stubs is better restarted with its
    container (fresh memory, maybe another node) than in a loop. Times are ``time.monotonic()``.
    """

    first_delay: float = RESTART_BACKOFF_FIRST_SECONDS
    max_delay: float = RESTART_BACKOFF_MAX_SECONDS
    max_restarts: int = MAX_RESTARTS
    window: float = RESTART_WINDOW_SECONDS
    stable_after: float = RESTART_STABLE_SECONDS
    granted: list[float] = field(default_factory=list)  # restarts granted within the window
    streak: int = 0  # restarts since the server last counted as stable
    ready_since: float | None = None  # when the server (last restarted) became ready

    def ready(self, now: float) -> None:
        """The server is ready (again); called while it stays so, the first call counts."""
        if self.ready_since is None:
            self.ready_since = now

    def recent(self, now: float) -> int:
        """Restarts granted within the window that ends ``now``."""
        return sum(1 for t in self.granted if now - t < self.window)

    def next_delay(self, now: float) -> float | None:
        """Seconds to pause before the restart asked for at ``now`` (which is then counted), or
        None when it would exceed the cap: give up."""
        if self.ready_since is not None and now - self.ready_since >= self.stable_after:
            self.streak = 0
        self.ready_since = None
        self.granted = [t for t in self.granted if now - t < self.window]
        if len(self.granted) >= self.max_restarts:
            return None
        self.granted.append(now)
        delay = min(self.max_delay, self.first_delay * 2.0 ** min(self.streak, 30))
        self.streak += 1
        return delay


@dataclass
class RunningServer:
    """A started ``tritonserver`` whose output is echoed and remembered; with the watchdog on,
    the process is restarted (same command) when one of its backend stubs dies."""

    command: list[str]
    options: ServerOptions
    env: dict[str, str] | None = None
    echo: Callable[[str], None] | None = None
    log_tail: collections.deque = field(
        default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES)
    )
    restart_ready_timeout: float = RESTART_READY_TIMEOUT_SECONDS
    restart_kill_grace: float = RESTART_KILL_SECONDS  # SIGTERM to SIGKILL when stubs are lost
    policy: RestartPolicy = field(default_factory=RestartPolicy)

    restarts: int = 0  # how often the watchdog restarted the server
    gave_up: str | None = None  # why the watchdog stopped the server for good, if it did

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._restarting = False
        self._drain_started = False
        self.watch = StubWatch()  # the stubs of the running process (seeded when it is ready)
        self.host, self.http_port = http_endpoint(self.command)
        self.process = self._spawn()
        if self.options.watchdog:
            threading.Thread(target=self._watch, daemon=True).start()

    @property
    def drain_marker(self) -> Path:
        """The file whose presence tells the front to refuse new requests (see request_stop)."""
        return Path(self.options.model_repository) / MODEL_NAME / DRAIN_MARKER

    def _remove_drain_marker(self) -> None:
        with contextlib.suppress(OSError):
            self.drain_marker.unlink()

    def _spawn(self, restarts: int = 0) -> subprocess.Popen:
        """Start the command; ``restarts``: how often the watchdog restarted it before."""
        self._remove_drain_marker()  # left by a stop that was cut short
        env = dict(os.environ if self.env is None else self.env)
        env[RESTARTS_ENV] = str(restarts)
        process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: a kill takes its stubs along
        )
        self._reader = threading.Thread(target=self._pump, args=(process,), daemon=True)
        self._reader.start()
        return process

    def _say(self, message: str) -> None:
        self.log_tail.append(message)
        if self.echo is not None:
            self.echo(message)

    def _ready(self) -> bool:
        return http_ready(self.host, self.http_port)

    def _watch(self) -> None:
        """Restart the server when one of its backend stubs dies (see RestartPolicy)."""
        restarted_at: float | None = None
        while not self._stopping.wait(WATCHDOG_INTERVAL_SECONDS):
            process = self.process
            if process.poll() is not None:
                return  # exited for good: wait() reports it
            watch = self.watch
            lost = watch.observe(backend_stub_pids(process.pid), self._ready)
            if watch.baseline:
                self.policy.ready(time.monotonic())
                restarted_at = None
            elif (
                restarted_at is not None
                and time.monotonic() - restarted_at > self.restart_ready_timeout
            ):
                self._give_up(
                    process,
                    f"the restarted server is not ready after {self.restart_ready_timeout:.0f} s",
                )
                return
            if not lost:
                continue
            now = time.monotonic()
            delay = self.policy.next_delay(now)
            if delay is None:
                self._give_up(
                    process,
                    f"backend stub process(es) {sorted(lost)} exited, and the server was "
                    f"restarted {self.policy.recent(now)} time(s) within the last "
                    f"{self.policy.window:.0f} s already (the cap)",
                )
                return
            self._say(
                f"watchdog: backend stub process(es) {sorted(lost)} exited; restarting tritonserver"
                f" (restart {self.restarts + 1}, after a {delay:g} s pause)"
            )
            if not self._restart(delay):
                return
            restarted_at = time.monotonic()

    def _give_up(self, process: subprocess.Popen, why: str) -> None:
        """Stop the server for good: the launcher then exits non-zero (it reports the exit of
        tritonserver), and the orchestrator restarts the container."""
        with self._lock:
            if self._stopping.is_set():
                return
            self.gave_up = why
        self._say(
            f"watchdog: {why}; giving up: stopping tritonserver for good (the launcher exits "
            "with an error; restart it, or let the orchestrator restart the container)"
        )
        self._kill(process, self.restart_kill_grace)

    def _restart(self, delay: float = 0.0) -> bool:
        """Stop the server without draining it (SIGTERM, then SIGKILL to its process group after
        ``restart_kill_grace``), clean its shm, pause ``delay`` seconds, start the same command
        again. False when a stop request came first (nothing is started then)."""
        with self._lock:
            if self._stopping.is_set():
                return False
            self._restarting = True
            old = self.process
        try:
            started = time.monotonic()
            self._kill(old, self.restart_kill_grace)
            self._reader.join(timeout=5)
            self._clean_shm()
            self._say(
                f"watchdog: tritonserver (pid {old.pid}) stopped in "
                f"{time.monotonic() - started:.1f} s (exit status {old.returncode})"
            )
            if self._stopping.wait(delay):
                return False
            with self._lock:
                if self._stopping.is_set():
                    return False
                self.watch = StubWatch()
                self.process = self._spawn(self.restarts + 1)
                self.restarts += 1
        finally:
            with self._lock:
                self._restarting = False
        self._say(f"watchdog: tritonserver restarted (pid {self.process.pid})")
        return True

    def _pump(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.log_tail.append(line)
            if self.echo is not None:
                self.echo(line)

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status once the server has exited for good (a watchdog restart is not an
        exit); None if it is still running after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                process, restarting = self.process, self._restarting
            code = process.poll()
            if code is not None and not restarting and process is self.process:
                return code
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def wait_ready(self, timeout: float) -> float:
        """Block until ``/v2/health/ready`` is 200; returns seconds waited. Raises ServerError
        (and stops the server) if it exits first or the timeout passes."""
        started = time.monotonic()
        while True:
            code = self.process.poll()
            if code is not None and not self._restarting:
                self._reader.join(timeout=5)
                raise ServerError(
                    f"tritonserver exited with code {code} before it was ready\n"
                    + self.failure_summary()
                )
            if self._ready():
                # Note the stubs now: one that dies before the watchdog's next look still counts.
                self.watch.observe(backend_stub_pids(self.process.pid), lambda: True)
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                self.stop()
                raise ServerError(
                    f"tritonserver was not ready after {timeout:.0f} s; stopped it\n"
                    + self.failure_summary()
                )
            time.sleep(READY_POLL_SECONDS)

    def failure_summary(self) -> str:
        """The log lines that say why the model or server failed (or the last lines)."""
        lines = list(self.log_tail)
        keys = ("failed to load", "error:", "Error", "Exception", "could not", "Traceback")
        picked = [ln for ln in lines if any(k in ln for k in keys)]
        chosen = picked[-12:] if picked else lines[-20:]
        return "\n".join("  " + ln for ln in chosen)

    def request_stop(self) -> None:
        """Drain, then stop the server (SIGTERM), without waiting; safe in signal handlers.

        Once signalled, Triton 2.51 unloads the models (the front's calls to the core fail) as
        soon as no HTTP connection is open; while clients keep some open it goes on accepting
        requests for up to its exit timeout and then cuts them. So the drain comes first (see
        :func:`drain_front`): the requests the front holds are answered, up to the exit timeout
        (``--exit-timeout-secs``), and the front refuses new ones (UNAVAILABLE) before
        tritonserver is signalled, which then only unloads the models."""
        self._stopping.set()
        if self._drain_started:
            return
        self._drain_started = True
        threading.Thread(target=self._drain_then_terminate, daemon=True).start()

    def _drain_then_terminate(self) -> None:
        process = self.process
        try:
            # As long as tritonserver itself would let requests finish after SIGTERM.
            budget = float((flag_values(self.command, "--exit-timeout-secs") or ["30"])[-1])
            self.drain(process, budget)
        finally:
            if process.poll() is None:
                # Whatever reaches the front from now on is refused (UNAVAILABLE): signalled,
                # tritonserver would go on accepting requests over the HTTP connections clients
                # keep open, and over gRPC, and cut them when its exit timeout runs out.
                close_front(self.drain_marker, self._say, "")
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)

    def drain(self, process: subprocess.Popen, budget: float) -> None:
        """Let the front finish what it holds before tritonserver is signalled (see
        :func:`drain_front`); at once when the metrics cannot tell."""
        endpoint = metrics_endpoint(self.command)
        if endpoint is None:
            return
        drain_front(
            lambda: scrape(*endpoint),
            lambda: process.poll() is None,
            self.drain_marker,
            budget,
            self._say,
        )

    @staticmethod
    def _kill(process: subprocess.Popen, grace: float) -> None:
        """SIGTERM, then, after ``grace`` seconds or once it has exited, SIGKILL to its process
        group: backend stubs left behind would hold GPU memory and the server's output pipe.
        The group is the server's own (started in a new session); its id is not reused while
        any member lives, so the signal reaches no stranger."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    @staticmethod
    def _terminate(process: subprocess.Popen, grace: float) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _clean_shm(self) -> None:
        for path in shm_regions(self.options.shm_prefix):
            with contextlib.suppress(OSError):
                os.unlink(path)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; clean leftover shm regions."""
        self._stopping.set()
        with self._lock:
            process = self.process
        self._terminate(process, grace)
        self._reader.join(timeout=5)
        self._clean_shm()
        self._remove_drain_marker()
        return process.returncode


def start(
    opts: ServerOptions,
    install: TritonInstallation | None = None,
    env: dict[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
) -> RunningServer:
    """Start ``tritonserver`` in the background (own process group); its stubs import the
    package of the checkout whose model repository it serves (see :func:`server_environment`)."""
    from .repository import package_source  # protobuf and tritonclient load only here

    install = install or locate()
    return RunningServer(
        command=build_command(install, opts),
        options=opts,
        env=server_environment(env, install.python_libdir, package_source(opts.model_repository)),
        echo=echo,
    )
