"""Hostile input, overload and faults against a real tritonserver (tiny checkpoint, CPU)."""

from __future__ import annotations

import base64
import concurrent.futures
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from cases import CASES
from shared_fixtures import (
    SERVER_READY_TIMEOUT,
    TEST_FRONT_INSTANCES,
    dedicated_server,
    upstream_align,
)
from triton_calls import MODEL, as_float32, build_inputs, parse
from tritonclient.utils import InferenceServerException

from qwen3_aligner_triton.contract import CORE_MODEL_NAME as CORE
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


def refused_beside_good_requests(client, bad: dict, good_expected) -> dict:
    """Send each bad request (name -> a function sending it asynchronously) with a good one
    after it; every good one must get ``good_expected``. Returns each bad one's exception."""
    pending = []
    for name, send in bad.items():
        pending.append((name, send()))
        pending.append((None, client.async_infer(MODEL, good_inputs())))
    refused = {}
    for name, future in pending:
        if name is None:
            assert parse(future.get_result())["units"] == good_expected
            continue
        with pytest.raises(InferenceServerException) as info:
            future.get_result()
        refused[name] = info.value
    return refused


def test_every_bad_request_fails_alone(server, good_expected):
    with httpclient.InferenceServerClient(server.http_url, concurrency=16) as client:
        bad = {
            name: (lambda inputs=make: client.async_infer(MODEL, inputs()))
            for name, (make, _) in BAD_REQUESTS.items()
        }
        for name, error in refused_beside_good_requests(client, bad, good_expected).items():
            assert error.status() == "400", (name, error)
            assert BAD_REQUESTS[name][1] in error.message(), (name, error.message())
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
    # One front instance takes at most one batch (16 requests); the queue holds 2 more.
    with dedicated_server(
        tmp_path,
        tiny_checkpoint,
        edit_config=overloaded_queue,
        front_instances=1,
        max_forward_batch=1,
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

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            outcomes = list(pool.map(one, range(32)))
        ok = [t for o, t in outcomes if o == "ok"]
        rejected = [(o, t) for o, t in outcomes if o != "ok"]
        assert ok, outcomes
        assert rejected, "no request was turned away with a queue of 2"
        for message, _seconds in rejected:
            assert "503" in message or "UNAVAILABLE" in message.upper(), message
            assert "queue" in message.lower(), message
        # Rejections come at once, not after waiting for the work ahead of them.
        assert min(t for _, t in rejected) < max(ok)


def test_killed_backend_stub_gets_the_server_serving_again(
    tmp_path, tiny_checkpoint, good_expected
):
    """Triton 2.51 alone keeps reporting ready and fails every request with "Stub process is not
    healthy"; the launcher's watchdog restarts tritonserver (no credential involved)."""
    with dedicated_server(tmp_path, tiny_checkpoint) as srv:
        first = srv.running.process.pid
        stubs = backend_stub_pids(first)
        assert len(stubs) == 1 + TEST_FRONT_INSTANCES, stubs
        pids = {
            p for p in stubs if b"qwen3_aligner_core" in Path(f"/proc/{p}/cmdline").read_bytes()
        }
        assert len(pids) == 1, pids  # the forward's stub
        os.kill(next(iter(pids)), signal.SIGKILL)
        started = time.monotonic()
        deadline = started + SERVER_READY_TIMEOUT  # a restart is a model load (~10 s idle)
        seen: list[str] = []
        while time.monotonic() < deadline:
            try:  # refused connections while the server restarts
                with httpclient.InferenceServerClient(srv.http_url) as client:
                    result = parse(client.infer(MODEL, good_inputs()))
                    assert client.is_model_ready(MODEL)
                break
            except Exception as e:
                seen.append(str(e))
                time.sleep(0.5)
        else:
            log = "\n".join(list(srv.running.log_tail)[-15:])
            pytest.fail(f"model did not serve again after the stub was killed: {seen[-3:]}\n{log}")
        print(f"serving again {time.monotonic() - started:.1f} s after the stub was killed")
        assert result["units"] == good_expected
        assert srv.running.restarts == 1 and srv.running.process.pid != first
        assert backend_stub_pids(srv.running.process.pid).isdisjoint(pids)
        assert any("restarting tritonserver" in line for line in srv.running.log_tail)
        assert srv.running.wait(timeout=0) is None, "a restart is not an exit"


def test_model_repository_api_is_closed(server):
    import requests

    url = f"http://{server.http_url}/v2/repository/models/{MODEL}/unload"
    assert requests.post(url, timeout=10).status_code == 403
    assert requests.get(f"http://{server.http_url}/v2/models/{MODEL}/ready", timeout=5).ok


def model_gauge(metrics_url: str, name: str, model: str = MODEL) -> float:
    """The value of one series of ``model``, read from the metrics port."""
    import urllib.request

    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(f'{name}{{model="{model}"'):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not on the metrics port")


def test_a_stop_drains_in_flight_requests_and_refuses_new_ones(tmp_path, tiny_checkpoint, upstream):
    """What the launcher does on SIGTERM or Ctrl-C (``RunningServer.request_stop``): requests the
    server holds when the stop comes, and one that arrives while they finish, are answered;
    once the server has exited a new request is refused with UNAVAILABLE."""
    case = next(c for c in CASES if c.seconds == 60.0)
    expected = as_float32(
        upstream_align(upstream, case.audio(), case.sample_rate, case.text, case.upstream_language)
    )
    sent = 6
    with dedicated_server(tmp_path, tiny_checkpoint, max_forward_batch=1) as srv:
        done: list[tuple[float, object]] = []
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        for _ in range(sent):
            client.async_infer(
                MODEL,
                long_inputs(grpcclient),
                lambda result, error: done.append((time.monotonic(), error or result)),
            )
        # Wait until the server holds requests that wait behind the one in the forward (one
        # clip per pass here), then stop at once.
        deadline = time.monotonic() + 60
        while (
            model_gauge(srv.metrics_url, "nv_inference_pending_request_count")
            + model_gauge(srv.metrics_url, "qwen3_aligner_requests_in_flight")
            < 3
        ):
            assert time.monotonic() < deadline, "the server never held requests waiting"
            time.sleep(0.02)
        answered_before = len(done)
        signalled = time.monotonic()
        srv.running.request_stop()
        assert answered_before < sent - 1
        with grpcclient.InferenceServerClient(srv.grpc_url) as during:
            late_arrival = during.infer(MODEL, good_inputs_of(grpcclient))
        assert parse(late_arrival)["units"]
        assert srv.running.wait(timeout=120) == 0
        assert len(done) == sent, done
        for _, outcome in done:
            assert not isinstance(outcome, Exception), (outcome.status(), outcome.message())
            assert parse(outcome)["units"] == expected
        after_signal = [t for t, _ in done if t > signalled]
        assert len(after_signal) >= sent - answered_before >= 1
        assert any("stopping: serving the" in ln for ln in srv.running.log_tail)
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
    # (< 200 tokens each) but not all together. The core's batcher waits long enough to hand them
    # to the forward in one execute() call, so more forward passes than calls means a split.
    def gather(config):
        config.dynamic_batching.max_queue_delay_microseconds = 3_000_000

    with (
        dedicated_server(
            tmp_path,
            tiny_checkpoint,
            edit_core_config=gather,
            simulate_oom_above_tokens=400,
            bucket_ratio=1000,
            max_forward_batch=16,
        ) as srv,
        httpclient.InferenceServerClient(srv.http_url, concurrency=16) as client,
    ):
        before = {n: model_gauge(srv.metrics_url, n, CORE) for n in SPLIT_COUNTERS}
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
        delta = {n: model_gauge(srv.metrics_url, n, CORE) - before[n] for n in SPLIT_COUNTERS}
        executes, passes, batched = delta.values()
        assert batched == len(small), delta  # every small clip went through exactly one pass
        assert passes > executes >= 1, delta  # halves retried: more passes than execute() calls


SPLIT_COUNTERS = (
    "nv_inference_exec_count",
    "qwen3_aligner_forward_batch_size_count",
    "qwen3_aligner_forward_batch_size_sum",
)


# --- requests whose cost once grew faster than the limits -------------------------------------


def process_memory(pid: int) -> tuple[int, int]:
    """(current, peak) resident bytes of a process."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def server_memory(srv) -> tuple[int, int]:
    """(current, peak) resident bytes of the server and its backend stubs together."""
    pids = [srv.running.process.pid, *backend_stub_pids(srv.running.process.pid)]
    totals = [process_memory(pid) for pid in pids]
    return sum(t[0] for t in totals), sum(t[1] for t in totals)


def with_segments(inputs, document: bytes):
    seg = httpclient.InferInput("SEGMENTS", [1, 1], "BYTES")
    seg.set_data_from_numpy(np.array([[document]], dtype=np.object_))
    return [*inputs, seg]


def cue_document(texts, seconds: float = 2.0) -> bytes:
    import json

    cues = [
        {"start": k * seconds, "end": (k + 1) * seconds, "text": t} for k, t in enumerate(texts)
    ]
    return json.dumps(cues, ensure_ascii=False).encode()


TEN_SECONDS = np.zeros(160_000, np.float32)
COSTLY_REJECTED = {
    "5 cues of 100,000 characters": (
        lambda: with_segments(
            raw_inputs(TEN_SECONDS, b"", b"en"), cue_document([" ".join(["word"] * 20_000)] * 5)
        ),
        "for all cues together",
    ),
    "SEGMENTS over the byte limit": (
        lambda: with_segments(raw_inputs(TEN_SECONDS, b"", b"en"), b"[" + b" " * 8_000_001 + b"]"),
        "bytes; the limit is 8000000",
    ),
    "a 400-digit number in a cue": (
        lambda: with_segments(
            raw_inputs(TEN_SECONDS, b"", b"en"),
            b'[{"start": 1' + b"0" * 400 + b', "end": 2, "text": "hi"}]',
        ),
        "SEGMENTS[0].start must be a finite number",
    ),
    "deeply nested SEGMENTS": (
        lambda: with_segments(raw_inputs(TEN_SECONDS, b"", b"en"), b"[" * 100_000 + b"]" * 100_000),
        "too deeply nested",
    ),
    "a cue text of the wrong type": (
        lambda: with_segments(
            raw_inputs(TEN_SECONDS, b"", b"en"), b'[{"start": 0, "end": 1, "text": {"a": 1}}]'
        ),
        "SEGMENTS[0].text must be a string, got an object",
    ),
    "one Korean token of 60,000 characters": (
        lambda: raw_inputs(TEN_SECONDS, "가".encode() * 60_000, b"ko"),
        "(max_forward_tokens); its longest word has",
    ),
    "400,000 Japanese characters for 10 s": (
        lambda: raw_inputs(TEN_SECONDS, "今日は".encode() * 133_333, b"ja"),
        "Japanese text is limited to 4 characters per unit",
    ),
    "TEXT other than the cues": (
        lambda: with_segments(
            raw_inputs(TEN_SECONDS, b"hello there", b"en"), cue_document(["hello"])
        ),
        "TEXT has 'there' at character 6 after the last cue's text",
    ),
}


def timed_infer(client, inputs):
    started = time.monotonic()
    try:
        return client.infer(MODEL, inputs), time.monotonic() - started
    except InferenceServerException as e:
        return e, time.monotonic() - started


def test_costly_requests_are_answered_promptly_with_bounded_memory(server, good_expected):
    """Each request once held the model for minutes or grew the server by gigabytes."""
    _, peak_before = server_memory(server)
    speech = np.random.default_rng(0).uniform(-0.1, 0.1, 16000 * 500).astype(np.float32)
    with httpclient.InferenceServerClient(server.http_url, network_timeout=300) as client:
        for name, (build, message) in COSTLY_REJECTED.items():
            error, seconds = timed_infer(client, build())
            print(f"{name}: {seconds:.2f} s")
            assert isinstance(error, InferenceServerException), name
            assert error.status() == "400", (name, error.message())
            assert message in error.message(), (name, error.message())

        # A Korean token of 2,400 characters (about 7,200 prompt tokens, within the CPU
        # placement's 8,192) is aligned.
        korean, korean_s = timed_infer(client, raw_inputs(TEN_SECONDS, "가".encode() * 2400, b"ko"))
        assert not isinstance(korean, Exception), korean
        assert parse(korean)["document"]["text"] == "가" * 2400
        # 3,000 x ㍿ (split into 株式 + 会社) against the same units written plainly: 45 s
        # against 9 s when span location scanned to the end of the text for every unit.
        plain, plain_s = timed_infer(client, raw_inputs(speech, "株式会社".encode() * 3000, b"ja"))
        symbol, symbol_s = timed_infer(client, raw_inputs(speech, "㍿".encode() * 3000, b"ja"))
        assert not isinstance(plain, Exception), plain
        assert not isinstance(symbol, Exception), symbol
        assert parse(symbol)["units"] == parse(plain)["units"]
        spans = [(w["char_start"], w["char_end"]) for w in parse(symbol)["document"]["words"]]
        assert spans == sorted(spans) and all(0 <= a <= b <= 3000 for a, b in spans)
        print(
            f"Korean 2.4k token {korean_s:.1f} s; 6,000 units: {plain_s:.1f} s, ㍿ {symbol_s:.1f} s"
        )
        assert symbol_s < 2.5 * plain_s + 5.0, (symbol_s, plain_s)

        assert client.is_server_ready() and client.is_model_ready(MODEL)
        assert parse(client.infer(MODEL, good_inputs()))["units"] == good_expected
    _, peak_after = server_memory(server)
    growth = peak_after - peak_before
    print(f"peak resident memory of server + stub grew by {growth / 2**20:.0f} MiB")
    assert growth < 3 * 2**30, growth  # the two 500 s requests take ~1.3 GiB; soynlp took 7


def core_inputs(module, arrays: dict[str, np.ndarray]) -> list:
    inputs = []
    for name, array in arrays.items():
        dtype = "INT64" if array.dtype == np.int64 else "FP32"
        tensor = module.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


@pytest.fixture(scope="module")
def core_arrays(tiny_checkpoint) -> dict[str, np.ndarray]:
    """An ordinary clip as the front sends it to the core."""
    from qwen3_aligner_triton.front import core_request_arrays
    from qwen3_aligner_triton.loading import load_preparer
    from qwen3_aligner_triton.params import FrontSettings
    from qwen3_aligner_triton.requests import AlignRequest

    preparer = load_preparer(str(tiny_checkpoint), FrontSettings())
    request = AlignRequest(GOOD.audio(), GOOD.sample_rate, GOOD.text, GOOD.upstream_language)
    return core_request_arrays(preparer.prepare(request).core_input())


def test_clients_cannot_call_the_core(server, core_arrays):
    """The core is in the repository and Triton serves every loaded model: a client's request
    to it, without the key of this server or with a guessed one, is refused on both protocols."""
    from qwen3_aligner_triton.core_access import KEY_PARAMETER, REFUSED_MESSAGE

    guesses = (None, {KEY_PARAMETER: "0" * 64}, {KEY_PARAMETER: ""}, {"other": "x"})
    with httpclient.InferenceServerClient(server.http_url) as client:
        for parameters in guesses:
            with pytest.raises(InferenceServerException) as info:
                client.infer(CORE, core_inputs(httpclient, core_arrays), parameters=parameters)
            assert info.value.status() == "400" and REFUSED_MESSAGE in info.value.message()
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        for parameters in guesses:
            with pytest.raises(InferenceServerException) as info:
                client.infer(CORE, core_inputs(grpcclient, core_arrays), parameters=parameters)
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
            assert REFUSED_MESSAGE in info.value.message()


def test_even_with_the_key_malformed_clips_are_refused_and_spare_the_front_s_requests(
    server, core_arrays, good_expected
):
    """Behind the key, the core checks every clip: sent with the server's key (read from its
    private file, as only the server's own user can), malformed clips are refused one by one
    while ordinary requests sent at the same time keep their results."""
    from qwen3_aligner_triton.core_access import key_parameters, server_key

    key = key_parameters(server_key(server.running.process.pid))
    ids, features = core_arrays["INPUT_IDS"], core_arrays["FEATURES"]
    oov, pads_as_words = ids.copy(), ids.copy()
    oov[0, -3] = 10**12
    audio_pad = int(np.bincount(ids[0]).argmax())  # the most frequent id: <|audio_pad|>
    pads_as_words[pads_as_words == audio_pad] = ids[0, -1]
    malformed = {
        "no audio pads": {
            "INPUT_IDS": pads_as_words,
            "FEATURES": np.zeros((1, 128, 3000), np.float32),
        },
        "id out of vocabulary": {"INPUT_IDS": oov, "FEATURES": features},
        "two clips": {
            "INPUT_IDS": np.concatenate([ids] * 2),
            "FEATURES": np.concatenate([features] * 2),
        },
        "NaN features": {"INPUT_IDS": ids, "FEATURES": np.full_like(features, np.nan)},
        "200 samples": {"INPUT_IDS": pads_as_words, "AUDIO": np.zeros((1, 200), np.float32)},
    }
    with httpclient.InferenceServerClient(server.http_url, concurrency=16) as client:
        answered = client.infer(CORE, core_inputs(httpclient, core_arrays), parameters=key)
        assert answered.as_numpy("TIMESTAMP_BINS").shape == (1, 2 * len(good_expected))
        bad = {
            name: (
                lambda arrays=arrays: client.async_infer(
                    CORE, core_inputs(httpclient, arrays), parameters=key
                )
            )
            for name, arrays in malformed.items()
        }
        for name, error in refused_beside_good_requests(client, bad, good_expected).items():
            assert error.status() == "400", (name, error.message())
        assert client.is_model_ready(MODEL) and client.is_model_ready(CORE)
