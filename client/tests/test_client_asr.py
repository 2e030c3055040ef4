"""The client and ``qwen3-align`` without a transcript: the server transcribes, then aligns.

Without a server: what the library sends (no ``TEXT``, ``LANGUAGE`` only when given, ``CONTEXT``),
how it reads ``TRANSCRIPT``/``TRANSCRIPT_LANGUAGE`` and the refusal of a server without the ASR
model, the CLI's transcript file beside the output, and batch items without transcripts. Against
real tritonservers (one with the tiny ASR checkpoint, one without it): the library over HTTP and
gRPC gives what a direct tritonclient call gives, the CLI writes the subtitles and the
transcript, a batch transcribes the items without one, and a server without the ASR model is
reported with the command that starts one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import qwen3_aligner_client.client as client_module
import soundfile
import srt
from qwen3_aligner_client import (
    AlignerClient,
    AlignerError,
    AlignItem,
    Alignment,
    ManifestError,
    RequestRejectedError,
    TranscriptionUnavailableError,
    items_from_manifest,
    render,
)
from qwen3_aligner_client.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from tritonclient.utils import InferenceServerException

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RATE = 16000  # Hz
SAID = "one two three"  # what the fake server "transcribes"
SAID_LANGUAGE = "English"


# --- without a server -------------------------------------------------------------------------


class FakeResult:
    """A response of the public model: the transcript's outputs only for a transcribed request."""

    def __init__(self, text: str, language: str, transcribed: bool, transcript: str | None = None):
        units = text.split()
        self.document = {
            "language": language,
            "duration": 1.0,
            "text": text,
            "words": [
                {"text": u, "start": 0.1 * k, "end": 0.1 * k + 0.05} for k, u in enumerate(units)
            ],
        }
        self.outputs = {
            "ALIGNMENT": [json.dumps(self.document)],
            "WORDS": units,
        }
        if transcribed:
            self.outputs["TRANSCRIPT"] = [text if transcript is None else transcript]
            self.outputs["TRANSCRIPT_LANGUAGE"] = [language]

    def as_numpy(self, name: str):
        values = self.outputs.get(name)
        if values is None:
            return None
        return np.array([[v.encode() for v in values]], dtype=np.object_)


class FakeServer:
    """Records each request's string inputs and answers as a server with (or without) ASR."""

    def __init__(self, asr: bool = True, transcript: str | None = None) -> None:
        self.asr = asr
        self.transcript = transcript  # a TRANSCRIPT output that differs from the document
        self.requests: list[dict[str, str]] = []

    def connect(self, url: str, timeout: float):
        server = self

        class Connection:
            def infer(self, model, inputs, **options):
                strings = {
                    i.name(): strings_of(i)
                    for i in inputs
                    if i.datatype() == "BYTES" and i.name() != "AUDIO_FILE"
                }
                server.requests.append(strings)
                if "TEXT" not in strings:
                    if not server.asr:
                        from qwen3_aligner_triton.requests import NO_ASR_MESSAGE

                        raise InferenceServerException(NO_ASR_MESSAGE, "400")
                    language = strings.get("LANGUAGE", "auto")
                    named = SAID_LANGUAGE if language in ("auto", "en") else language
                    return FakeResult(SAID, named, True, server.transcript)
                return FakeResult(strings["TEXT"], "English", False)

            def close(self):
                pass

        return Connection()


def strings_of(tensor) -> str:
    from tritonclient.utils import deserialize_bytes_tensor

    getter = getattr(tensor, "_get_binary_data", None) or tensor._get_content
    (value,) = deserialize_bytes_tensor(getter()).tolist()
    return value.decode()


def fake_client(server: FakeServer, protocol: str = "http") -> AlignerClient:
    client = AlignerClient("fake:1", protocol)
    client.transport = dataclasses.replace(client.transport, connect=server.connect)
    return client


