"""Running the OpenAI-style front beside tritonserver (``./scripts/serve``, the container)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

STOP_GRACE_SECONDS = 35.0  # uvicorn's graceful shutdown (30 s) and a little more


@dataclass(frozen=True)
class FrontOptions:
    """Where the front listens and which Triton it talks to."""

    port: int
    triton_url: str  # Triton's gRPC host:port
    host: str = "0.0.0.0"
    api_key_file: Path | None = None
    model_names: tuple[str, ...] = ()  # ids /v1/models lists besides qwen3_aligner

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"the OpenAI-style front's port must be 1..65535, got {self.port}")


def front_command(opts: FrontOptions, python: str = sys.executable) -> list[str]:
    """The command that runs the front with ``opts``."""
    command = [
        python, "-m", "qwen3_aligner_triton.openai_front",
        "--host", opts.host,
        "--port", str(opts.port),
        "--triton-url", opts.triton_url,
    ]  # fmt: skip
    if opts.api_key_file is not None:
        command += ["--api-key-file", str(opts.api_key_file)]
    for name in opts.model_names:
        command += ["--served-model-name", name]
    return command


class FrontProcess:
    """The front's process: started by :meth:`start`, polled while the server runs, stopped with
    it."""

    def __init__(self, process: subprocess.Popen, opts: FrontOptions) -> None:
        self.process = process
        self.opts = opts
        self.exited_early = False  # set by the supervisor when the front exited by itself

    @classmethod
    def start(
        cls, opts: FrontOptions, env: Mapping[str, str] | None = None, extra: Sequence[str] = ()
    ) -> FrontProcess:
        process = subprocess.Popen(
            [*front_command(opts), *extra], env=None if env is None else dict(env)
        )
        return cls(process, opts)

    def exited(self) -> int | None:
        """The exit status once the front has exited, else None."""
        return self.process.poll()

    def request_stop(self) -> None:
        """Ask the front to stop (SIGTERM) without waiting: it refuses new connections and
        finishes the requests it holds. Safe in a signal handler."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int:
        """Stop the front (SIGTERM: uvicorn finishes the requests it holds), killing it after
        ``grace`` seconds; returns its exit status, 0 for a clean stop.

        uvicorn raises the signal it stopped on again once it has shut down, so a clean stop
        ends as if by SIGTERM; that is reported as 0.
        """
        if self.process.poll() is not None:
            code = self.process.returncode
            return 0 if code == -signal.SIGTERM and not self.exited_early else code
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        return 0 if code == -signal.SIGTERM else code

    def describe(self, host: str) -> str:
        return (
            f"OpenAI-style front: http://{host}:{self.opts.port}/v1 "
            "(POST /v1/audio/alignments, GET /v1/models; ready: /health/ready)"
        )
