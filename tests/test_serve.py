"""``./scripts/serve``: launch planning, and the real command with good and broken checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from qwen3_aligner_triton.params import DEFAULT_CHECKPOINT
from qwen3_aligner_triton.serve import plan_launch
from qwen3_aligner_triton.tritonserver import free_ports

ROOT = Path(__file__).resolve().parents[1]
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


@pytest.mark.integration
def test_serve_runs_until_interrupted(tiny_checkpoint):
    http, grpc, metrics = free_ports(3)
    cmd = [
        str(ROOT / "scripts" / "serve"),
        "--model", str(tiny_checkpoint),
        "--device", "cpu",
        "--address=127.0.0.1",
        f"--http-port={http}",
        f"--grpc-port={grpc}",
        f"--metrics-port={metrics}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "serve: model" in line:
                break
        output = "".join(lines)
        assert "serve: ready in" in output, output[-3000:]
        assert f"http://127.0.0.1:{http}" in output
        assert f"127.0.0.1:{grpc}" in output
        assert (
            requests.get(f"http://127.0.0.1:{http}/v2/health/ready", timeout=5).status_code == 200
        )
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest[-3000:]
        assert "serve: stopped" in rest
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{http}/v2/health/live", timeout=5)
    finally:
        if proc.poll() is None:
            # tritonserver runs in a session of its own: stop it too when the test fails
            for pid in children_named(proc.pid, b"tritonserver"):
                os.kill(pid, signal.SIGKILL)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def children_named(parent: int, name: bytes) -> list[int]:
    """PIDs of the direct children of ``parent`` whose executable is called ``name``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            exe = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if exe.endswith(b"/" + name) and f"\nPPid:\t{parent}\n" in status:
            found.append(int(entry.name))
    return found


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
