"""``./scripts/serve``: launch planning, and the real command with good and broken checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from serve_launch import ServeLaunch

from qwen3_aligner_triton import serve
from qwen3_aligner_triton.params import DEFAULT_CHECKPOINT
from qwen3_aligner_triton.repository import Placement
from qwen3_aligner_triton.serve import LaunchPlan, plan_launch
from qwen3_aligner_triton.triton_flags import free_ports

ROOT = Path(__file__).resolve().parents[2]
SERVE_TIMEOUT = 240  # seconds for one launch to become ready or fail


def test_defaults_follow_the_machine():
    assert plan_launch(None, None, None, {}, gpu_count=0).placement.kind == "KIND_CPU"
    plan = plan_launch(None, None, None, {}, gpu_count=2)
    assert plan.placement.kind == "KIND_GPU"
    assert plan.placement.count == 1
    assert plan.checkpoint == DEFAULT_CHECKPOINT


def test_environment_of_the_old_service_is_honoured():
    env = {"MODEL_PATH": "/models/a", "DEVICE": "cuda:1", "MAX_CONCURRENT": "3"}
    plan = plan_launch(None, None, None, env, gpu_count=2)
    assert plan.checkpoint == "/models/a"
    assert plan.placement.kind == "KIND_GPU"
    assert plan.placement.gpus == (1,)
    assert plan.placement.count == 3


def test_options_take_precedence_over_environment():
    env = {"MODEL_PATH": "/models/a", "DEVICE": "cuda", "MAX_CONCURRENT": "3"}
    plan = plan_launch("/models/b", "cpu", 2, env, gpu_count=1)
    assert (plan.checkpoint, plan.placement.kind, plan.placement.count) == (
        "/models/b",
        "KIND_CPU",
        2,
    )


@pytest.mark.parametrize(
    ("device", "instances", "env", "message"),
    [
        ("gpu", None, {}, "no CUDA GPU"),
        ("cuda:3", None, {}, "no CUDA GPU"),
        ("tpu", None, {}, "unknown device"),
        ("cpu", 0, {}, ">= 1"),
        ("cpu", None, {"MAX_CONCURRENT": "lots"}, "MAX_CONCURRENT"),
    ],
)
def test_bad_launch_options(device, instances, env, message):
    with pytest.raises(ValueError, match=message):
        plan_launch(None, device, instances, env, gpu_count=0)


@pytest.mark.parametrize(
    ("device", "gpu_count", "placement"),
    [
        (None, 0, Placement("KIND_CPU", 1, ())),
        (None, 1, Placement("KIND_GPU", 1, ())),
        ("auto", 1, Placement("KIND_GPU", 1, ())),
        ("cpu", 2, Placement("KIND_CPU", 1, ())),
        ("gpu", 1, Placement("KIND_GPU", 1, ())),
        ("cuda", 1, Placement("KIND_GPU", 1, ())),
        ("CUDA", 1, Placement("KIND_GPU", 1, ())),
        ("cuda:1", 2, Placement("KIND_GPU", 1, (1,))),
        ("Cuda:0", 1, Placement("KIND_GPU", 1, (0,))),
    ],
)
def test_device_and_gpu_count_give_this_exact_placement(device, gpu_count, placement):
    assert plan_launch(None, device, None, {}, gpu_count) == LaunchPlan(
        DEFAULT_CHECKPOINT, placement
    )


@pytest.mark.parametrize("device", ["cuda:x", "cuda:", "cuda:0:1", "cuda:1:0"])
def test_a_malformed_cuda_index_is_rejected_with_its_spelling(device):
    with pytest.raises(ValueError) as e:
        plan_launch(None, device, None, {}, gpu_count=4)
    assert str(e.value) == f"bad device {device!r}; use cuda:N"


def test_a_cuda_index_past_the_visible_gpus_is_rejected():
    with pytest.raises(ValueError) as e:
        plan_launch(None, "cuda:2", None, {}, gpu_count=2)
    assert str(e.value) == "device 'cuda:2' requested but only 2 GPU(s) are visible"


class FakeClock:
    """``time.monotonic`` that moves only when a fake server's poll waits out its timeout."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def monotonic(self) -> float:
        return self.now


class FakeProcess:
    def __init__(self, on_kill):
        self.kill = on_kill


