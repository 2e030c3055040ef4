"""``./scripts/serve``: run the aligner on a real tritonserver in the foreground.

Settings come from the command line, then from the variables the FastAPI service used
(``MODEL_PATH``, ``DEVICE``, ``MAX_CONCURRENT``) and ``MODEL_REVISION``, then from defaults. A hub
id is downloaded into the Hugging Face cache before the server starts
(:mod:`~qwen3_aligner_triton.hub`), and the model is handed the local folder. ``--asr`` (or
``ASR_MODEL``) adds the ASR model (default ``Qwen/Qwen3-ASR-0.6B``), fetched the same way (at
``--asr-revision`` or ``ASR_MODEL_REVISION``), so that requests may leave out their transcript.
The container's entrypoint plans its launch with the same :func:`plan_launch`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .asr import ASR_CHECKPOINT_ENV, DEFAULT_ASR_CHECKPOINT
from .contract import MODEL_NAME
from .hub import (
    ASR_REVISION_ENV,
    DEFAULT_REVISION,
    REVISION_ENV,
    CheckpointUnavailable,
    describe_source,
    is_hub_id,
    resolve_checkpoint,
)
from .loading import describe_asr_checkpoint
from .openai_front.launch import FrontOptions, FrontProcess
from .params import CHECKPOINT_ENV, DEFAULT_CHECKPOINT, parse_gpu_cost
from .repository import Placement, default_front_instances, render_repository
from .triton_flags import ServerOptions, describe_endpoints
from .triton_install import ServerError, locate
from .tritonserver import STOP_GRACE_SECONDS, RunningServer, start

DEFAULT_READY_TIMEOUT = 900.0  # seconds for the model to load (the download comes before)
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
WAIT_POLL_SECONDS = 0.5
# Values that switch a setting on or off rather than name a checkpoint: given as the ASR
# checkpoint (ASR_MODEL=true) they are refused, naming the default, instead of being fetched as
# hub ids.
SWITCH_WORDS = frozenset({"0", "1", "true", "false", "yes", "no", "on", "off", "default", "none"})


@dataclass(frozen=True)
class LaunchPlan:
    """What one launch will run."""

    checkpoint: str
    placement: Placement
    revision: str | None = None  # of a hub-id checkpoint; None: the Hub's default
    asr: str | None = None  # the ASR checkpoint, folder or hub id; None: no ASR model
    asr_revision: str | None = None  # of a hub-id ASR checkpoint; None: the Hub's default


def cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def plan_asr(
    asr: str | None, asr_revision: str | None, environ: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """The ASR checkpoint and its revision: ``--asr`` and ``--asr-revision``, else ``ASR_MODEL``
    and ``ASR_MODEL_REVISION``; ``(None, None)``: no ASR model. Raises ValueError for a value
    that names no checkpoint (``true``), a path that holds none, the forced aligner's folder, or
    a revision without a hub id to apply it to."""
    checkpoint = asr or environ.get(ASR_CHECKPOINT_ENV, "").strip() or None
    revision = asr_revision or environ.get(ASR_REVISION_ENV, "").strip() or None
    revision_name = "--asr-revision" if asr_revision else ASR_REVISION_ENV
    if checkpoint is None:
        if revision:
            raise ValueError(
                f"{revision_name} is set but no ASR model is: name it with {ASR_CHECKPOINT_ENV} "
                "(./scripts/serve --asr)"
            )
        return None, None
    named = f"--asr {checkpoint!r}" if asr else f"{ASR_CHECKPOINT_ENV}={checkpoint!r}"
    if checkpoint.lower() in SWITCH_WORDS:
        default = (
            "--asr alone"
            if asr
            else f"{ASR_CHECKPOINT_ENV}={DEFAULT_ASR_CHECKPOINT}; empty or unset: no ASR model"
        )
        raise ValueError(
            f"{named} names no checkpoint: give the ASR model's folder or Hub id "
            f"(the default, {DEFAULT_ASR_CHECKPOINT}: {default})"
        )
    try:
        kind = describe_asr_checkpoint(checkpoint)
    except ValueError as e:
        raise ValueError(f"{named}: {e}") from None
    if kind == "folder" and revision:
        raise ValueError(f"{revision_name} applies to hub ids, not to the folder {checkpoint!r}")
    return checkpoint, revision


def plan_launch(
    model: str | None,
    device: str | None,
    instances: int | None,
    environ: Mapping[str, str],
    gpu_count: int,
    *,
    revision: str | None = None,
    asr: str | None = None,
    asr_revision: str | None = None,
) -> LaunchPlan:
    """Resolve options > environment > defaults into a launch plan; raises ValueError.

    ``revision``, ``asr`` and ``asr_revision`` are ``--revision``, ``--asr`` and
    ``--asr-revision`` (:func:`plan_asr`)."""
    checkpoint = model or environ.get(CHECKPOINT_ENV, "").strip() or DEFAULT_CHECKPOINT
    revision = revision or environ.get(REVISION_ENV, "").strip() or None
    asr, asr_revision = plan_asr(asr, asr_revision, environ)
    device = (device or environ.get("DEVICE", "").strip() or "auto").lower()
    raw_count = instances if instances is not None else environ.get("MAX_CONCURRENT", "").strip()
    try:
        count = int(raw_count) if raw_count not in ("", None) else 1
    except ValueError:
        raise ValueError(f"MAX_CONCURRENT must be an integer, got {raw_count!r}") from None
    if count < 1:
        raise ValueError(f"the number of instances must be >= 1, got {count}")

    gpus: tuple[int, ...] = ()
    if device == "auto":
        kind = "KIND_GPU" if gpu_count > 0 else "KIND_CPU"
    elif device == "cpu":
        kind = "KIND_CPU"
    elif device in ("gpu", "cuda") or device.startswith("cuda:"):
        kind = "KIND_GPU"
        if device.startswith("cuda:"):
            try:
                gpus = (int(device.split(":", 1)[1]),)
            except ValueError:
                raise ValueError(f"bad device {device!r}; use cuda:N") from None
        if gpu_count == 0:
            raise ValueError(f"device {device!r} requested but no CUDA GPU is visible")
        if gpus and gpus[0] >= gpu_count:
            raise ValueError(f"device {device!r} requested but only {gpu_count} GPU(s) are visible")
    else:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, gpu, cuda or cuda:N")
    return LaunchPlan(
        checkpoint=checkpoint,
        placement=Placement(kind, count, gpus),
        revision=revision,
        asr=asr,
        asr_revision=asr_revision,
    )


def simulation_banner(cost: str) -> list[str]:
    """The lines that say a simulated-GPU server's results are placeholders."""
    rule = "serve: " + "!" * 72
    return [
        rule,
        f"serve: SIMULATED GPU ({cost} ms per forward pass of n clips): every timestamp this",
        "serve: server returns is a PLACEHOLDER, not an alignment. For benchmarking only.",
        rule,
    ]


