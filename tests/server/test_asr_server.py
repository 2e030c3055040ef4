"""Integration: transcribe, then align, on a real tritonserver with the tiny ASR checkpoint.

A request without TEXT must give the transcript, the language and every timestamp of upstream's
``Qwen3ASRModel.from_pretrained(asr, forced_aligner=aligner).transcribe(audio, context=...,
language=..., return_time_stamps=True)`` on the same checkpoints (the encoder's windows applied
to both models, as the server runs them), over HTTP and gRPC, alone and among concurrent
requests; a recording over 180 s is cut, transcribed and aligned chunk by chunk as upstream
does it.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from shared_fixtures import LiveServer
from triton_calls import MODEL
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration

SAMPLE_RATE = 16000  # Hz
# (seconds, sample rate, context, language): lengths whose transcripts differ; 200 s is two chunks.
CASES = (
    (0.7, 16000, "", None),
    (3.3, 16000, "", None),
    (12.9, 22050, "Names: Ada, Grace.", None),
    (6.1, 16000, "", "en"),
    (5.2, 16000, "Count: one two", "French"),
    (200.0, 16000, "", None),
)
UPSTREAM_LANGUAGES = {"en": "English"}


def wave(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    audio = (rng.standard_normal(round(seconds * rate)) * 0.1).astype(np.float32)
    if seconds > 180:  # a pause past the 180 s mark, where upstream cuts
        audio[int(181.0 * rate) : int(181.3 * rate)] = 0.0
    return audio


@pytest.fixture(scope="module")
def upstream_asr(tiny_checkpoint, asr_checkpoint):
    from qwen_asr import Qwen3ASRModel

    from qwen3_aligner_triton.encoder_attention import set_encoder_attention

    model = Qwen3ASRModel.from_pretrained(str(asr_checkpoint), forced_aligner=str(tiny_checkpoint))
    set_encoder_attention(model.model, "windowed")
    set_encoder_attention(model.forced_aligner.model, "windowed")
    return model


@pytest.fixture(scope="module")
def expected(upstream_asr):
    out = []
    for k, (seconds, rate, context, language) in enumerate(CASES):
        (result,) = upstream_asr.transcribe(
            (wave(seconds, rate, k), rate),
            context=context,
            language=UPSTREAM_LANGUAGES.get(language, language),
            return_time_stamps=True,
        )
        items = [] if result.time_stamps is None else result.time_stamps.items
        out.append(
            (
                result.text,
                result.language,
                [(it.text, float(np.float32(it.start_time)), float(np.float32(it.end_time)))
                 for it in items],
            )
        )  # fmt: skip
    return out


def request(module, k: int):
    seconds, rate, context, language = CASES[k]
    audio = wave(seconds, rate, k)
    inputs = [module.InferInput("AUDIO", [1, audio.shape[0]], "FP32")]
    inputs[-1].set_data_from_numpy(audio[None, :])
    inputs.append(module.InferInput("SAMPLE_RATE", [1, 1], "INT32"))
    inputs[-1].set_data_from_numpy(np.array([[rate]], np.int32))
    for name, value in (("CONTEXT", context or None), ("LANGUAGE", language)):
        if value is not None:
            inputs.append(module.InferInput(name, [1, 1], "BYTES"))
            inputs[-1].set_data_from_numpy(np.array([[value.encode()]], np.object_))
    return inputs


def answer(result) -> tuple[str, str, list]:
    words = [w.decode() for w in result.as_numpy("WORDS").reshape(-1)]
    starts = result.as_numpy("START_TIMES").reshape(-1)
    ends = result.as_numpy("END_TIMES").reshape(-1)
    text = result.as_numpy("TRANSCRIPT").reshape(-1)[0].decode()
    language = result.as_numpy("TRANSCRIPT_LANGUAGE").reshape(-1)[0].decode()
    document = json.loads(result.as_numpy("ALIGNMENT").reshape(-1)[0])
    assert (document["text"], document["language"]) == (text, language)
    units = [(w, float(s), float(e)) for w, s, e in zip(words, starts, ends, strict=True)]
    return text, language, units


def infer(server: LiveServer, protocol: str, k: int):
    module = httpclient if protocol == "http" else grpcclient
    url = server.http_url if protocol == "http" else server.grpc_url
    with module.InferenceServerClient(url) as client:
        return answer(client.infer(MODEL, request(module, k)))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_each_request_equals_upstreams_transcribe(asr_server, expected, protocol):
    for k in range(len(CASES)):
        assert infer(asr_server, protocol, k) == expected[k], CASES[k]
    # The 200 s recording is two chunks; upstream joins their texts without a space, so one
    # pair of words runs together in the transcript while the units keep them apart.
    text, language, units = expected[-1]
    assert language == "English" and len(units) == len(text.split()) + 1 > 180
    assert units[-1][1] > 180.0


def test_concurrent_requests_each_get_their_lone_result(asr_server, expected):
    jobs = [(p, k) for k in range(len(CASES)) for p in ("http", "grpc")] * 2
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda job: infer(asr_server, *job), jobs))
    for (_, k), result in zip(jobs, results, strict=True):
        assert result == expected[k], CASES[k]


def test_a_request_with_text_is_unchanged_on_an_asr_server(asr_server, upstream):
    from shared_fixtures import upstream_align
    from triton_calls import as_float32, infer_grpc

    audio = wave(3.3, SAMPLE_RATE, 1)
    got = infer_grpc(asr_server.grpc_url, audio, SAMPLE_RATE, "one two three", "English")
    assert got["units"] == as_float32(
        upstream_align(upstream, audio, SAMPLE_RATE, "one two three", "English")
    )


def test_the_transcribe_stage_is_measured(asr_server):
    import urllib.request

    infer(asr_server, "grpc", 1)
    with urllib.request.urlopen(asr_server.metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    counts = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("qwen3_aligner_stage_seconds_count") and 'stage="transcribe"' in line
    ]
    assert counts and sum(counts) >= 1


def test_without_the_asr_model_a_request_without_text_is_told_how_to_enable_it(server):
    with (
        grpcclient.InferenceServerClient(server.grpc_url) as client,
        pytest.raises(InferenceServerException) as info,
    ):
        client.infer(MODEL, request(grpcclient, 1))
    assert "StatusCode.INVALID_ARGUMENT" in str(info.value.status())
    assert "./scripts/serve --asr" in info.value.message()


def test_the_openai_sdk_transcribes_through_the_front_as_upstream_does(asr_server, expected):
    """``client.audio.transcriptions.create`` on the OpenAI-style front: the file goes to the
    model without TEXT, and the answer (OpenAI's ``verbose_json`` with word times, and ``json``)
    is upstream's transcript and timestamps, as the direct request gives them."""
    import io
    import time

    import openai
    import requests
    import soundfile

    from qwen3_aligner_triton.openai_front.launch import FrontOptions, FrontProcess
    from qwen3_aligner_triton.triton_flags import free_ports

    k = 1  # 3.3 s at 16 kHz, detected language
    seconds, rate, _, _ = CASES[k]
    buffer = io.BytesIO()
    soundfile.write(buffer, wave(seconds, rate, k), rate, format="WAV", subtype="FLOAT")
    (port,) = free_ports(1)
    front = FrontProcess.start(
        FrontOptions(port=port, triton_url=asr_server.grpc_url, host="127.0.0.1"),
        extra=["--log-level", "warning"],
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert front.exited() is None and time.monotonic() < deadline
            try:
                if requests.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0)
        verbose = client.audio.transcriptions.create(
            model="qwen3_aligner",
            file=("speech.wav", buffer.getvalue()),
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
        plain = client.audio.transcriptions.create(
            model="qwen3_aligner", file=("speech.wav", buffer.getvalue())
        )
    finally:
        assert front.stop() == 0
    text, language, units = expected[k]
    assert plain.text == verbose.text == text and verbose.language == language.lower()
    assert [(w.word, w.start, w.end) for w in verbose.words] == [
        (word, round(start, 3), round(end, 3)) for word, start, end in units
    ]
    assert verbose.segments