class FakeServer:
    """The part of RunningServer that wait_for_exit uses. Each ``wait`` is one poll that times out
    (the clock moves on by its timeout) until the server exits: by itself at poll ``exits_at``
    with ``code``, or at the poll after a kill with -SIGKILL. ``stop_at`` sets ``stopping``
    during that poll, as a signal arriving while the launcher waits would."""

    MAX_POLLS = 1000  # a wait_for_exit that never returns fails instead of hanging

    def __init__(self, clock, stopping, *, exits_at=None, code=0, stop_at=None):
        self.clock = clock
        self.stopping = stopping
        self.exits_at = exits_at
        self.code = code
        self.stop_at = stop_at
        self.timeouts: list[float] = []
        self.kills: list[float] = []  # clock readings at each kill
        self.stops = 0
        self.process = FakeProcess(self._kill)

    def _kill(self) -> None:
        self.kills.append(self.clock.now)

    def wait(self, timeout=None):
        self.timeouts.append(timeout)
        poll = len(self.timeouts)
        assert poll <= self.MAX_POLLS, "wait_for_exit never returned"
        if self.kills:
            return -signal.SIGKILL
        if poll == self.exits_at:
            return self.code
        if poll == self.stop_at:
            self.stopping.set()
        self.clock.now += timeout
        return None

    def stop(self) -> int:
        self.stops += 1
        return self.code


@pytest.fixture
def clock(monkeypatch):
    """A fake clock in serve, a 1 s stop grace and 0.25 s polls (exact in binary)."""
    fake = FakeClock()
    monkeypatch.setattr(serve, "time", fake)
    monkeypatch.setattr(serve, "STOP_GRACE_SECONDS", 1.0)
    monkeypatch.setattr(serve, "WAIT_POLL_SECONDS", 0.25)
    return fake


def test_wait_for_exit_returns_the_code_of_a_server_that_exits_by_itself(clock):
    stopping = threading.Event()
    server = FakeServer(clock, stopping, exits_at=5, code=3)
    assert serve.wait_for_exit(server, stopping) == 3
    assert server.timeouts == [0.25] * 5
    assert server.kills == []
    assert server.stops == 1


def test_a_server_that_stops_within_its_grace_is_not_killed(clock):
    stopping = threading.Event()
    # Stop noticed after poll 2 (t = 1000.5); exit at poll 6, 0.75 s later.
    server = FakeServer(clock, stopping, stop_at=2, exits_at=6, code=0)
    assert serve.wait_for_exit(server, stopping) == 0
    assert server.kills == []
    assert server.stops == 1


def test_a_server_is_killed_only_once_it_has_overstayed_its_grace(clock):
    stopping = threading.Event()
    server = FakeServer(clock, stopping, stop_at=1)
    assert serve.wait_for_exit(server, stopping) == -signal.SIGKILL
    # Stop noticed after poll 1 (t = 1000.25). After poll 5 (t = 1001.25) exactly the 1 s grace
    # has passed: not yet over. After poll 6 (t = 1001.5) it is: one kill, and poll 7 reaps it.
    assert server.kills == [1001.5]
    assert len(server.timeouts) == 7
    assert server.stops == 1


class RecordingStdout:
    """sys.stdout that tells written text from text flushed out to the reader."""

    def __init__(self):
        self.pending = ""
        self.flushed = ""

    def write(self, text: str) -> int:
        self.pending += text
        return len(text)

    def flush(self) -> None:
        self.flushed += self.pending
        self.pending = ""


def test_the_kill_notice_reaches_stdout_before_the_kill(clock, monkeypatch):
    out = RecordingStdout()
    monkeypatch.setattr(sys, "stdout", out)
    stopping = threading.Event()
    stopping.set()
    server = FakeServer(clock, stopping)
    seen_at_kill = []
    server.process = FakeProcess(lambda: (seen_at_kill.append(out.flushed), server._kill()))
    assert serve.wait_for_exit(server, stopping) == -signal.SIGKILL
    assert seen_at_kill == ["serve: tritonserver did not stop in time; killing it\n"]


class FakeFront:
    """The part of FrontProcess that wait_for_exit uses: exits by itself with ``code`` from its
    ``exits_at``-th poll on (never if None)."""

    def __init__(self, exits_at=None, code=0):
        self.exits_at = exits_at
        self.code = code
        self.polls = 0
        self.exited_early = False
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1

    def exited(self):
        self.polls += 1
        return self.code if self.exits_at is not None and self.polls >= self.exits_at else None


