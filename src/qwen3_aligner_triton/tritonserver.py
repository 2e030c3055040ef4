"""Finding, configuring, starting and stopping a real ``tritonserver``.

On an NGC Triton container ``tritonserver`` is on PATH. Elsewhere (developer machines, CI) the
binary of the ``nvidia-pytriton`` wheel is used: its Python backend needs the stub of the running
Python version copied next to ``libtriton_python.so``, which :func:`locate` does once.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MODEL_NAME = "qwen3_aligner"  # the public model (the front)
CORE_MODEL_NAME = "qwen3_aligner_core"  # the forward it calls
MODELS = (CORE_MODEL_NAME, MODEL_NAME)  # load order: the public model needs the core
SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"  # the Python backend's default region prefix
READY_POLL_SECONDS = 0.25
STOP_GRACE_SECONDS = 45.0  # wait this long after SIGTERM before SIGKILL
LOG_TAIL_LINES = 400
EXIT_TIMEOUT_SECONDS = 30  # tritonserver's drain time for in-flight requests on SIGTERM
ADMIN_HEADER = "qwen3-aligner-admin"
WATCHDOG_INTERVAL_SECONDS = 1.0
RELOAD_TIMEOUT_SECONDS = 900.0
STUB_NAME = b"triton_python_backend_stub"


class ServerError(RuntimeError):
    """The server could not be started or did not become ready."""


@dataclass(frozen=True)
class TritonInstallation:
    """Where the server binary and its backends are."""

    binary: Path
    backend_dir: Path | None  # None: the binary's built-in default (/opt/tritonserver/backends)
    source: str  # "PATH" or "nvidia-pytriton"


def locate() -> TritonInstallation:
    """Find ``tritonserver``: on PATH first, then inside the ``nvidia-pytriton`` wheel."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonInstallation(Path(on_path), None, "PATH")
    purelib = Path(sysconfig.get_paths()["purelib"])
    root = purelib / "pytriton" / "tritonserver"
    binary = root / "bin" / "tritonserver"
    if not binary.is_file():
        raise ServerError(
            "no tritonserver found: not on PATH and the nvidia-pytriton wheel is not installed "
            "in this environment (run ./scripts/serve, which installs it)"
        )
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub_src = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    stub_dst = root / "backends" / "python" / "triton_python_backend_stub"
    if not stub_src.is_file():
        raise ServerError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    if not stub_dst.is_file() or stub_dst.stat().st_size != stub_src.stat().st_size:
        shutil.copy2(stub_src, stub_dst)
    return TritonInstallation(binary, root / "backends", "nvidia-pytriton")


@dataclass(frozen=True)
class ServerOptions:
    """Command-line options of one server run."""

    model_repository: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    address: str = "0.0.0.0"
    gpu: bool = False
    log_verbose: int = 0
    extra_args: tuple[str, ...] = ()
    # Reload the model when a backend stub process dies (Triton 2.51 would otherwise keep
    # reporting ready while every request fails). Needs explicit model control; the repository
    # API is then restricted to callers presenting ``admin_token`` in the ADMIN_HEADER header.
    watchdog: bool = True
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    # The Python backend's shared-memory regions are named after this prefix, so stopping this
    # server cleans its own regions and never those of another server on the same machine.
    shm_prefix: str = field(default_factory=lambda: f"{SHM_PREFIX}{secrets.token_hex(4)}_")


def loopback_options(model_repository: Path, gpu: bool = False) -> ServerOptions:
    """Options for a server on 127.0.0.1 with three free ports (tests, benchmarks, soak)."""
    http, grpc, metrics = free_ports(3)
    return ServerOptions(
        model_repository=model_repository,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        address="127.0.0.1",
        gpu=gpu,
    )


def build_command(install: TritonInstallation, opts: ServerOptions) -> list[str]:
    """The ``tritonserver`` argument list for ``opts``."""
    cmd = [
        str(install.binary),
        f"--model-repository={opts.model_repository}",
        f"--http-address={opts.address}",
        f"--http-port={opts.http_port}",
        f"--grpc-address={opts.address}",
        f"--grpc-port={opts.grpc_port}",
        f"--metrics-address={opts.address}",
        f"--metrics-port={opts.metrics_port}",
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--disable-auto-complete-config",
        f"--log-verbose={opts.log_verbose}",
        f"--exit-timeout-secs={EXIT_TIMEOUT_SECONDS}",
    ]
    if opts.watchdog:
        cmd += [
            "--model-control-mode=explicit",
            *(f"--load-model={name}" for name in MODELS),
            f"--http-restricted-api=model-repository:{ADMIN_HEADER}={opts.admin_token}",
            f"--grpc-restricted-protocol=model-repository:{ADMIN_HEADER}={opts.admin_token}",
        ]
    cmd.append(f"--backend-config=python,shm-region-prefix-name={opts.shm_prefix}")
    if install.backend_dir is not None:
        cmd.append(f"--backend-directory={install.backend_dir}")
    if not opts.gpu:
        cmd += ["--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0"]
    cmd += list(opts.extra_args)
    return cmd


def server_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the server: this interpreter's ``bin/`` first on PATH so the backend stub
    imports the packages of this environment."""
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    venv = Path(sys.prefix)
    if venv != Path(sys.base_prefix):
        env["VIRTUAL_ENV"] = str(venv)
    # The front's and the core's stubs run torch side by side: OpenMP threads that spin while
    # waiting steal the cores the other stubs need (measured: CPU forwards 10-30x slower under
    # load). Waiting threads sleep instead, unless the operator chose otherwise.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def http_ready(host: str, port: int, path: str = "/v2/health/ready", timeout: float = 2.0) -> bool:
    """True when ``GET path`` answers 200."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as resp:
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


