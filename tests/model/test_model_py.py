"""Both model.py files with a fake ``triton_python_backend_utils``: the front's BLS calls are
answered by the core's own ``execute`` in-process. Load checks, one response per request, errors
isolated per request, the core's failure branches, metrics and finalize()."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
import threading
from pathlib import Path

import fake_pb_utils as pb
import numpy as np
import pytest
import torch
from shared_fixtures import SCORE_TOLERANCE, upstream_align

REPO = Path(__file__).resolve().parents[2] / "model_repository"
FRONT, CORE = "qwen3_aligner", "qwen3_aligner_core"


def load_model_module(name: str = FRONT):
    sys.modules["triton_python_backend_utils"] = pb
    spec = importlib.util.spec_from_file_location(f"{name}_model_py", REPO / name / "1/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_config(name: str = FRONT, **parameters) -> str:
    from google.protobuf import json_format

    from qwen3_aligner_triton.repository import load_config

    config = load_config(REPO / name / "config.pbtxt")
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True))


def init_args(config_json: str, kind: str = "CPU", name: str = FRONT) -> dict:
    return {
        "model_config": config_json,
        "model_instance_kind": kind,
        "model_instance_device_id": "0",
        "model_repository": str(REPO / name),
        "model_version": "1",
        "model_name": name,
        "model_instance_name": f"{name}_0_0",
    }


def request(audio, text, language, sample_rate=None) -> pb.InferenceRequest:
    inputs = {
        "AUDIO": None if audio is None else np.asarray(audio, np.float32)[None, :],
        "TEXT": np.array([[text.encode()]], dtype=np.object_),
        "LANGUAGE": np.array([[language.encode()]], dtype=np.object_),
    }
    if sample_rate is not None:
        inputs["SAMPLE_RATE"] = np.array([[sample_rate]], np.int32)
    return pb.InferenceRequest({k: v for k, v in inputs.items() if v is not None})


def serve(front, requests) -> list:
    """Run the front's ``execute`` and return the one final response each request got."""

    async def run():
        assert await front.execute(requests) is None
        await front.idle()

    asyncio.run(run())
    responses = []
    for r in requests:
        assert len(r.sender.sent) == 1, "exactly one response per request"
        response, flags = r.sender.sent[0]
        assert flags == pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        responses.append(response)
    return responses


CODE_NAMES = {v: k for k, v in vars(pb.TritonError).items() if k.isupper()}


def error_message(response, expected: str = "INVALID_ARG") -> str:
    """The message of ``response``'s error, once it is checked to be an error with the code
    named ``expected`` (an attribute of ``TritonError``)."""
    assert response.has_error(), f"expected an {expected} error, the request was accepted"
    code = response.error.code()
    assert code == getattr(pb.TritonError, expected), (
        f"expected an {expected} error, got {CODE_NAMES.get(code, code)}: "
        f"{response.error.message()}"
    )
    return response.error.message()


def core_request(arrays) -> pb.InferenceRequest:
    """A request to the core as the front sends it: with this server's key."""
    from qwen3_aligner_triton.core_access import key_parameters, server_key

    return pb.InferenceRequest(arrays, parameters=key_parameters(server_key()))


def make_core(checkpoint, **parameters):
    instance = load_model_module(CORE).TritonPythonModel()
    params = {"checkpoint": str(checkpoint), "max_forward_batch": "16", **parameters}
    instance.initialize(init_args(model_config(CORE, **params), name=CORE))
    return instance


_STUB_LOOP: list[asyncio.AbstractEventLoop] = []


def stub_loop() -> asyncio.AbstractEventLoop:
    """The event loop a stub runs coroutine ``execute()`` calls on: one thread of its own."""
    if not _STUB_LOOP:
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="stub-loop", daemon=True).start()
        _STUB_LOOP.append(loop)
    return _STUB_LOOP[0]


def core_execute(core, requests, timeout: float = 120.0) -> list:
    """Run the core's ``execute`` as the stub does (on its loop thread) and return the one final
    response each request got through its response sender."""
    returned = asyncio.run_coroutine_threadsafe(core.execute(requests), stub_loop())
    assert returned.result(timeout) is None
    responses = []
    for r in requests:
        assert r.sender.final.wait(timeout), "a request was never answered"
        assert len(r.sender.sent) == 1, "exactly one response per request"
        responses.append(r.sender.sent[0][0])
    return responses


def wire(core) -> None:
    """Answer the front's BLS calls with the core, one clip per call (calls come from several
    threads at once, as the stub's; the core batches what reaches it together)."""

    def handler(req):
        return core_execute(core, [req])[0]

    pb.InferenceRequest.handler = handler


@pytest.fixture(scope="module")
def core(tiny_checkpoint):
    instance = make_core(tiny_checkpoint)
    yield instance
    instance.finalize()


@pytest.fixture(scope="module")
def front(tiny_checkpoint, core):
    instance = load_model_module(FRONT).TritonPythonModel()
    instance.initialize(init_args(model_config(FRONT, checkpoint=str(tiny_checkpoint))))
    yield instance
    instance.finalize()


@pytest.fixture(autouse=True)
def wired(request):
    if "core" in request.fixturenames:
        wire(request.getfixturevalue("core"))
    yield
    pb.InferenceRequest.handler = None


def test_initialize_logs_readiness(front, core):
    messages = [m for level, m in pb.Logger.records if level == "info"]
    assert any("front ready" in m for m in messages)
    described = f"on {core.device} (torch.float32; encoder windowed, packed; decoder packed) ready"
    assert any(described in m for m in messages), messages


