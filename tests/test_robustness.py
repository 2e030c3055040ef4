"""Hostile input, overload and faults against a real tritonserver (tiny checkpoint, CPU)."""

from __future__ import annotations

import base64
import concurrent.futures
import os
import signal
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from cases import CASES
from conftest import dedicated_server, upstream_align
from triton_calls import MODEL, as_float32, build_inputs, parse
from tritonclient.utils import InferenceServerException

from qwen3_aligner_triton.tritonserver import backend_stub_pids

pytestmark = pytest.mark.integration

GOOD = CASES[5]  # 2.7 s, mixed English/Chinese with punctuation
ONE_SECOND = np.zeros(16000, np.float32)


def raw_inputs(audio, text, language, rate=None, audio_dtype="FP32", audio_shape=None):
    """Inputs built without the client-side conveniences, to send what a broken client sends."""
    audio = np.asarray(audio)
    shape = audio_shape or [1, int(audio.size)]
    inputs = [
        httpclient.InferInput("AUDIO", shape, audio_dtype),
        httpclient.InferInput("TEXT", [1, 1], "BYTES"),
        httpclient.InferInput("LANGUAGE", [1, 1], "BYTES"),
    ]
    inputs[0].set_data_from_numpy(audio.reshape(shape))
    inputs[1].set_data_from_numpy(np.array([[text]], dtype=np.object_))
    inputs[2].set_data_from_numpy(np.array([[language]], dtype=np.object_))
    if rate is not None:
        r = httpclient.InferInput("SAMPLE_RATE", [1, 1], "INT32")
        r.set_data_from_numpy(np.array([[rate]], np.int32))
        inputs.append(r)
    return inputs


BAD_REQUESTS = {
    "missing LANGUAGE": (lambda: raw_inputs(ONE_SECOND, b"hi", b"en")[:2], "LANGUAGE"),
    "missing AUDIO": (lambda: raw_inputs(ONE_SECOND, b"hi", b"en")[1:], "AUDIO"),
    "AUDIO as FP64": (
        lambda: raw_inputs(np.zeros(16000, np.float64), b"hi", b"en", audio_dtype="FP64"),
        "FP64",
    ),
    "AUDIO of rank 3": (
        lambda: raw_inputs(ONE_SECOND, b"hi", b"en", audio_shape=[1, 2, 8000]),
        "shape",
    ),
    "empty AUDIO": (lambda: raw_inputs(np.zeros(0, np.float32), b"hi", b"en"), "AUDIO is empty"),
    "AUDIO too short": (
        lambda: raw_inputs(np.zeros(400, np.float32), b"hi", b"en"),
        "at least 0.1 s",
    ),
    "NaN samples": (lambda: raw_inputs(np.full(16000, np.nan, np.float32), b"hi", b"en"), "NaN"),
    "infinite samples": (
        lambda: raw_inputs(np.full(16000, np.inf, np.float32), b"hi", b"en"),
        "NaN or infinite",
    ),
    "int16-scaled samples": (
        lambda: raw_inputs(np.full(16000, 12000.0, np.float32), b"hi", b"en"),
        "scale integer PCM",
    ),
    "AUDIO over the limit": (
        lambda: raw_inputs(np.zeros(1000 * 3601, np.float32), b"hi", b"en", rate=1000),
        "the limit is 3600 s",
    ),
    "SAMPLE_RATE zero": (lambda: raw_inputs(ONE_SECOND, b"hi", b"en", rate=0), "SAMPLE_RATE 0"),
    "SAMPLE_RATE negative": (
        lambda: raw_inputs(ONE_SECOND, b"hi", b"en", rate=-8000),
        "SAMPLE_RATE -8000",
    ),
    "SAMPLE_RATE absurd": (
        lambda: raw_inputs(ONE_SECOND, b"hi", b"en", rate=2_000_000_000),
        "accepted range",
    ),
    "empty TEXT": (lambda: raw_inputs(ONE_SECOND, b"", b"en"), "TEXT is empty"),
    "punctuation-only TEXT": (
        lambda: raw_inputs(ONE_SECOND, "…!?。，".encode(), b"en"),
        "no alignable words",
    ),
    "more words than audio": (
        lambda: raw_inputs(ONE_SECOND, b" ".join([b"word"] * 40), b"en"),
        "holds at most",
    ),
    "TEXT over the limit": (
        lambda: raw_inputs(ONE_SECOND, b"a" * 400001, b"en"),
        "the limit is 400000",
    ),
    "invalid UTF-8": (lambda: raw_inputs(ONE_SECOND, b"caf\xe9 \xff", b"en"), "not valid UTF-8"),
    "control characters": (
        lambda: raw_inputs(ONE_SECOND, b"hello\x00world", b"en"),
        "control character U+0000",
    ),
    "unsupported language": (lambda: raw_inputs(ONE_SECOND, b"hi", b"tlh"), "unsupported language"),
    "TEXT is a path": (lambda: raw_inputs(ONE_SECOND, b"/etc/passwd", b"en"), "file path"),
    "TEXT is a URL": (
        lambda: raw_inputs(ONE_SECOND, b"http://169.254.169.254/latest/meta-data", b"en"),
        "a URL",
    ),
    "TEXT is base64": (
        lambda: raw_inputs(ONE_SECOND, base64.b64encode(bytes(range(7, 127, 2))), b"en"),
        "base64",
    ),
    "LANGUAGE is a path": (
        lambda: raw_inputs(ONE_SECOND, b"hi", b"/etc/passwd"),
        "unsupported language",
    ),
}


