"""Installing and driving NVIDIA's ``perf_analyzer`` (the real one) without touching the system.

Where it comes from, in order:

1. ``$PERF_ANALYZER``, or a ``perf_analyzer`` on PATH that runs (the NGC SDK container
   ``nvcr.io/nvidia/tritonserver:<yy.mm>-py3-sdk`` ships one).
2. The PyPI wheel ``perf-analyzer==2.60.0``, unpacked into a cache folder. Its binary needs
   glibc >= 2.38 and libstdc++ from GCC 13+. On older systems (Debian 12 has glibc 2.36) the
   Debian 13 (trixie) ``libc6``, ``libstdc++6`` and ``libgcc-s1`` packages are fetched with
   ``apt-get download`` through a private apt configuration (own lists and caches, nothing
   installed), unpacked with ``dpkg -x`` into a private sysroot, and the binary is started
   through that sysroot's dynamic loader with ``--library-path``.

Everything lands under ``<cache>/perf_analyzer`` and is reused; a lock file serialises concurrent
installs (two test runs at once), and every download has a timeout.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import fcntl
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .checkpoints import cache_root
from .workload import SAMPLE_RATE, Clip

PERF_ANALYZER_VERSION = "2.60.0"
WHEEL_PLATFORM = "manylinux_2_38_x86_64"  # every real release of the wheel is tagged this way
REQUIRED_GLIBC = (2, 38)
SYSROOT_SUITE = "trixie"  # Debian 13: glibc 2.41, libstdc++ of GCC 14
SYSROOT_PACKAGES = ("libc6", "libstdc++6", "libgcc-s1")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
MULTIARCH_LIB = "usr/lib/x86_64-linux-gnu"
SYSTEM_LIB = "/lib/x86_64-linux-gnu"  # zlib, OpenSSL 3 and the rest come from the host
STEP_TIMEOUT_SECONDS = 300.0  # each download / unpack step
COMPLETE_MARKER = ".complete"
SDK_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3-sdk"


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer could not be installed or started."""


@dataclass(frozen=True)
class PerfAnalyzer:
    """How to start perf_analyzer on this machine."""

    prefix: tuple[str, ...]  # argv before perf_analyzer's own arguments
    source: str  # "env", "PATH", "wheel" or "wheel+sysroot"

    def command(self, args: Sequence[str]) -> list[str]:
        """The full argv that runs perf_analyzer with ``args``."""
        return [*self.prefix, *args]

    def version(self, timeout: float = 30.0) -> str:
        """``perf_analyzer --version`` output (the wheel build says 0.0.0); raises if it fails."""
        proc = subprocess.run(
            self.command(["--version"]), capture_output=True, text=True, timeout=timeout
        )
        text = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0 or "Version" not in text:
            raise PerfAnalyzerError(
                f"perf_analyzer ({self.source}) does not start: exit {proc.returncode}: {text}"
            )
        return text


def glibc_version() -> tuple[int, int]:
    """The C library version of this process (0, 0 if it is not glibc)."""
    try:
        name = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return (0, 0)
    match = re.search(r"(\d+)\.(\d+)", name)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _run(cmd: Sequence[str], what: str, timeout: float = STEP_TIMEOUT_SECONDS, **kw) -> str:
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, check=False, **kw
        )
    except FileNotFoundError as e:
        raise PerfAnalyzerError(f"{what}: {cmd[0]} is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise PerfAnalyzerError(f"{what}: no result after {timeout:.0f} s") from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise PerfAnalyzerError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _install_once(target: Path, build) -> Path:
    """Build ``target`` with ``build(tmp_dir)`` unless complete; atomic via rename."""
    if (target / COMPLETE_MARKER).is_file():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
    try:
        build(tmp)
        (tmp / COMPLETE_MARKER).write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def install_wheel(folder: Path) -> Path:
    """Unpack the perf-analyzer wheel into ``folder``/wheel-<version>; returns the binary."""

    def build(tmp: Path) -> None:
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
                "--platform",
                WHEEL_PLATFORM,
                "--target",
                str(tmp),
                f"perf-analyzer=={PERF_ANALYZER_VERSION}",
            ],
            f"downloading perf-analyzer=={PERF_ANALYZER_VERSION} from the package index",
        )

    target = _install_once(folder / f"wheel-{PERF_ANALYZER_VERSION}", build)
    binary = target / "perf_analyzer" / "bin" / "perf_analyzer"
    if not binary.is_file():
        raise PerfAnalyzerError(f"the perf-analyzer wheel has no binary at {binary}")
    return binary