def test_one_response_per_request_in_order_with_errors_isolated(front, upstream):
    rng = np.random.default_rng(0)
    a1 = (rng.standard_normal(16000 * 2 + 33) * 0.2).astype(np.float32)
    a2 = (rng.standard_normal(8000 * 5) * 0.2).astype(np.float32)
    requests = [
        request(a1, "hello there world", "en"),
        request(a1, "hello", "klingon"),
        request(None, "no audio", "en"),
        request(a2, "我们今天去公园", "zh", sample_rate=8000),
        request(a1, "?!", "en"),
        request(np.full(16000, np.nan), "nan audio", "en"),
    ]
    responses = serve(front, requests)
    for i in (0, 3):
        assert not responses[i].has_error(), responses[i].error.message()
    assert "LANGUAGE" in error_message(responses[1])
    assert "input AUDIO or AUDIO_FILE is required" in error_message(responses[2])
    assert "no alignable words" in error_message(responses[4])
    assert "NaN" in error_message(responses[5])

    expected = upstream_align(upstream, a2, 8000, "我们今天去公园", "Chinese")
    words = [w.decode() for w in responses[3].output("WORDS")[0]]
    starts = responses[3].output("START_TIMES")[0]
    ends = responses[3].output("END_TIMES")[0]
    assert words == [e[0] for e in expected]
    np.testing.assert_array_equal(starts, np.array([e[1] for e in expected], np.float32))
    np.testing.assert_array_equal(ends, np.array([e[2] for e in expected], np.float32))
    doc = json.loads(responses[3].output("ALIGNMENT")[0][0])
    assert doc["language"] == "Chinese"
    assert doc["duration"] == 5.0
    assert [(w["text"], w["start"], w["end"]) for w in doc["words"]] == expected


def test_core_answers_bins_and_confidences_per_slot(core, front):
    rng = np.random.default_rng(1)
    item = front.front.preparer.prepare(_align_request(rng, "one two three")).core_input()
    from qwen3_aligner_triton.front import core_request_arrays

    req = core_request(core_request_arrays(item))
    (response,) = core_execute(core, [req])
    bins = response.output("TIMESTAMP_BINS")
    confidence = response.output("SLOT_CONFIDENCE")
    assert bins.dtype == np.int32 and confidence.dtype == np.float32
    assert bins.shape == confidence.shape == (1, 6)
    assert ((confidence > 0) & (confidence <= 1)).all()


def test_core_execute_returns_before_the_answer_on_a_gpu_and_after_it_with_one_clip_per_pass(
    core, front, tiny_checkpoint, monkeypatch
):
    """With passes of several clips the core's execute() only queues (Triton copies in the next
    clips while the device works); with one clip per pass (CPU) it returns once its clip is
    answered, so that Triton hands the next clip to whichever instance is free."""
    from qwen3_aligner_triton.front import core_request_arrays

    rng = np.random.default_rng(5)
    arrays = core_request_arrays(
        front.front.preparer.prepare(_align_request(rng, "one two")).core_input()
    )
    gate = threading.Event()
    real_run = core.runner.run

    def gated(items, on_batch=None):
        assert gate.wait(30)
        return real_run(items)

    monkeypatch.setattr(core.runner, "run", gated)
    req = core_request(arrays)
    asyncio.run_coroutine_threadsafe(core.execute([req]), stub_loop()).result(30)
    assert not req.sender.final.is_set()  # returned while its pass was still running
    gate.set()
    assert req.sender.final.wait(30) and not req.sender.sent[0][0].has_error()

    one_per_pass = make_core(tiny_checkpoint, max_forward_batch="1")
    try:
        req = core_request(arrays)
        asyncio.run_coroutine_threadsafe(one_per_pass.execute([req]), stub_loop()).result(60)
        assert req.sender.final.is_set()  # answered before execute() returned
        assert not req.sender.sent[0][0].has_error()
    finally:
        one_per_pass.finalize()