@pytest.fixture(scope="module")
def good_expected(upstream):
    return as_float32(
        upstream_align(upstream, GOOD.audio(), GOOD.sample_rate, GOOD.text, GOOD.upstream_language)
    )


def good_inputs():
    return build_inputs(httpclient, GOOD.audio(), GOOD.sample_rate, GOOD.text, GOOD.language)


def test_every_bad_request_fails_alone(server, good_expected):
    names = list(BAD_REQUESTS)
    with httpclient.InferenceServerClient(server.http_url, concurrency=16) as client:
        pending = []
        for name in names:
            pending.append((name, client.async_infer(MODEL, BAD_REQUESTS[name][0]())))
            pending.append((None, client.async_infer(MODEL, good_inputs())))
        for name, future in pending:
            if name is None:
                assert parse(future.get_result())["units"] == good_expected
                continue
            with pytest.raises(InferenceServerException) as info:
                future.get_result()
            assert info.value.status() == "400", (name, info.value)
            assert BAD_REQUESTS[name][1] in info.value.message(), (name, info.value.message())
        assert client.is_model_ready(MODEL)
    # Triton counts per-request errors as successes; the model counts them by reason.
    import requests

    body = requests.get(server.metrics_url, timeout=5).text
    for reason in ("bad_language", "audio_not_finite", "text_is_reference", "text_exceeds_audio"):
        assert f'reason="{reason}"' in body, reason


def test_grpc_errors_are_invalid_argument(server):
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        inputs = build_inputs(grpcclient, ONE_SECOND, 16000, "file:///etc/passwd", "en")
        with pytest.raises(InferenceServerException) as info:
            client.infer(MODEL, inputs)
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "TEXT looks like" in info.value.message()


def long_inputs(module=httpclient, seconds=60.0):
    case = next(c for c in CASES if c.seconds == seconds)
    return build_inputs(module, case.audio(), case.sample_rate, case.text, case.language)


def overloaded_queue(config):
    config.dynamic_batching.default_queue_policy.max_queue_size = 2
    config.dynamic_batching.max_queue_delay_microseconds = 0


def test_overload_is_answered_promptly_with_unavailable(tmp_path, tiny_checkpoint):
    with dedicated_server(
        tmp_path, tiny_checkpoint, edit_config=overloaded_queue, max_forward_batch=1
    ) as srv:
        outcomes: list[tuple[str, float]] = []

        def one(_):
            started = time.monotonic()
            with httpclient.InferenceServerClient(srv.http_url, network_timeout=120) as client:
                try:
                    client.infer(MODEL, long_inputs())
                    return "ok", time.monotonic() - started
                except InferenceServerException as e:
                    return f"{e.status()} {e.message()}", time.monotonic() - started

        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            outcomes = list(pool.map(one, range(24)))
        ok = [t for o, t in outcomes if o == "ok"]
        rejected = [(o, t) for o, t in outcomes if o != "ok"]
        assert ok, outcomes
        assert rejected, "no request was turned away with a queue of 2"
        for message, _seconds in rejected:
            assert "503" in message or "UNAVAILABLE" in message.upper(), message
            assert "queue" in message.lower(), message
        # Rejections come at once, not after waiting for the work ahead of them.
        assert min(t for _, t in rejected) < max(ok)


def test_killed_backend_stub_recovers_without_a_restart(tmp_path, tiny_checkpoint, good_expected):
    """Triton 2.51 alone keeps reporting ready and fails every request with "Stub process is not
    healthy"; the launcher's watchdog reloads the model instead."""
    with dedicated_server(tmp_path, tiny_checkpoint) as srv:
        pids = backend_stub_pids(srv.running.process.pid)
        assert len(pids) == 1, pids
        os.kill(next(iter(pids)), signal.SIGKILL)
        deadline = time.monotonic() + 120
        seen: list[str] = []
        with httpclient.InferenceServerClient(srv.http_url) as client:
            while time.monotonic() < deadline:
                try:
                    result = parse(client.infer(MODEL, good_inputs()))
                    break
                except InferenceServerException as e:
                    seen.append(e.message())
                    time.sleep(0.5)
            else:
                log = "\n".join(list(srv.running.log_tail)[-15:])
                pytest.fail(
                    f"model did not serve again after the stub was killed: {seen[-3:]}\n{log}"
                )
            assert result["units"] == good_expected
            assert client.is_model_ready(MODEL)
        assert backend_stub_pids(srv.running.process.pid).isdisjoint(pids)
        assert srv.running.reloads == 1
        assert any("reloading qwen3_aligner" in line for line in srv.running.log_tail)