def debian_mirror(sources: Sequence[Path] | None = None) -> str:
    """The Debian mirror this machine's apt already uses (default deb.debian.org)."""
    if sources is None:
        sources = [
            Path("/etc/apt/sources.list"),
            *sorted(Path("/etc/apt/sources.list.d").glob("*")),
        ]
    pattern = re.compile(r"(https?://\S+?/debian)/?(\s|$)")
    for path in sources:
        if not path.is_file() or path.name.endswith(("disabled", ".save")):
            continue
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                if line.lstrip().startswith("#"):
                    continue
                match = pattern.search(line)
                if match:
                    return match.group(1)
    return DEFAULT_MIRROR


def install_sysroot(folder: Path, mirror: str | None = None) -> Path:
    """Debian trixie's libc6, libstdc++6 and libgcc-s1 unpacked into a private folder."""

    def build(tmp: Path) -> None:
        apt = tmp / "apt"
        for sub in ("lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
            (apt / sub).mkdir(parents=True, exist_ok=True)
        keyring = f"[signed-by={DEBIAN_KEYRING}] " if DEBIAN_KEYRING.is_file() else ""
        (apt / "sources.list").write_text(
            f"deb {keyring}{mirror or debian_mirror()} {SYSROOT_SUITE} main\n"
        )
        (apt / "status").write_text("")
        options = [
            f"-oDir::Etc::SourceList={apt / 'sources.list'}",
            f"-oDir::Etc::SourceParts={apt / 'sources.list.d'}",
            f"-oDir::Etc::Preferences={apt / 'preferences'}",
            f"-oDir::Etc::PreferencesParts={apt / 'preferences.d'}",
            f"-oDir::State::Lists={apt / 'lists'}",
            f"-oDir::State::status={apt / 'status'}",
            f"-oDir::Cache={apt / 'cache'}",
            "-oAcquire::Languages=none",
            "-oAPT::Architecture=amd64",
            "-oAPT::Architectures=amd64",
            "-oAPT::Sandbox::User=root" if os.geteuid() == 0 else "-oAPT::Sandbox::User=_apt",
            "-oDebug::NoLocking=1",
            "-qq",
        ]
        _run(["apt-get", *options, "update"], f"apt-get update for Debian {SYSROOT_SUITE}")
        debs = tmp / "debs"
        debs.mkdir()
        _run(
            ["apt-get", *options, "download", *SYSROOT_PACKAGES],
            f"apt-get download {' '.join(SYSROOT_PACKAGES)} ({SYSROOT_SUITE})",
            cwd=debs,
        )
        root = tmp / "root"
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg", "-x", str(deb), str(root)], f"unpacking {deb.name}")
        shutil.rmtree(apt, ignore_errors=True)  # ~20 MB of package lists, not needed any more
        if not (root / MULTIARCH_LIB / "ld-linux-x86-64.so.2").is_file():
            raise PerfAnalyzerError(f"the unpacked {SYSROOT_SUITE} libc6 has no dynamic loader")

    return _install_once(folder / f"sysroot-{SYSROOT_SUITE}", build) / "root"


def locate(cache: Path | None = None, install: bool = True) -> PerfAnalyzer:
    """A perf_analyzer that starts on this machine, installing the wheel (+ sysroot) if needed."""
    given = os.environ.get("PERF_ANALYZER")
    if given:
        return PerfAnalyzer((given,), "env")
    on_path = shutil.which("perf_analyzer")
    if on_path:
        candidate = PerfAnalyzer((on_path,), "PATH")
        with contextlib.suppress(PerfAnalyzerError, OSError, subprocess.TimeoutExpired):
            candidate.version()
            return candidate
    folder = (cache or cache_root()) / "perf_analyzer"
    if not install and not (folder / f"wheel-{PERF_ANALYZER_VERSION}" / COMPLETE_MARKER).is_file():
        raise PerfAnalyzerError("perf_analyzer is not installed (run ./scripts/perf once)")
    with _locked(folder):
        binary = install_wheel(folder)
        if glibc_version() >= REQUIRED_GLIBC:
            found = PerfAnalyzer((str(binary),), "wheel")
        else:
            libs = install_sysroot(folder) / MULTIARCH_LIB
            found = PerfAnalyzer(
                (
                    str(libs / "ld-linux-x86-64.so.2"),
                    "--library-path",
                    f"{libs}:{SYSTEM_LIB}",
                    str(binary),
                ),
                "wheel+sysroot",
            )
    found.version()
    return found


# --- input data -----------------------------------------------------------------------------


def input_data(clips: Sequence[Clip]) -> dict:
    """perf_analyzer ``--input-data`` document: one entry per request, round-robin.

    Shapes exclude the batch dimension (perf_analyzer adds it with ``-b 1``). FP32 content must be
    JSON floats (``0.0``, never ``0``: perf_analyzer rejects integers for FP32), BYTES content is
    a list of strings, INT32 content a list of integers.
    """
    entries = []
    for clip in clips:
        samples = [float(v) for v in clip.audio.astype("float64").round(6).tolist()]
        entries.append(
            {
                "AUDIO": {"content": samples, "shape": [len(samples)]},
                "SAMPLE_RATE": {"content": [SAMPLE_RATE], "shape": [1]},
                "TEXT": {"content": [clip.text], "shape": [1]},
                "LANGUAGE": {"content": [clip.language], "shape": [1]},
            }
        )
    return {"data": entries}


@dataclass(frozen=True)
class FileClip:
    """One request of real audio: the bytes of an audio file (sent as ``AUDIO_FILE``), its
    transcript and language."""

    name: str
    data: bytes
    seconds: float  # what the file's header announces
    text: str
    language: str


def bytes_element(data: bytes) -> dict[str, str]:
    """One BYTES element as perf_analyzer's ``{"b64": ...}``.

    perf_analyzer puts the decoded bytes on the wire as the tensor's raw content, and Triton's
    raw content of a BYTES tensor is each element's length (4 bytes, little-endian) followed by
    its bytes: the length goes in front of the file here."""
    return {"b64": base64.b64encode(struct.pack("<I", len(data)) + data).decode("ascii")}


def file_input_data(clips: Sequence[FileClip]) -> dict:
    """perf_analyzer ``--input-data`` document whose requests carry ``AUDIO_FILE`` (no ``AUDIO``
    and no ``SAMPLE_RATE``: the server decodes each file at its own rate)."""
    entries = [
        {
            "AUDIO_FILE": bytes_element(clip.data),
            "TEXT": {"content": [clip.text], "shape": [1]},
            "LANGUAGE": {"content": [clip.language], "shape": [1]},
        }
        for clip in clips
    ]
    return {"data": entries}


def write_input_data(clips: Sequence[Clip] | Sequence[FileClip], path: Path) -> Path:
    """Write :func:`input_data` (or :func:`file_input_data` for :class:`FileClip` s) to ``path``
    (UTF-8 JSON; Python writes every float with a '.' or an exponent, which perf_analyzer reads
    as a float)."""
    if clips and isinstance(clips[0], FileClip):
        document = file_input_data([c for c in clips if isinstance(c, FileClip)])
    else:
        document = input_data([c for c in clips if isinstance(c, Clip)])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, ensure_ascii=False, separators=(",", ":"))
    return path


