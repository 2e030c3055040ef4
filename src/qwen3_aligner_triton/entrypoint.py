"""The container's entrypoint: environment -> rendered model repository -> supervised tritonserver.

``MODEL_PATH``, ``DEVICE``, ``MAX_CONCURRENT``, ``MODEL_REVISION``, ``ASR_MODEL`` and
``ASR_MODEL_REVISION`` are resolved exactly as ``./scripts/serve`` resolves them
(:func:`~qwen3_aligner_triton.serve.plan_launch`). When ``MODEL_PATH`` is unset and a checkpoint was
baked into the image at build time, that checkpoint is served. ``ASR_MODEL`` (a folder or a hub id,
as ``./scripts/serve --asr PATH_OR_ID``; unset or empty: none) adds the ASR model ``qwen3_asr``, so
that requests may leave out their transcript. The repository that ships in the image is rendered
into a writable folder, and ``tritonserver`` is started on it the way ``./scripts/serve`` starts
it (:func:`~qwen3_aligner_triton.triton_flags.build_command`: the admin API groups closed, and the
watchdog that restarts tritonserver when a backend stub dies), followed by the container's own
arguments (the image's ``CMD`` or Kubernetes ``args``; tritonserver keeps a flag's last value).
On SIGTERM the front first finishes the requests it holds and then refuses new ones with
UNAVAILABLE (``RunningServer.request_stop``); then tritonserver gets SIGTERM, unloads the models
and exits 0 (while clients keep HTTP connections open it first waits for them, up to
``--exit-timeout-secs``, and then exits 1: docs/operations.md); the entrypoint exits with the
server's status. A hub-id checkpoint is downloaded into ``$HF_HOME`` (at ``MODEL_REVISION`` when
set; the ASR model's at ``ASR_MODEL_REVISION``) before the server starts, as ``./scripts/serve``
does. tritonserver opens its ports only once every model of the repository has loaded, so its
readiness covers the ASR model too.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .contract import ASR_MODEL_NAME
from .hub import CheckpointUnavailable, is_hub_id
from .openai_front.launch import FrontOptions, FrontProcess
from .params import CHECKPOINT_ENV
from .repository import SOURCE_REPOSITORY, Placement, render_repository
from .serve import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    StopOnSignal,
    cuda_device_count,
    fetch_for_launch,
    plan_launch,
    wait_for_exit,
)
from .triton_flags import ServerOptions
from .triton_install import ServerError, locate
from .tritonserver import MODELS, start

TEMPLATE_ENV = "ALIGNER_REPOSITORY_TEMPLATE"  # the model repository as shipped (read-only is fine)
RENDERED_ENV = "ALIGNER_REPOSITORY_DIR"  # where the rendered repository is written
BAKED_CHECKPOINT_ENV = "ALIGNER_BAKED_CHECKPOINT"  # checkpoint folder baked in at build time
OPENAI_PORT_ENV = "OPENAI_PORT"  # set: the OpenAI-style front runs beside tritonserver on it
OPENAI_KEY_FILE_ENV = "OPENAI_API_KEY_FILE"  # the front's bearer key, in a file (a mounted secret)
DEFAULT_RENDERED = Path(tempfile.gettempdir()) / "qwen3-aligner" / "model_repository"
# Set by the entrypoint: the repository it renders, and the model control mode "none" (every model
# of the repository loaded at start, nothing loadable through the API).
OWNED_FLAGS = ("--model-repository", "--model-store", "--model-control-mode", "--load-model")
PORT_FLAGS = {
    "--http-port": "http_port",
    "--grpc-port": "grpc_port",
    "--metrics-port": "metrics_port",
}


@dataclass(frozen=True)
class ContainerPlan:
    """What the container will serve, and from where."""

    checkpoint: str
    placement: Placement
    template: Path
    repository: Path
    openai_port: int | None = None
    openai_key_file: Path | None = None
    revision: str | None = None  # of a hub-id checkpoint (MODEL_REVISION)
    asr: str | None = None  # the ASR checkpoint (ASR_MODEL); None: no ASR model
    asr_revision: str | None = None  # of a hub-id ASR checkpoint (ASR_MODEL_REVISION)


def plan_container(environ: Mapping[str, str], gpu_count: int) -> ContainerPlan:
    """Resolve the container's environment into a plan; raises ValueError on a bad setting."""
    env = dict(environ)
    baked = env.get(BAKED_CHECKPOINT_ENV, "").strip()
    if not env.get(CHECKPOINT_ENV, "").strip() and baked and Path(baked, "config.json").is_file():
        env[CHECKPOINT_ENV] = baked
    launch = plan_launch(None, None, None, env, gpu_count)
    template = Path(env.get(TEMPLATE_ENV, "").strip() or SOURCE_REPOSITORY)
    for model in (*MODELS, ASR_MODEL_NAME) if launch.asr else MODELS:
        if not (template / model / "config.pbtxt").is_file():
            raise ValueError(f"{TEMPLATE_ENV}={template} holds no {model}/config.pbtxt")
    repository = Path(env.get(RENDERED_ENV, "").strip() or DEFAULT_RENDERED)
    port = env.get(OPENAI_PORT_ENV, "").strip()
    if port and not (port.isascii() and port.isdecimal() and 0 < int(port) < 65536):
        raise ValueError(f"{OPENAI_PORT_ENV}={port!r}: give a port number, 1..65535")
    key_file = env.get(OPENAI_KEY_FILE_ENV, "").strip()
    if key_file and not port:
        raise ValueError(f"{OPENAI_KEY_FILE_ENV} is set but {OPENAI_PORT_ENV} is not")
    if key_file and not Path(key_file).is_file():
        raise ValueError(f"{OPENAI_KEY_FILE_ENV}={key_file}: no such file")
    return ContainerPlan(
        launch.checkpoint,
        launch.placement,
        template,
        repository,
        openai_port=int(port) if port else None,
        openai_key_file=Path(key_file) if key_file else None,
        revision=launch.revision,
        asr=launch.asr,
        asr_revision=launch.asr_revision,
    )