def reload_model(host: str, port: int, token: str, timeout: float = RELOAD_TIMEOUT_SECONDS) -> None:
    """Ask the server to (re)load both models, the core first: new instances start, then replace
    the old ones."""
    for name in MODELS:
        request = urllib.request.Request(
            f"http://{host}:{port}/v2/repository/models/{name}/load",
            data=b"",
            method="POST",
            headers={ADMIN_HEADER: token},
        )
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            if resp.status != 200:
                raise ServerError(f"reloading {name} answered HTTP {resp.status}")


def shm_regions(prefix: str = SHM_PREFIX) -> set[str]:
    """Python-backend shared-memory regions in ``/dev/shm`` whose names start with ``prefix``
    (default: every server's)."""
    return {str(p) for p in SHM_DIR.glob(glob.escape(prefix) + "*")}


@dataclass
class RunningServer:
    """A started ``tritonserver`` process whose output is echoed and remembered."""

    process: subprocess.Popen
    options: ServerOptions
    echo: Callable[[str], None] | None = None
    log_tail: collections.deque = field(
        default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES)
    )

    reloads: int = 0  # how often the watchdog reloaded the model

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        self._stopping = threading.Event()
        self._stubs_when_ready: set[int] | None = None
        if self.options.watchdog:
            threading.Thread(target=self._watch, daemon=True).start()

    def _say(self, message: str) -> None:
        self.log_tail.append(message)
        if self.echo is not None:
            self.echo(message)

    def _watch(self) -> None:
        """Reload the model when one of its backend stubs dies."""
        while not self._stopping.wait(WATCHDOG_INTERVAL_SECONDS):
            if self.process.poll() is not None:
                return
            baseline = self._stubs_when_ready
            if baseline is None:
                if http_ready(self.host, self.options.http_port):
                    self._stubs_when_ready = backend_stub_pids(self.process.pid)
                continue
            if not baseline:  # no stub visible in /proc (another process model): nothing to watch
                continue
            stubs = backend_stub_pids(self.process.pid)
            lost = baseline - stubs
            if not lost:
                self._stubs_when_ready = stubs
                continue
            # A stub also exits when the server shuts down (SIGTERM from anyone): the server then
            # stops being ready, whereas after a crash it keeps claiming to be ready.
            if self._stopping.is_set() or not http_ready(self.host, self.options.http_port):
                self._stubs_when_ready = None
                continue
            self._say(
                f"watchdog: backend stub process(es) {sorted(lost)} exited; reloading {MODEL_NAME}"
            )
            try:
                reload_model(self.host, self.options.http_port, self.options.admin_token)
            except (OSError, ServerError) as e:
                if self._stopping.is_set() or self.process.poll() is not None:
                    return
                self._say(f"watchdog: reloading {MODEL_NAME} failed: {e}; stopping the server")
                self.process.send_signal(signal.SIGTERM)
                return
            self.reloads += 1
            self._stubs_when_ready = backend_stub_pids(self.process.pid)
            self._say(f"watchdog: {MODEL_NAME} reloaded; serving again")

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.log_tail.append(line)
            if self.echo is not None:
                self.echo(line)

    @property
    def host(self) -> str:
        return "127.0.0.1" if self.options.address in ("0.0.0.0", "") else self.options.address

    def wait_ready(self, timeout: float) -> float:
        """Block until ``/v2/health/ready`` is 200; returns seconds waited. Raises ServerError
        (and stops the server) if it exits first or the timeout passes."""
        started = time.monotonic()
        while True:
            code = self.process.poll()
            if code is not None:
                self._reader.join(timeout=5)
                raise ServerError(
                    f"tritonserver exited with code {code} before it was ready\n"
                    + self.failure_summary()
                )
            if http_ready(self.host, self.options.http_port):
                if self._stubs_when_ready is None:
                    self._stubs_when_ready = backend_stub_pids(self.process.pid)
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
        """Ask the server to drain and exit (SIGTERM) without waiting; safe in signal handlers."""
        self._stopping.set()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; clean leftover shm regions."""
        self._stopping.set()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        for path in shm_regions(self.options.shm_prefix):
            with contextlib.suppress(OSError):
                os.unlink(path)
        return self.process.returncode


def start(
    opts: ServerOptions,
    install: TritonInstallation | None = None,
    env: dict[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
) -> RunningServer:
    """Start ``tritonserver`` in the background (own process group)."""
    install = install or locate()
    cmd = build_command(install, opts)
    process = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=server_environment(env),
        start_new_session=True,
    )
    return RunningServer(process=process, options=opts, echo=echo)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports free on ``host`` right now."""
    import socket

    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def describe_endpoints(host: str, opts: ServerOptions) -> Iterable[str]:
    yield f"HTTP    http://{host}:{opts.http_port}  (KServe v2; ready: /v2/health/ready)"
    yield f"gRPC    {host}:{opts.grpc_port}"
    yield f"metrics http://{host}:{opts.metrics_port}/metrics"
    yield f"model   {MODEL_NAME}"


__all__: Sequence[str] = (
    "CORE_MODEL_NAME",
    "MODEL_NAME",
    "RunningServer",
    "ServerError",
    "ServerOptions",
    "TritonInstallation",
    "build_command",
    "describe_endpoints",
    "free_ports",
    "http_ready",
    "locate",
    "loopback_options",
    "shm_regions",
    "start",
)
