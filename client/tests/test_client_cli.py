"""``qwen3-align`` without a real model: usage errors, unreachable and not-ready servers, and
what batch mode refuses to read or write (with a stand-in that records what would be sent)."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from client_samples import make_alignment
from qwen3_aligner_client import (
    AlignerClient,
    Alignment,
    BatchItem,
    CueOptions,
    WriteOptions,
    render,
    subtitle_kind,
)
from qwen3_aligner_client import cli as cli_module
from qwen3_aligner_client.cli import (
    EXIT_FAILED,
    EXIT_NOT_READY,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    build_parser,
    main,
)
from qwen3_aligner_client.writers import formats_without_audio


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NotReadyHandler(http.server.BaseHTTPRequestHandler):
    """Triton's health answers while the model is still loading: live, not ready."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/v2/health/live" else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def not_ready_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotReadyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def clip(tmp_path):
    audio = tmp_path / "clip.wav"
    soundfile.write(audio, np.zeros(16000, dtype=np.float32), 16000)
    text = tmp_path / "clip.txt"
    text.write_text("hello world", encoding="utf-8")
    return audio, text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give AUDIO and TRANSCRIPT"),
        (["a.wav", "t.txt"], "--language is required"),
        (["--batch", "x"], "--batch needs --out-dir"),
        (["--batch", "x", "--out-dir", "o", "a.wav"], "--batch takes no AUDIO"),
        (["--batch", "x", "--out-dir", "o", "-j", "0"], "--concurrency must be at least 1"),
        (["--check", "--batch", "x"], "not allowed with argument"),
        (["a.wav", "t.txt", "-l", "en", "--format", "docx"], "invalid choice"),
        (["a.wav", "t.txt", "-l", "en", "--max-lines", "0"], "must be at least 1"),
        (["a.wav", "t.txt", "-l", "en", "--protocol", "ftp"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_a_message(capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_bad_inputs_exit_2_before_contacting_the_server(tmp_path, clip, capsys):
    audio, text = clip
    url = f"127.0.0.1:{closed_port()}"
    assert main([str(audio), str(tmp_path / "none.txt"), "-l", "en", "--url", url]) == EXIT_USAGE
    assert "cannot read transcript" in capsys.readouterr().err
    assert main([str(tmp_path / "none.wav"), str(text), "-l", "en", "--url", url]) == EXIT_USAGE
    assert "audio file not found" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"ID3 but nothing else")
    assert main([str(corrupt), str(text), "-l", "en", "--url", url]) == EXIT_USAGE
    assert "cannot decode audio" in capsys.readouterr().err
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("{broken\n", encoding="utf-8")
    argv = ["--batch", str(manifest), "--out-dir", str(tmp_path / "out"), "--url", url]
    assert main(argv) == EXIT_USAGE
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_closed_port_exits_3(clip, capsys, protocol):
    url = f"127.0.0.1:{closed_port()}"
    assert main(["--check", "--url", url, "--protocol", protocol]) == EXIT_UNREACHABLE
    assert f"server unreachable at {url} ({protocol})" in capsys.readouterr().err
    audio, text = clip
    argv = [str(audio), str(text), "-l", "en", "--url", url, "--protocol", protocol]
    assert main(argv) == EXIT_UNREACHABLE


def test_live_server_without_a_ready_model_exits_4(clip, capsys):
    audio, text = clip
    with not_ready_server() as url:
        assert main(["--check", "--url", url]) == EXIT_NOT_READY
        assert "up but not ready" in capsys.readouterr().err
        assert main([str(audio), str(text), "-l", "en", "--url", url]) == EXIT_NOT_READY


SRT_HEAD = "1\n00:00:01,000 --> 00:00:02,500\n"
VTT_HEAD = "WEBVTT\n\n00:00:01.000 --> 00:00:02.500\n"


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("talk.srt", "plain words", "srt"),  # the suffix decides, whatever the content
        ("talk.Vtt", "plain words", "vtt"),
        ("talk.txt", SRT_HEAD + "hi\n", "srt"),  # else the content
        ("-", SRT_HEAD + "hi\n", "srt"),  # stdin has no suffix
        (None, VTT_HEAD + "hi\n", "vtt"),  # nor has text given without a name
        ("talk.txt", "\ufeff" + VTT_HEAD, "vtt"),  # a byte-order mark before the header
        ("talk.txt", "\n\n" + SRT_HEAD + "hi\n", "srt"),  # blank lines before the first cue
        ("talk.txt", SRT_HEAD, "srt"),  # one cue and no text: still SRT (refused as such)
        ("talk.txt", "Hello, world.\nThe end.", None),
        ("talk.txt", "webvtt is a format\n", None),  # the header is upper case
        ("talk.txt", "XWEBVTT\n\n00:00:01.000 --> 00:00:02.500\nhi\n", None),
        ("talk.txt", "1\nfish, 2 fish\n", None),
        ("talk.txt", "12\n", None),
    ],
)
def test_a_transcript_is_a_subtitle_file_by_its_suffix_else_by_its_head(name, content, kind):
    assert subtitle_kind(name, content) == kind