def server_options(plan: ContainerPlan, args: Sequence[str]) -> ServerOptions:
    """Options for :func:`~qwen3_aligner_triton.tritonserver.start`; ``args`` go last, as given.

    The ports are read from ``args`` too (and checked); the watchdog polls the address and port
    that the final command line gives. Raises ValueError if ``args`` set what the entrypoint sets
    itself.
    """
    ports: dict[str, int] = {}
    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag in OWNED_FLAGS:
            raise ValueError(f"{arg!r}: the entrypoint sets {flag} itself")
        if flag in PORT_FLAGS:
            if not eq or not value.isdigit():
                raise ValueError(f"{arg!r}: give the port as {flag}=NUMBER")
            ports[PORT_FLAGS[flag]] = int(value)
    return ServerOptions(
        model_repository=plan.repository,
        gpu=plan.placement.kind == "KIND_GPU",
        extra_args=tuple(args),
        **ports,
    )


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Render the repository, run tritonserver until it exits; returns its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    try:
        plan = plan_container(environ, cuda_device_count())
        opts = server_options(plan, args)
        install = locate()
    except (ValueError, ServerError) as e:
        print(f"entrypoint: error: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    try:
        folder = fetch_for_launch("entrypoint", plan.checkpoint, plan.revision)
        asr_folder = (
            fetch_for_launch("entrypoint", plan.asr, plan.asr_revision) if plan.asr else None
        )
    except (ValueError, CheckpointUnavailable) as e:
        print(f"entrypoint: error: {e}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    try:
        render_repository(
            plan.repository,
            plan.placement,
            {"checkpoint": folder},
            source=plan.template,
            asr={"checkpoint": asr_folder} if asr_folder else None,
        )
    except ValueError as e:
        print(f"entrypoint: error: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    where = "GPU" if opts.gpu else "CPU"
    print(f"entrypoint: tritonserver from {install.source} ({install.binary})", flush=True)
    print(
        f"entrypoint: serving {plan.checkpoint}: forward on {where} x{plan.placement.count}"
        + (f", ASR {plan.asr} on {where}" if plan.asr else ""),
        flush=True,
    )
    server = start(opts, install, env=dict(environ), echo=lambda line: print(line, flush=True))
    front = None
    if plan.openai_port is not None:  # ready when Triton is: it asks Triton
        front = FrontProcess.start(
            FrontOptions(
                port=plan.openai_port,
                triton_url=f"127.0.0.1:{opts.grpc_port}",
                api_key_file=plan.openai_key_file,
                model_names=(plan.checkpoint,) if is_hub_id(plan.checkpoint) else (),
            ),
            env=environ,
        )
        print(f"entrypoint: {front.describe('0.0.0.0')}", flush=True)
    stopper = StopOnSignal(server, "entrypoint: {signal}: stopping")
    stopper.front = front
    stopping = stopper.stopping
    code = wait_for_exit(server, stopping, front)
    if front is not None and front.exited_early:
        print(f"entrypoint: the OpenAI-style front exited with status {code}", flush=True)
        return code
    print(f"entrypoint: tritonserver exited with status {code}", flush=True)
    if code == 0:
        return EXIT_OK
    return code if code > 0 else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
