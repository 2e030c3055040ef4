"""AlignerClient without a server: transport choice, error mapping, retries, concurrency."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import qwen3_aligner_client.client as client_module
from qwen3_aligner_client import (
    AlignerClient,
    AlignerError,
    AlignItem,
    ModelNotReadyError,
    RequestRejectedError,
    ServerBusyError,
    ServerUnreachableError,
    default_url,
    transport,
)
from tritonclient.utils import InferenceServerException

AUDIO = (np.zeros(1600, dtype=np.float32), 16000)


def test_one_function_picks_the_tritonclient_module_and_default_port():
    import tritonclient.grpc
    import tritonclient.http

    assert transport("http").module is tritonclient.http
    assert transport("grpc").module is tritonclient.grpc
    assert default_url("http") == "localhost:8000"
    assert default_url("grpc") == "localhost:8001"
    assert AlignerClient(protocol="grpc").url == "localhost:8001"
    with pytest.raises(ValueError, match="protocol must be one of http, grpc"):
        AlignerClient(protocol="https")


@pytest.mark.parametrize(
    ("error", "kind", "text"),
    [
        (InferenceServerException("input LANGUAGE: bad", "400"), RequestRejectedError, "bad"),
        (
            InferenceServerException("input TEXT is empty", "StatusCode.INVALID_ARGUMENT"),
            RequestRejectedError,
            "empty",
        ),
        (
            InferenceServerException("Request for unknown model: 'x' is not found", "404"),
            ModelNotReadyError,
            "unknown model",
        ),
        (
            InferenceServerException("Exceeds maximum queue size", "503"),
            ServerBusyError,
            "queue",
        ),
        (
            InferenceServerException("Exceeds maximum queue size", "StatusCode.UNAVAILABLE"),
            ServerBusyError,
            "queue",
        ),
        (
            InferenceServerException(
                "failed to connect to all addresses", "StatusCode.UNAVAILABLE"
            ),
            ServerUnreachableError,
            "cannot reach h:1",
        ),
        (ConnectionRefusedError(111, "Connection refused"), ServerUnreachableError, "refused"),
        (InferenceServerException("boom", "500"), AlignerError, "server error 500: boom"),
    ],
)
def test_errors_are_mapped_to_what_the_caller_can_act_on(error, kind, text):
    mapped = client_module._classify(error, "h:1")
    assert type(mapped) is kind
    assert text in str(mapped)


class FakeResult:
    def __init__(self, text: str) -> None:
        self.document = {
            "language": "English",
            "duration": 0.1,
            "text": text,
            "words": [{"text": text, "start": 0.0, "end": 0.08}],
        }

    def as_numpy(self, name: str):
        if name == "ALIGNMENT":
            return np.array([[json.dumps(self.document).encode()]], dtype=np.object_)
        if name == "WORDS":
            return np.array([[self.document["text"].encode()]], dtype=np.object_)
        return None


class FakeServer:
    """Stands in for tritonclient connections; counts requests in flight."""

    def __init__(self, delay: float = 0.0, busy_first: int = 0) -> None:
        self.delay = delay
        self.busy_left = busy_first
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.calls = 0
        self.connections = 0
        self.closed = 0

    def connect(self, url: str, timeout: float) -> FakeServer.Connection:
        with self.lock:
            self.connections += 1
        return FakeServer.Connection(self)

    class Connection:
        def __init__(self, server: FakeServer) -> None:
            self.server = server

        def infer(self, model, inputs, **options):
            server = self.server
            with server.lock:
                server.calls += 1
                server.in_flight += 1
                server.most_in_flight = max(server.most_in_flight, server.in_flight)
                busy = server.busy_left > 0
                server.busy_left -= 1
            try:
                time.sleep(server.delay)
                if busy:
                    raise InferenceServerException("Exceeds maximum queue size", "503")
                return FakeResult("word")
            finally:
                with server.lock:
                    server.in_flight -= 1

        def close(self):
            with self.server.lock:
                self.server.closed += 1


def fake_client(server: FakeServer, **kwargs) -> AlignerClient:
    client = AlignerClient("fake:1", "http", **kwargs)
    client.transport = dataclasses.replace(client.transport, connect=server.connect)
    return client


def test_busy_server_is_retried_with_backoff(monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", sleeps.append)
    server = FakeServer(busy_first=2)
    with fake_client(server, retries=3) as client:
        alignment = client.align(AUDIO, "word", "en")
    assert alignment.words[0].start == 0.0
    assert server.calls == 3
    assert [d for d in sleeps if d] == [1.0, 2.0]  # the fake server sleeps 0 s itself

    server = FakeServer(busy_first=5)
    with fake_client(server, retries=1) as client, pytest.raises(ServerBusyError):
        client.align(AUDIO, "word", "en")
    assert server.calls == 2


def test_align_many_keeps_n_requests_in_flight_and_closes_its_connections():
    server = FakeServer(delay=0.05)
    items = [AlignItem(AUDIO, "word", "en", key=i) for i in range(24)]
    with fake_client(server) as client:
        results = list(client.align_many(iter(items), concurrency=6))
        assert server.closed == server.connections == 6  # the pool's threads are gone
    assert sorted(r.index for r in results) == list(range(24))
    assert all(r.ok and r.item.key == r.index for r in results)
    assert server.most_in_flight == 6


def test_align_many_reports_each_failure_and_goes_on():
    server = FakeServer()
    items = [(AUDIO, "word", "en"), (b"junk", "word", "en"), (AUDIO, "word", "en")]
    with fake_client(server) as client:
        results = sorted(client.align_many(items, concurrency=2), key=lambda r: r.index)
    assert [r.ok for r in results] == [True, False, True]
    assert "cannot decode audio" in str(results[1].error)
    with pytest.raises(ValueError, match="concurrency"):
        next(fake_client(server).align_many(items, concurrency=0))


def test_a_document_that_disagrees_with_the_words_tensor_is_an_error():
    class Mismatch(FakeResult):
        def as_numpy(self, name):
            if name == "WORDS":
                return np.array([[b"other"]], dtype=np.object_)
            return super().as_numpy(name)

    server = FakeServer()
    client = fake_client(server)
    client.transport = dataclasses.replace(
        client.transport,
        connect=lambda url, timeout: type("C", (), {"infer": lambda *a, **k: Mismatch("w")})(),
    )
    with pytest.raises(AlignerError, match="does not match"):
        client.align(AUDIO, "w", "en")


@pytest.mark.parametrize(
    ("field", "value"), [("start", "Infinity"), ("end", "-Infinity"), ("end", "NaN")]
)
def test_non_finite_times_from_a_server_are_its_error_not_a_crash(field, value):
    """Python's json reads Infinity and NaN; the client refuses them with an AlignerError that
    align_many reports for that item alone, instead of an OverflowError in a writer later."""

    class Broken(FakeResult):
        def as_numpy(self, name):
            if name == "ALIGNMENT":
                words = [{"text": "w", "start": 0.0, "end": 0.05}]
                doc = json.dumps({**self.document, "words": words}).replace(
                    f'"{field}": {words[0][field]}', f'"{field}": {value}'
                )
                assert value in doc
                return np.array([[doc.encode()]], dtype=np.object_)
            return np.array([[b"w"]], dtype=np.object_)

    client = fake_client(FakeServer())
    client.transport = dataclasses.replace(
        client.transport,
        connect=lambda url, timeout: type("C", (), {"infer": lambda *a, **k: Broken("w")})(),
    )
    with pytest.raises(AlignerError, match="non-finite times for word 0"):
        client.align(AUDIO, "w", "en")
    (result,) = client.align_many([(AUDIO, "w", "en")])
    assert not result.ok and "non-finite" in str(result.error)


def test_matches_holds_scores_to_the_tolerance_and_the_rest_exactly():
    from qwen3_aligner_client.results import SCORE_TOLERANCE, AlignedWord, Alignment

    word = AlignedWord("hello", 0.08, 0.4, score=0.076155, repaired=False)
    base = Alignment("Korean", 1.0, "hello", (word,))

    def with_word(**changes):
        return dataclasses.replace(base, words=(dataclasses.replace(word, **changes),))

    assert base.matches(with_word(score=0.076156))  # one float32 rounding in a shared pass
    assert not base.matches(with_word(score=0.076155 + 2 * SCORE_TOLERANCE))
    assert not base.matches(with_word(start=0.16))
    assert not base.matches(with_word(repaired=True))
    assert not base.matches(with_word(score=None))
    assert not base.matches(dataclasses.replace(base, words=()))
    assert not base.matches(dataclasses.replace(base, language="English"))
    assert base.matches(with_word(score=0.5), score_tolerance=1.0)


def test_the_client_s_copy_of_the_contract_equals_the_server_s():
    """The client distribution needs none of the server, so it keeps its own names: the same
    model, and only tensors the public model declares, with their types."""
    import tritonclient.http as httpclient

    from qwen3_aligner_triton import contract

    assert client_module.MODEL_NAME == contract.MODEL_NAME

    class Transport:
        module = httpclient

    aligner = client_module.AlignerClient.__new__(client_module.AlignerClient)
    aligner.transport = Transport()
    samples = client_module.Samples(np.zeros(160, np.float32), 16000)
    file = client_module.read_audio_file(encoded(0.5, 16000, "WAV", "PCM_16"))
    wire_types = {"TYPE_FP32": "FP32", "TYPE_INT32": "INT32", "TYPE_STRING": "BYTES"}
    inputs = contract.FRONT_INPUTS | contract.FRONT_ASR_INPUTS
    declared = {name: wire_types[kind] for name, kind in inputs.items()}
    assert declared == client_module.INPUT_TYPES
    # What the client sends, as declared: AUDIO with SAMPLE_RATE, or AUDIO_FILE alone; CONTEXT
    # only without TEXT (and then neither SEGMENTS nor, when detected, LANGUAGE).
    for audio, left_out in ((samples, {"AUDIO_FILE"}), (file, {"AUDIO", "SAMPLE_RATE"})):
        inputs = aligner._inputs(audio, "a", "English", "[]")
        sent = {i.name(): i.datatype() for i in inputs}
        expected = {n: kind for n, kind in declared.items() if n not in left_out | {"CONTEXT"}}
        assert sent == expected
        inputs = aligner._inputs(audio, None, None, None, "Names: Ada.")
        sent = {i.name(): i.datatype() for i in inputs}
        left_out |= {"TEXT", "LANGUAGE", "SEGMENTS"}
        assert sent == {n: kind for n, kind in declared.items() if n not in left_out}
    source = Path(client_module.__file__).read_text()
    read = set(re.findall(r'as_numpy\("([A-Z_]+)"\)', source))
    assert read and read <= set(contract.FRONT_OUTPUTS)
    # The transcript's outputs are read by name from a loop (_check_transcript).
    assert set(contract.FRONT_ASR_OUTPUTS) <= set(re.findall(r'\("([A-Z_]+)", alignment\.', source))


# --- sending the file (AUDIO_FILE) or the samples (AUDIO) -------------------------------------


def encoded(seconds: float, rate: int, fmt: str, subtype: str | None = None, channels: int = 1):
    """The bytes of a file of a 300 Hz tone with a little noise, and its source samples."""
    import io

    import soundfile

    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    wave = 0.4 * np.sin(2 * np.pi * 300 * t) + 0.02 * rng.standard_normal(t.size)
    if channels == 2:
        wave = np.stack([wave, 0.5 * wave], axis=1)
    buffer = io.BytesIO()
    soundfile.write(buffer, wave.astype(np.float32), rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def wire_content(tensor) -> bytes:
    """The bytes a tritonclient input puts on the wire (HTTP binary extension or gRPC raw)."""
    getter = getattr(tensor, "_get_binary_data", None) or tensor._get_content
    return getter()


def test_auto_sends_a_file_the_server_decodes_as_it_is(tmp_path):
    from qwen3_aligner_client import AudioFile, Samples, audio_payload

    data = encoded(1.0, 22050, "FLAC", channels=2)
    path = tmp_path / "clip.flac"
    path.write_bytes(data)
    for source in (path, str(path), data, bytearray(data), open(path, "rb")):  # noqa: SIM115
        payload = audio_payload(source)
        assert isinstance(payload, AudioFile) and payload.data == data
        assert (payload.format, payload.sample_rate, payload.channels) == ("FLAC", 22050, 2)
        assert payload.frames == 22050 and payload.server_decodes
    assert isinstance(audio_payload(AUDIO), Samples)  # arrays are samples whatever the mode
    samples = audio_payload(path, "samples")
    assert isinstance(samples, Samples) and samples.sample_rate == 22050
    from qwen3_aligner_client import load_audio

    np.testing.assert_array_equal(samples.wave, load_audio(path)[0])


def test_a_format_the_server_does_not_decode_goes_as_samples_or_is_refused():
    from qwen3_aligner_client import AudioError, Samples, audio_payload

    data = encoded(0.5, 16000, "AIFF", "PCM_16")
    payload = audio_payload(data, "auto")
    assert isinstance(payload, Samples) and payload.sample_rate == 16000
    assert payload.wave.shape == (8000,)
    with pytest.raises(AudioError, match="AIFF file, which the server does not decode"):
        audio_payload(data, "file")
    with pytest.raises(AudioError, match="send='file' needs an encoded file"):
        audio_payload(AUDIO, "file")
    for mode in ("auto", "file", "samples"):
        with pytest.raises(AudioError, match="cannot decode audio <4 bytes>"):
            audio_payload(b"junk", mode)
    with pytest.raises(ValueError, match="send must be one of auto, file, samples"):
        audio_payload(data, "bytes")
    with pytest.raises(ValueError, match="send must be one of"):
        AlignerClient(send="wav")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_file_request_carries_the_file_bytes_and_no_sample_rate(protocol):
    from qwen3_aligner_client import AudioFile, read_audio_file
    from tritonclient.utils import deserialize_bytes_tensor

    data = encoded(0.5, 44100, "MP3", channels=2)
    client = AlignerClient(protocol=protocol)
    file = read_audio_file(data)
    assert isinstance(file, AudioFile) and file.format == "MP3"
    inputs = {i.name(): i for i in client._inputs(file, "hello", "en", None)}
    assert list(inputs) == ["AUDIO_FILE", "TEXT", "LANGUAGE"]
    tensor = inputs["AUDIO_FILE"]
    assert (tensor.datatype(), tensor.shape()) == ("BYTES", [1, 1])
    content = wire_content(tensor)
    assert content[:4] == len(data).to_bytes(4, "little") and len(content) == 4 + len(data)
    assert deserialize_bytes_tensor(content).tolist() == [data]


class RecordingServer(FakeServer):
    """A fake server that records each request's input names and may refuse AUDIO_FILE."""

    def __init__(self, refuse_file: str | None = None) -> None:
        super().__init__()
        self.refuse_file = refuse_file
        self.requests: list[list[str]] = []

    def connect(self, url: str, timeout: float):
        server = self

        class Connection:
            def infer(self, model, inputs, **options):
                names = [i.name() for i in inputs]
                server.requests.append(names)
                if server.refuse_file and "AUDIO_FILE" in names:
                    raise InferenceServerException(server.refuse_file, "400")
                return FakeResult("word")

            def close(self):
                pass

        return Connection()


