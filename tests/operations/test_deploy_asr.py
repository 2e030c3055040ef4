"""The ASR model in the container: ``ASR_MODEL`` (and ``ASR_MODEL_REVISION``) in the entrypoint,
Compose and Kubernetes.

The entrypoint is planned with the same :func:`~qwen3_aligner_triton.serve.plan_launch` as
``./scripts/serve --asr``: a folder or a hub id (fetched into the Hugging Face cache before the
server starts, here from the HTTPS stand-in of the Hub), nothing when unset or empty, and a value
that names no checkpoint refused before anything starts. Live: the entrypoint serves a request
without ``TEXT`` on a real tritonserver, and the public model is never ready before the ASR model.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from hub_standin import HubStandIn
from shared_fixtures import SERVER_READY_TIMEOUT
from test_deploy import (
    COMPOSE,
    HTTP_PORT,
    K8S,
    FakeServer,
    aligner_container,
    child_tritonserver,
    compose_config,
    compose_json,
    entrypoint_env,
    loopback_arguments,
    make_checkpoint_dir,
    probe_urls,
    start_entrypoint,
)
from triton_calls import MODEL

from qwen3_aligner_tools.asr_checkpoint_builder import expected_transcript
from qwen3_aligner_triton import entrypoint, hub, serve
from qwen3_aligner_triton.asr import ASR_CHECKPOINT_ENV, DEFAULT_ASR_CHECKPOINT
from qwen3_aligner_triton.contract import ASR_MODEL_NAME, CORE_MODEL_NAME
from qwen3_aligner_triton.core import audio_tokens_of_frames, frames_of_samples
from qwen3_aligner_triton.hub import ASR_REVISION_ENV, REVISION_ENV
from qwen3_aligner_triton.repository import SOURCE_REPOSITORY, load_config
from qwen3_aligner_triton.triton_flags import free_ports
from qwen3_aligner_triton.tritonserver import shm_regions

SAMPLE_RATE = 16000  # Hz
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def asr_folder(path: Path, thinker_type: str = "qwen3_asr_audio_encoder") -> Path:
    """A folder whose config.json says what kind of checkpoint it is (enough for the plan)."""
    path.mkdir(parents=True)
    config = {"model_type": "qwen3_asr", "thinker_config": {"model_type": thinker_type}}
    (path / "config.json").write_text(json.dumps(config))
    return path


# ---------------------------------------------------------------------------------------------
# The plan


def test_no_asr_model_unless_asr_model_is_set():
    for env in ({}, {ASR_CHECKPOINT_ENV: ""}, {ASR_CHECKPOINT_ENV: "  "}):
        plan = entrypoint.plan_container(env, 0)
        assert (plan.asr, plan.asr_revision) == (None, None)


def test_asr_model_names_a_folder_or_a_hub_id_and_its_revision(tmp_path):
    folder = asr_folder(tmp_path / "asr")
    plan = entrypoint.plan_container({ASR_CHECKPOINT_ENV: f" {folder} "}, 0)
    assert (plan.asr, plan.asr_revision) == (str(folder), None)
    env = {ASR_CHECKPOINT_ENV: DEFAULT_ASR_CHECKPOINT, ASR_REVISION_ENV: COMMIT}
    plan = entrypoint.plan_container({**env, REVISION_ENV: "v1"}, 0)
    assert (plan.asr, plan.asr_revision, plan.revision) == (DEFAULT_ASR_CHECKPOINT, COMMIT, "v1")
    # MODEL_REVISION pins the aligner only.
    plan = entrypoint.plan_container({ASR_CHECKPOINT_ENV: "org/asr", REVISION_ENV: "v1"}, 0)
    assert plan.asr_revision is None


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on", "default", "false", "0"])
def test_a_switch_word_is_refused_naming_the_default(value):
    with pytest.raises(ValueError) as caught:
        entrypoint.plan_container({ASR_CHECKPOINT_ENV: value}, 0)
    assert str(caught.value) == (
        f"ASR_MODEL={value!r} names no checkpoint: give the ASR model's folder or Hub id (the "
        "default, Qwen/Qwen3-ASR-0.6B: ASR_MODEL=Qwen/Qwen3-ASR-0.6B; empty or unset: no ASR "
        "model)"
    )


def test_a_bad_asr_model_or_revision_is_refused(tmp_path):
    aligner = asr_folder(tmp_path / "aligner", thinker_type="qwen3_forced_aligner")
    empty = tmp_path / "empty"
    empty.mkdir()
    folder = asr_folder(tmp_path / "asr")
    cases = [
        ({ASR_CHECKPOINT_ENV: "/models/missing"}, "ASR_MODEL='/models/missing': ASR checkpoint "
         "folder '/models/missing' does not exist"),
        ({ASR_CHECKPOINT_ENV: str(empty)}, f"ASR checkpoint folder '{empty}' has no config.json"),
        ({ASR_CHECKPOINT_ENV: str(aligner)}, "is a forced aligner, not an ASR checkpoint"),
        ({ASR_REVISION_ENV: COMMIT}, "ASR_MODEL_REVISION is set but no ASR model is: name it "
         "with ASR_MODEL"),
        ({ASR_CHECKPOINT_ENV: str(folder), ASR_REVISION_ENV: "v1"},
         f"ASR_MODEL_REVISION applies to hub ids, not to the folder '{folder}'"),
    ]  # fmt: skip
    for env, message in cases:
        with pytest.raises(ValueError) as caught:
            entrypoint.plan_container(env, 0)
        assert message in str(caught.value), env


def test_the_image_template_must_hold_the_asr_model(tmp_path):
    template = tmp_path / "template"
    for name in (MODEL, CORE_MODEL_NAME):
        (template / name).mkdir(parents=True)
        (template / name / "config.pbtxt").write_text(
            (SOURCE_REPOSITORY / name / "config.pbtxt").read_text()
        )
    assert entrypoint.plan_container({entrypoint.TEMPLATE_ENV: str(template)}, 0).asr is None
    env = {entrypoint.TEMPLATE_ENV: str(template), ASR_CHECKPOINT_ENV: "org/asr"}
    with pytest.raises(ValueError, match=f"holds no {ASR_MODEL_NAME}/config.pbtxt"):
        entrypoint.plan_container(env, 0)


def test_serve_reads_asr_model_too_and_its_options_come_first(tmp_path, monkeypatch):
    """One resolution for both launchers: --asr and --asr-revision over the variables."""
    env = {ASR_CHECKPOINT_ENV: "org/from-env", ASR_REVISION_ENV: "v2"}
    plan = serve.plan_launch(None, "cpu", None, env, 0)
    assert (plan.asr, plan.asr_revision) == ("org/from-env", "v2")
    args = serve.parse_args(["--asr", "--asr-revision", COMMIT])
    plan = serve.plan_launch(
        None, "cpu", None, env, 0, asr=args.asr, asr_revision=args.asr_revision
    )
    assert (plan.asr, plan.asr_revision) == (DEFAULT_ASR_CHECKPOINT, COMMIT)
    with pytest.raises(ValueError, match="--asr-revision is set but no ASR model is"):
        serve.plan_launch(None, "cpu", None, {}, 0, asr_revision="v1")
    with pytest.raises(ValueError, match=r"--asr 'true' names no checkpoint: .*--asr alone"):
        serve.plan_launch(None, "cpu", None, {}, 0, asr="true")


# ---------------------------------------------------------------------------------------------
# The entrypoint (no server)


@pytest.fixture
def started(monkeypatch):
    """The servers main() starts (stand-ins that exit 0 at once)."""
    runs: list = []

    def fake_start(opts, install, env=None, echo=None):
        runs.append(opts)
        return FakeServer(0)

    monkeypatch.setattr(entrypoint, "start", fake_start)
    monkeypatch.setattr(entrypoint, "cuda_device_count", lambda: 0)
    return runs


def test_main_renders_the_asr_model_from_a_folder(tmp_path, started, capsys):
    folder = asr_folder(tmp_path / "asr")
    repo = tmp_path / "rendered"
    environ = {"MODEL_PATH": "/models/ckpt", ASR_CHECKPOINT_ENV: str(folder),
               entrypoint.RENDERED_ENV: str(repo)}  # fmt: skip
    assert entrypoint.main([], environ) == 0
    assert len(started) == 1
    asr = load_config(repo / ASR_MODEL_NAME / "config.pbtxt")
    assert asr.parameters["checkpoint"].string_value == str(folder)
    assert asr.instance_group[0].kind == 2  # KIND_CPU, the forward's device
    front = load_config(repo / MODEL / "config.pbtxt")
    assert front.parameters["asr"].string_value == "true"
    assert (
        f"serving /models/ckpt: forward on CPU x1, ASR {folder} on CPU" in capsys.readouterr().out
    )


def test_main_without_asr_model_renders_no_asr_model(tmp_path, started):
    repo = tmp_path / "rendered"
    assert entrypoint.main([], {"MODEL_PATH": "/m", entrypoint.RENDERED_ENV: str(repo)}) == 0
    assert not (repo / ASR_MODEL_NAME).exists()
    assert load_config(repo / MODEL / "config.pbtxt").parameters["asr"].string_value == "false"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("true", "entrypoint: error: ASR_MODEL='true' names no checkpoint"),
        ("/models/asr", "entrypoint: error: ASR_MODEL='/models/asr': ASR checkpoint folder"),
    ],
)
def test_main_refuses_a_bad_asr_model_before_starting_anything(
    tmp_path, monkeypatch, capsys, value, message
):
    monkeypatch.setattr(entrypoint, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(entrypoint, "start", lambda *a, **k: pytest.fail("started anyway"))
    monkeypatch.setattr(hub, "fetch_checkpoint", lambda *a, **k: pytest.fail("fetched anyway"))
    environ = {ASR_CHECKPOINT_ENV: value, entrypoint.RENDERED_ENV: str(tmp_path / "r")}
    assert entrypoint.main([], environ) == entrypoint.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_main_stops_before_the_server_when_the_asr_model_cannot_be_had(
    tmp_path, monkeypatch, capsys
):
    def fetch(repo_id, revision=None, local_dir=None, token=None):
        if repo_id == "org/missing-asr":
            raise hub.CheckpointUnavailable(f"cannot get {repo_id}")
        return tmp_path / "aligner"

    monkeypatch.setattr(hub, "fetch_checkpoint", fetch)
    monkeypatch.setattr(entrypoint, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(entrypoint, "start", lambda *a, **k: pytest.fail("started anyway"))
    environ = {ASR_CHECKPOINT_ENV: "org/missing-asr", entrypoint.RENDERED_ENV: str(tmp_path / "r")}
    assert entrypoint.main([], environ) == entrypoint.EXIT_FAILED
    assert "entrypoint: error: cannot get org/missing-asr" in capsys.readouterr().err


def fake_tritonserver(folder: Path) -> Path:
    """A ``tritonserver`` for PATH that writes its arguments to ``args.json`` and exits 0."""
    folder.mkdir(parents=True)
    binary = folder / "tritonserver"
    binary.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"open({str(folder / 'args.json')!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    binary.chmod(0o755)
    return folder


def test_an_asr_hub_id_is_fetched_from_the_hub_at_its_revision(tmp_path, asr_checkpoint):
    """The container's entrypoint with ASR_MODEL=Qwen/Qwen3-ASR-0.6B pinned by
    ASR_MODEL_REVISION: downloaded over HTTPS (HF_ENDPOINT) into $HF_HOME before the server
    starts, and the ASR model handed the snapshot folder (the server here is a stand-in)."""
    bin_dir = fake_tritonserver(tmp_path / "bin")
    hf_home = tmp_path / "hf-home"
    repo = tmp_path / "rendered"
    with HubStandIn({DEFAULT_ASR_CHECKPOINT: asr_checkpoint}, tmp_path / "ca") as standin:
        commit = standin.commits[DEFAULT_ASR_CHECKPOINT]
        keep = ("HF_", "ALIGNER_", hub.MAX_BYTES_ENV, hub.ALLOW_HTTP_ENV, "MODEL_", "ASR_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(keep)}
        env.update(standin.environment())
        env.update({
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "HF_HOME": str(hf_home),
            "MODEL_PATH": "/models/aligner",
            "DEVICE": "cpu",
            ASR_CHECKPOINT_ENV: DEFAULT_ASR_CHECKPOINT,
            ASR_REVISION_ENV: commit,
            entrypoint.RENDERED_ENV: str(repo),
        })  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "qwen3_aligner_triton.entrypoint"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        downloads = {s.path.rsplit("/", 1)[-1] for s in standin.seen if s.method == "GET"}
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    snapshot = hf_home / "hub" / "models--Qwen--Qwen3-ASR-0.6B" / "snapshots" / commit
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(
        p.name for p in asr_checkpoint.iterdir()
    )
    for file in asr_checkpoint.iterdir():
        assert (snapshot / file.name).read_bytes() == file.read_bytes(), file.name
    assert "config.json" in downloads
    asr = load_config(repo / ASR_MODEL_NAME / "config.pbtxt")
    assert asr.parameters["checkpoint"].string_value == str(snapshot)
    assert f"--model-repository={repo}" in json.loads((bin_dir / "args.json").read_text())
    out = proc.stdout
    assert (
        f"entrypoint: fetching {DEFAULT_ASR_CHECKPOINT} at {commit} from {standin.endpoint}" in out
    )
    assert f"entrypoint: {DEFAULT_ASR_CHECKPOINT} is in {snapshot}" in out
    assert out.index(f"is in {snapshot}") < out.index("entrypoint: tritonserver from")


# ---------------------------------------------------------------------------------------------
# Compose and Kubernetes


def test_compose_passes_asr_model_through_and_leaves_it_off_by_default():
    environment = compose_config()["services"]["aligner"]["environment"]
    assert environment[ASR_CHECKPOINT_ENV] == environment[ASR_REVISION_ENV] == ""
    assert entrypoint.plan_container(environment, 1).asr is None
    on = compose_json(COMPOSE, ASR_MODEL=DEFAULT_ASR_CHECKPOINT, ASR_MODEL_REVISION=COMMIT)
    plan = entrypoint.plan_container(on["services"]["aligner"]["environment"], 1)
    assert (plan.asr, plan.asr_revision) == (DEFAULT_ASR_CHECKPOINT, COMMIT)
    text = COMPOSE.read_text()
    assert "ASR_MODEL=Qwen/Qwen3-ASR-0.6B" in text  # the comment says how to turn it on
    # Readiness is Triton's, which covers every model (the live test below).
    assert probe_urls()["compose healthcheck"] == (HTTP_PORT, "/v2/health/ready")


def test_deployment_names_asr_model_and_keeps_tritons_readiness():
    container = aligner_container()
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env[ASR_CHECKPOINT_ENV] == env[ASR_REVISION_ENV] == ""
    assert entrypoint.plan_container(env, 1).asr is None
    on = {**env, ASR_CHECKPOINT_ENV: DEFAULT_ASR_CHECKPOINT, ASR_REVISION_ENV: COMMIT}
    plan = entrypoint.plan_container(on, 1)
    assert (plan.asr, plan.asr_revision) == (DEFAULT_ASR_CHECKPOINT, COMMIT)
    assert "Qwen/Qwen3-ASR-0.6B" in (K8S / "deployment.yaml").read_text()
    for probe in ("startupProbe", "readinessProbe"):
        assert probe_urls()[f"k8s {probe}"] == (HTTP_PORT, "/v2/health/ready")


# ---------------------------------------------------------------------------------------------
# Against a real tritonserver


def status(url: str) -> int | None:
    """The HTTP status of GET ``url``; None while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def stop(process: subprocess.Popen) -> None:
    """Kill the entrypoint ``process`` and its tritonserver if they still run (a failed test)."""
    if process.poll() is not None:
        return
    try:  # the server runs in a session of its own: a failed test must stop it too
        server_pid: int | None = child_tritonserver(process.pid)
    except AssertionError:
        server_pid = None
    process.kill()
    process.wait()
    if server_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server_pid, signal.SIGKILL)


