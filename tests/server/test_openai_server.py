"""The OpenAI-style front against a real tritonserver, as users reach it: curl-shaped multipart
uploads, the official ``openai`` package, hostile files, and ``./scripts/serve --openai-port``."""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
import requests
import soundfile
from openai.types.audio import Transcription, TranscriptionVerbose
from qwen3_aligner_client import AlignerClient
from qwen3_aligner_client.results import Alignment
from serve_launch import ServeLaunch

from qwen3_aligner_triton.openai_front.launch import FrontOptions, FrontProcess
from qwen3_aligner_triton.triton_flags import free_ports

pytestmark = pytest.mark.integration

TEXT = "Hello, world! The quick brown fox jumps over the lazy dog."
UPLOAD_LIMIT = 16 * 2**20
START_TIMEOUT = 60.0


def speechlike(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Noise with a syllable-rate envelope over a tone."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6))
    wave = 0.3 * envelope * np.sin(2 * np.pi * rng.uniform(120, 300) * t)
    return (wave + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def encoded(wave: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def flac_claiming(frames: int) -> bytes:
    """A 1 s FLAC of a few kilobytes whose header announces ``frames`` samples."""
    data = bytearray(encoded(speechlike(1.0, 16000, 3), 16000, "FLAC"))
    field = int.from_bytes(data[18:26], "big")  # rate, channels, bits, 36 bits of samples
    data[18:26] = ((field & ~((1 << 36) - 1)) | frames).to_bytes(8, "big")
    return bytes(data)


def wait_ready(url: str, process: FrontProcess | None = None, timeout: float = START_TIMEOUT):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.exited() is not None:
            raise AssertionError(f"the front exited with {process.exited()}")
        try:
            if requests.get(f"{url}/health/ready", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready in {timeout} s")


@pytest.fixture(scope="module")
def front(server) -> Iterator[str]:
    (port,) = free_ports(1)
    process = FrontProcess.start(
        FrontOptions(port=port, triton_url=server.grpc_url, host="127.0.0.1"),
        extra=["--max-upload-bytes", str(UPLOAD_LIMIT), "--log-level", "warning"],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url
    finally:
        assert process.stop() == 0


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("openai") / "speech.wav"
    soundfile.write(path, speechlike(6.0, 16000, 1), 16000, subtype="PCM_16")
    return path


def post(url: str, data: bytes, name: str = "speech.wav", **fields: str) -> requests.Response:
    form = {"text": TEXT, "language": "en", **fields}
    return requests.post(
        f"{url}/v1/audio/alignments", data=form, files={"file": (name, data)}, timeout=120
    )


@pytest.mark.parametrize(
    ("fmt", "subtype"), [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("WAV", "FLOAT")]
)
def test_an_upload_aligns_as_the_client_library_aligns_its_samples(server, front, fmt, subtype):
    wave = speechlike(6.0, 22050, 2)
    data = encoded(wave, 22050, fmt, subtype)
    response = post(front, data, name=f"speech.{fmt.lower()}")
    assert response.status_code == 200, response.text
    served = Alignment.from_json(response.text)
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    with AlignerClient(server.grpc_url, protocol="grpc") as client:
        direct = client.align((samples, rate), TEXT, "English")
    assert served.matches(direct), (served, direct)
    assert [w.text for w in served.words] == [w.text for w in direct.words]


def test_an_upload_over_grpcs_default_message_size_reaches_the_model(front):
    wave = speechlike(200.0, 16000, 5)  # 6.4 MB as 16-bit WAV: over gRPC's 4 MiB default
    data = encoded(wave, 16000, "WAV", "PCM_16")
    assert 4 * 2**20 < len(data) < UPLOAD_LIMIT
    response = post(front, data)
    assert response.status_code == 200, response.text
    alignment = Alignment.from_json(response.text)
    assert alignment.duration == pytest.approx(200.0)
    assert len(alignment.words) == 11


def test_the_openai_sdk_uploads_and_reads_the_answer_as_its_own_types(front, clip):
    client = openai.OpenAI(base_url=f"{front}/v1", api_key="unused", max_retries=0)
    assert "qwen3_aligner" in [m.id for m in client.models.list()]
    headers = {"Content-Type": "multipart/form-data"}  # as the SDK's audio calls send
    with clip.open("rb") as f:
        verbose = client.post(
            "/audio/alignments",
            body={"text": TEXT, "language": "en", "response_format": "verbose_json"},
            files=[("file", ("speech.wav", f.read(), "audio/wav"))],
            options={"headers": headers},
            cast_to=TranscriptionVerbose,
        )
    assert verbose.text == TEXT and verbose.language == "english"
    assert [w.word for w in verbose.words] == [
        "Hello", "world", "The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"
    ]  # fmt: skip
    assert all(0 <= w.start <= w.end <= verbose.duration for w in verbose.words)
    plain = client.post(
        "/audio/alignments",
        body={"text": TEXT, "language": "English"},
        files=[("file", ("speech.wav", clip.read_bytes(), "audio/wav"))],
        options={"headers": headers},
        cast_to=Transcription,
    )
    assert plain.text == TEXT


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (lambda: b"these are not the bytes of an audio file" * 8,
         "input AUDIO_FILE is not a readable audio file"),
        (lambda: encoded(speechlike(2.0, 16000, 4), 16000, "WAV", "PCM_16")[:30],
         "input AUDIO_FILE is not a readable audio file"),
        (lambda: flac_claiming(16000 * 3600 * 5),
         "input AUDIO_FILE has 288000000 samples; the limit is 230400000"),
        (lambda: encoded(speechlike(2.0, 16000, 4), 16000, "FLAC")[:2000],
         "input AUDIO_FILE is damaged"),
    ],
    ids=["not-audio", "truncated-header", "flac-claiming-hours", "truncated-flac"],
)  # fmt: skip
def test_a_hostile_upload_is_refused_with_the_models_reason_and_the_front_serves_on(
    front, clip, data, message
):
    response = post(front, data(), name="speech.wav")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["message"].startswith(message), error
    assert (error["type"], error["param"]) == ("invalid_request_error", "file")
    assert post(front, clip.read_bytes()).status_code == 200
    assert requests.get(f"{front}/health/ready", timeout=5).status_code == 200


def test_an_upload_over_the_limit_is_refused_before_triton_sees_it(server, front, clip):
    def arrived() -> int:
        text = requests.get(server.metrics_url, timeout=5).text
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith('nv_inference_request_success{model="qwen3_aligner"')
            or line.startswith('nv_inference_request_failure{model="qwen3_aligner"')
        )

    before = arrived()
    response = post(front, b"\0" * (UPLOAD_LIMIT + 1))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "upload_too_large"
    assert arrived() == before
    assert post(front, clip.read_bytes()).status_code == 200


def test_serve_with_an_openai_port_serves_both_and_stops_both(tiny_checkpoint, clip, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("sk-local-0123\n")
    (port,) = free_ports(1)
    launch = ServeLaunch(
        "--model", str(tiny_checkpoint), f"--openai-port={port}",
        "--openai-api-key-file", str(key_file), timeout=300,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        launch.read_until("serve: OpenAI-style front")
        assert f"http://127.0.0.1:{port}/v1" in launch.output
        wait_ready(url)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-local-0123", max_retries=0)
        assert [m.id for m in client.models.list()] == ["qwen3_aligner"]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="sk-other", max_retries=0).models.list()
        response = requests.post(
            f"{url}/v1/audio/alignments",
            data={"text": TEXT, "language": "en", "response_format": "srt"},
            files={"file": ("speech.wav", clip.read_bytes())},
            headers={"Authorization": "Bearer sk-local-0123"},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        assert response.text.startswith("1\n00:00:")
        launch.proc.send_signal(signal.SIGINT)
        rest = launch.finish()
        assert launch.proc.returncode == 0, rest[-3000:]
        assert "serve: stopped" in rest
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/health/live", timeout=5)
    finally:
        launch.close()
