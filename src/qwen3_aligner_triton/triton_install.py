"""Finding ``tritonserver`` and running it from this environment.

On an NGC Triton container ``tritonserver`` is on PATH. Elsewhere (developer machines, CI) the
binary of the ``nvidia-pytriton`` wheel is used: its Python backend needs the stub of the running
Python version copied next to ``libtriton_python.so``, which :func:`locate` does once. That stub
links ``libpython3.X.so.1.0`` by name; left to the dynamic linker it would load the operating
system's build, whatever Python this environment was made from, and the environment's compiled
standard-library modules (``_ssl``, ``_hashlib``, ...) would then run on a foreign runtime.
:func:`locate` therefore finds the shared libpython of this environment's own interpreter, and
:func:`server_environment` puts its folder first on the server's ``LD_LIBRARY_PATH``.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class ServerError(RuntimeError):
    """The server could not be started or did not become ready."""


@dataclass(frozen=True)
class TritonInstallation:
    """Where the server binary and its backends are."""

    binary: Path
    backend_dir: Path | None  # None: the binary's built-in default (/opt/tritonserver/backends)
    source: str  # "PATH" or "nvidia-pytriton"
    # Folder holding the shared libpython the backend stub must load (first on LD_LIBRARY_PATH);
    # None: leave the dynamic linker's choice alone (the NGC container's stub matches its Python).
    python_libdir: Path | None = None


# Folders the dynamic linker searches anyway: never worth putting first on LD_LIBRARY_PATH.
_MULTIARCH = str(sysconfig.get_config_var("MULTIARCH") or "")
SYSTEM_LIBRARY_DIRS = frozenset(
    {"/lib", "/lib64", "/usr/lib", "/usr/lib64"}
    | ({f"/lib/{_MULTIARCH}", f"/usr/lib/{_MULTIARCH}"} if _MULTIARCH else set())
)


def python_library_dir(config_var: Callable[[str], object] = sysconfig.get_config_var) -> Path:
    """The folder with the shared libpython of the interpreter this environment was made from.

    A virtual environment reports its base interpreter's build settings, so ``LIBDIR`` is where
    that interpreter's ``libpython3.X.so.1.0`` lives when it was built with ``--enable-shared``.
    Raises ServerError, naming the cause and the ways out, when there is none.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    soname = str(config_var("INSTSONAME") or f"libpython{version}.so.1.0")
    libdir = Path(str(config_var("LIBDIR") or ""))
    shared = bool(config_var("Py_ENABLE_SHARED"))
    if shared and (libdir / soname).is_file():
        return libdir
    if shared:
        cause = f"it reports a shared libpython, but {libdir / soname} does not exist"
    else:
        cause = "it was built without a shared libpython (no --enable-shared)"
    raise ServerError(
        f"the Python this environment was made from ({sys.base_prefix}, Python "
        f"{sys.version.split()[0]}) cannot run the Python backend of the nvidia-pytriton "
        f"tritonserver: {cause}. The backend stub loads libpython{version}.so.1.0 and would pick "
        "up another Python's, whose runtime breaks this environment's compiled modules (ssl, "
        "hashlib, ...). Ways out: make .venv from a Python built with --enable-shared (pyenv: "
        "PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install ...; then rm -rf .venv and run "
        f"PYTHON=/path/to/python{version} ./scripts/setup-venv), or from the system Python "
        f"(PYTHON=/usr/bin/python{version} with the libpython{version} package installed), or "
        "run the NGC Triton container (docker/Dockerfile)"
    )


def locate() -> TritonInstallation:
    """Find ``tritonserver``: on PATH first, then inside the ``nvidia-pytriton`` wheel."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonInstallation(Path(on_path), None, "PATH")
    purelib = Path(sysconfig.get_paths()["purelib"])
    root = purelib / "pytriton" / "tritonserver"
    binary = root / "bin" / "tritonserver"
    if not binary.is_file():
        raise ServerError(
            "no tritonserver found: not on PATH and the nvidia-pytriton wheel is not installed "
            "in this environment (run ./scripts/serve, which installs it)"
        )
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub_src = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    stub_dst = root / "backends" / "python" / "triton_python_backend_stub"
    if not stub_src.is_file():
        raise ServerError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    libdir = python_library_dir()
    if not stub_dst.is_file() or stub_dst.stat().st_size != stub_src.stat().st_size:
        shutil.copy2(stub_src, stub_dst)
    return TritonInstallation(binary, root / "backends", "nvidia-pytriton", libdir)


def server_environment(
    base: dict[str, str] | None = None,
    python_libdir: Path | None = None,
    package_dir: Path | None = None,
) -> dict[str, str]:
    """Environment for the server.

    This interpreter's ``bin/`` goes first on PATH so that the backend stub imports the packages
    of this environment; ``python_libdir`` (see :func:`python_library_dir`) goes first on
    ``LD_LIBRARY_PATH`` so that the stub runs this environment's own Python. ``package_dir`` (the
    ``src/`` of the checkout whose model repository is served, see
    :func:`~qwen3_aligner_triton.repository.package_source`) goes first on ``PYTHONPATH``: the
    stubs import that checkout's ``qwen3_aligner_triton``, not the one the environment's editable
    install points at (the models' ``model.py`` honour it where the stub embeds Python isolated,
    as the nvidia-pytriton wheel's does), followed by the checkout's ``tools/`` where it has one
    (the simulated device of ``simulate_gpu`` is a development tool). ``HF_HUB_OFFLINE=1``:
    the launcher fetches the checkpoint before the server starts; the model never reaches the
    network.
    """
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    venv = Path(sys.prefix)
    if venv != Path(sys.base_prefix):
        env["VIRTUAL_ENV"] = str(venv)
    if python_libdir is not None and str(python_libdir) not in SYSTEM_LIBRARY_DIRS:
        rest = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(python_libdir), *rest])
    if package_dir is not None:
        first = [str(package_dir)]
        tools = Path(package_dir).parent / "tools"  # the checkout's development tools
        if (tools / "qwen3_aligner_tools" / "__init__.py").is_file():
            first.append(str(tools))
        rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([*first, *(p for p in rest if p not in first)])
    env["HF_HUB_OFFLINE"] = "1"
    # The front's and the core's stubs run torch side by side: OpenMP threads that spin while
    # waiting steal the cores the other stubs need (measured: CPU forwards 10-30x slower under
    # load). Waiting threads sleep instead, unless the operator chose otherwise.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env
