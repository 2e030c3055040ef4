"""Shared fixtures of every test folder: the tiny checkpoint, the upstream aligner on it and a real
tritonserver, with the lanes' rules (the fast lane, the unit folder's promise, the checkpoint's
training before the first test that needs it). Loaded by the checkout's ``conftest.py``."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest
from qwen3_aligner_client.results import SCORE_TOLERANCE as CLIENT_SCORE_TOLERANCE

from qwen3_aligner_triton.repository import Placement, render_repository
from qwen3_aligner_triton.triton_flags import ServerOptions, loopback_options
from qwen3_aligner_triton.tritonserver import shm_regions, start

SERVER_READY_TIMEOUT = 180.0  # seconds; the tiny model is ready in ~10 s on two cores
TEST_FRONT_INSTANCES = 2  # front instances of test servers (fewer stubs than the default)


@pytest.fixture(scope="session", autouse=True)
def _simulated_device_lock_removed():
    """The simulated GPU's machine-wide lock file is created by the first server that uses it;
    remove it after the suite if the suite created it (it is not ours to remove otherwise)."""
    from qwen3_aligner_tools.simulated_device import SIMULATED_DEVICE_LOCK

    existed = os.path.exists(SIMULATED_DEVICE_LOCK)
    yield
    if not existed:
        with contextlib.suppress(FileNotFoundError):
            os.remove(SIMULATED_DEVICE_LOCK)


# The fast lane (./scripts/test --fast, or this variable set to 1) runs the tests that need no
# tritonserver and no tiny checkpoint: not those marked `integration`, nor those using one of these
# fixtures, directly or through other fixtures (item.fixturenames is the closure).
FAST_LANE_ENV = "QWEN3_ALIGNER_FAST"
SLOW_FIXTURES = frozenset(
    {"server", "tiny_checkpoint", "upstream", "random_checkpoint", "asr_checkpoint"}
)


def needs_server_or_checkpoint(item) -> bool:
    """Whether ``item`` is left out of the fast lane."""
    if item.get_closest_marker("integration") is not None:
        return True
    return not SLOW_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))


# tests/unit holds the tests that need neither: the folder's promise, kept at collection.
UNIT_FOLDER = Path(__file__).resolve().parent / "unit"


def unit_folder_breaches(items) -> list[str]:
    """The tests of ``tests/unit`` that need a tritonserver or a test checkpoint."""
    return [
        item.nodeid
        for item in items
        if item.path.resolve().is_relative_to(UNIT_FOLDER) and needs_server_or_checkpoint(item)
    ]


def pytest_collection_modifyitems(config, items):
    breaches = unit_folder_breaches(items)
    if breaches:
        raise pytest.UsageError(
            "tests/unit is for tests that need no tritonserver and no test checkpoint; move these "
            "to tests/model, tests/server or tests/operations (docs/testing.md#folders): "
            + ", ".join(breaches)
        )
    if os.environ.get(FAST_LANE_ENV) == "1":
        slow = [item for item in items if needs_server_or_checkpoint(item)]
        if slow:
            config.hook.pytest_deselected(items=slow)
            left_out = set(slow)
            items[:] = [item for item in items if item not in left_out]
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "requires_cuda" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """The tiny checkpoint trained on synthetic speech, so that its timestamps follow the audio.

    Trained once per machine (a few CPU minutes) and cached under ~/.cache/qwen3-aligner-triton/
    (``$QWEN3_ALIGNER_CACHE``), keyed by a hash of the builder's source and settings; or taken
    from ``$QWEN3_ALIGNER_TINY``.
    """
    given = os.environ.get("QWEN3_ALIGNER_TINY")
    if given:
        return Path(given)
    from qwen3_aligner_tools.checkpoint_training import cached_trained_checkpoint

    return cached_trained_checkpoint()


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """The deterministic random tiny checkpoint (``scripts/make_tiny_model.py``), for contrast."""
    from qwen3_aligner_tools.checkpoint_builder import build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("random") / "checkpoint")


@pytest.fixture(scope="session")
def asr_checkpoint(tmp_path_factory) -> Path:
    """The tiny Qwen3-ASR checkpoint (``scripts/make_tiny_model.py --asr``): for any clip, greedy
    decoding says ``asr_checkpoint_builder.expected_transcript`` of its audio token count."""
    from qwen3_aligner_tools.asr_checkpoint_builder import build_asr_checkpoint

    return build_asr_checkpoint(tmp_path_factory.mktemp("asr") / "checkpoint")


@pytest.fixture(scope="session")
def upstream(tiny_checkpoint):
    """The upstream ``Qwen3ForcedAligner`` on the tiny checkpoint (float32, CPU)."""
    from qwen3_aligner_triton.loading import load_aligner

    return load_aligner(str(tiny_checkpoint), "cpu")


def upstream_align(aligner, audio: np.ndarray, sample_rate: int, text: str, language: str):
    """What upstream ``align()`` returns, as (text, start, end) tuples."""
    result = aligner.align(audio=(audio, sample_rate), text=text, language=language)[0]
    return [(it.text, it.start_time, it.end_time) for it in result]


# Served scores against upstream's forward (float32 softmax against float64): the client's promise.
SCORE_TOLERANCE = CLIENT_SCORE_TOLERANCE


def upstream_unit_scores(
    aligner, audio: np.ndarray, sample_rate: int, text: str, language: str
) -> list[float]:
    """Each unit's score from upstream's own inputs and forward pass, the ones ``align()`` takes
    its argmax of, written here from the definition (not with the code under test): per
    ``<timestamp>`` slot the softmax mass within one bin of the argmax, per unit the geometric
    mean of its start and end slots."""
    import math

    import torch
    from qwen_asr.inference.qwen3_forced_aligner import normalize_audios

    _, prompt = aligner.aligner_processor.encode_timestamp(text, language)
    inputs = aligner.processor(
        text=[prompt], audio=normalize_audios([(audio, sample_rate)]), return_tensors="pt",
        padding=True,
    ).to(aligner.model.device).to(aligner.model.dtype)  # fmt: skip
    with torch.inference_mode():
        logits = aligner.model.thinker(**inputs).logits[0]
    rows = logits[inputs["input_ids"][0] == aligner.timestamp_token_id]
    slots = []
    for row in rows:
        best = int(row.argmax())  # upstream's bin, from the logits as they are
        probs = torch.softmax(row.double(), dim=-1)
        slots.append(float(probs[max(0, best - 1) : best + 2].sum()))
    return [math.sqrt(slots[2 * i] * slots[2 * i + 1]) for i in range(len(slots) // 2)]


class LiveServer:
    """Addresses of a running test server."""

    def __init__(self, running, opts: ServerOptions) -> None:
        self.running = running
        self.http_url = f"127.0.0.1:{opts.http_port}"
        self.grpc_url = f"127.0.0.1:{opts.grpc_port}"
        self.metrics_url = f"http://127.0.0.1:{opts.metrics_port}/metrics"


def launch(
    tmp_dir: Path,
    parameters: dict[str, str],
    edit_config=None,
    front_instances: int = TEST_FRONT_INSTANCES,
    forward_instances: int = 1,
    open_apis=(),
    edit_core_config=None,
    asr: dict[str, str] | None = None,
):
    """Start a real tritonserver on loopback with free ports; returns (running, opts).

    ``edit_config(config)`` may change the rendered ``ModelConfig`` of the public model (queue
    policy, ...), ``edit_core_config(config)`` that of the core; ``open_apis`` leaves those of
    the closed API groups open; ``asr`` (the ASR model's parameters) adds the ASR model.
    """
    repo = render_repository(
        tmp_dir / "repo",
        Placement("KIND_CPU", forward_instances),
        parameters,
        front_instances=front_instances,
        asr=asr,
    )
    for name, edit in (("qwen3_aligner", edit_config), ("qwen3_aligner_core", edit_core_config)):
        if edit is None:
            continue
        from google.protobuf import text_format

        from qwen3_aligner_triton.repository import load_config

        path = repo / name / "config.pbtxt"
        config = load_config(path)
        edit(config)
        path.write_text(text_format.MessageToString(config))
    opts = loopback_options(repo, open_apis=open_apis)
    return start(opts), opts


@contextlib.contextmanager
def dedicated_server(
    tmp_dir: Path,
    checkpoint: Path,
    edit_config=None,
    front_instances: int = TEST_FRONT_INSTANCES,
    edit_core_config=None,
    **parameters,
):
    """A server of a test's own (for tests that overload, kill or stop it)."""
    params = {"checkpoint": str(checkpoint), **{k: str(v) for k, v in parameters.items()}}
    running, opts = launch(
        tmp_dir, params, edit_config, front_instances, edit_core_config=edit_core_config
    )
    try:
        running.wait_ready(SERVER_READY_TIMEOUT)
        yield LiveServer(running, opts)
    finally:
        running.stop()


@contextlib.contextmanager
def serving(running, opts: ServerOptions):
    """A started test server, once ready; afterwards stopped, and checked to have exited
    cleanly and left no shared-memory region behind."""
    try:
        running.wait_ready(SERVER_READY_TIMEOUT)
        yield LiveServer(running, opts)
    finally:
        code = running.stop()
        leftover = shm_regions(opts.shm_prefix)
        assert not leftover, f"shared-memory regions left behind: {leftover}"
        assert code == 0, f"tritonserver exited with {code}:\n{running.failure_summary()}"


@pytest.fixture(scope="session")
def server(tmp_path_factory, tiny_checkpoint):
    """A real tritonserver serving the tiny checkpoint on CPU, shared by the session. Its
    model-config API is open: perf_analyzer reads the model's configuration (dedicated servers
    keep every closed group closed, as deployments do)."""
    running, opts = launch(
        tmp_path_factory.mktemp("server"),
        {
            "checkpoint": str(tiny_checkpoint),
            "max_forward_batch": "16",
            "max_audio_seconds": "3600",
        },
        open_apis=("model-config",),
    )
    with serving(running, opts) as live:
        yield live


@pytest.fixture(scope="session")
def asr_server(tmp_path_factory, tiny_checkpoint, asr_checkpoint):
    """A real tritonserver with the tiny aligner and the tiny ASR model (``--asr``), shared by
    the session: requests without ``TEXT`` are transcribed, then aligned."""
    running, opts = launch(
        tmp_path_factory.mktemp("asr-server"),
        {"checkpoint": str(tiny_checkpoint), "max_audio_seconds": "600"},
        asr={"checkpoint": str(asr_checkpoint)},
    )
    with serving(running, opts) as live:
        yield live


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    """Train the suite's checkpoint before the first test, outside every test's timeout, when a
    selected test needs it.

    On a fresh machine the training takes about ten CPU minutes (processor-independent kernels,
    one thread), longer than the per-test timeout on a loaded machine; once cached it is instant.
    Runs whose tests need no trained checkpoint (the unit folder, the fast lane) and runs given
    another checkpoint (``$QWEN3_ALIGNER_TINY``) skip it."""
    if os.environ.get("QWEN3_ALIGNER_TINY") or session.config.option.collectonly:
        return
    if not any("tiny_checkpoint" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    from qwen3_aligner_tools.checkpoint_training import (
        cache_key,
        cache_root,
        cached_trained_checkpoint,
    )

    target = cache_root() / f"tiny-trained-{cache_key()}"
    if not (target / "config.json").is_file():
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"training the suite's tiny checkpoint into {target} "
                "(about 10 CPU minutes, once per machine)"
            )
    cached_trained_checkpoint()