def test_model_repository_api_needs_the_admin_token(server):
    import requests

    url = f"http://{server.http_url}/v2/repository/models/{MODEL}/unload"
    assert requests.post(url, timeout=10).status_code == 403
    assert requests.get(f"http://{server.http_url}/v2/models/{MODEL}/ready", timeout=5).ok


def model_gauge(metrics_url: str, name: str) -> float:
    """The value of one ``nv_inference_*`` series of the model, read from the metrics port."""
    import urllib.request

    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(f'{name}{{model="{MODEL}"'):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not on the metrics port")


def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(
    tmp_path, tiny_checkpoint, upstream
):
    """Requests the server holds when SIGTERM comes are answered; once it has exited, a new
    request is refused with UNAVAILABLE."""
    case = next(c for c in CASES if c.seconds == 60.0)
    expected = as_float32(
        upstream_align(upstream, case.audio(), case.sample_rate, case.text, case.upstream_language)
    )
    sent = 4
    with dedicated_server(tmp_path, tiny_checkpoint, max_forward_batch=1) as srv:
        done: list[tuple[float, object]] = []
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        for _ in range(sent):
            client.async_infer(
                MODEL,
                long_inputs(grpcclient),
                lambda result, error: done.append((time.monotonic(), error or result)),
            )
        # Wait until the server holds a request it has not started, then signal at once.
        deadline = time.monotonic() + 60
        while model_gauge(srv.metrics_url, "nv_inference_pending_request_count") < 1:
            assert time.monotonic() < deadline, "no request ever waited in the server's queue"
            time.sleep(0.02)
        answered_before = model_gauge(srv.metrics_url, "nv_inference_count")
        signalled = time.monotonic()
        srv.running.process.send_signal(signal.SIGTERM)
        assert answered_before < sent
        assert srv.running.process.wait(timeout=120) == 0
        assert len(done) == sent, done
        for _, outcome in done:
            assert not isinstance(outcome, Exception), outcome
            assert parse(outcome)["units"] == expected
        after_signal = [t for t, _ in done if t > signalled]
        assert len(after_signal) >= sent - answered_before >= 1
        client.close()
        with (
            grpcclient.InferenceServerClient(srv.grpc_url) as late,
            pytest.raises(InferenceServerException) as info,
        ):
            late.infer(MODEL, good_inputs_of(grpcclient))
        assert info.value.status() == "StatusCode.UNAVAILABLE", info.value


def good_inputs_of(module):
    return build_inputs(module, GOOD.audio(), GOOD.sample_rate, GOOD.text, GOOD.language)


def test_out_of_memory_splits_the_batch_and_fails_only_the_culprit(
    tmp_path, tiny_checkpoint, upstream
):
    small = [c for c in CASES if 2 <= c.seconds <= 9]
    expected = {
        c.name: as_float32(
            upstream_align(upstream, c.audio(), c.sample_rate, c.text, c.upstream_language)
        )
        for c in small
    }

    # 60 s alone needs ~800 padded tokens: over the limit even alone. Small clips fit one by one
    # (< 200 tokens each) but not all together. The batcher waits long enough to hand them to
    # the model in one execute() call, so more forward passes than calls means a split.
    def gather(config):
        config.dynamic_batching.max_queue_delay_microseconds = 3_000_000

    with (
        dedicated_server(
            tmp_path,
            tiny_checkpoint,
            edit_config=gather,
            simulate_oom_above_tokens=400,
            bucket_ratio=1000,
        ) as srv,
        httpclient.InferenceServerClient(srv.http_url, concurrency=16) as client,
    ):
        before = {n: model_gauge(srv.metrics_url, n) for n in SPLIT_COUNTERS}
        culprit = client.async_infer(MODEL, long_inputs())
        futures = [
            (c, client.async_infer(
                MODEL, build_inputs(httpclient, c.audio(), c.sample_rate, c.text, c.language)
            ))
            for c in small
        ]  # fmt: skip
        for case, future in futures:
            assert parse(future.get_result())["units"] == expected[case.name], case.name
        with pytest.raises(InferenceServerException) as info:
            culprit.get_result()
        assert "out of memory" in info.value.message()
        assert client.is_model_ready(MODEL)
        time.sleep(0.5)  # Triton records statistics just after the responses
        delta = {n: model_gauge(srv.metrics_url, n) - before[n] for n in SPLIT_COUNTERS}
        executes, passes, batched = delta.values()
        assert batched == len(small), delta  # every small clip went through exactly one pass
        assert passes > executes >= 1, delta  # halves retried: more passes than execute() calls


SPLIT_COUNTERS = (
    "nv_inference_exec_count",
    "qwen3_aligner_forward_batch_size_count",
    "qwen3_aligner_forward_batch_size_sum",
)