class StopOnSignal:
    """SIGINT and SIGTERM stop ``server`` (its front drains first) and the OpenAI-style front
    (``front``, once started): it takes no new uploads and finishes those Triton still answers.
    The handler only signals: the main thread does the waiting (Popen.wait is not reentrant).
    ``message`` is printed once, with ``{signal}`` replaced by the signal's name."""

    def __init__(self, server: Any, message: str) -> None:
        self.server = server
        self.front: Any = None
        self.message = message
        self.stopping = threading.Event()
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if not self.stopping.is_set():
            line = self.message.format(signal=signal.Signals(signum).name)
            os.write(1, f"{line}\n".encode())
        self.stopping.set()
        self.server.request_stop()
        if self.front is not None:
            self.front.request_stop()


def wait_for_exit(
    server: RunningServer, stopping: threading.Event, front: FrontProcess | None = None
) -> int:
    """Wait for tritonserver to exit for good (a watchdog restart is not an exit); after a stop
    request, kill it if it overstays its grace. When the OpenAI-style ``front`` exits by itself,
    the server is stopped too (a supervisor restarts the pair) and the front's status returned
    (``front.exited_early`` says so). The front is stopped before this returns, however it ends."""
    try:
        return _wait_for_server(server, stopping, front)
    finally:
        if front is not None:
            front.stop()


