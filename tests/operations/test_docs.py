"""The code in README.md and docs/*.md runs: every shell, Python and JSON block, against a server.

Each fenced block is run (``bash``, ``sh``, ``console``: its ``$`` lines; ``python``) in a scratch
folder holding the files the examples name (``speech.wav``, ``clips/``, ``lecture.srt``, ...), with
``localhost:8000``/``localhost:8001`` replaced by the tiny-checkpoint test server's HTTP/gRPC
address (also as ``qwen3-align``'s default) and the repository's scripts and ``.venv`` by their
real paths; or checked (``json`` parses as a
document or as JSON Lines, ``promql`` with a PromQL parser, ``yaml`` loads). ``text`` blocks are
sample output and are not run.

A block that cannot run in a test (a GPU, the internet, docker, a cluster, a foreground server) is
preceded by the line ``<!-- docs-test: skip (reason) -->``; it is then only checked cheaply (``bash
-n``, ``compile()``, parsing). A block in any other language, or without one, fails the test, so
every example in the docs is either run or knowingly skipped. Test ids are ``FILE:LINE`` of the
block's opening fence.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_MARK = re.compile(r"^<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->\s*$")
RUN = {"bash", "sh", "console", "python"}  # executed against the server
CHECK = {"json", "promql", "yaml", "text"}  # parsed (or, for text, shown output: nothing to do)
BLOCK_TIMEOUT = 300  # seconds for one block (the tiny model aligns a clip in well under one)

SPEECH_TEXT = (
    "Hello, world! This is the quick brown fox; it jumps over the lazy dog. "
    "The dog, who was not amused, barked at the fox."
)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    skip: str | None  # the reason given in a docs-test: skip mark, if any

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks_of(text: str, path: Path) -> list[Block]:
    """The fenced blocks of ``text``, each with the skip mark on the line right before it."""
    tokens = MarkdownIt("commonmark").parse(text)
    lines = text.splitlines()
    found = []
    for token in tokens:
        if token.type != "fence" or token.map is None:
            continue
        start = token.map[0]
        before = lines[start - 1].strip() if start > 0 else ""
        mark = SKIP_MARK.match(before)
        language = token.info.split()[0].lower() if token.info.strip() else ""
        found.append(
            Block(path, start + 1, language, token.content, mark.group("reason") if mark else None)
        )
    return found


def all_blocks() -> list[Block]:
    return [b for path in DOC_FILES for b in blocks_of(path.read_text(encoding="utf-8"), path)]


def refusal(block: Block) -> str | None:
    """Why ``block`` may not stand in the docs as it is (None when it may)."""
    if block.language in RUN or block.language in CHECK:
        return None
    named = f"language {block.language!r}" if block.language else "no language"
    return (
        f"{block.where}: a block with {named}; give it one of "
        f"{sorted(RUN | CHECK)} (text for sample output)"
    )


def console_commands(code: str) -> str:
    """The commands of a ``console`` block: its ``$`` lines, with their continuation lines."""
    commands, continuing = [], False
    for line in code.splitlines():
        if line.startswith("$ "):
            commands.append(line[2:])
        elif continuing:
            commands.append(line)
        else:
            continue
        continuing = line.rstrip().endswith("\\")
    return "\n".join(commands) + "\n"


def check_cheaply(block: Block) -> None:
    """Parse ``block`` without running it; raises (an ``AssertionError``) on a broken one."""
    code = block.code
    if block.language in {"bash", "sh", "console"}:
        script = console_commands(code) if block.language == "console" else code
        done = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
        assert done.returncode == 0, f"{block.where}: bash -n: {done.stderr}"
    elif block.language == "python":
        compile(code, block.where, "exec")
    elif block.language == "json":
        try:
            json.loads(code)
        except json.JSONDecodeError:
            for number, line in enumerate(code.splitlines(), 1):
                if line.strip():
                    try:
                        json.loads(line)
                    except json.JSONDecodeError as e:
                        raise AssertionError(f"{block.where}: line {number}: {e}") from None
    elif block.language == "promql":
        import promql_parser

        promql_parser.parse(code)
    elif block.language == "yaml":
        import yaml

        list(yaml.safe_load_all(code))


def substitute(code: str, server, workdir: Path, openai_url: str = "localhost:9000") -> str:
    """``code`` pointed at the test server (and its OpenAI-style front at ``openai_url``), the
    repository's scripts and a scratch checkpoint."""
    bin_dir = Path(sys.executable).parent
    code = code.replace("localhost:8000", server.http_url)
    code = code.replace("localhost:8001", server.grpc_url)
    code = code.replace("localhost:9000", openai_url)
    code = code.replace("/tmp/tiny-aligner", str(workdir / "tiny-aligner"))
    code = re.sub(r"(?<![\w/.])\./scripts/", f"{ROOT}/scripts/", code)
    code = re.sub(r"(?<![\w/.])scripts/", f"{ROOT}/scripts/", code)
    return re.sub(r"(?<![\w/.])\.venv/bin/", f"{bin_dir}/", code)


