"""The OpenAI-style front on its own: a real uvicorn on loopback, an aligner standing in for Triton.

What Triton would answer is scripted (:class:`ScriptedAligner`), so these tests pin the front's own
behaviour: routes, the form, limits, errors in OpenAI's shape, the key, metrics, formats. The
front against a real tritonserver is tests/server/test_openai_server.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import openai
import pytest
import requests
import uvicorn
from tritonclient.utils import InferenceServerException

from qwen3_aligner_triton.openai_front.app import (
    FrontSettings,
    blamed_field,
    create_app,
    response_formats,
)
from qwen3_aligner_triton.openai_front.backend import (
    AlignRequest,
    BackendError,
    classify,
    request_tensors,
)

DOCUMENT = {
    "language": "English",
    "duration": 2.0,
    "text": "hello world",
    "mean_score": 0.9,
    "repaired_share": 0.0,
    "words": [
        {"text": "hello", "start": 0.12, "end": 0.5, "char_start": 0, "char_end": 5,
         "display": "hello", "display_start": 0, "display_end": 5, "score": 0.9,
         "repaired": False},
        {"text": "world", "start": 0.62, "end": 1.1, "char_start": 6, "char_end": 11,
         "display": "world", "display_start": 6, "display_end": 11, "score": 0.9,
         "repaired": False},
    ],
}  # fmt: skip
WAV = b"RIFF....WAVEfmt not really audio: the front never decodes it"
KEY = "sk-test-key-0123456789"


@dataclass
class ScriptedAligner:
    """Answers every request with ``document``, or raises ``error``; records what it was sent."""

    document: dict = field(default_factory=lambda: dict(DOCUMENT))
    error: BackendError | None = None
    is_ready: bool = True
    received: list[AlignRequest] = field(default_factory=list)

    async def ready(self) -> bool:
        return self.is_ready

    async def align(self, request: AlignRequest) -> str:
        self.received.append(request)
        if self.error is not None:
            raise self.error
        return json.dumps(self.document)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(aligner: ScriptedAligner, settings: FrontSettings | None = None) -> Iterator[str]:
    """The front on a free loopback port, in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(aligner, settings), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the front did not start"
        assert thread.is_alive(), "the front exited at start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture(scope="module")
def front() -> Iterator[tuple[str, ScriptedAligner]]:
    aligner = ScriptedAligner()
    with running(aligner, FrontSettings(max_upload_bytes=64 * 1024)) as url:
        yield url, aligner


@pytest.fixture
def aligner(front) -> Iterator[ScriptedAligner]:
    _, scripted = front
    scripted.received.clear()
    yield scripted
    scripted.error, scripted.is_ready, scripted.document = None, True, dict(DOCUMENT)


def align(url: str, fields: dict | None = None, file: bytes | None = WAV, **kwargs):
    data = {"text": "hello world", "language": "en", **(fields or {})}
    data = {k: v for k, v in data.items() if v is not None}
    # without a file, a field of no meaning keeps the body multipart
    files = {"file": ("speech.wav", file, "audio/wav")} if file is not None else {"x": (None, "")}
    return requests.post(f"{url}/v1/audio/alignments", data=data, files=files, timeout=30, **kwargs)