def _wait_for_server(
    server: RunningServer, stopping: threading.Event, front: FrontProcess | None
) -> int:
    stop_requested_at: float | None = None
    front_failed: int | None = None
    while True:
        code = server.wait(timeout=WAIT_POLL_SECONDS)
        if code is not None:
            break
        if front is not None and front_failed is None and not stopping.is_set():
            front_failed = front.exited()
            if front_failed is not None:
                front.exited_early = True
                print(
                    f"serve: the OpenAI-style front exited with status {front_failed}; "
                    "stopping tritonserver",
                    file=sys.stderr,
                    flush=True,
                )
                stopping.set()
                server.request_stop()
        if stopping.is_set():
            stop_requested_at = stop_requested_at or time.monotonic()
            if time.monotonic() - stop_requested_at > STOP_GRACE_SECONDS:
                print("serve: tritonserver did not stop in time; killing it", flush=True)
                server.process.kill()
    server.stop()  # reaps and cleans shared memory left by a killed stub
    if front_failed is not None:
        return front_failed if front_failed > 0 else EXIT_FAILED  # killed by a signal: < 0
    return code


def fetch_for_launch(who: str, checkpoint: str, revision: str | None) -> str:
    """The folder to hand the model: ``checkpoint`` itself, or a hub id's downloaded snapshot."""
    if is_hub_id(checkpoint):
        print(f"{who}: {describe_source(checkpoint, revision)}", flush=True)
    folder = resolve_checkpoint(checkpoint, revision)
    if folder != checkpoint:
        print(f"{who}: {checkpoint} is in {folder}", flush=True)
    return folder


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/serve",
        description="Serve Qwen3-ForcedAligner (model 'qwen3_aligner') on a real tritonserver.",
    )
    p.add_argument(
        "--model",
        help=f"checkpoint: hub id or folder (env {CHECKPOINT_ENV}; default {DEFAULT_CHECKPOINT})",
    )
    p.add_argument(
        "--revision",
        help=(
            f"Hub branch, tag or commit of a hub-id checkpoint (env {REVISION_ENV}; default "
            f"{DEFAULT_REVISION}); pin a full commit in production"
        ),
    )
    p.add_argument(
        "--asr",
        nargs="?",
        const=DEFAULT_ASR_CHECKPOINT,
        metavar="PATH_OR_ID",
        help=f"also load Qwen3-ASR (hub id or folder; default %(const)s; env "
        f"{ASR_CHECKPOINT_ENV}), so that requests may leave out TEXT and LANGUAGE: they are "
        "transcribed, then aligned",
    )
    p.add_argument(
        "--asr-revision",
        metavar="REV",
        help=(
            f"Hub branch, tag or commit of a hub-id ASR checkpoint (env {ASR_REVISION_ENV}; "
            f"default {DEFAULT_REVISION})"
        ),
    )
    p.add_argument("--device", help="auto, cpu, gpu, cuda or cuda:N (env DEVICE; default auto)")
    p.add_argument(
        "--instances",
        type=int,
        help="forward instances per GPU (on CPU: in total), i.e. forward passes run at once "
        "(env MAX_CONCURRENT; default 1)",
    )
    p.add_argument(
        "--front-instances",
        type=int,
        help="CPU instances of the public model that prepare requests and build results "
        f"(default: two per CPU core, 2..8; here {default_front_instances()})",
    )
    p.add_argument(
        "--simulate-gpu",
        metavar="A+Bn",
        help="benchmarking only: replace the forward by one machine-wide simulated device held "
        "A + B*n ms per pass of n clips (e.g. 25+8.1n); results are PLACEHOLDERS",
    )
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--address", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    p.add_argument(
        "--openai-port",
        type=int,
        metavar="N",
        help="also serve the OpenAI-style HTTP front on port N (POST /v1/audio/alignments, "
        "GET /v1/models; docs/openai.md)",
    )
    p.add_argument(
        "--openai-api-key-file",
        type=Path,
        metavar="PATH",
        help="the bearer key the OpenAI-style front asks for, in a file (or env "
        "ALIGNER_OPENAI_API_KEY; default: no key)",
    )
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=DEFAULT_READY_TIMEOUT,
        help="seconds to wait for the model to be ready (default %(default)s)",
    )
    p.add_argument("--log-verbose", type=int, default=0)
    p.add_argument(
        "--repository-dir",
        type=Path,
        help="where to write the rendered model repository (default: a temp folder)",
    )
    p.add_argument(
        "triton_args", nargs=argparse.REMAINDER, help="after --: extra tritonserver arguments"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        plan = plan_launch(
            args.model,
            args.device,
            args.instances,
            os.environ,
            cuda_device_count(),
            revision=args.revision,
            asr=args.asr,
            asr_revision=args.asr_revision,
        )
        if args.simulate_gpu:
            parse_gpu_cost(args.simulate_gpu)
        if args.front_instances is not None and args.front_instances < 1:
            raise ValueError(f"--front-instances must be >= 1, got {args.front_instances}")
        if args.openai_api_key_file is not None and args.openai_port is None:
            raise ValueError("--openai-api-key-file needs --openai-port")
        if args.openai_api_key_file is not None and not args.openai_api_key_file.is_file():
            raise ValueError(f"--openai-api-key-file: no file {args.openai_api_key_file}")
        if args.openai_port is not None:
            FrontOptions(args.openai_port, "")  # checks the port
        install = locate()
    except (ValueError, ServerError) as e:
        print(f"serve: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        folder = fetch_for_launch("serve", plan.checkpoint, plan.revision)
        # --revision pins the aligner, --asr-revision the ASR model.
        asr_folder = fetch_for_launch("serve", plan.asr, plan.asr_revision) if plan.asr else None
    except (ValueError, CheckpointUnavailable) as e:
        print(f"serve: error: {e}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("serve: download interrupted; run again to resume it", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    extra = tuple(a for a in args.triton_args if a != "--")
    with tempfile.TemporaryDirectory(prefix="qwen3-aligner-repo-") as tmp:
        parameters = {"checkpoint": folder}
        if args.simulate_gpu:
            parameters["simulate_gpu"] = args.simulate_gpu
            for line in simulation_banner(args.simulate_gpu):
                print(line, flush=True)
        try:
            repo = render_repository(
                args.repository_dir or Path(tmp) / "model_repository",
                plan.placement,
                parameters,
                front_instances=args.front_instances,
                asr={"checkpoint": asr_folder} if asr_folder else None,
            )
        except ValueError as e:
            print(f"serve: error: {e}", file=sys.stderr, flush=True)
            return EXIT_USAGE
        opts = ServerOptions(
            model_repository=repo,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            address=args.address,
            gpu=plan.placement.kind == "KIND_GPU",
            log_verbose=args.log_verbose,
            extra_args=extra,
        )
        where = "GPU" if opts.gpu else "CPU"
        print(f"serve: tritonserver from {install.source} ({install.binary})", flush=True)
        fronts = args.front_instances or default_front_instances()
        print(
            f"serve: loading {plan.checkpoint}: forward on {where} x{plan.placement.count}, "
            f"{fronts} front instance(s) on CPU"
            + (f", ASR {plan.asr} on {where}" if plan.asr else ""),
            flush=True,
        )
        server = start(opts, install, echo=lambda line: print(line, flush=True))
        stopper = StopOnSignal(server, "serve: {signal}: stopping tritonserver")
        stopping = stopper.stopping
        front: FrontProcess | None = None
        try:
            waited = server.wait_ready(args.ready_timeout)
        except ServerError as e:
            server.stop()
            if stopping.is_set():
                return EXIT_OK
            print(
                f"serve: error: model {MODEL_NAME} is not being served: {e}",
                file=sys.stderr,
                flush=True,
            )
            return EXIT_FAILED
        print(f"serve: ready in {waited:.1f} s", flush=True)
        if args.simulate_gpu:
            print(simulation_banner(args.simulate_gpu)[1], flush=True)
        if args.openai_port is not None and not stopping.is_set():
            front = FrontProcess.start(
                FrontOptions(
                    port=args.openai_port,
                    triton_url=f"{server.host}:{opts.grpc_port}",
                    host=args.address,
                    api_key_file=args.openai_api_key_file,
                    model_names=(plan.checkpoint,) if is_hub_id(plan.checkpoint) else (),
                )
            )
            stopper.front = front
        for line in describe_endpoints(server.host, opts):
            print(f"serve: {line}", flush=True)
        if front is not None:
            print(f"serve: {front.describe(server.host)}", flush=True)
        code = wait_for_exit(server, stopping, front)
        if front is not None and front.exited_early:
            return code
        if stopping.is_set():
            print("serve: stopped", flush=True)
            return EXIT_OK
        print(f"serve: error: tritonserver exited with code {code}", file=sys.stderr, flush=True)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