def test_cpu_forward_instances_share_the_cores_on_their_device_thread(
    front, tiny_checkpoint, monkeypatch
):
    """Two forward instances on the CPU run their passes with half the cores each (both with
    every core oversubscribed them); OMP_NUM_THREADS, when given, is left to decide."""
    import torch

    from qwen3_aligner_triton.front import core_request_arrays

    rng = np.random.default_rng(6)
    arrays = core_request_arrays(
        front.front.preparer.prepare(_align_request(rng, "one two")).core_input()
    )
    config = json.loads(model_config(CORE, checkpoint=str(tiny_checkpoint), max_forward_batch="1"))
    config["instance_group"] = [{"kind": "KIND_CPU", "count": 2}]
    available = torch.get_num_threads()

    def threads_in_pass(environment_threads: str | None) -> int:
        if environment_threads is None:
            monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        else:
            monkeypatch.setenv("OMP_NUM_THREADS", environment_threads)
        instance = load_model_module(CORE).TritonPythonModel()
        instance.initialize(init_args(json.dumps(config), name=CORE))
        seen: list[int] = []
        real_run = instance.runner.run

        def counting(items, on_batch=None):
            seen.append(torch.get_num_threads())
            return real_run(items)

        monkeypatch.setattr(instance.runner, "run", counting)
        try:
            (response,) = core_execute(instance, [core_request(arrays)])
            assert not response.has_error()
        finally:
            instance.finalize()
        return seen[0]

    assert threads_in_pass(None) == max(1, available // 2)
    assert torch.get_num_threads() == available  # the caller's thread is left alone
    assert threads_in_pass(str(available)) == available  # torch's default, from the environment


def _align_request(rng, text):
    from qwen3_aligner_triton.requests import AlignRequest

    audio = (rng.standard_normal(16000 * 2) * 0.2).astype(np.float32)
    return AlignRequest(audio=audio, sample_rate=16000, text=text, language="English")


def metrics_snapshot() -> dict:
    """Every fake metric's value and observations, keyed by (family, labels, metric object).

    Other model instances of the session (other modules' fixtures) have metrics with the same
    labels in the same fake families; only this test's instance executes in between.
    """
    out = {}
    for family in pb.MetricFamily.instances:
        for m in family.metrics:
            key = (family.name, tuple(sorted(m.labels.items())), id(m))
            out[key] = (m.value, len(m.observations), list(m.observations))
    return out


def test_metrics_count_alignments_rejections_and_stages(front, core):
    audio = np.zeros(16000, np.float32)
    before = metrics_snapshot()
    serve(front, [request(audio, "one two", "en"), request(audio, "x", "klingon")])
    after = metrics_snapshot()

    def delta(family: str, model: str = "qwen3_aligner", **labels) -> tuple[float, int]:
        wanted = tuple(sorted({"model": model, "version": "1", **labels}.items()))
        keys = [k for k in after if k[:2] == (family, wanted)]
        assert keys, (family, model, labels)
        value = sum(after[k][0] - before.get(k, (0.0, 0, []))[0] for k in keys)
        count = sum(after[k][1] - before.get(k, (0.0, 0, []))[1] for k in keys)
        return value, count

    assert delta("qwen3_aligner_units_total") == (2, 0)
    assert delta("qwen3_aligner_audio_seconds_total") == (pytest.approx(1.0), 0)
    assert delta("qwen3_aligner_rejected_requests_total", reason="bad_language") == (1, 0)
    for stage in ("preprocess", "postprocess"):
        assert delta("qwen3_aligner_stage_seconds", stage=stage)[1] == 1, stage
    assert delta("qwen3_aligner_stage_seconds", model=CORE, stage="forward")[1] == 1
    assert delta("qwen3_aligner_stage_seconds", model=CORE, stage="device_queue")[1] == 1
    assert delta("qwen3_aligner_forward_batch_size", model=CORE)[1] == 1
    (batch_key,) = [
        k for k in after if k[0] == "qwen3_aligner_forward_batch_size" and after[k] != before.get(k)
    ]
    assert after[batch_key][2][-1] == 1  # one request reached the forward pass
    changed = {k[0] + str(dict(k[1]).get("reason", "")) for k in after if after[k] != before.get(k)}
    assert changed == {
        "qwen3_aligner_units_total",
        "qwen3_aligner_audio_seconds_total",
        "qwen3_aligner_rejected_requests_totalbad_language",
        "qwen3_aligner_stage_seconds",
        "qwen3_aligner_forward_batch_size",
        "qwen3_aligner_request_mean_score",
        "qwen3_aligner_request_repaired_share",
    }


def test_scores_output_document_and_metrics(front):
    families = front.metrics._families
    means = families["qwen3_aligner_request_mean_score"].metrics[0]
    shares = families["qwen3_aligner_request_repaired_share"].metrics[0]
    before = len(means.observations)
    audio = np.sin(np.arange(32000, dtype=np.float32) / 7.0) * 0.3
    (response,) = serve(front, [request(audio, "one two three four", "en")])
    scores = response.output("SCORES")
    assert scores.dtype == np.float32 and scores.shape == (1, 4)
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    doc = json.loads(response.output("ALIGNMENT")[0][0])
    assert [w["score"] for w in doc["words"]] == pytest.approx(scores[0].tolist(), abs=1e-6)
    assert all(isinstance(w["repaired"], bool) for w in doc["words"])
    assert doc["mean_score"] == pytest.approx(float(np.mean(scores)), abs=1e-6)
    share = sum(w["repaired"] for w in doc["words"]) / 4
    assert doc["repaired_share"] == pytest.approx(share)
    assert means.observations[before:] == [pytest.approx(doc["mean_score"], abs=1e-6)]
    assert shares.observations[before:] == [pytest.approx(share)]


def test_unexpected_failure_in_one_request_spares_the_others(front, monkeypatch):
    real_prepare = front.front.preparer.prepare

    def prepare(req):
        if req.text == "explode":
            raise MemoryError("simulated")
        return real_prepare(req)

    monkeypatch.setattr(front.front.preparer, "prepare", prepare)
    audio = np.zeros(16000, np.float32)
    responses = serve(front, [request(audio, "explode", "en"), request(audio, "fine", "en")])
    message = error_message(responses[0], "INTERNAL")
    assert message.startswith("internal error (id ") and "simulated" not in message
    error_id = re.match(r"internal error \(id ([0-9a-f]+)\)", message).group(1)
    logged = [m for level, m in pb.Logger.records if level == "error" and error_id in m]
    assert logged and "MemoryError: simulated" in logged[0]
    assert not responses[1].has_error()


def test_a_core_error_fails_only_its_request(front, core, monkeypatch):
    real = pb.InferenceRequest.handler

    def handler(req):
        if req.inputs["FEATURES"].shape[-1] == 300:  # the 3 s clip (the front makes the frames)
            return pb.InferenceResponse(error=pb.TritonError("forward failed: boom"))
        return real(req)

    monkeypatch.setattr(pb.InferenceRequest, "handler", handler)
    responses = serve(
        front,
        [
            request(np.zeros(48000, np.float32), "three seconds", "en"),
            request(np.zeros(16000, np.float32), "one", "en"),
        ],
    )
    message = error_message(responses[0], "INTERNAL")
    assert message.startswith("internal error (id ") and "boom" not in message
    error_id = message.split("id ")[1].rstrip(")")
    logged = [m for level, m in pb.Logger.records if level == "error" and error_id in m]
    assert logged and "boom" in logged[0]  # the core's answer is in the log under that id
    assert not responses[1].has_error()


def test_a_core_call_that_raises_fails_only_its_request(front, monkeypatch):
    def handler(req):
        raise RuntimeError("stub gone")

    monkeypatch.setattr(pb.InferenceRequest, "handler", handler)
    responses = serve(front, [request(np.zeros(16000, np.float32), "one", "en")])
    error_message(responses[0], "INTERNAL")


def core_requests(front, texts):
    from qwen3_aligner_triton.front import core_request_arrays

    rng = np.random.default_rng(2)
    return [
        core_request(
            core_request_arrays(front.front.preparer.prepare(_align_request(rng, t)).core_input())
        )
        for t in texts
    ]


def test_core_forward_raising_as_a_whole_answers_every_clip(front, core, monkeypatch):
    def run(items, on_batch=None):
        raise RuntimeError("device lost")

    monkeypatch.setattr(core.runner, "run", run)
    responses = core_execute(core, core_requests(front, ["a b", "c d e"]))
    assert len(responses) == 2
    message, _ = [error_message(r, "INTERNAL") for r in responses]
    assert message.startswith("forward failed: internal error (id ") and "lost" not in message
    error_id = message.split("id ")[1].rstrip(")")
    logged = [m for level, m in pb.Logger.records if level == "error" and error_id in m]
    assert logged and "device lost" in logged[0]


def test_core_short_results_list_leaves_no_request_unanswered(front, core, monkeypatch):
    real_run = core.runner.run
    monkeypatch.setattr(core.runner, "run", lambda items, on_batch=None: real_run(items)[:1])
    responses = core_execute(core, core_requests(front, ["a b", "c d e"]))
    assert not responses[0].has_error()
    assert "no result" in error_message(responses[1], "INTERNAL")


def test_core_per_clip_forward_failure_spares_the_others(front, core, monkeypatch):
    real_run = core.runner.run

    def run(items, on_batch=None):
        out = real_run(items)
        out[0] = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")
        return out

    monkeypatch.setattr(core.runner, "run", run)
    responses = core_execute(core, core_requests(front, ["a b", "c d e"]))
    message = error_message(responses[0], "INTERNAL")
    assert message.startswith("forward failed: internal error (id ")
    assert "out of memory" in message and "9 GiB" not in message  # the details stay in the log
    assert responses[1].output("TIMESTAMP_BINS").shape == (1, 6)


def test_core_without_its_inputs_is_an_error_response(core):
    (response,) = core_execute(core, [core_request({})])
    error_message(response)


def test_simulated_core_answers_ordered_placeholders_inside_the_audio(tiny_checkpoint, front):
    sim = make_core(tiny_checkpoint, simulate_gpu="0+0n")
    try:
        assert any("SIMULATED GPU" in m for _, m in pb.Logger.records)
        wire(sim)
        audio = np.zeros(16000 * 4, np.float32)
        (response,) = serve(front, [request(audio, "one two three four five", "en")])
        starts = response.output("START_TIMES")[0]
        ends = response.output("END_TIMES")[0]
        assert len(starts) == 5
        assert (np.diff(starts) > 0).all() and (starts < ends).all()
        assert starts[0] >= 0 and ends[-1] <= 4.0
    finally:
        sim.finalize()


def test_simulated_core_without_the_development_tools_fails_its_load(tiny_checkpoint, monkeypatch):
    """The image holds no tools/: a core told to simulate its device refuses to load, saying why."""
    monkeypatch.setitem(sys.modules, "qwen3_aligner_tools", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "qwen3_aligner_tools.simulated_device", None)
    with pytest.raises(pb.TritonModelException) as failed:
        make_core(tiny_checkpoint, simulate_gpu="0+0n")
    message = str(failed.value)
    assert "simulate_gpu" in message and "development tool" in message
    assert "qwen3_aligner_tools.simulated_device" in message


def test_misconfiguration_fails_the_load(tiny_checkpoint):
    front_module = load_model_module(FRONT)
    core_module = load_model_module(CORE)
    with pytest.raises(pb.TritonModelException, match="unknown parameter"):
        front_module.TritonPythonModel().initialize(
            init_args(model_config(checkpoint=str(tiny_checkpoint), max_audio_secs="3"))
        )
    with pytest.raises(pb.TritonModelException, match="does not exist"):
        front_module.TritonPythonModel().initialize(
            init_args(model_config(checkpoint="/nonexistent/aligner"))
        )
    with pytest.raises(pb.TritonModelException, match="does not exist"):
        core_module.TritonPythonModel().initialize(
            init_args(model_config(CORE, checkpoint="/nonexistent/aligner"), name=CORE)
        )
    with pytest.raises(pb.TritonModelException, match="unsupported instance kind"):
        core_module.TritonPythonModel().initialize(
            init_args(model_config(CORE, checkpoint=str(tiny_checkpoint)), kind="TPU", name=CORE)
        )
    with pytest.raises(pb.TritonModelException, match="simulate_gpu"):
        core_module.TritonPythonModel().initialize(
            init_args(model_config(CORE, simulate_gpu="fast"), name=CORE)
        )


@pytest.mark.parametrize(
    ("name", "section", "tensor"),
    [
        (FRONT, "input", "LANGUAGE"),
        (FRONT, "output", "ALIGNMENT"),
        (CORE, "input", "FEATURES"),
        (CORE, "output", "SLOT_CONFIDENCE"),
    ],
)
def test_config_must_declare_the_tensors(tiny_checkpoint, name, section, tensor):
    module = load_model_module(name)
    config = json.loads(model_config(name, checkpoint=str(tiny_checkpoint)))
    config[section] = [t for t in config[section] if t["name"] != tensor]
    with pytest.raises(pb.TritonModelException, match=tensor):
        module.TritonPythonModel().initialize(init_args(json.dumps(config), name=name))


def test_front_max_batch_size_is_checked(tiny_checkpoint):
    module = load_model_module(FRONT)
    config = json.loads(model_config(checkpoint=str(tiny_checkpoint)))
    config["max_batch_size"] = 4
    with pytest.raises(pb.TritonModelException, match="max_batch_size"):
        module.TritonPythonModel().initialize(init_args(json.dumps(config)))


def test_finalize_releases_and_tolerates_a_failed_load(tiny_checkpoint):
    core = make_core(tiny_checkpoint, warmup="false")
    core.finalize()
    assert core.forward is None and core.runner is None
    assert any("released the forward" in m for _, m in pb.Logger.records)
    for name in (FRONT, CORE):
        instance = load_model_module(name).TritonPythonModel()
        with pytest.raises(pb.TritonModelException):
            instance.initialize(
                init_args(model_config(name, checkpoint="/nonexistent/aligner"), name=name)
            )
        instance.finalize()  # after a failed initialize: nothing to release, no exception


def test_core_refuses_clips_no_front_sends_naming_the_limit(core):
    """The core's inference API is reachable by clients too: one clip's cost is bounded."""
    limit = core.settings.max_forward_tokens
    huge_ids = {
        "INPUT_IDS": np.zeros((1, limit + 1), np.int64),
        "FEATURES": np.zeros((1, 128, 100), np.float32),
    }
    long_features = {
        "INPUT_IDS": np.zeros((1, 10), np.int64),
        "FEATURES": np.zeros((1, 128, 40_001), np.float32),
    }
    empty = {
        "INPUT_IDS": np.zeros((1, 0), np.int64),
        "FEATURES": np.zeros((1, 128, 100), np.float32),
    }
    long_audio = {
        "INPUT_IDS": np.zeros((1, 10), np.int64),
        "AUDIO": np.zeros((1, 400 * 16000 + 160), np.float32),
    }
    both = {**huge_ids, "INPUT_IDS": np.zeros((1, 10), np.int64), "AUDIO": np.zeros((1, 1600))}
    neither = {"INPUT_IDS": np.zeros((1, 10), np.int64)}
    short_audio = {"INPUT_IDS": np.zeros((1, 10), np.int64), "AUDIO": np.zeros((1, 159))}
    cases = (huge_ids, long_features, empty, long_audio, both, neither, short_audio)
    responses = core_execute(core, [core_request(a) for a in cases])
    messages = [error_message(r) for r in responses]
    assert f"{limit + 1} tokens; the limit is {limit}" in messages[0]
    assert "FEATURES has 40001 frames; the limit is 40000 (400 s" in messages[1]
    assert "must not be empty" in messages[2]
    assert "AUDIO has 40001 frames; the limit is 40000 (400 s" in messages[3]
    assert "exactly one of FEATURES and AUDIO" in messages[4]
    assert "one of FEATURES or AUDIO are required" in messages[5]
    assert "AUDIO must not be empty" in messages[6]


def test_a_stopping_server_refuses_with_unavailable_and_counts_nothing_in_flight(
    tiny_checkpoint, core, tmp_path
):
    """The launcher's drain marker in the front's folder: requests are refused UNAVAILABLE; the
    in-flight gauge the drain waits on is back at zero after every answer."""
    from qwen3_aligner_triton.contract import DRAIN_MARKER

    folder = tmp_path / FRONT
    (folder / "1").mkdir(parents=True)
    instance = load_model_module(FRONT).TritonPythonModel()
    args = init_args(model_config(FRONT, checkpoint=str(tiny_checkpoint)))
    instance.initialize({**args, "model_repository": str(folder)})
    (gauge,) = [
        m
        for family in pb.MetricFamily.instances
        if family.name == "qwen3_aligner_requests_in_flight"
        for m in family.metrics
        if m is instance.metrics._in_flight
    ]
    audio = np.zeros(16000, np.float32)
    try:
        (served,) = serve(instance, [request(audio, "one two", "en")])
        assert not served.has_error()
        assert gauge.value == 0
        (folder / DRAIN_MARKER).touch()
        refused = serve(instance, [request(audio, "one two", "en"), request(audio, "x", "en")])
        for response in refused:
            assert "the server is stopping" in error_message(response, "UNAVAILABLE")
        assert gauge.value == 0
    finally:
        instance.finalize()


def test_a_front_with_features_in_core_sends_waveforms_and_results_stay_upstreams(
    tiny_checkpoint, core, upstream
):
    instance = load_model_module(FRONT).TritonPythonModel()
    config = model_config(FRONT, checkpoint=str(tiny_checkpoint), features_in_core="true")
    instance.initialize(init_args(config))
    sent: list[set[str]] = []
    real = pb.InferenceRequest.handler

    def handler(req):
        sent.append(set(req.inputs))
        return real(req)

    pb.InferenceRequest.handler = handler
    rng = np.random.default_rng(3)
    audio = (rng.standard_normal(16000 * 3 + 77) * 0.2).astype(np.float32)
    try:
        (response,) = serve(instance, [request(audio, "one two three four", "en")])
    finally:
        instance.finalize()
    assert sent == [{"INPUT_IDS", "AUDIO"}]
    expected = upstream_align(upstream, audio, 16000, "one two three four", "English")
    starts = response.output("START_TIMES")[0]
    np.testing.assert_array_equal(starts, np.array([e[1] for e in expected], np.float32))


def test_all_clips_in_flight_wait_at_the_core_at_once(front, core):
    """Each core call holds a thread of the event loop's default executor for its whole round
    trip (as async_exec() does in the stub). Python's default pool has min(32, CPUs + 4)
    threads; the front widens it, so all 16 requests one instance holds reach the core's
    batcher together instead of waiting for a thread."""
    clips = 16
    together = threading.Barrier(clips, timeout=20)

    def handler(req):
        together.wait()  # returns only once every clip's call is in flight
        return core_execute(core, [req])[0]

    pb.InferenceRequest.handler = handler
    rng = np.random.default_rng(3)
    waves = [(rng.standard_normal(16000 + 160 * k) * 0.2).astype(np.float32) for k in range(clips)]
    requests = [request(w, "hello world", "en") for w in waves]
    responses = serve(front, requests)
    assert all(not r.has_error() for r in responses), [r.error for r in responses]
    assert not together.broken


def malformed_core_requests(front, key: str) -> dict[str, pb.InferenceRequest]:
    """Requests to the core no front sends, each with the server's key unless named otherwise
    (the key is checked first; these prove the checks behind it)."""
    from qwen3_aligner_triton.core_access import key_parameters
    from qwen3_aligner_triton.front import core_request_arrays

    rng = np.random.default_rng(9)
    good = core_request_arrays(
        front.front.preparer.prepare(_align_request(rng, "one two three")).core_input()
    )
    ids, features = good["INPUT_IDS"], good["FEATURES"]
    audio_pad = front.front.preparer.audio_token_id
    no_pads = ids[:, ids[0] != audio_pad]
    # The same prompt length (so it shares the pass) with every audio token made a word token.
    pads_as_words = np.where(ids == audio_pad, ids[0, -1], ids)
    oov, negative, extra_pads = ids.copy(), ids.copy(), ids.copy()
    oov[0, -3] = 10**12
    negative[0, -3] = -1
    extra_pads[0, -3] = audio_pad
    cases = {
        "no audio pads, long features": {
            "INPUT_IDS": pads_as_words,
            "FEATURES": np.zeros((1, 128, 3000), np.float32),
        },
        "id out of vocabulary": {"INPUT_IDS": oov, "FEATURES": features},
        "negative id": {"INPUT_IDS": negative, "FEATURES": features},
        "more pads than frames make": {"INPUT_IDS": extra_pads, "FEATURES": features},
        "FEATURES of two clips": {"INPUT_IDS": ids, "FEATURES": np.concatenate([features] * 2)},
        "INPUT_IDS of two clips": {"INPUT_IDS": np.concatenate([ids] * 2), "FEATURES": features},
        "NaN features": {"INPUT_IDS": ids, "FEATURES": np.full_like(features, np.nan)},
        "160 samples, no pads": {"INPUT_IDS": no_pads, "AUDIO": np.zeros((1, 160), np.float32)},
        "ids that are not numbers": {
            "INPUT_IDS": np.array([[b"x"] * 5], dtype=np.object_),
            "FEATURES": features,
        },
    }
    requests = {
        name: pb.InferenceRequest(a, parameters=key_parameters(key)) for name, a in cases.items()
    }
    requests["no key"] = pb.InferenceRequest(good)
    requests["wrong key"] = pb.InferenceRequest(good, parameters=key_parameters("0" * 64))
    return requests


def test_the_core_answers_only_its_front_and_checks_every_clip_sparing_the_batch_mates(front, core):
    """Next to every malformed core request the ordinary clips of the same execute() call (one
    shared forward pass) get exactly their lone results; each malformed one gets INVALID_ARG."""
    from qwen3_aligner_triton.core_access import REFUSED_MESSAGE

    texts = ["a b", "c d e", "f g h i", "j k", "l m n o p", "q r s"]
    alone = [core_execute(core, [r])[0] for r in core_requests(front, texts)]
    malformed = malformed_core_requests(front, core.key)
    mixed: list = []
    ordinary = core_requests(front, texts)
    for k, bad in enumerate(malformed.values()):
        mixed += [bad, ordinary[k % len(ordinary)]] if k < len(ordinary) else [bad]
    family = core.metrics._families["qwen3_aligner_forward_batch_size"]
    seen = len(family.metrics[0].observations)
    responses = core_execute(core, mixed)
    assert max(family.metrics[0].observations[seen:]) == len(texts)  # one shared pass
    by_request = {id(r): resp for r, resp in zip(mixed, responses, strict=True)}
    for name, bad in malformed.items():
        message = error_message(by_request[id(bad)])
        if "key" in name:
            assert message == REFUSED_MESSAGE, name
        else:
            assert message and REFUSED_MESSAGE not in message, name
    for lone, req in zip(alone, ordinary, strict=True):
        shared = by_request[id(req)]
        assert not shared.has_error()
        assert np.array_equal(shared.output("TIMESTAMP_BINS"), lone.output("TIMESTAMP_BINS"))
        np.testing.assert_allclose(
            shared.output("SLOT_CONFIDENCE"), lone.output("SLOT_CONFIDENCE"), rtol=0, atol=1e-5
        )


def test_without_the_clip_checks_a_clip_without_audio_pads_moves_its_batch_mates(
    front, core, monkeypatch
):
    """What the checks prevent (the test above could fail): with the audio-token count left
    unchecked, one clip without audio tokens shifts every later clip's audio in a padded pass
    (upstream's ``masked_scatter`` fills the audio tokens of the whole batch in order)."""
    from qwen3_aligner_triton import core as core_module

    texts = ["a b", "c d e", "f g h i", "j k", "l m n o p", "q r s"]
    alone = [core_execute(core, [r])[0] for r in core_requests(front, texts)]
    bad = malformed_core_requests(front, core.key)["no audio pads, long features"]
    monkeypatch.setattr(core, "rules", None)  # the core before the checks: no rules
    monkeypatch.setattr(core_module, "audio_tokens_of_frames", lambda frames: 0)
    monkeypatch.setattr(core.runner.forward, "packed_decoder", False)
    responses = core_execute(core, [bad, *core_requests(front, texts)])
    moved = [
        not np.array_equal(r.output("TIMESTAMP_BINS"), lone.output("TIMESTAMP_BINS"))
        for r, lone in zip(responses[1:], alone, strict=True)
        if not r.has_error()
    ]
    assert any(moved), "the unchecked clip changed no batch-mate: this test tells nothing"


def test_without_the_clip_checks_the_packed_decoder_still_spares_the_batch_mates(
    front, core, monkeypatch
):
    """The packed decoder checks each clip's audio tokens against its frames itself: a pass
    holding a clip without them fails, is split and retried, and only that clip fails."""
    texts = ["a b", "c d e", "f g h i", "j k", "l m n o p", "q r s"]
    alone = [core_execute(core, [r])[0] for r in core_requests(front, texts)]
    bad = malformed_core_requests(front, core.key)["no audio pads, long features"]
    monkeypatch.setattr(core, "rules", None)  # the core before the checks: no rules
    assert core.runner.forward.packed_decoder
    responses = core_execute(core, [bad, *core_requests(front, texts)])
    assert error_message(responses[0], "INTERNAL").startswith("forward failed")
    assert any("audio tokens but its frames make" in m for _, m in pb.Logger.records)
    for r, lone in zip(responses[1:], alone, strict=True):
        assert np.array_equal(r.output("TIMESTAMP_BINS"), lone.output("TIMESTAMP_BINS"))


def test_a_cuda_error_answers_the_clips_and_ends_the_stub(front, core, monkeypatch):
    """A device-side assert poisons the process's CUDA context: the clips get an error and the
    stub exits so that the server is restarted (never left looking ready)."""
    core_model = type(core).initialize.__globals__  # model.py's module namespace
    exits: list[int] = []
    exited = threading.Event()
    monkeypatch.setitem(core_model, "DEVICE_LOST_GRACE_SECONDS", 0.01)
    monkeypatch.setattr(core, "exit", lambda code: (exits.append(code), exited.set()))
    monkeypatch.setattr(core, "_exiting", False, raising=False)

    def run(items, on_batch=None):
        return [RuntimeError("CUDA error: device-side assert triggered")] * len(items)

    monkeypatch.setattr(core.runner, "run", run)
    responses = core_execute(core, core_requests(front, ["a b", "c d e"]))
    for response in responses:
        assert error_message(response, "INTERNAL").startswith("forward failed")
    assert exited.wait(10) and exits == [core_model["DEVICE_LOST_EXIT_CODE"]]
    assert any("exits so that the server restarts" in m for _, m in pb.Logger.records)


def test_the_front_takes_its_prompt_limit_from_the_core_s_configuration(tiny_checkpoint, tmp_path):
    """One value in one place: the front refuses prompts over the core's own limit."""
    import shutil

    for name in (FRONT, CORE):
        shutil.copytree(REPO / name, tmp_path / name)
    core_config = tmp_path / CORE / "config.pbtxt"
    text = core_config.read_text()
    assert '{ key: "max_forward_tokens", value: { string_value: "32768" } }' in text
    core_config.write_text(text.replace('string_value: "32768"', 'string_value: "1234"'))
    instance = load_model_module(FRONT).TritonPythonModel()
    args = init_args(model_config(FRONT, checkpoint=str(tiny_checkpoint)))
    instance.initialize({**args, "model_repository": str(tmp_path / FRONT)})
    try:
        assert instance.settings.max_forward_tokens == 1234
        assert instance.front.preparer.settings.max_forward_tokens == 1234
    finally:
        instance.finalize()
    shipped = load_model_module(FRONT).TritonPythonModel()
    shipped.initialize(init_args(model_config(FRONT, checkpoint=str(tiny_checkpoint))))
    try:
        assert shipped.settings.max_forward_tokens == 32768
    finally:
        shipped.finalize()


def test_execute_returns_once_each_request_s_inputs_are_copied(front):
    """Triton frees a request's shared memory once execute() has returned and the model has
    dropped the request: whatever the region then holds (the next request's bytes) must not
    reach a request still being served."""
    rng = np.random.default_rng(7)
    clips = [(rng.standard_normal(16000 * 3) * 0.2).astype(np.float32) for _ in range(3)]
    texts = ["one two three", "four five", "six seven eight nine"]
    expected = serve(front, [request(a, t, "en") for a, t in zip(clips, texts, strict=True)])

    sent = [request(a.copy(), t, "en") for a, t in zip(clips, texts, strict=True)]

    async def run():
        assert await front.execute(sent) is None
        for r in sent:  # the region is reused as soon as execute() returns
            pb.get_input_tensor_by_name(r, "AUDIO").as_numpy()[:] = np.nan
        await front.idle()

    asyncio.run(run())
    for r, reference in zip(sent, expected, strict=True):
        ((response, _),) = r.sender.sent
        assert not response.has_error(), response.error.message()
        for name in ("START_TIMES", "END_TIMES"):
            np.testing.assert_array_equal(response.output(name), reference.output(name))
        # Confidences may move with the batch-mates by float rounding (SCORE_TOLERANCE); audio
        # read from freed memory would be NaN or another clip's.
        np.testing.assert_allclose(
            response.output("SCORES"), reference.output("SCORES"), atol=SCORE_TOLERANCE
        )


def test_the_front_must_take_one_request_per_execute(tiny_checkpoint):
    module = load_model_module(FRONT)
    config = json.loads(model_config(checkpoint=str(tiny_checkpoint)))
    del config["dynamic_batching"]["preferred_batch_size"]
    with pytest.raises(pb.TritonModelException, match=r"preferred_batch_size: \[ 1 \]"):
        module.TritonPythonModel().initialize(init_args(json.dumps(config)))


def test_the_front_fits_its_longest_audio_to_dev_shm(tiny_checkpoint, monkeypatch):
    from qwen3_aligner_triton.shared_memory import MiB, plan

    module = load_model_module(FRONT)
    config = json.loads(model_config(checkpoint=str(tiny_checkpoint), warmup="false"))
    config["instance_group"] = [{"count": 4, "kind": "KIND_CPU"}]
    monkeypatch.setattr(module, "shm_size", lambda: 1024 * MiB)
    instance = module.TritonPythonModel()
    instance.initialize(init_args(json.dumps(config)))
    try:
        fit = plan(instance.settings, 4, 1024 * MiB).max_audio_samples
        assert instance.settings.max_audio_samples == fit < 230_400_000
        assert instance.front.settings.max_audio_samples == fit
        warnings = [m for level, m in pb.Logger.records if level == "warn"]
        assert any(f"max_audio_samples lowered from 230400000 to {fit}" in m for m in warnings)
        too_long = request(np.zeros(fit + 1, np.float32), "one", "en")
        assert f"the limit is {fit}" in error_message(serve(instance, [too_long])[0])
    finally:
        instance.finalize()
    monkeypatch.setattr(module, "shm_size", lambda: 64 * MiB)
    with pytest.raises(pb.TritonModelException, match="/dev/shm holds 64 MiB"):
        module.TritonPythonModel().initialize(init_args(json.dumps(config)))


def file_request(data: bytes, text: str, language: str, **extra) -> pb.InferenceRequest:
    """A request whose audio is an encoded file (AUDIO_FILE) instead of a waveform."""
    inputs = {
        "AUDIO_FILE": np.array([[data]], dtype=np.object_),
        "TEXT": np.array([[text.encode()]], dtype=np.object_),
        "LANGUAGE": np.array([[language.encode()]], dtype=np.object_),
        **extra,
    }
    return pb.InferenceRequest(inputs)


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (44100, 2), (8000, 1)])
def test_a_wav_file_answers_exactly_what_its_samples_sent_as_audio_answer(front, rate, channels):
    """AUDIO_FILE is decoded by the front and then takes AUDIO's path: the words, times and
    scores of a WAV equal, bit for bit, those of its decoded samples sent with SAMPLE_RATE."""
    import io

    import soundfile

    rng = np.random.default_rng(rate)
    source = (rng.standard_normal((rate * 3, channels)) * 0.2).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, source, rate, format="WAV", subtype="PCM_16")
    data = buffer.getvalue()
    decoded, decoded_rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    samples = decoded.mean(axis=1, dtype=np.float32)
    assert decoded_rate == rate
    text = "one two three four"
    by_file, by_samples, garbage = serve(
        front,
        [
            file_request(data, text, "en"),
            request(samples, text, "en", sample_rate=rate),
            file_request(b"RIFF not really a wav", text, "en"),
        ],
    )
    assert not by_file.has_error(), by_file.error.message()
    for name in ("WORDS", "START_TIMES", "END_TIMES", "SCORES", "ALIGNMENT"):
        np.testing.assert_array_equal(by_file.output(name), by_samples.output(name))
    assert "input AUDIO_FILE is not a readable audio file" in error_message(garbage)