class StoppableServer(FakeServer):
    """A FakeServer that exits (with ``code``) at the poll after ``request_stop``, or never
    (``ignores_stop``: killed after its grace)."""

    def __init__(self, *args, ignores_stop=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.ignores_stop = ignores_stop
        self.stop_requests: list[int] = []  # the poll at each request

    def request_stop(self) -> None:
        self.stop_requests.append(len(self.timeouts))
        if not self.ignores_stop:
            self.exits_at = len(self.timeouts) + 1


@pytest.mark.parametrize(
    ("front_code", "status"), [(3, 3), (0, serve.EXIT_FAILED), (-9, serve.EXIT_FAILED)]
)
def test_a_front_that_exits_early_stops_the_server_and_gives_its_status(
    clock, capsys, front_code, status
):
    stopping = threading.Event()
    server = StoppableServer(clock, stopping, code=0)
    front = FakeFront(exits_at=3, code=front_code)
    assert serve.wait_for_exit(server, stopping, front) == status
    assert server.stop_requests == [3], "asked to stop right after the front's exit was seen"
    assert len(server.timeouts) == 4 and server.kills == [] and server.stops == 1
    assert front.exited_early and front.polls == 3 and front.stops == 1
    assert stopping.is_set()
    err = capsys.readouterr().err
    assert f"serve: the OpenAI-style front exited with status {front_code}; stopping" in err


def test_a_server_that_outstays_a_front_exit_is_killed_and_the_fronts_status_kept(clock):
    stopping = threading.Event()
    server = StoppableServer(clock, stopping, ignores_stop=True)
    front = FakeFront(exits_at=1, code=4)
    assert serve.wait_for_exit(server, stopping, front) == 4
    assert server.stop_requests == [1] and len(server.kills) == 1 and server.stops == 1


def test_a_front_that_exits_after_a_stop_request_is_not_an_early_exit(clock):
    stopping = threading.Event()
    # SIGTERM after poll 2; the server exits at poll 4; the front would say it exited from poll 3.
    server = StoppableServer(clock, stopping, stop_at=2, exits_at=4, code=0)
    front = FakeFront(exits_at=3, code=5)
    assert serve.wait_for_exit(server, stopping, front) == 0
    assert not front.exited_early and front.polls == 1, "not polled once stopping"
    assert front.stops == 1
    assert server.stop_requests == [] and server.kills == []


def test_a_server_exit_with_the_front_running_gives_the_servers_status(clock):
    stopping = threading.Event()
    server = StoppableServer(clock, stopping, exits_at=3, code=7)
    front = FakeFront()
    assert serve.wait_for_exit(server, stopping, front) == 7
    assert front.polls == 2 and not front.exited_early and server.stop_requests == []
    assert front.stops == 1, "the front stopped with the server"


@pytest.fixture
def no_launch(monkeypatch):
    """serve.main with nothing started: a usage error must come before the server starts."""
    monkeypatch.setattr(serve, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(serve, "start", lambda *a, **k: pytest.fail("tritonserver started"))
    monkeypatch.setattr(
        serve, "fetch_for_launch", lambda *a, **k: pytest.fail("checkpoint fetched")
    )
    monkeypatch.setattr(
        serve.FrontProcess, "start", staticmethod(lambda *a, **k: pytest.fail("front started"))
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--openai-api-key-file", "{key}"], "--openai-api-key-file needs --openai-port"),
        (["--openai-port", "0"], "the OpenAI-style front's port must be 1..65535, got 0"),
        (["--openai-port", "65536"], "the OpenAI-style front's port must be 1..65535, got 65536"),
        (["--openai-port", "-5"], "the OpenAI-style front's port must be 1..65535, got -5"),
        (
            ["--openai-port", "9000", "--openai-api-key-file", "{missing}"],
            "--openai-api-key-file: no file {missing}",
        ),
    ],
)
def test_bad_openai_front_options_are_usage_errors(tmp_path, capsys, no_launch, args, message):
    key = tmp_path / "key"
    key.write_text("sk-test")
    names = {"key": key, "missing": tmp_path / "missing"}
    argv = ["--device", "cpu", *(a.format(**names) for a in args)]
    assert serve.main(argv) == serve.EXIT_USAGE
    assert f"serve: error: {message.format(**names)}" in capsys.readouterr().err


def test_a_non_numeric_openai_port_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        serve.parse_args(["--openai-port", "http"])
    assert exit_info.value.code == serve.EXIT_USAGE
    assert "--openai-port: invalid int value: 'http'" in capsys.readouterr().err
    args = serve.parse_args(["--openai-port", "9000", "--openai-api-key-file", "k"])
    assert (args.openai_port, args.openai_api_key_file) == (9000, Path("k"))
    assert serve.parse_args([]).openai_port is None


class ReadyServer:
    """What serve.main uses of a started tritonserver: ready at once, then exits with 0 at its
    first poll (or, with a front that exits early, when asked to stop)."""

    host = "127.0.0.1"

    def __init__(self):
        self.stop_requests = 0
        self.process = FakeProcess(lambda: None)

    def wait_ready(self, timeout):
        return 0.1

    def wait(self, timeout=None):
        return 0

    def request_stop(self):
        self.stop_requests += 1

    def stop(self):
        return 0


def test_main_starts_the_front_after_the_server_is_ready(tmp_path, monkeypatch, capsys):
    from qwen3_aligner_triton.openai_front.launch import FrontOptions
    from qwen3_aligner_triton.triton_install import TritonInstallation

    started = []

    class Front(FakeFront):
        def __init__(self, opts):
            super().__init__()
            self.opts = opts
            self.stops = 0

        def stop(self):
            self.stops += 1
            return 0

        def describe(self, host):
            return f"front on {host}:{self.opts.port}"

    def start_front(opts, env=None, extra=()):
        started.append(Front(opts))
        return started[-1]

    key = tmp_path / "key"
    key.write_text("sk-test")
    monkeypatch.setattr(serve, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(
        serve, "locate", lambda: TritonInstallation(Path("tritonserver"), None, "PATH")
    )
    monkeypatch.setattr(serve, "fetch_for_launch", lambda who, checkpoint, rev: str(tmp_path))
    monkeypatch.setattr(serve, "start", lambda opts, install, echo=None: ReadyServer())
    monkeypatch.setattr(serve.FrontProcess, "start", staticmethod(start_front))
    monkeypatch.setattr(serve.signal, "signal", lambda *a: None)  # keep pytest's handlers
    argv = ["--model", "org/model", "--device", "cpu", "--grpc-port", "8301"]
    argv += ["--address", "127.0.0.1", "--openai-port", "9100", "--openai-api-key-file", str(key)]
    argv += ["--repository-dir", str(tmp_path / "repo")]
    assert serve.main(argv) == serve.EXIT_FAILED  # this fake tritonserver exits by itself
    (front,) = started
    assert front.opts == FrontOptions(
        port=9100,
        triton_url="127.0.0.1:8301",
        host="127.0.0.1",
        api_key_file=key,
        model_names=("org/model",),
    )
    assert front.stops == 1
    out = capsys.readouterr().out
    assert out.index("serve: ready in") < out.index("serve: front on 127.0.0.1:9100")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [([], None), (["--asr"], "Qwen/Qwen3-ASR-0.6B"), (["--asr", "/models/asr"], "/models/asr")],
)
def test_asr_is_off_unless_asked_and_defaults_to_qwen3_asr(argv, expected):
    assert serve.parse_args(argv).asr == expected


def test_main_fetches_the_asr_checkpoint_and_renders_the_asr_model(tmp_path, monkeypatch, capsys):
    from qwen3_aligner_triton.repository import load_config
    from qwen3_aligner_triton.triton_install import TritonInstallation

    fetched = []

    def fetch(who, checkpoint, revision):
        fetched.append((checkpoint, revision))
        return str(tmp_path / checkpoint.replace("/", "--"))

    monkeypatch.setattr(serve, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(
        serve, "locate", lambda: TritonInstallation(Path("tritonserver"), None, "PATH")
    )
    monkeypatch.setattr(serve, "fetch_for_launch", fetch)
    monkeypatch.setattr(serve, "start", lambda opts, install, echo=None: ReadyServer())
    monkeypatch.setattr(serve.signal, "signal", lambda *a: None)
    repo = tmp_path / "repo"
    argv = ["--model", "org/aligner", "--revision", "abc", "--asr", "--device", "cpu"]
    assert serve.main([*argv, "--repository-dir", str(repo)]) == serve.EXIT_FAILED
    # The aligner at its pinned revision, the ASR model at the Hub's default.
    assert fetched == [("org/aligner", "abc"), ("Qwen/Qwen3-ASR-0.6B", None)]
    asr = load_config(repo / "qwen3_asr" / "config.pbtxt")
    assert asr.parameters["checkpoint"].string_value == str(tmp_path / "Qwen--Qwen3-ASR-0.6B")
    front = load_config(repo / "qwen3_aligner" / "config.pbtxt")
    assert front.parameters["asr"].string_value == "true"
    assert "ASR Qwen/Qwen3-ASR-0.6B on CPU" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "environ", "asr"),
    [
        (["--asr", "org/asr", "--asr-revision", "v2"], {}, ("org/asr", "v2")),
        ([], {"ASR_MODEL": "org/asr", "ASR_MODEL_REVISION": "v2"}, ("org/asr", "v2")),
        (["--asr", "org/other"], {"ASR_MODEL": "org/asr"}, ("org/other", None)),
    ],
    ids=["options", "environment", "option-first"],
)
def test_main_fetches_the_asr_model_at_its_own_revision(tmp_path, monkeypatch, argv, environ, asr):
    """--asr-revision (or ASR_MODEL_REVISION) pins the ASR model as --revision pins the
    aligner; ASR_MODEL names it where --asr does not, as in the container."""
    from qwen3_aligner_triton.repository import load_config
    from qwen3_aligner_triton.triton_install import TritonInstallation

    fetched = []

    def fetch(who, checkpoint, revision):
        fetched.append((checkpoint, revision))
        return str(tmp_path / checkpoint.replace("/", "--"))

    for name in ("MODEL_REVISION", "ASR_MODEL", "ASR_MODEL_REVISION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(serve, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(
        serve, "locate", lambda: TritonInstallation(Path("tritonserver"), None, "PATH")
    )
    monkeypatch.setattr(serve, "fetch_for_launch", fetch)
    monkeypatch.setattr(serve, "start", lambda opts, install, echo=None: ReadyServer())
    monkeypatch.setattr(serve.signal, "signal", lambda *a: None)
    repo = tmp_path / "repo"
    argv = ["--model", "org/aligner", "--revision", "abc", *argv, "--device", "cpu"]
    assert serve.main([*argv, "--repository-dir", str(repo)]) == serve.EXIT_FAILED
    assert fetched == [("org/aligner", "abc"), asr]
    config = load_config(repo / "qwen3_asr" / "config.pbtxt")
    assert config.parameters["checkpoint"].string_value == str(tmp_path / asr[0].replace("/", "--"))