def test_auto_sends_a_file_once_and_reports_the_servers_refusal():
    data = encoded(0.5, 16000, "WAV", "PCM_16")
    server = RecordingServer(refuse_file="input AUDIO_FILE is 0.050 s long; at least 0.1 s")
    with fake_client(server) as client, pytest.raises(RequestRejectedError, match=r"0\.050 s"):
        client.align(data, "word", "en")
    assert server.requests == [["AUDIO_FILE", "TEXT", "LANGUAGE"]]


def test_the_send_mode_is_the_clients_unless_an_item_says_otherwise():
    data = encoded(0.5, 16000, "OGG", "VORBIS")
    server = RecordingServer()
    with fake_client(server, send="samples") as client:
        client.align(data, "word", "en")
        client.align(data, "word", "en", send="file")
        items = [AlignItem(data, "word", "en", send="file"), AlignItem(data, "word", "en")]
        assert all(r.ok for r in client.align_many(items, concurrency=1))
    audio_inputs = [names[0] for names in server.requests]
    assert audio_inputs == ["AUDIO", "AUDIO_FILE", "AUDIO_FILE", "AUDIO"]


def test_the_cli_sends_files_by_default_and_takes_send():
    from qwen3_aligner_client.cli import _settings, build_parser

    parser = build_parser()
    args = parser.parse_args(["a.wav", "t.txt", "-l", "en"])
    assert _settings(parser, args).client().send == "auto"
    args = parser.parse_args(["a.wav", "t.txt", "-l", "en", "--send", "samples"])
    assert _settings(parser, args).client().send == "samples"
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["a.wav", "t.txt", "--send", "wav"])
    assert exit_info.value.code == 2