def align_to(url: str, route: str, fields: dict):
    return requests.post(
        f"{url}/v1/audio/{route}", data=fields, files={"file": ("a.wav", WAV)}, timeout=30
    )


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_an_upload_reaches_the_aligner_as_it_was_sent(front, aligner):
    url, _ = front
    response = align(url, {"text": "hello world", "language": "en-US"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == DOCUMENT
    (request,) = aligner.received
    assert request == AlignRequest(WAV, "hello world", "en-US")


def test_text_is_the_transcript_and_subtitles_are_cues(front, aligner):
    url, _ = front
    text = align(url, {"response_format": "text"})
    assert (text.status_code, text.text) == (200, "hello world\n")
    srt = align(url, {"response_format": "srt"})
    assert srt.text == "1\n00:00:00,120 --> 00:00:01,100\nhello world\n"
    vtt = align(url, {"response_format": "vtt"})
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert "00:00:00.120 --> 00:00:01.100\nhello world" in vtt.text


def test_cue_limits_come_from_the_form(front, aligner):
    url, _ = front
    srt = align(url, {"response_format": "srt", "max_chars": "5", "max_lines": "1"})
    assert srt.text == (
        "1\n00:00:00,120 --> 00:00:00,620\nhello\n\n2\n00:00:00,620 --> 00:00:01,120\nworld\n"
    )
    bad = align(url, {"response_format": "srt", "max_lines": "zero"})
    assert bad.status_code == 400
    assert error_of(bad)["message"] == "max_lines must be an integer, got 'zero'"
    assert error_of(bad)["param"] == "max_lines"
    negative = align(url, {"response_format": "srt", "max_lines": "0"})
    assert negative.status_code == 400 and "at least 1" in error_of(negative)["message"]


def test_cues_by_line_karaoke_and_word_times_come_from_the_form(front, aligner):
    url, _ = front
    aligner.document = {**DOCUMENT, "text": "hello\nworld"}
    lines = align(url, {"text": "hello\nworld", "response_format": "srt", "cues": "lines"})
    assert lines.text == (
        "1\n00:00:00,120 --> 00:00:00,620\nhello\n\n2\n00:00:00,620 --> 00:00:01,120\nworld\n"
    )
    aligner.document = dict(DOCUMENT)
    karaoke = align(url, {"response_format": "ass"}).text
    plain = align(url, {"response_format": "ass", "karaoke": "false"}).text
    assert "{\\k" in karaoke and "{\\k" not in plain
    timed = align(url, {"response_format": "vtt", "word_timestamps": "true"}).text
    assert "<00:00:00.620>" in timed
    assert "<00:00:00.620>" not in align(url, {"response_format": "vtt"}).text
    for name, value in (("karaoke", "maybe"), ("cues", "paragraphs")):
        refused = align(url, {"response_format": "ass", name: value})
        assert refused.status_code == 400, refused.text
        assert value in error_of(refused)["message"]


def test_every_listed_format_is_answered(front, aligner):
    url, _ = front
    for name in response_formats():
        response = align(url, {"response_format": name})
        assert response.status_code == 200, (name, response.text)
        assert response.text.strip()


@pytest.mark.parametrize(
    ("fields", "file", "param", "message"),
    [
        ({"text": None}, WAV, "text", "text: required"),
        ({"language": None}, WAV, "language", "language: required"),
        ({"language": "  "}, WAV, "language", "language: required"),
        ({}, None, "file", "file: required"),
        ({}, b"", "file", "file: the uploaded file is empty"),
        ({"response_format": "docx"}, WAV, "response_format", "response_format 'docx' is not"),
        ({"model": "whisper-1"}, WAV, "model", "model 'whisper-1' is not served here"),
        ({"stream": "true"}, WAV, "stream", "stream is not supported"),
        (
            {"timestamp_granularities[]": "char"},
            WAV,
            "timestamp_granularities[]",
            "timestamp_granularities: 'char'",
        ),
    ],
)
def test_a_form_the_front_cannot_take_is_refused_naming_the_field(
    front, aligner, fields, file, param, message
):
    url, _ = front
    response = align(url, fields, file)
    assert response.status_code == (404 if param == "model" else 400)
    error = error_of(response)
    assert error["param"] == param and error["message"].startswith(message), error
    assert error["type"] == "invalid_request_error"
    assert aligner.received == []


def test_text_sent_as_a_file_part_is_refused(front, aligner):
    url, _ = front
    files = {"file": ("a.wav", WAV), "text": ("t.txt", b"hello")}
    response = requests.post(
        f"{url}/v1/audio/alignments", data={"language": "en"}, files=files, timeout=30
    )
    assert response.status_code == 400  # two files: over max_files=1
    assert aligner.received == []


def test_a_body_that_is_not_multipart_is_refused_with_415(front, aligner):
    url, _ = front
    response = requests.post(
        f"{url}/v1/audio/alignments", json={"text": "hello", "language": "en"}, timeout=30
    )
    assert response.status_code == 415
    assert "multipart/form-data" in error_of(response)["message"]


def test_a_malformed_multipart_body_is_refused_and_the_front_serves_on(front, aligner):
    url, _ = front
    response = requests.post(
        f"{url}/v1/audio/alignments",
        data=b"--xyz\r\nContent-Type: text/plain\r\n\r\nab\r\n--xyz--\r\n",  # no disposition
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        timeout=30,
    )
    assert response.status_code == 400
    assert error_of(response)["message"].startswith("malformed form")
    assert align(url).status_code == 200


def test_an_upload_over_the_limit_is_refused_by_its_declared_length(front, aligner):
    url, _ = front
    response = align(url, file=b"\0" * (64 * 1024 + 1))
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "upload_too_large" and "65536 bytes" in error["message"]
    assert aligner.received == []


def test_a_chunked_upload_is_cut_off_once_it_passes_the_limit(front, aligner):
    url, _ = front

    def chunks():  # no Content-Length: the front counts what arrives
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for _ in range(1024):
            yield b"\0" * 4096

    with contextlib.suppress(requests.ConnectionError):
        response = requests.post(
            f"{url}/v1/audio/alignments",
            data=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
            timeout=30,
        )
        assert response.status_code == 413
    assert aligner.received == []
    assert align(url).status_code == 200


@pytest.mark.parametrize(
    ("error", "status", "error_type", "param"),
    [
        (BackendError("input AUDIO_FILE is not a readable audio file", 400,
                      "invalid_request_error"), 400, "invalid_request_error", "file"),
        (BackendError("input LANGUAGE: unsupported language 'xx'", 400, "invalid_request_error"),
         400, "invalid_request_error", "language"),
        (BackendError("the server is stopping", 503, "service_unavailable"), 503,
         "service_unavailable", None),
    ],
)  # fmt: skip
def test_the_aligners_refusals_keep_their_message_and_status(
    front, aligner, error, status, error_type, param
):
    url, _ = front
    aligner.error = error
    response = align(url)
    assert response.status_code == status
    assert error_of(response) == {
        "message": str(error), "type": error_type, "param": param, "code": None
    }  # fmt: skip


def test_a_malformed_answer_of_the_aligner_is_a_bad_gateway(front, aligner):
    url, _ = front
    aligner.document = {"words": []}  # no language, no duration
    response = align(url)
    assert response.status_code == 502
    assert error_of(response)["message"].startswith("the aligner's answer is malformed")


@pytest.mark.parametrize(
    ("status", "http", "error_type"),
    [
        ("StatusCode.INVALID_ARGUMENT", 400, "invalid_request_error"),
        ("StatusCode.UNAVAILABLE", 503, "service_unavailable"),
        ("StatusCode.NOT_FOUND", 503, "service_unavailable"),
        ("StatusCode.DEADLINE_EXCEEDED", 504, "timeout_error"),
        ("StatusCode.RESOURCE_EXHAUSTED", 429, "rate_limit_error"),
        ("StatusCode.INTERNAL", 500, "server_error"),
        (None, 500, "server_error"),
    ],
)
def test_triton_status_codes_map_to_http_statuses(status, http, error_type):
    error = classify(InferenceServerException("it went wrong", status=status))
    assert (error.status, error.error_type) == (http, error_type)
    expected = "it went wrong" if http != 500 else "the aligner failed: it went wrong"
    assert str(error) == expected


def test_the_field_a_refusal_is_about_is_the_first_input_it_names():
    assert blamed_field("input AUDIO_FILE has 288000000 samples") == "file"
    assert blamed_field("AUDIO is empty") == "file"
    assert blamed_field("input TEXT is not valid UTF-8 (byte 3)") == "text"
    assert blamed_field("input LANGUAGE: unsupported language") == "language"
    assert blamed_field("TEXTURE of the AUDIOFILE") is None
    assert blamed_field("internal error (id 0123)") is None


def test_the_request_tensors_carry_the_bytes_unchanged():
    tensors = request_tensors(AlignRequest(b"\0\xff", "héllo", "en"))
    assert [t.name() for t in tensors] == ["AUDIO_FILE", "TEXT", "LANGUAGE"]
    assert all(t.datatype() == "BYTES" and t.shape() == [1, 1] for t in tensors)
    transcribe = request_tensors(AlignRequest(b"\0", None, None, "Ada"))
    assert [t.name() for t in transcribe] == ["AUDIO_FILE", "CONTEXT"]
    assert [t.name() for t in request_tensors(AlignRequest(b"\0", None, "fr"))] == [
        "AUDIO_FILE", "LANGUAGE"
    ]  # fmt: skip


def test_verbose_json_validates_as_openais_model_and_follows_the_granularities(front, aligner):
    from openai.types.audio import TranscriptionVerbose

    url, _ = front
    both = align(url, {"response_format": "verbose_json"})
    parsed = TranscriptionVerbose.model_validate_json(both.text)
    assert [(w.word, w.start, w.end) for w in parsed.words] == [
        ("hello", 0.12, 0.5), ("world", 0.62, 1.1)
    ]  # fmt: skip
    assert parsed.segments and parsed.text == "hello world"
    words = requests.post(
        f"{url}/v1/audio/alignments",
        data={"text": "hello world", "language": "en", "response_format": "verbose_json",
              "timestamp_granularities[]": ["word"]},
        files={"file": ("a.wav", WAV)},
        timeout=30,
    ).json()  # fmt: skip
    assert "words" in words and "segments" not in words
    segments = align(
        url, {"response_format": "verbose_json", "timestamp_granularities[]": "segment"}
    ).json()
    assert "segments" in segments and "words" not in segments


def test_models_are_listed_for_the_openai_sdk(front):
    url, _ = front
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["qwen3_aligner"]


def test_transcription_without_an_asr_model_is_an_error_the_sdk_reads(front, aligner):
    from qwen3_aligner_triton.requests import NO_ASR_MESSAGE

    url, _ = front
    aligner.error = BackendError(NO_ASR_MESSAGE, 400, "invalid_request_error")
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="qwen3_aligner", file=("a.wav", io.BytesIO(WAV)))
    assert caught.value.code == "transcription_unavailable"
    assert "./scripts/serve --asr" in caught.value.message
    assert "POST /v1/audio/alignments" in caught.value.message


def test_a_transcription_asks_for_no_text_and_answers_openais_shapes(front, aligner):
    url, _ = front
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    plain = client.audio.transcriptions.create(
        model="qwen3_aligner", file=("a.wav", io.BytesIO(WAV)), prompt="Names: Ada."
    )
    assert plain.text == "hello world"
    assert aligner.received[-1] == AlignRequest(WAV, None, None, "Names: Ada.")
    verbose = client.audio.transcriptions.create(
        model="qwen3_aligner",
        file=("a.wav", io.BytesIO(WAV)),
        language="en",
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert [(w.word, w.start, w.end) for w in verbose.words] == [
        ("hello", 0.12, 0.5), ("world", 0.62, 1.1)
    ]  # fmt: skip
    assert aligner.received[-1] == AlignRequest(WAV, None, "en", "")
    segments = align_to(url, "transcriptions", {"response_format": "verbose_json"}).json()
    assert "segments" in segments and "words" not in segments  # OpenAI's default granularity
    srt = align_to(url, "transcriptions", {"response_format": "srt"})
    assert srt.text.startswith("1\n00:00:00,120 --> ")


def test_an_unknown_route_is_an_openai_error(front):
    url, _ = front
    response = requests.get(f"{url}/v1/audio/nothing", timeout=30)
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    wrong_method = requests.get(f"{url}/v1/audio/alignments", timeout=30)
    assert wrong_method.status_code == 405


def test_readiness_follows_the_aligners(front, aligner):
    url, _ = front
    assert requests.get(f"{url}/health/ready", timeout=30).status_code == 200
    aligner.is_ready = False
    not_ready = requests.get(f"{url}/health/ready", timeout=30)
    assert not_ready.status_code == 503
    assert error_of(not_ready)["type"] == "service_unavailable"
    assert requests.get(f"{url}/health/live", timeout=30).status_code == 200


def test_metrics_count_requests_by_route_and_status_and_upload_bytes(front, aligner):
    url, _ = front

    def sample(name: str) -> float:
        text = requests.get(f"{url}/metrics", timeout=30).text
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if series == name:
                return float(value)
        return 0.0

    ok = 'openai_front_requests_total{route="alignments",status="200"}'
    refused = 'openai_front_requests_total{route="alignments",status="400"}'
    before = (sample(ok), sample(refused), sample("openai_front_upload_bytes_total"))
    align(url)
    align(url, {"text": None})
    after = (sample(ok), sample(refused), sample("openai_front_upload_bytes_total"))
    assert after[0] - before[0] == 1 and after[1] - before[1] == 1
    assert after[2] - before[2] == len(WAV)  # the refused request stopped before its upload
    assert sample('openai_front_request_duration_seconds_count{route="alignments"}') >= 2


def test_a_key_guards_the_v1_routes_but_not_health_or_metrics():
    aligner = ScriptedAligner()
    with running(aligner, FrontSettings(api_key=KEY)) as url:
        anonymous = align(url)
        assert anonymous.status_code == 401
        assert error_of(anonymous)["type"] == "authentication_error"
        wrong = align(url, headers={"Authorization": "Bearer sk-wrong"})
        assert wrong.status_code == 401
        assert align(url, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert aligner.received and len(aligner.received) == 1
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0).models.list()
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        assert [m.id for m in client.models.list()] == ["qwen3_aligner"]
        assert requests.get(f"{url}/health/ready", timeout=30).status_code == 200
        assert requests.get(f"{url}/metrics", timeout=30).status_code == 200


@pytest.mark.parametrize(
    "kwargs",
    [{"max_upload_bytes": 0}, {"max_text_bytes": 0}, {"model_ids": ()}, {"api_key": " "}],
)
def test_settings_that_cannot_serve_are_refused(kwargs):
    with pytest.raises(ValueError):
        FrontSettings(**kwargs)


def test_the_key_is_the_one_line_of_its_file_or_the_environments(tmp_path):
    from qwen3_aligner_triton.openai_front.__main__ import API_KEY_ENV, read_api_key

    path = tmp_path / "key"
    path.write_text(f"  {KEY}  \n", encoding="utf-8")
    assert read_api_key(path, {API_KEY_ENV: "other"}) == KEY
    assert read_api_key(None, {API_KEY_ENV: f" {KEY}\n"}) == KEY
    assert read_api_key(None, {}) is None
    path.write_text(f"{KEY}\nsecond line\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds 2 lines"):
        read_api_key(path, {})
    path.write_text("\n \n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no key"):
        read_api_key(path, {})