def test_a_bad_asr_model_stops_serve_before_anything_starts(monkeypatch, capsys):
    monkeypatch.setenv("ASR_MODEL", "true")
    monkeypatch.setattr(serve, "fetch_for_launch", lambda *a: pytest.fail("fetched anyway"))
    monkeypatch.setattr(serve, "start", lambda *a, **k: pytest.fail("started anyway"))
    assert serve.main(["--device", "cpu"]) == serve.EXIT_USAGE
    assert "serve: error: ASR_MODEL='true' names no checkpoint" in capsys.readouterr().err


def run_serve(args: list[str], timeout: float = SERVE_TIMEOUT) -> subprocess.CompletedProcess:
    http, grpc, metrics = free_ports(3)
    cmd = [
        str(ROOT / "scripts" / "serve"),
        "--address=127.0.0.1",
        f"--http-port={http}",
        f"--grpc-port={grpc}",
        f"--metrics-port={metrics}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.integration
def test_missing_checkpoint_folder_fails_with_a_clear_message(tmp_path):
    proc = run_serve(["--model", str(tmp_path / "missing"), "--device", "cpu"])
    assert proc.returncode != 0
    assert "does not exist" in proc.stderr
    assert "is not being served" in proc.stderr


@pytest.mark.integration
def test_broken_checkpoint_never_becomes_ready(tmp_path, tiny_checkpoint):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_checkpoint.iterdir():
        if f.name != "model.safetensors":
            (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    proc = run_serve(["--model", str(broken), "--device", "cpu"])
    assert proc.returncode != 0
    assert f"could not load checkpoint folder '{broken}'" in proc.stderr
    assert "serve: ready" not in proc.stdout


def Launch(checkpoint: Path) -> ServeLaunch:
    return ServeLaunch("--model", str(checkpoint), timeout=SERVE_TIMEOUT)


def pid_alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.integration
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_runs_until_signalled(tiny_checkpoint, signum):
    launch = Launch(tiny_checkpoint)
    try:
        launch.read_until("serve: model")
        output = launch.output
        assert "serve: ready in" in output, output[-3000:]
        assert f"http://127.0.0.1:{launch.http}" in output
        assert launch.ready()
        server = launch.tritonserver()
        launch.proc.send_signal(signum)
        rest = launch.finish()
        assert launch.proc.returncode == 0, rest[-3000:]
        assert f"serve: {signal.Signals(signum).name}: stopping tritonserver" in rest
        assert "serve: stopped" in rest
        assert not pid_alive(server)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{launch.http}/v2/health/live", timeout=5)
    finally:
        launch.close()


@pytest.mark.integration
def test_signal_during_the_readiness_wait_stops_cleanly(tiny_checkpoint):
    launch = Launch(tiny_checkpoint)
    try:
        launch.read_until("serve: loading")
        # The first line tritonserver prints: the launcher is waiting for readiness by then.
        launch.read_until("")
        server = launch.tritonserver()
        launch.proc.send_signal(signal.SIGTERM)
        rest = launch.finish()
        assert launch.proc.returncode == 0, launch.output[-3000:]
        assert "serve: SIGTERM: stopping tritonserver" in rest
        assert "serve: ready" not in launch.output
        assert "serve: error" not in launch.output
        assert not pid_alive(server)
    finally:
        launch.close()


@pytest.mark.integration
def test_tritonserver_exiting_by_itself_fails_the_launcher(tiny_checkpoint):
    launch = Launch(tiny_checkpoint)
    try:
        launch.read_until("serve: model")
        os.kill(launch.tritonserver(), signal.SIGKILL)
        rest = launch.finish()
        assert launch.proc.returncode == 1, launch.output[-3000:]
        assert "serve: error: tritonserver exited with code -9" in rest
        assert "serve: stopped" not in rest
    finally:
        launch.close()


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace_period(monkeypatch, capsys):
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time\n"
         "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert stubborn.stdout.readline() == "up\n"  # SIGTERM is ignored from here on

    class Server:
        process = stubborn
        stopped = 0

        def wait(self, timeout=None):  # RunningServer.wait: the exit status, or None
            try:
                return stubborn.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return None

        def stop(self):
            self.stopped += 1
            return stubborn.wait()

    monkeypatch.setattr(serve, "STOP_GRACE_SECONDS", 1.0)
    monkeypatch.setattr(serve, "WAIT_POLL_SECONDS", 0.1)
    stopping = threading.Event()
    stopping.set()
    stubborn.send_signal(signal.SIGTERM)
    server = Server()
    started = time.monotonic()
    code = serve.wait_for_exit(server, stopping)
    assert code == -signal.SIGKILL
    assert 1.0 <= time.monotonic() - started < 30
    assert server.stopped == 1
    assert "serve: tritonserver did not stop in time; killing it" in capsys.readouterr().out


def test_render_repository_replaces_a_repository_it_rendered_before(tmp_path):
    from qwen3_aligner_triton.repository import Placement, render_repository

    dest = render_repository(tmp_path / "repo", Placement("KIND_CPU", 1), {"checkpoint": "/old"})
    (dest / "qwen3_aligner" / "2").mkdir()
    (dest / "qwen3_aligner" / "2" / "model.py").write_text("stale")
    (dest / "other_model").mkdir()
    (dest / "notes.txt").write_text("stale")
    out = render_repository(dest, Placement("KIND_CPU", 2), {"checkpoint": "/ckpt"})
    assert out == dest
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == [
        ".rendered-by-qwen3-aligner-triton",
        "qwen3_aligner/1/model.py",
        "qwen3_aligner/config.pbtxt",
        "qwen3_aligner_core/1/model.py",
        "qwen3_aligner_core/config.pbtxt",
    ]
    config = (dest / "qwen3_aligner_core" / "config.pbtxt").read_text()
    assert "/old" not in config and 'string_value: "/ckpt"' in config
    assert "count: 2" in config and "KIND_CPU" in config


def test_render_repository_never_deletes_a_folder_it_did_not_render(tmp_path):
    from qwen3_aligner_triton.repository import Placement, render_repository

    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="not empty and holds no repository rendered"):
        render_repository(home, Placement("KIND_CPU", 1), {"checkpoint": "/ckpt"})
    assert (home / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in home.iterdir()) == ["thesis.tex"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (render_repository(empty, Placement("KIND_CPU", 1)) / "qwen3_aligner_core").is_dir()


def test_module_entry_point_help():
    out = subprocess.run(
        [sys.executable, "-m", "qwen3_aligner_triton.serve", "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for option in (
        "--model",
        "--http-port",
        "--grpc-port",
        "--metrics-port",
        "--device",
        "--instances",
    ):
        assert option in out.stdout