def transcribe(url: str, audio: np.ndarray) -> tuple[str, list[str]]:
    """A request without TEXT and LANGUAGE: (the transcript, the aligned words)."""
    inputs = [httpclient.InferInput("AUDIO", [1, audio.shape[0]], "FP32")]
    inputs[0].set_data_from_numpy(audio[None, :])
    with httpclient.InferenceServerClient(url) as client:
        result = client.infer(MODEL, inputs)
    text = result.as_numpy("TRANSCRIPT").reshape(-1)[0].decode()
    words = [w.decode() for w in result.as_numpy("WORDS").reshape(-1)]
    return text, words


@pytest.mark.integration
def test_entrypoint_with_asr_model_transcribes_and_is_ready_only_with_it(
    tmp_path, tiny_checkpoint, asr_checkpoint
):
    """ASR_MODEL set to a folder: the public model answers a request without TEXT with the ASR
    checkpoint's transcript, aligned; and no port answers before every model is loaded, so
    neither /v2/health/ready nor /v2/models/qwen3_aligner/ready is green without qwen3_asr."""
    http, grpc, metrics = free_ports(3)
    args = loopback_arguments(http, grpc, metrics)
    env = entrypoint_env(
        tmp_path / "rendered", tiny_checkpoint, **{ASR_CHECKPOINT_ENV: str(asr_checkpoint)}
    )
    before = shm_regions()
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = start_entrypoint(args, env, out)
    base = f"http://127.0.0.1:{http}"
    try:
        started = time.monotonic()
        # From the first answer on, the public model is ready only with the ASR model.
        while status(f"{base}/v2/models/{MODEL}/ready") != 200:
            assert process.poll() is None, f"exited with {process.returncode}:\n{log.read_text()}"
            assert time.monotonic() - started < SERVER_READY_TIMEOUT, log.read_text()
            time.sleep(0.1)
        assert status(f"{base}/v2/models/{ASR_MODEL_NAME}/ready") == 200
        assert status(f"{base}/v2/health/ready") == 200
        output = log.read_text()
        listening = output.index("Started HTTPService")
        for name in (ASR_MODEL_NAME, CORE_MODEL_NAME, MODEL):
            assert output.index(f"successfully loaded '{name}'") < listening, name
        assert f"ASR {asr_checkpoint} on CPU" in output
        audio = (np.random.default_rng(7).standard_normal(3 * SAMPLE_RATE) * 0.1).astype(np.float32)
        text, words = transcribe(f"127.0.0.1:{http}", audio)
        tokens = audio_tokens_of_frames(frames_of_samples(audio.shape[0]))
        assert text == expected_transcript(tokens)
        assert words == text.split()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        assert process.returncode == 0, log.read_text()
        assert "entrypoint: tritonserver exited with status 0" in log.read_text()
    finally:
        stop(process)
        for region in shm_regions() - before:
            Path(region).unlink(missing_ok=True)