def test_the_client_decodes_as_the_server_decodes_a_file():
    """The copies of the server's formats and read size are the server's, and the samples the
    client sends equal what the server decodes from the same file, MP3 included (libsndfile's MP3
    reader rounds by the read size)."""
    from qwen3_aligner_client import audio as client_audio
    from qwen3_aligner_client import load_audio

    from qwen3_aligner_triton import audio_file

    assert set(audio_file.ACCEPTED_FORMATS) == client_audio.SERVER_FORMATS
    assert client_audio.DECODE_BLOCK_FRAMES == audio_file.BLOCK_FRAMES
    cases = [
        ("WAV", "PCM_16", 16000, 1),
        ("FLAC", "PCM_24", 44100, 2),
        ("OGG", "VORBIS", 22050, 1),
        ("OGG", "OPUS", 48000, 2),
        ("MP3", "MPEG_LAYER_III", 24000, 1),
        ("MP3", "MPEG_LAYER_III", 44100, 2),
    ]
    for fmt, subtype, rate, channels in cases:
        data = encoded(4.0, rate, fmt, subtype, channels)
        with audio_file.EncodedAudio(data) as file:
            served = file.decode()
        wave, sample_rate = load_audio(data)
        assert sample_rate == rate
        np.testing.assert_array_equal(wave, served, err_msg=f"{fmt} {subtype}")
