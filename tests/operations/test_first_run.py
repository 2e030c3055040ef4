"""A first run on a fresh machine: ``./scripts/serve`` with no ``--model`` downloads the checkpoint
over HTTPS (from a stand-in of the Hub on loopback) and serves it; later runs work offline; the
backend stub runs this environment's own Python."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests
from cases import CASES
from hub_standin import HubStandIn
from serve_launch import ServeLaunch
from shared_fixtures import SERVER_READY_TIMEOUT, upstream_align
from triton_calls import as_float32, infer_http

from qwen3_aligner_triton.params import DEFAULT_CHECKPOINT
from qwen3_aligner_triton.triton_flags import loopback_options
from qwen3_aligner_triton.tritonserver import start

ROOT = Path(__file__).resolve().parents[2]
SERVE_TIMEOUT = 300.0  # seconds for a launch (download included) to become ready or fail
FAIL_FAST_SECONDS = 60.0  # what a user may wait for "no Hub, no cache"
CASE = CASES[0]

pytestmark = pytest.mark.integration


# -- the stub's Python --------------------------------------------------------------------------

PROBE_CONFIG = """
name: "stub_probe"
backend: "python"
max_batch_size: 0
input [{ name: "X", data_type: TYPE_INT32, dims: [1] }]
output [{ name: "REPORT", data_type: TYPE_STRING, dims: [1] }]
instance_group [{ kind: KIND_CPU, count: 1 }]
"""

PROBE_MODEL = """
import hashlib
import json
import ssl
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.report = json.dumps({
            "version": sys.version,
            "openssl": ssl.OPENSSL_VERSION,
            "sha3": hashlib.sha3_256(b"qwen3-aligner").hexdigest(),
            "blake2": hashlib.new("blake2b", b"qwen3-aligner").hexdigest(),
            "tls_context": type(ssl.create_default_context()).__name__,
            "executable_prefix": sys.base_prefix,
        })

    def execute(self, requests):
        out = np.array([self.report.encode()], dtype=np.object_)
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("REPORT", out)]) for _ in requests
        ]
