"""A real ``./scripts/serve`` started by a test as a user starts it, its output read line by line
(tests/operations/test_serve.py, tests/operations/test_first_run.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import requests

from qwen3_aligner_triton.triton_flags import free_ports

ROOT = Path(__file__).resolve().parents[1]


class ServeLaunch:
    """``./scripts/serve --device cpu`` on loopback with free ports, plus ``args``, in a session
    of its own; ``timeout`` bounds each wait for a line of its output."""

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300.0
    ) -> None:
        self.http, grpc, metrics = free_ports(3)
        self.timeout = timeout
        cmd = [
            str(ROOT / "scripts" / "serve"),
            "--device", "cpu",
            "--address=127.0.0.1",
            f"--http-port={self.http}",
            f"--grpc-port={grpc}",
            f"--metrics-port={metrics}",
            *args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
            start_new_session=True,
        )  # fmt: skip
        self.lines: list[str] = []

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def until(self, marker: str) -> str:
        """Read lines until one holds ``marker``, the output ends or the timeout passes; returns
        everything read so far."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if marker in line:
                break
        return self.output

    def read_until(self, marker: str) -> None:
        """:meth:`until`, failing the test when no line holds ``marker``."""
        self.until(marker)
        if not self.lines or marker not in self.lines[-1]:
            raise AssertionError(f"no {marker!r} in the launcher's output:\n{self.output[-3000:]}")

    def tritonserver(self) -> int:
        (pid,) = children_named(self.proc.pid, b"tritonserver")
        return pid

    def ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.http}/v2/health/ready"
            return requests.get(url, timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    def finish(self, timeout: float = 90) -> str:
        """The rest of the output once the launcher has exited by itself."""
        rest, _ = self.proc.communicate(timeout=timeout)
        self.lines.append(rest)
        return rest

    def stop(self) -> str:
        """Ctrl-C, as a user stops it (killed if it does not exit); returns the whole output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            rest, _ = self.proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            rest, _ = self.proc.communicate()
        self.lines.append(rest)
        return self.output

    def close(self) -> None:
        """Kill whatever is left (tritonserver runs in a session of its own) when a test fails."""
        if self.proc.poll() is None:
            for pid in children_named(self.proc.pid, b"tritonserver"):
                os.kill(pid, signal.SIGKILL)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def children_named(parent: int, name: bytes) -> list[int]:
    """PIDs of the direct children of ``parent`` whose executable is called ``name``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            exe = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if exe.endswith(b"/" + name) and f"\nPPid:\t{parent}\n" in status:
            found.append(int(entry.name))
    return found