@pytest.mark.integration
def test_entrypoint_exits_non_zero_when_the_asr_model_fails_to_load(tmp_path, tiny_checkpoint):
    """A folder that looks like an ASR checkpoint but does not load: tritonserver exits
    (--exit-on-error) without ever answering ready, and so does the entrypoint."""
    http, grpc, metrics = free_ports(3)
    broken = make_checkpoint_dir(tmp_path / "broken-asr")
    args = [*loopback_arguments(http, grpc, metrics), "--exit-on-error=true"]
    env = entrypoint_env(
        tmp_path / "rendered", tiny_checkpoint, **{ASR_CHECKPOINT_ENV: str(broken)}
    )
    before = shm_regions()
    proc = start_entrypoint(args, env, subprocess.PIPE)
    try:
        # Every model's load is attempted, then the others are unloaded: twice a start.
        output, _ = proc.communicate(timeout=2 * SERVER_READY_TIMEOUT)
    finally:
        stop(proc)
        for region in shm_regions() - before:
            Path(region).unlink(missing_ok=True)
    assert proc.returncode != 0, output
    assert "Started HTTPService" not in output
    assert f"could not load the ASR checkpoint '{broken}'" in output
    assert f"failed to load '{ASR_MODEL_NAME}'" in output
    assert "entrypoint: tritonserver exited with status" in output