def test_audio_file_with_audio_or_sample_rate_is_refused_and_the_rest_served(front):
    import io

    import soundfile

    wave = (np.random.default_rng(3).standard_normal(16000 * 2) * 0.2).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, 16000, format="FLAC")
    data = buffer.getvalue()
    both = file_request(data, "one two", "en", AUDIO=wave[None, :])
    with_rate = file_request(data, "one two", "en", SAMPLE_RATE=np.array([[16000]], np.int32))
    neither = request(None, "one two", "en")
    good = file_request(data, "one two", "en")
    responses = serve(front, [both, with_rate, good, neither])
    assert "AUDIO and AUDIO_FILE were both sent" in error_message(responses[0])
    assert "SAMPLE_RATE must not accompany AUDIO_FILE" in error_message(responses[1])
    assert not responses[2].has_error()
    assert list(responses[2].output("WORDS").reshape(-1)) == [b"one", b"two"]
    assert "AUDIO or AUDIO_FILE is required" in error_message(responses[3])


@pytest.mark.parametrize("name", ["AUDIO", "AUDIO_FILE"])
def test_a_config_declaring_audio_file_must_declare_both_audio_inputs_optional(
    tiny_checkpoint, name
):
    module = load_model_module(FRONT)
    config = json.loads(model_config(checkpoint=str(tiny_checkpoint)))
    for tensor in config["input"]:
        if tensor["name"] == name:
            tensor.pop("optional")
    with pytest.raises(pb.TritonModelException, match=f"input {name} must be declared optional"):
        module.TritonPythonModel().initialize(init_args(json.dumps(config)))
