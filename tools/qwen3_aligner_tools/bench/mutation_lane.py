"""The mutation lane: mutmut over the pure product modules, with the fast tests that cover them.

    ./scripts/mutation                       # every module of MODULES (long: see docs/testing.md)
    ./scripts/mutation timestamps longform   # some of them

For each module, the checkout's ``src/``, ``tests/``, ``client/`` (with the client's tests),
``conftest.py`` and ``pyproject.toml`` are copied to a scratch folder with a ``[tool.mutmut]``
section naming the module and its tests, and ``mutmut run`` mutates it there (the fast lane's
environment: no server, no checkpoint). Prints, per module, the mutants killed (timeouts count as
killed: the mutant never finished), the kill rate and every survivor by name, for ``mutmut show``
in that folder (kept unless ``--clean``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# module -> the fast tests that check it. Product modules live in src/qwen3_aligner_triton/;
# "client." names a module of the client distribution (client/qwen3_aligner_client/).
MODULES: dict[str, tuple[str, ...]] = {
    "timestamps": ("tests/unit/test_timestamps.py",),
    "scores": ("tests/unit/test_scores.py",),
    "longform": ("tests/unit/test_longform.py",),
    "spans": ("tests/unit/test_spans.py",),
    "words": ("tests/unit/test_words.py",),
    "requests": ("tests/unit/test_requests.py",),
    "batching": ("tests/unit/test_batching.py",),
    "params": ("tests/unit/test_params.py",),
    "languages": ("tests/unit/test_languages.py",),
    "core_access": ("tests/unit/test_core_access.py",),
    "shared_memory": ("tests/unit/test_shared_memory.py",),
    "audio_file": ("tests/unit/test_audio_file.py",),
    "serve": ("tests/operations/test_serve.py",),
    "hub": ("tests/operations/test_hub.py", "tests/operations/test_hub_cli.py"),
    "client.writers": ("client/tests/test_client_writers.py",),
    "client.cues": ("client/tests/test_client_cues.py",),
    "client.segments": (
        "client/tests/test_client_cli.py",
        "client/tests/test_client_cues.py",
        "client/tests/test_client_longform.py",
    ),
}
CLIENT_PREFIX = "client."
# What the scratch copy holds: the code, its tests with the checkout's conftest.py (the tests'
# import paths and shared fixtures) and what the tests read (the launcher's tests render
# model_repository/, the Hub's run scripts/fetch-model, the shared-memory plan reads the shipped
# deployments in docker/ and docs/).
COPIED = (
    "conftest.py",
    "src",
    "tests",
    "client",
    "model_repository",
    "scripts",
    "docker",
    "docs",
)


def source_path(module: str) -> str:
    """Where ``module`` lies in the scratch copy. The client's package is copied under ``src/``
    there (mutmut imports mutated code from ``src/`` and names mutants by their path), and its
    checkout folder is left out, so the tests import the mutated copy."""
    if module.startswith(CLIENT_PREFIX):
        return f"src/qwen3_aligner_client/{module.removeprefix(CLIENT_PREFIX)}.py"
    return f"src/qwen3_aligner_triton/{module}.py"


SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@dataclass(frozen=True)
class LaneResult:
    module: str
    killed: int
    timeout: int
    survived: int
    total: int
    survivors: tuple[str, ...]
    folder: Path

    @property
    def kill_rate(self) -> float:
        tested = self.killed + self.timeout + self.survived
        return (self.killed + self.timeout) / tested if tested else 0.0


def mutmut_config(module: str, tests: tuple[str, ...]) -> str:
    """The ``[tool.mutmut]`` section for one module."""
    quoted = ", ".join(json.dumps(t) for t in tests)
    return (
        "\n[tool.mutmut]\n"
        f'source_paths = ["{source_path(module)}"]\n'
        f"also_copy = {json.dumps(list(COPIED))}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]\n'
        f"pytest_add_cli_args_test_selection = [{quoted}]\n"
    )


def run_module(
    module: str, tests: tuple[str, ...], scratch: Path, only: tuple[str, ...] = ()
) -> LaneResult:
    """Mutate ``module`` in a copy of the checkout under ``scratch`` and count the outcomes;
    ``only``: run just the mutants whose names match these patterns (fnmatch, e.g.
    ``*x_format_size*``), the rest left unchecked (not counted)."""
    folder = scratch / module
    folder.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for part in COPIED:
        if (ROOT / part).is_file():
            shutil.copy2(ROOT / part, folder / part)
        else:
            shutil.copytree(ROOT / part, folder / part, ignore=skip)
    if module.startswith(CLIENT_PREFIX):
        shutil.move(folder / "client" / "qwen3_aligner_client", folder / "src")
    pyproject = (ROOT / "pyproject.toml").read_text()
    (folder / "pyproject.toml").write_text(pyproject + mutmut_config(module, tests))
    # mutmut forks one process per mutant from a parent that has run the tests: an OpenMP pool
    # started there (torch) would deadlock in every child, and a deadlock counts as a timeout,
    # that is as a killed mutant. One thread each keeps the pool from starting.
    env = {**os.environ, "QWEN3_ALIGNER_FAST": "1", **SINGLE_THREADED}
    mutmut = [sys.executable, "-m", "mutmut"]
    subprocess.run(
        [*mutmut, "run", *only], cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL
    )
    subprocess.run(
        [*mutmut, "export-cicd-stats"], cwd=folder, env=env, check=True, capture_output=True
    )
    stats = json.loads((folder / "mutants" / "mutmut-cicd-stats.json").read_text())
    listing = subprocess.run(
        [*mutmut, "results"], cwd=folder, env=env, check=True, capture_output=True, text=True
    ).stdout
    survivors = tuple(
        line.split(":")[0].strip() for line in listing.splitlines() if line.endswith(": survived")
    )
    return LaneResult(
        module,
        int(stats["killed"]),
        int(stats["timeout"]),
        int(stats["survived"]),
        int(stats["total"]),
        survivors,
        folder,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"some of: {', '.join(MODULES)}")
    parser.add_argument("--clean", action="store_true", help="remove the scratch folders")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only the mutants whose names match (fnmatch; repeatable), e.g. '*x_main*'",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(MODULES)}")
    scratch = Path(tempfile.mkdtemp(prefix="qwen3-aligner-mutation-"))
    results = []
    for module in args.modules or list(MODULES):
        result = run_module(module, MODULES[module], scratch, tuple(args.only))
        results.append(result)
        print(
            f"{module:>12}: {result.killed + result.timeout} of "
            f"{result.killed + result.timeout + result.survived} killed "
            f"({result.kill_rate:.0%}; {result.timeout} by timeout), "
            f"{result.survived} survived",
            flush=True,
        )
        for name in result.survivors:
            print(f"{'':>14}survived: {name}")
    if args.clean:
        shutil.rmtree(scratch)
    else:
        print(f"scratch folders (mutmut show NAME inside): {scratch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