def wav(path: Path, seconds: float = 1.0, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    wave = (rng.standard_normal(int(seconds * SAMPLE_RATE)) * 0.1).astype(np.float32)
    soundfile.write(path, wave, SAMPLE_RATE, subtype="FLOAT")
    return path


AUDIO = (np.zeros(16000, dtype=np.float32), SAMPLE_RATE)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_without_text_the_request_leaves_text_out_and_the_result_is_the_transcript(protocol):
    server = FakeServer()
    with fake_client(server, protocol) as client:
        detected = client.align(AUDIO)
        auto = client.align(AUDIO, language="auto", context="Names: Ada.")
        forced = client.align(AUDIO, None, "French")
        given = client.align(AUDIO, "hello there", "en")
    assert server.requests == [
        {},
        {"LANGUAGE": "auto", "CONTEXT": "Names: Ada."},
        {"LANGUAGE": "French"},
        {"TEXT": "hello there", "LANGUAGE": "en"},
    ]
    for result in (detected, auto):
        assert (result.text, result.language, result.transcribed) == (SAID, "English", True)
        assert [w.text for w in result.words] == SAID.split()
    assert (forced.language, forced.transcribed) == ("French", True)
    assert (given.text, given.transcribed) == ("hello there", False)
    # The flag is the client's: the JSON document stays the server's.
    assert "transcribed" not in detected.to_dict()
    assert not detected.matches(dataclasses.replace(detected, transcribed=False))


def test_a_transcript_output_that_disagrees_with_the_document_is_the_server_s_error():
    with (
        fake_client(FakeServer(transcript="something else")) as client,
        pytest.raises(AlignerError, match="TRANSCRIPT output does not match"),
    ):
        client.align(AUDIO)


def test_context_and_a_missing_language_are_refused_before_sending():
    server = FakeServer()
    with fake_client(server) as client:
        with pytest.raises(ValueError, match="context guides the transcription"):
            client.align(AUDIO, "hello", "en", context="Names")
        with pytest.raises(ValueError, match="context guides the transcription"):
            client.align(AUDIO, None, "en", segments=[(0.0, 0.5, "hi")], context="Names")
        with pytest.raises(ValueError, match="language is required with text or segments"):
            client.align(AUDIO, "hello")
        with pytest.raises(ValueError, match="language is required"):
            client.align(AUDIO, segments=[(0.0, 0.5, "hi")])
    assert server.requests == []


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_server_without_asr_says_how_to_start_one(protocol):
    with fake_client(FakeServer(asr=False), protocol) as client:
        with pytest.raises(TranscriptionUnavailableError, match=r"\./scripts/serve --asr") as info:
            client.align(AUDIO)
        assert isinstance(info.value, RequestRejectedError)  # a refusal like any other
        assert "give a transcript" in str(info.value)
        assert client.align(AUDIO, "hello", "en").text == "hello"  # text: served as before


def test_align_many_transcribes_the_items_without_text():
    server = FakeServer()
    items = [
        AlignItem(AUDIO, key="said", context="Terms: fox."),
        AlignItem(AUDIO, "the text", "en", key="given"),
        (AUDIO, None, "de"),
    ]
    with fake_client(server) as client:
        results = {r.index: r for r in client.align_many(items, concurrency=2)}
    assert all(r.ok for r in results.values())
    assert results[0].alignment.transcribed and results[0].alignment.text == SAID
    assert not results[1].alignment.transcribed
    assert results[2].alignment.language == "de"
    assert sorted(map(sorted, (r.items() for r in server.requests))) == sorted(
        [
            [("CONTEXT", "Terms: fox.")],
            [("LANGUAGE", "en"), ("TEXT", "the text")],
            [("LANGUAGE", "de")],
        ]
    )


def test_manifest_items_without_a_transcript_are_transcribed(tmp_path):
    manifest = tmp_path / "m.jsonl"
    entries = [
        {"audio": "a.wav"},
        {"audio": "b.wav", "context": "Names: Ada.", "language": "auto"},
        {"audio": "c.wav", "text": "with text"},
    ]
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    with pytest.raises(ManifestError, match=r":3: no 'language'"):
        items_from_manifest(manifest, language=None)
    a, b, c = items_from_manifest(manifest, language="fr")
    assert (a.transcribed, a.language, a.context, a.transcript()) == (True, "fr", None, None)
    assert (b.transcribed, b.language, b.context) == (True, "auto", "Names: Ada.")
    assert (c.transcribed, c.transcript()) == (False, "with text")
    manifest.write_text(json.dumps(entries[0]) + "\n", encoding="utf-8")
    (only,) = items_from_manifest(manifest, language=None)
    assert (only.transcribed, only.language) == (True, None)


@pytest.fixture
def fake_cli(monkeypatch) -> FakeServer:
    """The CLI's clients talk to a fake server with the ASR model; readiness passes."""
    import qwen3_aligner_client.cli as cli_module

    server = FakeServer()
    real = client_module.transport

    def fake_transport(protocol: str):
        return dataclasses.replace(real(protocol), connect=server.connect)

    monkeypatch.setattr(client_module, "transport", fake_transport)
    monkeypatch.setattr(cli_module, "_require_ready", lambda settings: None)
    return server


def test_the_cli_writes_the_transcript_beside_the_output(tmp_path, fake_cli, capsys):
    audio = wav(tmp_path / "speech.wav")
    out = tmp_path / "speech.srt"
    assert main([str(audio), "-o", str(out), "--context", "Names: Ada."]) == EXIT_OK
    assert (tmp_path / "speech.txt").read_text(encoding="utf-8") == SAID + "\n"
    assert [s.content for s in srt.parse(out.read_text(encoding="utf-8"))] == [SAID]
    assert f"transcript (English): {tmp_path / 'speech.txt'}" in capsys.readouterr().err
    assert fake_cli.requests[-1] == {"CONTEXT": "Names: Ada."}

    # An existing file there (perhaps a transcript of one's own) is never replaced unasked.
    (tmp_path / "speech.txt").write_text("my own", encoding="utf-8")
    assert main([str(audio), "-o", str(out), "-l", "fr"]) == EXIT_OK
    assert (tmp_path / "speech.txt").read_text(encoding="utf-8") == "my own"
    assert "not written to" in capsys.readouterr().err
    assert fake_cli.requests[-1] == {"LANGUAGE": "fr"}
    # --transcript-out writes where it says, that file too.
    target = tmp_path / "speech.txt"
    assert main([str(audio), "-o", str(out), "--transcript-out", str(target)]) == EXIT_OK
    assert target.read_text(encoding="utf-8") == SAID + "\n"

    # -f all: BASE.txt beside BASE.json, BASE.srt, ...
    (tmp_path / "all").mkdir()
    assert main([str(audio), "-f", "all", "-o", str(tmp_path / "all" / "take.srt")]) == EXIT_OK
    assert (tmp_path / "all" / "take.txt").read_text(encoding="utf-8") == SAID + "\n"
    assert (tmp_path / "all" / "take.json").exists()
    capsys.readouterr()

    # Standard output: no transcript file; the JSON document carries the transcript.
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([str(audio)]) == EXIT_OK
    document = json.loads(capsys.readouterr().out)
    assert (document["text"], document["language"]) == (SAID, SAID_LANGUAGE)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["a.wav", "t.txt"], "--language is required with a TRANSCRIPT"),
        (["a.wav", "t.txt", "-l", "en", "--context", "x"], "--context guides a transcription"),
        (["a.wav", "t.txt", "-l", "en", "--transcript-out", "x.txt"], "--transcript-out is for"),
        (["--batch", "d", "--out-dir", "o", "--transcript-out", "x"], "--batch writes ID.txt"),
    ],
)
def test_transcript_options_outside_transcription_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_transcript_out_may_not_name_the_audio_or_the_output(tmp_path, fake_cli, capsys):
    audio = wav(tmp_path / "speech.wav")
    before = audio.read_bytes()
    assert main([str(audio), "--transcript-out", str(audio)]) == EXIT_USAGE
    assert "is the audio file" in capsys.readouterr().err
    out = tmp_path / "o.json"
    assert main([str(audio), "-o", str(out), "--transcript-out", str(out)]) == EXIT_USAGE
    assert "is the output file" in capsys.readouterr().err
    assert audio.read_bytes() == before and not out.exists()
    assert fake_cli.requests == []  # refused before anything was sent


