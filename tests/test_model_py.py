"""model.py with a fake ``triton_python_backend_utils``: load, batching, per-request errors."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import fake_pb_utils as pb
import numpy as np
import pytest
from conftest import upstream_align

MODEL_DIR = Path(__file__).resolve().parents[1] / "model_repository" / "qwen3_aligner"


def load_model_module():
    sys.modules["triton_python_backend_utils"] = pb
    spec = importlib.util.spec_from_file_location(
        "qwen3_aligner_model_py", MODEL_DIR / "1/model.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_config(**parameters) -> str:
    from google.protobuf import json_format

    from qwen3_aligner_triton.repository import load_config

    config = load_config(MODEL_DIR / "config.pbtxt")
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True))


def init_args(config_json: str, kind: str = "CPU") -> dict:
    return {
        "model_config": config_json,
        "model_instance_kind": kind,
        "model_instance_device_id": "0",
        "model_repository": str(MODEL_DIR),
        "model_version": "1",
        "model_name": "qwen3_aligner",
        "model_instance_name": "qwen3_aligner_0_0",
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


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    module = load_model_module()
    instance = module.TritonPythonModel()
    instance.initialize(init_args(model_config(checkpoint=str(tiny_checkpoint))))
    yield instance
    instance.finalize()


def test_initialize_logs_device_and_readiness(model):
    messages = [m for level, m in pb.Logger.records if level == "info"]
    assert any("ready on cpu" in m for m in messages)
    assert model.engine.dtype.is_floating_point


def test_one_response_per_request_in_order_with_errors_isolated(model, upstream):
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
    responses = model.execute(requests)
    assert len(responses) == len(requests)
    ok = [0, 3]
    for i, response in enumerate(responses):
        if i in ok:
            assert not response.has_error(), response.error.message()
        else:
            assert response.error.code() == pb.TritonError.INVALID_ARG
    assert "LANGUAGE" in responses[1].error.message()
    assert "AUDIO is required" in responses[2].error.message()
    assert "no alignable words" in responses[4].error.message()
    assert "NaN" in responses[5].error.message()

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


def metrics_snapshot() -> dict:
    """Every fake metric's value and observations, keyed by (family, labels, metric object).

    Other model instances of the session (other modules' fixtures) have metrics with the same
    labels in the same fake families; only this test's instance executes in between.
    """
    out = {}
    for name, family in pb.MetricFamily.families.items():
        for m in family.metrics:
            key = (name, tuple(sorted(m.labels.items())), id(m))
            out[key] = (m.value, len(m.observations), list(m.observations))
    return out


def test_metrics_count_alignments_rejections_and_stages(model):
    audio = np.zeros(16000, np.float32)
    before = metrics_snapshot()
    model.execute([request(audio, "one two", "en"), request(audio, "x", "klingon")])
    after = metrics_snapshot()

    def delta(family: str, **labels) -> tuple[float, int]:
        wanted = tuple(sorted({"model": "qwen3_aligner", "version": "1", **labels}.items()))
        keys = [k for k in after if k[:2] == (family, wanted)]
        assert keys, (family, labels)
        value = sum(after[k][0] - before.get(k, (0.0, 0, []))[0] for k in keys)
        count = sum(after[k][1] - before.get(k, (0.0, 0, []))[1] for k in keys)
        return value, count

    assert delta("qwen3_aligner_units_total") == (2, 0)
    assert delta("qwen3_aligner_audio_seconds_total") == (1.0, 0)
    assert delta("qwen3_aligner_rejected_requests_total", reason="bad_language") == (1, 0)
    for stage in ("preprocess", "forward", "postprocess"):
        assert delta("qwen3_aligner_stage_seconds", stage=stage)[1] == 1, stage
    assert delta("qwen3_aligner_forward_batch_size")[1] == 1
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
    }


def test_unexpected_failure_in_one_request_spares_the_others(model, monkeypatch):
    real_prepare = model.engine.prepare

    def prepare(req):
        if req.text == "explode":
            raise MemoryError("simulated")
        return real_prepare(req)

    monkeypatch.setattr(model.engine, "prepare", prepare)
    audio = np.zeros(16000, np.float32)
    responses = model.execute([request(audio, "explode", "en"), request(audio, "fine", "en")])
    assert responses[0].error.code() == pb.TritonError.INTERNAL
    assert not responses[1].has_error()


def test_misconfiguration_fails_the_load(tiny_checkpoint):
    module = load_model_module()
    with pytest.raises(pb.TritonModelException, match="unknown parameter"):
        module.TritonPythonModel().initialize(
            init_args(model_config(checkpoint=str(tiny_checkpoint), max_audio_secs="3"))
        )
    with pytest.raises(pb.TritonModelException, match="does not exist"):
        module.TritonPythonModel().initialize(
            init_args(model_config(checkpoint="/nonexistent/aligner"))
        )
    with pytest.raises(pb.TritonModelException, match="unsupported instance kind"):
        module.TritonPythonModel().initialize(
            init_args(model_config(checkpoint=str(tiny_checkpoint)), kind="TPU")
        )


def test_config_must_declare_the_contract(tiny_checkpoint):
    module = load_model_module()
    config = json.loads(model_config(checkpoint=str(tiny_checkpoint)))
    config["input"] = [i for i in config["input"] if i["name"] != "LANGUAGE"]
    with pytest.raises(pb.TritonModelException, match="LANGUAGE"):
        module.TritonPythonModel().initialize(init_args(json.dumps(config)))
