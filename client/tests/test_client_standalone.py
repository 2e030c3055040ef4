"""The client is a distribution of its own: ``pip install ./client`` works without the server.

Statically, no module of ``qwen3_aligner_client`` imports torch, transformers or the server package,
the modules import each other without cycles, and every library they import is declared in
``client/pyproject.toml``. For real, a fresh virtual environment gets only the client (from a copy
of ``client/``, through pip and the package indexes it is configured with), has no torch or
transformers, and its ``qwen3-align`` checks the tiny-checkpoint server, aligns a file in every
format, aligns with a subtitle file and runs a batch.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "client"
PACKAGE = CLIENT / "qwen3_aligner_client"
SERVER_SIDE = {"torch", "transformers", "accelerate", "qwen_asr", "qwen3_aligner_triton", "librosa"}
FORMATS = ("json", "srt", "vtt", "textgrid", "ctm", "tsv", "html", "png")
INSTALL_TIMEOUT = 900  # seconds: pip resolving and unpacking the client's wheels
TEXT = "Hello, world! This is the quick brown fox; it jumps over the lazy dog."


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(module, level) of every import in ``path``, at any depth (functions included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def module_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PACKAGE.glob("*.py"))}


def test_no_module_imports_torch_transformers_or_the_server():
    for name, path in module_files().items():
        for module, level in imports_of(path):
            top = module.split(".")[0]
            assert level > 0 or top not in SERVER_SIDE, f"{name}.py imports {module}"


def test_client_modules_import_each_other_without_cycles():
    modules = module_files()
    graph = {
        name: {m.split(".")[0] for m, level in imports_of(path) if level == 1 and m} - {name}
        for name, path in modules.items()
        if name != "__init__"
    }
    assert graph["plot"] and graph["writers"], "the graph is read"
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, set())):
            if state.get(nxt) == "open":
                raise AssertionError(f"import cycle: {' -> '.join([*trail, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [])


def client_project() -> dict:
    return tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]


def test_every_imported_library_is_declared_by_the_client():
    from importlib.metadata import packages_distributions

    project = client_project()
    declared = {canonicalize_name(Requirement(s).name) for s in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {canonicalize_name(Requirement(s).name) for s in extra}
    providers = packages_distributions()
    for name, path in module_files().items():
        for module, level in imports_of(path):
            top = module.split(".")[0]
            if level or top in sys.stdlib_module_names or top == "qwen3_aligner_client":
                continue
            dists = {canonicalize_name(d) for d in providers.get(top, [])}
            assert dists & declared, f"{name}.py imports {module}: not declared ({dists})"


def test_the_server_project_does_not_package_the_client():
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert server["tool"]["setuptools"]["packages"]["find"]["where"] == ["src"]
    assert "scripts" not in server["project"]
    assert client_project()["scripts"] == {"qwen3-align": "qwen3_aligner_client.cli:main"}
    setup_venv = (ROOT / "scripts" / "setup-venv").read_text()
    assert '-e "$ROOT/client[subtitles,report]"' in setup_venv


def speechlike(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)) * np.sin(2 * np.pi * 180 * t)
    return (wave + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def client_env(tmp_path_factory) -> Path:
    """A fresh virtual environment with only the client (and its extras) installed."""
    root = tmp_path_factory.mktemp("client-env")
    source = root / "source"
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    env = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=120)
    done = subprocess.run(
        [env / "bin" / "python", "-m", "pip", "install", "--quiet", f"{source}[subtitles,report]"],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    assert done.returncode == 0, f"pip install ./client failed:\n{done.stdout}\n{done.stderr}"
    return env


def run(env: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(env / "bin" / "qwen3-align"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.integration
def test_fresh_environment_has_no_torch_transformers_or_server(client_env):
    probe = (
        "import importlib.util, sys\n"
        "import qwen3_aligner_client, qwen3_aligner_client.cli, qwen3_aligner_client.plot\n"
        "import qwen3_aligner_client.report, qwen3_aligner_client.segments\n"
        "absent = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]\n"
        "print(' '.join(absent))\n"
    )
    names = ["torch", "transformers", "qwen_asr", "qwen3_aligner_triton", "tritonserver"]
    done = subprocess.run(
        [client_env / "bin" / "python", "-c", probe, *names],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == names
    listed = subprocess.run(
        [client_env / "bin" / "python", "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    installed = {canonicalize_name(p["name"]) for p in json.loads(listed.stdout)}
    assert "qwen3-aligner-client" in installed
    assert not installed & {"torch", "transformers", "qwen3-aligner-triton", "nvidia-pytriton"}


@pytest.mark.integration
def test_fresh_client_checks_aligns_every_format_and_batches(client_env, server, tmp_path):
    assert run(client_env, "--check", "--url", server.http_url, cwd=tmp_path).returncode == 0
    grpc = run(client_env, "--check", "--url", server.grpc_url, "--protocol", "grpc", cwd=tmp_path)
    assert grpc.returncode == 0, grpc.stderr

    soundfile.write(tmp_path / "speech.wav", speechlike(6.0, 16000, 1), 16000)
    (tmp_path / "speech.txt").write_text(TEXT, encoding="utf-8")
    for fmt in FORMATS:
        out = tmp_path / f"speech.{fmt}"
        done = run(
            client_env,
            *("speech.wav", "speech.txt", "-l", "en", "-f", fmt, "-o", out.name),
            *("--url", server.http_url),
            cwd=tmp_path,
        )
        assert done.returncode == 0, f"{fmt}: {done.stderr}"
        assert out.stat().st_size > 0, fmt
    document = json.loads((tmp_path / "speech.json").read_text(encoding="utf-8"))
    units = len(document["words"])
    assert units == 14 and document["text"] == TEXT
    assert len((tmp_path / "speech.ctm").read_text().splitlines()) == units
    assert len((tmp_path / "speech.tsv").read_text().splitlines()) == units + 1
    assert (tmp_path / "speech.srt").read_text().startswith("1\n")
    assert (tmp_path / "speech.vtt").read_text().startswith("WEBVTT")
    assert 'name = "words"' in (tmp_path / "speech.textgrid").read_text()
    assert "<html" in (tmp_path / "speech.html").read_text(encoding="utf-8")
    assert (tmp_path / "speech.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    # cue-guided: the subtitles extra reads the SRT file
    (tmp_path / "cues.srt").write_text(
        "1\n00:00:00,200 --> 00:00:03,000\nHello, world!\n\n"
        "2\n00:00:03,200 --> 00:00:05,800\nThis is the quick brown fox.\n",
        encoding="utf-8",
    )
    done = run(
        client_env,
        *("speech.wav", "cues.srt", "-l", "en", "-o", "cues.json", "--url", server.http_url),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    cued = json.loads((tmp_path / "cues.json").read_text(encoding="utf-8"))
    expected = ["Hello", "world", "This", "is", "the", "quick", "brown", "fox"]
    assert [w["text"] for w in cued["words"]] == expected

    # batch: two clips with transcripts, one without; the good ones are written, exit status 1
    clips = tmp_path / "clips"
    clips.mkdir()
    for i, stem in enumerate(("a", "b", "c")):
        soundfile.write(clips / f"{stem}.flac", speechlike(3.0, 22050, i), 22050)
    (clips / "a.txt").write_text("Welcome to the show.", encoding="utf-8")
    (clips / "b.txt").write_text("Thanks for listening!", encoding="utf-8")
    out_dir = tmp_path / "aligned"
    args = ("--batch", "clips", "-l", "en", "--out-dir", "aligned", "-f", "vtt", "--no-progress")
    done = run(client_env, *args, "--url", server.grpc_url, "--protocol", "grpc", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.vtt", "b.vtt"]
    assert "2 aligned, 0 skipped" in done.stderr and "1 failed" in done.stderr