def test_the_cli_against_a_server_without_asr_exits_2_naming_serve_asr(tmp_path, fake_cli, capsys):
    fake_cli.asr = False
    audio = wav(tmp_path / "speech.wav")
    assert main([str(audio), "-o", str(tmp_path / "speech.srt")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "cannot transcribe: start it with ./scripts/serve --asr" in err
    assert not (tmp_path / "speech.srt").exists() and not (tmp_path / "speech.txt").exists()


def test_a_batch_folder_without_transcripts_is_transcribed(tmp_path, fake_cli, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    for stem in ("a", "b", "c"):
        wav(clips / f"{stem}.wav")
    (clips / "b.txt").write_text("given words", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["--batch", str(clips), "--out-dir", str(out), "-f", "srt", "--no-progress"]
    # b has a transcript: a folder with any needs --language.
    assert main([*argv, "--context", "Terms"]) == EXIT_USAGE
    assert "--language is required for a folder with transcripts" in capsys.readouterr().err
    assert main([*argv, "--context", "Terms", "-l", "en"]) == EXIT_OK
    assert "3 aligned, 0 skipped" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a.srt", "a.txt", "b.srt", "c.srt", "c.txt"]
    assert (out / "a.txt").read_text(encoding="utf-8") == SAID + "\n"
    assert sorted(map(sorted, (r.items() for r in fake_cli.requests))) == sorted(
        [
            [("CONTEXT", "Terms"), ("LANGUAGE", "en")],
            [("CONTEXT", "Terms"), ("LANGUAGE", "en")],
            [("LANGUAGE", "en"), ("TEXT", "given words")],
        ]
    )
    # The summary counts them; a rerun skips them all.
    assert main([*argv, "-l", "en"]) == EXIT_OK
    assert "0 aligned, 3 skipped" in capsys.readouterr().err

    # A folder without transcripts needs no --language; written into the folder itself, the
    # transcripts never replace an input (here: a manifest item's transcript file).
    only = tmp_path / "only"
    only.mkdir()
    wav(only / "x.wav")
    assert main(["--batch", str(only), "--out-dir", str(only), "--no-progress"]) == EXIT_OK
    assert "1 aligned, 0 skipped" in capsys.readouterr().err
    assert (only / "x.txt").read_text(encoding="utf-8") == SAID + "\n"
    assert (only / "x.json").exists()
    manifest = only / "m.jsonl"
    entries = [
        {"audio": "x.wav", "id": "y"},
        {"audio": "x.wav", "text_file": "y.txt", "language": "en", "id": "z"},
    ]
    (only / "y.txt").write_text("keep me", encoding="utf-8")
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    assert main(["--batch", str(manifest), "--out-dir", str(only), "--no-progress"]) == EXIT_OK
    assert "2 aligned, 0 skipped (output already in" in capsys.readouterr().err
    assert (only / "y.txt").read_text(encoding="utf-8") == "keep me"
    assert json.loads((only / "y.json").read_text(encoding="utf-8"))["text"] == SAID


def test_a_batch_item_refused_by_a_server_without_asr_fails_alone(tmp_path, fake_cli, capsys):
    fake_cli.asr = False
    clips = tmp_path / "clips"
    clips.mkdir()
    wav(clips / "a.wav")
    wav(clips / "b.wav")
    (clips / "b.txt").write_text("given words", encoding="utf-8")
    argv = ["--batch", str(clips), "--out-dir", str(tmp_path / "out"), "-l", "en"]
    assert main([*argv, "--no-progress"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "1 aligned, 0 skipped" in err and "1 failed" in err
    assert "FAILED" in err and "a.wav: the server cannot transcribe" in err
    assert "./scripts/serve --asr" in err


# --- against real tritonservers ----------------------------------------------------------------


def speech(path: Path, seconds: float, rate: int, seed: int) -> np.ndarray:
    """Noise with a syllable-rate envelope, written as a float WAV (decoded back exactly)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6))
    wave = 0.3 * envelope * np.sin(2 * np.pi * 200 * t) + 0.05 * rng.standard_normal(t.size)
    wave = wave.astype(np.float32)
    soundfile.write(path, wave, rate, subtype="FLOAT")
    return wave


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray, int]]:
    folder = tmp_path_factory.mktemp("recordings")
    out = {}
    for seed, (name, seconds, rate) in enumerate(
        (("speech", 4.2, 16000), ("talk", 7.5, 22050), ("short", 1.3, 16000))
    ):
        path = folder / f"{name}.wav"
        out[name] = (path, speech(path, seconds, rate, seed), rate)
    return out


def direct(server, protocol: str, wave: np.ndarray, rate: int, **strings: str) -> dict:
    """What a plain tritonclient request without TEXT answers: the transcript, its language and
    the aligned units, as the tensors carry them."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    module = httpclient if protocol == "http" else grpcclient
    url = server.http_url if protocol == "http" else server.grpc_url
    inputs = [module.InferInput("AUDIO", [1, wave.shape[0]], "FP32")]
    inputs[-1].set_data_from_numpy(wave[None, :])
    inputs.append(module.InferInput("SAMPLE_RATE", [1, 1], "INT32"))
    inputs[-1].set_data_from_numpy(np.array([[rate]], np.int32))
    for name, value in strings.items():
        inputs.append(module.InferInput(name, [1, 1], "BYTES"))
        inputs[-1].set_data_from_numpy(np.array([[value.encode()]], np.object_))
    with module.InferenceServerClient(url) as client:
        result = client.infer("qwen3_aligner", inputs)
    starts = result.as_numpy("START_TIMES").reshape(-1)
    ends = result.as_numpy("END_TIMES").reshape(-1)
    words = [w.decode() for w in result.as_numpy("WORDS").reshape(-1)]
    return {
        "text": result.as_numpy("TRANSCRIPT").reshape(-1)[0].decode(),
        "language": result.as_numpy("TRANSCRIPT_LANGUAGE").reshape(-1)[0].decode(),
        "units": [(w, float(s), float(e)) for w, s, e in zip(words, starts, ends, strict=True)],
        "document": Alignment.from_json(result.as_numpy("ALIGNMENT").reshape(-1)[0]),
    }


def units(alignment: Alignment) -> list[tuple[str, float, float]]:
    return [(w.text, float(np.float32(w.start)), float(np.float32(w.end))) for w in alignment.words]


def check_transcript(text: str) -> None:
    """The tiny ASR checkpoint says its words in order, one per 13 audio tokens (about a second)."""
    from qwen3_aligner_tools.asr_checkpoint_builder import expected_transcript

    n = len(text.split())
    assert n >= 1 and text == expected_transcript(13 * (n - 1))


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_library_transcribes_as_the_server_does(asr_server, recordings, protocol):
    url = asr_server.http_url if protocol == "http" else asr_server.grpc_url
    with AlignerClient(url, protocol) as client:
        for name, (path, wave, rate) in recordings.items():
            expected = direct(asr_server, protocol, wave, rate)
            check_transcript(expected["text"])
            for send in ("file", "samples"):
                got = client.align(path, send=send)
                assert got.transcribed, (name, send)
                assert (got.text, got.language) == (expected["text"], expected["language"])
                assert units(got) == expected["units"], (name, send)
                assert got.matches(dataclasses.replace(expected["document"], transcribed=True))
        # A forced language, "auto" and a context reach the server as a direct request sends them.
        path, wave, rate = recordings["speech"]
        forced = client.align(path, language="fr", context="Names: Ada.")
        expected = direct(asr_server, protocol, wave, rate, LANGUAGE="fr", CONTEXT="Names: Ada.")
        assert (forced.language, forced.text) == ("French", expected["text"])
        assert units(forced) == expected["units"]
        auto = client.align(path, language="auto")
        assert (auto.language, auto.text) == (
            "English",
            direct(asr_server, protocol, wave, rate)["text"],
        )
        # With a transcript, an ASR server aligns it as before.
        given = client.align(path, "hello there", "en")
        assert (given.text, given.transcribed) == ("hello there", False)
        assert [w.text for w in given.words] == ["hello", "there"]


@pytest.mark.integration
def test_align_many_mixes_transcribed_and_given_items(asr_server, recordings):
    items = [AlignItem(path, key=name) for name, (path, _, _) in recordings.items()]
    items.append(
        AlignItem(recordings["talk"][0], "seven words are said here in all", "en", key="given")
    )
    with AlignerClient(asr_server.grpc_url, "grpc") as client:
        results = {r.item.key: r for r in client.align_many(items, concurrency=4)}
    assert all(r.ok for r in results.values()), [r.error for r in results.values()]
    for name, (_, wave, rate) in recordings.items():
        assert results[name].alignment.text == direct(asr_server, "grpc", wave, rate)["text"]
    assert not results["given"].alignment.transcribed


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_cli_writes_subtitles_and_the_transcript(
    asr_server, recordings, tmp_path, protocol, capsys
):
    path, wave, rate = recordings["talk"]
    audio = tmp_path / "talk.wav"
    audio.write_bytes(path.read_bytes())
    url = asr_server.http_url if protocol == "http" else asr_server.grpc_url
    server = ["--url", url, "--protocol", protocol]
    expected = direct(asr_server, protocol, wave, rate)
    with AlignerClient(url, protocol) as client:
        reference = client.align(audio)

    assert main([str(audio), "-o", str(tmp_path / "talk.srt"), *server]) == EXIT_OK
    written = (tmp_path / "talk.srt").read_text(encoding="utf-8")
    assert written == render(reference, "srt")
    assert " ".join(s.content.replace("\n", " ") for s in srt.parse(written)) == expected["text"]
    assert (tmp_path / "talk.txt").read_text(encoding="utf-8") == expected["text"] + "\n"
    assert f"transcript (English): {tmp_path / 'talk.txt'}" in capsys.readouterr().err

    # JSON carries the transcript and its language; --language forces one.
    out = tmp_path / "forced.json"
    argv = [str(audio), "-l", "French", "-o", str(out), "--transcript-out", str(tmp_path / "f.txt")]
    assert main([*argv, *server]) == EXIT_OK
    document = json.loads(out.read_text(encoding="utf-8"))
    forced = direct(asr_server, protocol, wave, rate, LANGUAGE="French")
    assert (document["text"], document["language"]) == (forced["text"], "French")
    assert (tmp_path / "f.txt").read_text(encoding="utf-8") == forced["text"] + "\n"


@pytest.mark.integration
def test_the_command_transcribes_to_stdout_and_a_batch_folder_without_transcripts(
    asr_server, recordings, tmp_path
):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "client"), os.environ.get("PYTHONPATH", "")]),
    }
    path, wave, rate = recordings["speech"]
    url = asr_server.http_url
    done = subprocess.run(
        [sys.executable, "-m", "qwen3_aligner_client.cli", str(path), "-f", "tsv", "--url", url],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()[1:]]
    assert [r[2] for r in rows] == [u[0] for u in direct(asr_server, "http", wave, rate)["units"]]

    clips = tmp_path / "clips"
    clips.mkdir()
    for source, _, _ in recordings.values():
        (clips / source.name).write_bytes(source.read_bytes())
    (clips / "short.txt").write_text("just this", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["--batch", str(clips), "--out-dir", str(out), "-l", "en", "-f", "json"]
    argv += ["--url", asr_server.grpc_url, "--protocol", "grpc", "--no-progress"]
    done = subprocess.run(
        [sys.executable, "-m", "qwen3_aligner_client.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "3 aligned, 0 skipped" in done.stderr and "2 transcribed" in done.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["short.json", "speech.json", "speech.txt", "talk.json", "talk.txt"]
    for name in ("speech", "talk"):
        _, wave, rate = recordings[name]
        expected = direct(asr_server, "grpc", wave, rate, LANGUAGE="en")
        document = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
        assert document["text"] == expected["text"]
        assert [(w["text"], w["start"], w["end"]) for w in document["words"]] == [
            (w.text, w.start, w.end) for w in expected["document"].words
        ]
        assert (out / f"{name}.txt").read_text(encoding="utf-8") == expected["text"] + "\n"
    assert json.loads((out / "short.json").read_text(encoding="utf-8"))["text"] == "just this"


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_server_without_asr_is_reported_with_the_command_that_starts_one(
    server, recordings, tmp_path, protocol, capsys
):
    path = recordings["short"][0]
    url = server.http_url if protocol == "http" else server.grpc_url
    with AlignerClient(url, protocol) as client:
        with pytest.raises(TranscriptionUnavailableError, match=r"\./scripts/serve --asr"):
            client.align(path)
        assert client.align(path, "one", "en").text == "one"
    out = tmp_path / "short.srt"
    assert main([str(path), "-o", str(out), "--url", url, "--protocol", protocol]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "cannot transcribe: start it with ./scripts/serve --asr" in err
    assert not out.exists() and not out.with_suffix(".txt").exists()