def test_format_follows_the_output_suffix_and_defaults_follow_the_protocol():
    from qwen3_aligner_client.cli import _settings

    parser = build_parser()
    settings = _settings(parser, parser.parse_args(["a", "t", "-l", "en", "-o", "x.TextGrid"]))
    assert (settings.format, settings.url) == ("textgrid", "localhost:8000")
    settings = _settings(parser, parser.parse_args(["a", "t", "-l", "en", "--protocol", "grpc"]))
    assert (settings.format, settings.url) == ("json", "localhost:8001")


SENTINEL = "SENTINEL root:x:0:0 never to be sent"


class Recorder:
    """Stands in for ``AlignerClient.align``: records the audio bytes and the transcript each
    request would send, and answers with an alignment of no words."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str | None]] = []
        self.lock = threading.Lock()

    def __call__(
        self, audio, text=None, language=None, segments=None, send=None, context=None
    ) -> Alignment:
        data = Path(audio).read_bytes()
        with self.lock:
            self.sent.append((data, text))
        if text is None:  # a server with the ASR model transcribes it
            return Alignment("English", 1.0, "said words", (), transcribed=True)
        return Alignment("English", 1.0, text, ())


@pytest.fixture
def stand_in(monkeypatch) -> Recorder:
    """No server: readiness passes and every request is recorded instead of sent."""
    recorder = Recorder()
    monkeypatch.setattr(cli_module, "_require_ready", lambda settings: None)
    monkeypatch.setattr(AlignerClient, "align", recorder)
    return recorder


def run_batch(source: Path, out: Path, *extra: str) -> int:
    argv = ["--batch", str(source), "--out-dir", str(out), "-l", "en", "-f", "json"]
    return main([*argv, "--no-progress", "-j", "2", *extra])


def wav_bytes(path: Path, value: float) -> bytes:
    soundfile.write(path, np.full(1600, value, dtype=np.float32), 16000)
    return path.read_bytes()


def test_folder_mode_refuses_transcripts_and_audio_linked_out_of_the_folder(
    tmp_path, stand_in, capsys
):
    secret = tmp_path / "secret.txt"
    secret.write_text(SENTINEL, encoding="utf-8")
    outside_audio = wav_bytes(tmp_path / "outside.wav", 0.25)
    clips = tmp_path / "clips"
    clips.mkdir()
    for stem in ("a", "b", "c", "d", "e"):
        wav_bytes(clips / f"{stem}.wav", 0.0)
    (clips / "a.txt").symlink_to(secret)  # absolute link out
    (clips / "b.txt").symlink_to(Path("..") / "secret.txt")  # relative link out
    (clips / "shared.txt").write_text("shared words", encoding="utf-8")
    (clips / "c.txt").symlink_to("shared.txt")  # a link that stays inside is fine
    (clips / "d.txt").write_text("plain words", encoding="utf-8")
    (clips / "e.wav").unlink()
    (clips / "e.wav").symlink_to(tmp_path / "outside.wav")  # audio linked out
    (clips / "e.txt").write_text("audio elsewhere", encoding="utf-8")
    out = tmp_path / "out"

    assert run_batch(clips, out) == EXIT_FAILED
    err = capsys.readouterr().err
    assert all(SENTINEL not in text for _, text in stand_in.sent)
    assert all(data != outside_audio for data, _ in stand_in.sent)
    assert sorted(text for _, text in stand_in.sent) == ["plain words", "shared words"]
    assert "2 aligned, 0 skipped" in err and "3 failed" in err
    for name in ("a.txt", "b.txt"):
        assert f"{name} is a link that leads out of {clips}; refused" in err
    assert f"FAILED {clips / 'e.wav'}: cannot read audio: {clips / 'e.wav'} is a link" in err
    assert sorted(p.name for p in out.iterdir()) == ["c.json", "d.json"]
    assert secret.read_text(encoding="utf-8") == SENTINEL


def test_folder_mode_refuses_transcripts_that_are_not_regular_files(tmp_path, stand_in, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    for stem in ("a", "b", "c"):
        wav_bytes(clips / f"{stem}.wav", 0.0)
    os.mkfifo(clips / "a.txt")  # reading it would wait for a writer forever
    (clips / "b.txt").mkdir()
    (clips / "c.txt").write_text("plain words", encoding="utf-8")
    out = tmp_path / "out"
    codes: list[int] = []
    worker = threading.Thread(target=lambda: codes.append(run_batch(clips, out)), daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():  # stuck opening the FIFO: release it, then fail
        with contextlib.suppress(OSError):
            os.close(os.open(clips / "a.txt", os.O_WRONLY | os.O_NONBLOCK))
        worker.join(30)
        pytest.fail("batch mode blocked opening a FIFO transcript")
    assert codes == [EXIT_FAILED]
    err = capsys.readouterr().err
    assert "1 aligned, 0 skipped" in err and "2 failed" in err
    for name in ("a.txt", "b.txt"):
        assert f"{clips / name} is not a regular file; refused" in err
    assert [text for _, text in stand_in.sent] == ["plain words"]


def test_batch_never_writes_through_a_link_at_the_output_path(tmp_path, stand_in, capsys):
    precious = tmp_path / "precious.txt"
    precious.write_text(SENTINEL, encoding="utf-8")
    clips = tmp_path / "clips"
    clips.mkdir()
    for stem in ("a", "b", "c"):
        wav_bytes(clips / f"{stem}.wav", 0.0)
        (clips / f"{stem}.txt").write_text(f"words of {stem}", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.json").symlink_to(precious)  # a link to a file elsewhere: not "already done"
    (out / "b.json").symlink_to(tmp_path / "planted.json")  # a dangling link

    assert run_batch(clips, out) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "1 aligned, 0 skipped" in err and "2 failed" in err
    for name in ("a.json", "b.json"):
        assert f"output {out / name} is a symbolic link; refused" in err
        assert (out / name).is_symlink()
    assert precious.read_text(encoding="utf-8") == SENTINEL
    assert not (tmp_path / "planted.json").exists()
    assert (out / "c.json").is_file() and not (out / "c.json").is_symlink()
    assert [text for _, text in stand_in.sent] == ["words of c"]
    # Removing the link lets the next run write there.
    (out / "a.json").unlink()
    (out / "b.json").unlink()
    assert run_batch(clips, out) == EXIT_OK
    assert "2 aligned, 1 skipped" in capsys.readouterr().err
    assert precious.read_text(encoding="utf-8") == SENTINEL


def test_batch_never_writes_outside_the_output_folder(tmp_path, stand_in, capsys, monkeypatch):
    clips = tmp_path / "clips"
    clips.mkdir()
    audio = clips / "a.wav"
    wav_bytes(audio, 0.0)
    escaping = BatchItem(key="../escaped", audio=audio, language="en", text="words", origin="x:1")
    staying = BatchItem(key="kept", audio=audio, language="en", text="words", origin="x:2")
    monkeypatch.setattr(cli_module, "load_items", lambda *args: [escaping, staying])
    out = tmp_path / "out"
    assert run_batch(clips, out) == EXIT_FAILED
    assert "FAILED x:1: output name '../escaped.json' leads out of" in capsys.readouterr().err
    assert not (tmp_path / "escaped.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["kept.json"]


# --- output formats: -f all, cue modes, word timing ---------------------------------------------


@pytest.fixture
def speaking(monkeypatch) -> list[str]:
    """No server: readiness passes and every request is answered with an alignment of its
    transcript (``client_samples.make_alignment``: 0.3 s per unit, spans sent); the transcripts
    sent are recorded."""
    sent: list[str] = []

    def align(self, audio, text, *args, **kwargs) -> Alignment:
        sent.append(text)
        return make_alignment(text)

    monkeypatch.setattr(cli_module, "_require_ready", lambda settings: None)
    monkeypatch.setattr(AlignerClient, "align", align)
    return sent


ALL_SUFFIXES = [
    ".json",
    ".whisperx.json",
    ".verbose.json",
    ".srt",
    ".vtt",
    ".ass",
    ".lrc",
    ".TextGrid",
    ".ctm",
    ".tsv",
]


@pytest.mark.parametrize("output", ["speech.srt", "speech.whisperx.json", "speech"])
def test_format_all_writes_each_format_without_audio_beside_the_output(
    tmp_path, clip, speaking, output
):
    audio, text = clip
    out = tmp_path / "out"
    out.mkdir()
    argv = [str(audio), str(text), "-l", "en", "-f", "all", "-o", str(out / output)]
    assert main([*argv, "--cues", "lines", "--word-timestamps", "--no-karaoke"]) == EXIT_OK
    assert sorted(p.name for p in out.iterdir()) == sorted(f"speech{s}" for s in ALL_SUFFIXES)
    options = WriteOptions(
        cues=CueOptions(mode="lines"), recording="clip", karaoke=False, word_timestamps=True
    )
    expected = make_alignment("hello world")
    for fmt in formats_without_audio():
        written = (out / f"speech{fmt.suffix}").read_text(encoding="utf-8")
        assert written == render(expected, fmt.name, options), fmt.name
    assert speaking == ["hello world"]


def test_format_all_needs_an_output_file(clip, capsys):
    audio, text = clip
    with pytest.raises(SystemExit) as stop:
        main([str(audio), str(text), "-l", "en", "-f", "all"])
    assert stop.value.code == EXIT_USAGE
    assert "--format all writes a file per format: give -o BASE" in capsys.readouterr().err


def test_batch_format_all_writes_every_format_and_skips_only_finished_items(
    tmp_path, speaking, capsys
):
    clips = tmp_path / "clips"
    clips.mkdir()
    for stem in ("a", "b"):
        wav_bytes(clips / f"{stem}.wav", 0.0)
        (clips / f"{stem}.txt").write_text(f"words of {stem}", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["--batch", str(clips), "--out-dir", str(out), "-l", "en", "-f", "all"]
    assert main([*argv, "--no-progress"]) == EXIT_OK
    assert "2 aligned, 0 skipped" in capsys.readouterr().err
    names = sorted(f"{stem}{s}" for stem in ("a", "b") for s in ALL_SUFFIXES)
    assert sorted(p.name for p in out.iterdir()) == names
    assert (out / "b.lrc").read_text(encoding="utf-8") == render(
        make_alignment("words of b"), "lrc"
    )
    assert main([*argv, "--no-progress"]) == EXIT_OK
    assert "0 aligned, 2 skipped" in capsys.readouterr().err
    (out / "a.lrc").unlink()  # one format missing: the item is aligned and written again
    assert main([*argv, "--no-progress"]) == EXIT_OK
    assert "1 aligned, 1 skipped" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == names
    assert speaking == ["words of a", "words of b", "words of a"]


def test_batch_format_all_refuses_a_link_at_any_of_its_outputs(tmp_path, speaking, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    wav_bytes(clips / "a.wav", 0.0)
    (clips / "a.txt").write_text("words", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.ass").symlink_to(tmp_path / "planted.ass")
    argv = ["--batch", str(clips), "--out-dir", str(out), "-l", "en", "-f", "all"]
    assert main([*argv, "--no-progress"]) == EXIT_FAILED
    assert f"output {out / 'a.ass'} is a symbolic link; refused" in capsys.readouterr().err
    assert not (tmp_path / "planted.ass").exists()
    assert [p.name for p in out.iterdir()] == ["a.ass"]
    assert speaking == []


@pytest.mark.parametrize(
    ("output", "format_name"),
    [
        ("x.whisperx.json", "whisperx"),
        ("x.verbose.json", "verbose_json"),
        ("x.json", "json"),
        ("x.ass", "ass"),
        ("x.LRC", "lrc"),
        ("x.unknown", "json"),
    ],
)
def test_format_follows_the_longest_matching_output_suffix(output, format_name):
    from qwen3_aligner_client.cli import _settings

    parser = build_parser()
    settings = _settings(parser, parser.parse_args(["a", "t", "-l", "en", "-o", output]))
    assert settings.format == format_name


def test_cue_and_word_timing_options_reach_the_writers():
    from qwen3_aligner_client.cli import _settings

    parser = build_parser()
    plain = _settings(parser, parser.parse_args(["a", "t", "-l", "en"])).write_options("x")
    assert plain == WriteOptions(recording="x")
    assert (plain.cues.mode, plain.karaoke, plain.word_timestamps) == ("auto", True, False)
    argv = ["a", "t", "-l", "en", "--cues", "lines", "--word-timestamps", "--no-karaoke"]
    chosen = _settings(parser, parser.parse_args(argv)).write_options("x")
    assert chosen == WriteOptions(
        cues=CueOptions(mode="lines"), recording="x", karaoke=False, word_timestamps=True
    )


def test_cues_by_lines_from_the_command_line(tmp_path, clip, speaking, capsys):
    audio, _ = clip
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text("One two.\nThree four!\n", encoding="utf-8")
    assert main([str(audio), str(lyrics), "-l", "en", "-f", "srt", "--cues", "lines"]) == EXIT_OK
    assert capsys.readouterr().out == (
        "1\n00:00:00,000 --> 00:00:00,700\nOne two.\n\n"
        "2\n00:00:00,800 --> 00:00:01,500\nThree four!\n"
    )
    with pytest.raises(SystemExit) as stop:
        main([str(audio), str(lyrics), "-l", "en", "--cues", "verses"])
    assert stop.value.code == EXIT_USAGE
    assert "invalid choice: 'verses'" in capsys.readouterr().err


def test_cues_by_lines_without_spans_exit_2(tmp_path, clip, monkeypatch, capsys):
    audio, text = clip
    monkeypatch.setattr(cli_module, "_require_ready", lambda settings: None)
    monkeypatch.setattr(
        AlignerClient, "align", lambda self, audio, text, *a, **k: make_alignment(text, spans=False)
    )
    argv = [str(audio), str(text), "-l", "en", "-f", "lrc", "--cues", "lines"]
    assert main([*argv, "-o", str(tmp_path / "x.lrc")]) == EXIT_USAGE
    assert "cannot write lrc: cues by transcript lines need" in capsys.readouterr().err
    assert not (tmp_path / "x.lrc").exists()
