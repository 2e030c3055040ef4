"""``qwen3-align`` without a real model: usage errors, unreachable and not-ready servers."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import soundfile
from qwen3_aligner_client.cli import (
    EXIT_NOT_READY,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    build_parser,
    main,
)


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


def test_format_follows_the_output_suffix_and_defaults_follow_the_protocol():
    from qwen3_aligner_client.cli import _settings

    parser = build_parser()
    settings = _settings(parser, parser.parse_args(["a", "t", "-l", "en", "-o", "x.TextGrid"]))
    assert (settings.format, settings.url) == ("textgrid", "localhost:8000")
    settings = _settings(parser, parser.parse_args(["a", "t", "-l", "en", "--protocol", "grpc"]))
    assert (settings.format, settings.url) == ("json", "localhost:8001")