"""


def test_the_backend_stub_runs_this_environments_python(tmp_path):
    import hashlib

    model = tmp_path / "repo" / "stub_probe"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(PROBE_CONFIG)
    (model / "1" / "model.py").write_text(textwrap.dedent(PROBE_MODEL))
    opts = dataclasses.replace(loopback_options(tmp_path / "repo"), watchdog=False)
    running = start(opts)
    try:
        running.wait_ready(SERVER_READY_TIMEOUT)
        body = {"inputs": [{"name": "X", "shape": [1], "datatype": "INT32", "data": [0]}]}
        url = f"http://127.0.0.1:{opts.http_port}/v2/models/stub_probe/infer"
        answer = requests.post(url, json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        report = json.loads(answer.json()["outputs"][0]["data"][0])
    finally:
        running.stop()
    print(f"\nstub sys.version: {report['version']}\nvenv sys.version: {sys.version}")
    assert report["version"] == sys.version
    assert report["openssl"] == ssl.OPENSSL_VERSION
    assert report["sha3"] == hashlib.sha3_256(b"qwen3-aligner").hexdigest()
    assert report["blake2"] == hashlib.new("blake2b", b"qwen3-aligner").hexdigest()
    assert report["tls_context"] == "SSLContext"
    assert report["executable_prefix"] == sys.base_prefix


# -- ./scripts/serve and the Hub ------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_run_environment(hf_home: Path, hub: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.pop("MODEL_PATH", None)
    env.pop("MODEL_REVISION", None)
    env.update(hub)
    env["HF_HOME"] = str(hf_home)
    return env


def Launch(env: dict[str, str], *args: str) -> ServeLaunch:
    return ServeLaunch(*args, env=env, timeout=SERVE_TIMEOUT)


def show(title: str, output: str) -> None:
    """What the user saw: kept in the test log (pytest -s shows it)."""
    lines = [ln for ln in output.splitlines() if not ln.startswith(("I1", "W1", "E1", "+-", "|"))]
    print(f"\n--- {title} ---\n" + "\n".join(lines[:60]))


@pytest.fixture
def expected(upstream):
    return as_float32(
        upstream_align(upstream, CASE.audio(), CASE.sample_rate, CASE.text, CASE.upstream_language)
    )


def serve_and_align(env: dict[str, str], expected) -> str:
    """Run ./scripts/serve until ready, check one alignment against ``expected``, stop it;
    returns what the launcher printed."""
    launch = Launch(env)
    try:
        output = launch.until("serve: model")
        assert "serve: ready in" in output, output[-4000:]
        got = infer_http(f"127.0.0.1:{launch.http}", CASE.audio(), CASE.sample_rate, CASE.text,
                         CASE.language)  # fmt: skip
        assert got["units"] == expected
    finally:
        output = launch.stop()
    return output


def test_first_run_downloads_serves_and_later_runs_offline(tmp_path, tiny_checkpoint, expected):
    hf_home = tmp_path / "hf-home"
    standin = HubStandIn({DEFAULT_CHECKPOINT: tiny_checkpoint}, tmp_path / "ca").start()
    env = first_run_environment(hf_home, standin.environment())
    # (a) empty cache, the Hub reachable over HTTPS: download, then serve
    try:
        output = serve_and_align(env, expected)
    finally:
        standin.stop()
    show("first run", output)
    snapshot = hf_home / "hub" / "models--Qwen--Qwen3-ForcedAligner-0.6B" / "snapshots"
    (folder,) = snapshot.iterdir()
    assert f"serve: {DEFAULT_CHECKPOINT} is in {folder}" in output
    assert re.search(r"Fetching \d+ files", output)  # huggingface_hub's progress bar
    downloads = {s.path.rsplit("/", 1)[-1] for s in standin.seen if s.method == "GET"}
    assert "config.json" in downloads and len(downloads) >= 10
    # (b) the stand-in gone and HF_HUB_OFFLINE=1: the cache serves
    seen = len(standin.seen)
    output = serve_and_align({**env, "HF_HUB_OFFLINE": "1"}, expected)
    show("offline run", output)
    assert f"serve: {DEFAULT_CHECKPOINT} is in {folder}" in output
    assert len(standin.seen) == seen


def test_no_hub_and_no_cache_fails_fast_with_the_way_out(tmp_path):
    dead = {"HF_ENDPOINT": f"https://127.0.0.1:{closed_port()}"}
    launch = Launch(first_run_environment(tmp_path / "empty-hf-home", dead))
    try:
        code = launch.proc.wait(timeout=FAIL_FAST_SECONDS)
    finally:
        output = launch.stop()
    show("no Hub, no cache", output)
    assert code != 0
    assert f"cannot get {DEFAULT_CHECKPOINT}" in output
    assert "cannot be reached" in output and "holds no copy" in output
    assert "./scripts/serve --model /path/to/checkpoint" in output
    assert "serve: tritonserver from" not in output  # stopped before starting the server


def test_fetch_model_then_serve_the_folder(tmp_path, tiny_checkpoint):
    """The air-gapped path: fetch on one machine, copy the folder, serve it with --model."""
    with HubStandIn({DEFAULT_CHECKPOINT: tiny_checkpoint}, tmp_path / "ca") as standin:
        env = first_run_environment(tmp_path / "hf-home", standin.environment())
        target = tmp_path / "copied-checkpoint"
        commit = standin.commits[DEFAULT_CHECKPOINT]
        proc = subprocess.run(
            [str(ROOT / "scripts" / "fetch-model"), "--revision", commit, str(target)],
            capture_output=True, text=True, env=env, timeout=SERVE_TIMEOUT,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"serve it with ./scripts/serve --model {target}" in proc.stdout
    for f in tiny_checkpoint.iterdir():
        assert (target / f.name).read_bytes() == f.read_bytes()
    assert not (tmp_path / "hf-home" / "hub").exists() or not any(
        (tmp_path / "hf-home" / "hub").glob("models--*/blobs/*")
    )