# --- running --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PerfSettings:
    """One perf_analyzer sweep."""

    url: str  # host:port
    protocol: str = "http"  # "http" or "grpc"
    concurrency_range: str = "1:4"  # start:end[:step]
    measurement_interval_ms: int = 5000
    measurement_mode: str = "time_windows"  # or "count_windows"
    measurement_request_count: int = 10  # per window in count_windows mode
    stability_percentage: float = 10.0
    max_trials: int = 10
    # > 0: exactly this many requests at the (single) concurrency, no search for stable windows
    # (perf_analyzer allows it with one concurrency value only).
    request_count: int = 0
    extra_args: tuple[str, ...] = ()


def perf_arguments(settings: PerfSettings, data_file: Path, csv_file: Path) -> list[str]:
    """perf_analyzer's own arguments (the part that is the same in the SDK container)."""
    args = [
        "-m",
        "qwen3_aligner",
        "-u",
        settings.url,
        "-i",
        settings.protocol,
        "-b",
        "1",
        "--input-data",
        str(data_file),
        "--concurrency-range",
        settings.concurrency_range,
        "--measurement-interval",
        str(settings.measurement_interval_ms),
        "--measurement-mode",
        settings.measurement_mode,
        "--stability-percentage",
        f"{settings.stability_percentage:g}",
        "--max-trials",
        str(settings.max_trials),
        "-f",
        str(csv_file),
    ]
    if settings.measurement_mode == "count_windows":
        args += ["--measurement-request-count", str(settings.measurement_request_count)]
    if settings.request_count > 0:
        args += ["--request-count", str(settings.request_count)]
    return args + list(settings.extra_args)


