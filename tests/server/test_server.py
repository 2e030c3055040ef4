"""Integration: a real tritonserver serving the tiny checkpoint, over HTTP and gRPC."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from cases import CASES
from shared_fixtures import SCORE_TOLERANCE, upstream_align, upstream_unit_scores
from triton_calls import (
    MODEL,
    as_float32,
    build_inputs,
    forward_passes,
    infer_grpc,
    infer_http,
    parse,
)
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def expected(upstream):
    return {
        c.name: upstream_align(upstream, c.audio(), c.sample_rate, c.text, c.upstream_language)
        for c in CASES
    }


def send_rate(case):
    # Exercise the optional input: 16 kHz cases sometimes leave SAMPLE_RATE out.
    return None if case.sample_rate == 16000 and case.extra_samples % 2 == 0 else case.sample_rate


@pytest.mark.parametrize(
    "path", ["/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready"]
)
def test_health_endpoints(server, path):
    assert requests.get(f"http://{server.http_url}{path}", timeout=5).status_code == 200


def test_model_metadata_and_config(server):
    with httpclient.InferenceServerClient(server.http_url) as client:
        meta = client.get_model_metadata(MODEL)
        config = client.get_model_config(MODEL)
    assert {i["name"] for i in meta["inputs"]} == {
        "AUDIO",
        "AUDIO_FILE",
        "SAMPLE_RATE",
        "TEXT",
        "LANGUAGE",
        "SEGMENTS",
        "CONTEXT",
    }
    assert {o["name"] for o in meta["outputs"]} == {
        "WORDS",
        "START_TIMES",
        "END_TIMES",
        "ALIGNMENT",
        "SCORES",
        "TRANSCRIPT",
        "TRANSCRIPT_LANGUAGE",
    }
    assert config["max_batch_size"] >= 16
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    audio = next(i for i in config["input"] if i["name"] == "AUDIO")
    assert audio["allow_ragged_batch"] is True
    audio_file = next(i for i in config["input"] if i["name"] == "AUDIO_FILE")
    assert audio["optional"] is True and audio_file["optional"] is True
    assert audio_file["data_type"] == "TYPE_STRING"
    assert "dynamic_batching" in config


def test_grpc_health(server):
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_http_results_equal_upstream(server, expected, case):
    got = infer_http(server.http_url, case.audio(), send_rate(case), case.text, case.language)
    assert got["units"] == as_float32(expected[case.name])
    doc = got["document"]
    assert [(w["text"], w["start"], w["end"]) for w in doc["words"]] == expected[case.name]
    assert doc["language"] == case.upstream_language
    assert doc["text"] == case.text
    end = 0
    for w in doc["words"]:
        assert end <= w["display_start"] <= w["char_start"] < w["char_end"] <= w["display_end"]
        assert w["display"] == case.text[w["display_start"] : w["display_end"]]
        assert not any(ch.isalnum() for ch in case.text[end : w["display_start"]])
        end = w["display_end"]
    assert doc["duration"] == pytest.approx(case.audio().shape[0] / case.sample_rate, abs=1e-6)


@pytest.mark.parametrize("case", CASES[1::3], ids=lambda c: c.name)
def test_served_scores_equal_those_of_upstreams_forward(server, upstream, case):
    got = infer_http(server.http_url, case.audio(), send_rate(case), case.text, case.language)
    reference = upstream_unit_scores(
        upstream, case.audio(), case.sample_rate, case.text, case.upstream_language
    )
    np.testing.assert_allclose(got["scores"], reference, rtol=0, atol=SCORE_TOLERANCE)


@pytest.mark.parametrize("case", CASES[::3], ids=lambda c: c.name)
def test_grpc_results_equal_upstream(server, expected, case):
    got = infer_grpc(server.grpc_url, case.audio(), send_rate(case), case.text, case.language)
    assert got["units"] == as_float32(expected[case.name])


def test_concurrent_requests_get_their_lone_results(server, expected):
    """32 requests in flight at once (HTTP and gRPC): each equals its lone upstream result,
    and the core really ran forward passes shared by several clips."""
    before = forward_passes(server.metrics_url)
    picked = (CASES * 2)[:32]
    results: dict[int, dict] = {}
    errors: list[BaseException] = []

    def grpc_worker(indices):
        try:
            with grpcclient.InferenceServerClient(server.grpc_url) as client:
                for i in indices:
                    c = picked[i]
                    inputs = build_inputs(grpcclient, c.audio(), c.sample_rate, c.text, c.language)
                    results[i] = parse(client.infer(MODEL, inputs))
        except BaseException as e:  # surfaced below
            errors.append(e)

    with httpclient.InferenceServerClient(server.http_url, concurrency=16) as client:
        futures = {
            i: client.async_infer(
                MODEL, build_inputs(httpclient, c.audio(), c.sample_rate, c.text, c.language)
            )
            for i, c in enumerate(picked)
            if i % 2 == 0
        }
        threads = [
            threading.Thread(target=grpc_worker, args=([i for i in range(32) if i % 2][k::8],))
            for k in range(8)
        ]
        for t in threads:
            t.start()
        for i, future in futures.items():
            results[i] = parse(future.get_result())
        for t in threads:
            t.join()
    assert not errors, errors
    assert len(results) == 32
    for i, case in enumerate(picked):
        assert results[i]["units"] == as_float32(expected[case.name]), case.name

    after = forward_passes(server.metrics_url)
    shared = (after[0] - before[0]) - (after[1] - before[1])
    assert shared > 0, f"no forward pass of more than one clip: {before} -> {after}"


def test_invalid_requests_fail_alone_and_model_stays_ready(server, expected):
    good = CASES[3]
    bad_inputs = [
        (np.zeros(16000, np.float32), 16000, "hello", "klingon", "LANGUAGE"),
        (np.zeros(1000 * 3601, np.float32), 1000, "hello", "en", "limit is 3600 s"),
        (np.zeros(16000, np.float32), 0, "hello", "en", "SAMPLE_RATE 0 Hz"),
        (np.zeros(16000, np.float32), 16000, "?!...", "en", "no alignable words"),
    ]
    with httpclient.InferenceServerClient(server.http_url, concurrency=8) as client:
        futures = []
        for audio, rate, text, lang, _ in bad_inputs:
            futures.append(
                client.async_infer(MODEL, build_inputs(httpclient, audio, rate, text, lang))
            )
            futures.append(
                client.async_infer(
                    MODEL,
                    build_inputs(
                        httpclient, good.audio(), good.sample_rate, good.text, good.language
                    ),
                )
            )
        outcomes = []
        for f in futures:
            try:
                outcomes.append(parse(f.get_result()))
            except InferenceServerException as e:
                outcomes.append(e)
    for k, (_, _, _, _, message) in enumerate(bad_inputs):
        err = outcomes[2 * k]
        assert isinstance(err, InferenceServerException), message
        assert err.status() == "400", err
        assert message in err.message()
        assert outcomes[2 * k + 1]["units"] == as_float32(expected[good.name])

    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        with pytest.raises(InferenceServerException) as info:
            client.infer(
                MODEL, build_inputs(grpcclient, np.zeros(16000, np.float32), None, "hi", "xx")
            )
        assert "INVALID_ARGUMENT" in info.value.status()
        assert client.is_model_ready(MODEL)


def test_missing_required_input_is_rejected(server):
    with httpclient.InferenceServerClient(server.http_url) as client:
        inputs = build_inputs(httpclient, np.zeros(16000, np.float32), None, "hello", "en")[:2]
        with pytest.raises(InferenceServerException) as info:
            client.infer(MODEL, inputs)
        assert "LANGUAGE" in info.value.message()
        assert client.is_model_ready(MODEL)


def test_metrics_endpoint(server):
    body = requests.get(server.metrics_url, timeout=5).text
    assert f'nv_inference_request_success{{model="{MODEL}"' in body


def test_frames_made_by_the_core_give_upstream_results_in_shared_passes(
    tmp_path, tiny_checkpoint, expected
):
    """``features_in_core`` (what GPU placements run): the front sends waveforms, the core makes
    the frames and batches clips; every result still equals upstream's."""
    from shared_fixtures import dedicated_server

    picked = CASES[::2]
    with dedicated_server(
        tmp_path, tiny_checkpoint, features_in_core="true", max_forward_batch=8
    ) as srv:
        results: dict[str, dict] = {}

        def one(case, use_grpc):
            infer = infer_grpc if use_grpc else infer_http
            url = srv.grpc_url if use_grpc else srv.http_url
            results[case.name] = infer(url, case.audio(), send_rate(case), case.text, case.language)

        threads = [threading.Thread(target=one, args=(c, k % 2 == 1)) for k, c in enumerate(picked)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        with httpclient.InferenceServerClient(srv.http_url) as client:
            core_stats = client.get_inference_statistics("qwen3_aligner_core")["model_stats"][0]
    for case in picked:
        assert results[case.name]["units"] == as_float32(expected[case.name]), case.name
    executions = int(core_stats["execution_count"])
    assert 0 < executions <= len(picked)


def _file_inputs(module, data: bytes, text: str, language: str) -> list:
    inputs = []
    for name, value in (("AUDIO_FILE", data), ("TEXT", text.encode()), ("LANGUAGE", language)):
        tensor = module.InferInput(name, [1, 1], "BYTES")
        raw = value.encode() if isinstance(value, str) else value
        tensor.set_data_from_numpy(np.array([[raw]], dtype=np.object_))
        inputs.append(tensor)
    return inputs


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_audio_file_answers_what_its_decoded_samples_answer(server, protocol):
    """A FLAC sent as AUDIO_FILE gets the words and times its decoded samples get as AUDIO with
    SAMPLE_RATE; a garbage AUDIO_FILE beside it is refused (HTTP 400 / gRPC INVALID_ARGUMENT)
    and does not disturb the good request."""
    import io

    import soundfile

    case = CASES[0]
    buffer = io.BytesIO()
    soundfile.write(buffer, case.audio(), case.sample_rate, format="FLAC")
    data = buffer.getvalue()
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    module = httpclient if protocol == "http" else grpcclient
    url = server.http_url if protocol == "http" else server.grpc_url
    infer = infer_http if protocol == "http" else infer_grpc
    expected = infer(url, samples, rate, case.text, case.language)
    with module.InferenceServerClient(url) as client:
        got = parse(client.infer(MODEL, _file_inputs(module, data, case.text, case.language)))
        with pytest.raises(InferenceServerException) as refused:
            client.infer(MODEL, _file_inputs(module, b"\x00garbage" * 100, "a b", "en"))
        again = parse(client.infer(MODEL, _file_inputs(module, data, case.text, case.language)))
    assert got["units"] == expected["units"] == again["units"]
    np.testing.assert_array_equal(got["scores"], expected["scores"])
    status = str(refused.value.status())
    assert status in ("400", "StatusCode.INVALID_ARGUMENT"), status
    assert "input AUDIO_FILE is not a readable audio file" in refused.value.message()