def speechlike(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Noise under a syllable-rate envelope over a tone (what the tests align everywhere)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6))
    wave = 0.3 * envelope * np.sin(2 * np.pi * rng.uniform(120, 300) * t)
    return (wave + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def srt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


LECTURE_CUES = [
    (0.5, 6.0, "Welcome to the lecture."),
    (6.5, 14.0, "Today we look at forced alignment."),
    (15.0, 24.0, "It finds the time of every word in a recording."),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with every file the docs' examples name."""
    root = tmp_path_factory.mktemp("docs")
    soundfile.write(root / "speech.wav", speechlike(6.0, 16000, 1), 16000)
    (root / "speech.txt").write_text(SPEECH_TEXT + "\n", encoding="utf-8")
    soundfile.write(root / "intro.wav", speechlike(10.0, 16000, 2), 16000)
    clips = root / "clips"
    clips.mkdir()
    soundfile.write(clips / "intro.flac", speechlike(4.0, 22050, 3), 22050)
    (clips / "intro.txt").write_text("Welcome to the show.\n", encoding="utf-8")
    soundfile.write(clips / "outro.mp3", speechlike(4.0, 44100, 4), 44100)
    (clips / "outro.txt").write_text("Thanks for listening!\n", encoding="utf-8")
    manifest = [
        {"audio": "clips/intro.flac", "text": "Welcome to the show.", "language": "en"},
        {"audio": "speech.wav", "text_file": "speech.txt", "language": "English"},
    ]
    (root / "manifest.jsonl").write_text(
        "".join(json.dumps(item) + "\n" for item in manifest), encoding="utf-8"
    )
    soundfile.write(root / "lecture.mp3", speechlike(26.0, 16000, 5), 16000)
    (root / "lecture.srt").write_text(
        "".join(
            f"{i}\n{srt_time(a)} --> {srt_time(b)}\n{text}\n\n"
            for i, (a, b, text) in enumerate(LECTURE_CUES, 1)
        ),
        encoding="utf-8",
    )
    (root / "lecture.vtt").write_text(
        "WEBVTT\n\n"
        + "".join(
            f"{srt_time(a).replace(',', '.')} --> {srt_time(b).replace(',', '.')}\n{text}\n\n"
            for a, b, text in LECTURE_CUES
        ),
        encoding="utf-8",
    )
    return root


BLOCKS = all_blocks()


def test_the_docs_have_blocks_to_run():
    """The collection itself works: the README and every page are read, and most blocks run."""
    assert {b.path for b in BLOCKS} >= {ROOT / "README.md", ROOT / "docs" / "client.md"}
    runnable = [b for b in BLOCKS if b.language in RUN and b.skip is None]
    assert len(runnable) >= 10, [b.where for b in runnable]


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_block_is_runnable_or_marked(block):
    reason = refusal(block)
    assert reason is None, reason


@pytest.mark.parametrize(
    "block",
    [b for b in BLOCKS if b.skip is not None or b.language in CHECK],
    ids=[b.where for b in BLOCKS if b.skip is not None or b.language in CHECK],
)
def test_skipped_and_data_blocks_parse(block):
    check_cheaply(block)


RUNNABLE = [b for b in BLOCKS if b.skip is None and b.language in RUN]


@pytest.fixture(scope="module")
def shim_path(server, workdir) -> str:
    """PATH with a ``qwen3-align`` first that defaults ``--url`` to the test server's address.

    The docs' commands rely on the default (``localhost:8000``, or ``localhost:8001`` with
    ``--protocol grpc``); the test server listens on free ports.
    """
    real = Path(sys.executable).with_name("qwen3-align")
    shim = workdir / ".bin" / "qwen3-align"
    shim.parent.mkdir()
    shim.write_text(
        "#!/usr/bin/env bash\n"
        'for arg in "$@"; do [[ $arg == --url || $arg == --url=* ]] && exec '
        f'{real} "$@"; done\n'
        f'for arg in "$@"; do [[ $arg == grpc ]] && exec {real} --url {server.grpc_url} "$@"; '
        "done\n"
        f'exec {real} --url {server.http_url} "$@"\n'
    )
    shim.chmod(0o755)
    return os.pathsep.join([str(shim.parent), str(real.parent), os.environ["PATH"]])


@pytest.fixture(scope="module")
def openai_front(server):
    """The OpenAI-style front of the test server (the docs' ``localhost:9000``): host:port."""
    from qwen3_aligner_triton.openai_front.launch import FrontOptions, FrontProcess
    from qwen3_aligner_triton.triton_flags import free_ports

    (port,) = free_ports(1)
    front = FrontProcess.start(
        FrontOptions(port=port, triton_url=server.grpc_url, host="127.0.0.1"),
        extra=["--log-level", "warning"],
    )
    deadline = time.monotonic() + 60
    while True:
        assert front.exited() is None, "the OpenAI-style front exited at start"
        assert time.monotonic() < deadline, "the OpenAI-style front did not start"
        try:
            if requests.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.2)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        front.stop()


@pytest.mark.integration
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.where for b in RUNNABLE])
def test_block_runs_against_the_server(block, server, workdir, shim_path, openai_front):
    code = substitute(block.code, server, workdir, openai_front)
    env = {**os.environ, "PATH": shim_path}
    if block.language == "python":
        command = [sys.executable, "-c", code]
    else:
        script = console_commands(code) if block.language == "console" else code
        command = ["bash", "-euo", "pipefail", "-c", script]
    done = subprocess.run(
        command,
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, (
        f"{block.where}: the {block.language} block exits {done.returncode}\n"
        f"--- block ---\n{code}--- stdout ---\n{done.stdout[-3000:]}"
        f"--- stderr ---\n{done.stderr[-3000:]}"
    )


# The test of the tests: a block neither runnable nor marked is refused, and so is a broken one.


def test_unknown_or_missing_languages_are_refused():
    text = "intro\n\n```\nls\n```\n\n```ruby\nputs 1\n```\n\n```text\noutput\n```\n"
    blocks = blocks_of(text, ROOT / "docs" / "example.md")
    assert [refusal(b) is None for b in blocks] == [False, False, True]
    assert "docs/example.md:3" in refusal(blocks[0])
    assert "'ruby'" in refusal(blocks[1])


def test_skip_mark_applies_to_the_next_block_only():
    text = (
        "<!-- docs-test: skip (needs a GPU) -->\n```bash\n./scripts/gpu_check\n```\n\n"
        "```bash\nqwen3-align --check\n```\n"
        "<!-- docs-test: skip -->\n```bash\nls\n```\n"
    )
    blocks = blocks_of(text, ROOT / "README.md")
    assert [b.skip for b in blocks] == ["needs a GPU", None, None]  # a mark needs its reason
    assert [b.line for b in blocks] == [2, 6, 10]


def test_broken_skipped_blocks_are_caught():
    path = ROOT / "README.md"
    broken = [
        Block(path, 1, "bash", "if true; then echo\n", "cluster"),
        Block(path, 1, "python", "def f(:\n", "GPU"),
        Block(path, 1, "json", '{"a": 1}\n{"b": \n', None),
        Block(path, 1, "promql", "sum by (pod) (rate(x[2m])\n", None),
    ]
    for block in broken:
        with pytest.raises((AssertionError, SyntaxError, ValueError)):
            check_cheaply(block)
    check_cheaply(Block(path, 1, "json", '{"a": 1}\n{"b": 2}\n', None))
    check_cheaply(Block(path, 1, "console", "$ echo hi \\\n  there\nhi there\n", None))


def test_console_blocks_run_their_dollar_lines():
    code = "$ qwen3-align --check \\\n    --url x:1\nready: ...\n$ echo done\ndone\n"
    assert console_commands(code) == "qwen3-align --check \\\n    --url x:1\necho done\n"