@dataclass
class PerfResult:
    """What a perf_analyzer run produced."""

    returncode: int
    output: str
    rows: list[dict[str, str]]  # the CSV, one row per concurrency
    errors: list[str]  # error lines found in the output

    @property
    def ok(self) -> bool:
        """perf_analyzer exited 0, printed no error and wrote at least one CSV row."""
        return self.returncode == 0 and not self.errors and bool(self.rows)


ERROR_PATTERNS = re.compile(r"(error|failed|unable to|invalid|exception)", flags=re.IGNORECASE)
# Lines that contain those words but are not errors of the run.
BENIGN_PATTERNS = re.compile(r"^\s*(Client|Server|Avg|p\d\d|Request|Inferences)\b")


def find_errors(output: str) -> list[str]:
    """Lines of perf_analyzer output that report a failure (thread errors, bad input data,
    unstable measurements, refused connections)."""
    return [
        line.strip()
        for line in output.splitlines()
        if ERROR_PATTERNS.search(line) and not BENIGN_PATTERNS.match(line)
    ]


def run(
    analyzer: PerfAnalyzer,
    settings: PerfSettings,
    data_file: Path,
    csv_file: Path,
    timeout: float,
    echo=None,
) -> PerfResult:
    """Run one sweep; never raises for perf_analyzer's own failures (see :attr:`PerfResult.ok`)."""
    cmd = analyzer.command(perf_arguments(settings, data_file, csv_file))
    lines: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    ) as proc:
        assert proc.stdout is not None
        try:
            for line in _read_lines(proc, timeout):
                lines.append(line)
                if echo is not None:
                    echo(line)
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            lines.append(f"perf_analyzer error: no result within {timeout:.0f} s; killed")
            code = -9
    output = "\n".join(lines)
    rows: list[dict[str, str]] = []
    if csv_file.is_file():
        with open(csv_file, newline="") as handle:
            rows = list(csv.DictReader(handle))
    return PerfResult(code, output, rows, find_errors(output))


def _read_lines(proc: subprocess.Popen, timeout: float) -> Iterator[str]:
    import threading

    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            yield line.rstrip("\n")
    finally:
        expired = not timer.is_alive()
        timer.cancel()
    if expired:
        raise subprocess.TimeoutExpired(proc.args, timeout)


def sdk_command(settings: PerfSettings, data_file: Path) -> str:
    """The same sweep in NVIDIA's SDK container, with ``data_file``'s folder mounted at /data."""
    args = perf_arguments(settings, Path("/data") / data_file.name, Path("/data/perf.csv"))
    folder = shlex.quote(str(data_file.parent.resolve()))
    return (
        f"docker run --rm --net=host -v {folder}:/data {SDK_IMAGE} \\\n  perf_analyzer "
        + " ".join(shlex.quote(a) for a in args)
    )
