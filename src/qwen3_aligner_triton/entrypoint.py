"""The container's entrypoint: environment -> rendered model repository -> ``exec tritonserver``.

``MODEL_PATH``, ``DEVICE`` and ``MAX_CONCURRENT`` are resolved exactly as ``./scripts/serve``
resolves them (:func:`~qwen3_aligner_triton.serve.plan_launch`). When ``MODEL_PATH`` is unset and a
checkpoint was baked into the image at build time, that checkpoint is served. The repository that
ships in the image is rendered into a writable folder, then this process *becomes* ``tritonserver``
(so the server receives the container's SIGTERM itself and drains for ``--exit-timeout-secs``).
Its arguments are the container's arguments (the image's ``CMD`` or Kubernetes ``args``) after
``--model-repository``, which the entrypoint owns.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .params import CHECKPOINT_ENV
from .repository import SOURCE_REPOSITORY, Placement, render_repository
from .serve import EXIT_USAGE, cuda_device_count, plan_launch
from .tritonserver import ServerError, TritonInstallation, locate, server_environment

TEMPLATE_ENV = "ALIGNER_REPOSITORY_TEMPLATE"  # the model repository as shipped (read-only is fine)
RENDERED_ENV = "ALIGNER_REPOSITORY_DIR"  # where the rendered repository is written
BAKED_CHECKPOINT_ENV = "ALIGNER_BAKED_CHECKPOINT"  # checkpoint folder baked in at build time
DEFAULT_RENDERED = Path(tempfile.gettempdir()) / "qwen3-aligner" / "model_repository"
# Silence the GPU-only parts of the server on a CPU placement (given before the container's own
# arguments, so an explicit flag there still wins: tritonserver keeps the last value of a flag).
CPU_ONLY_ARGS = ("--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0")
OWNED_FLAGS = ("--model-repository", "--model-store")


@dataclass(frozen=True)
class ContainerPlan:
    """What the container will serve, and from where."""

    checkpoint: str
    placement: Placement
    template: Path
    repository: Path


def plan_container(environ: Mapping[str, str], gpu_count: int) -> ContainerPlan:
    """Resolve the container's environment into a plan; raises ValueError on a bad setting."""
    env = dict(environ)
    baked = env.get(BAKED_CHECKPOINT_ENV, "").strip()
    if not env.get(CHECKPOINT_ENV, "").strip() and baked and Path(baked, "config.json").is_file():
        env[CHECKPOINT_ENV] = baked
    launch = plan_launch(None, None, None, env, gpu_count)
    template = Path(env.get(TEMPLATE_ENV, "").strip() or SOURCE_REPOSITORY)
    if not (template / "qwen3_aligner" / "config.pbtxt").is_file():
        raise ValueError(f"{TEMPLATE_ENV}={template} holds no qwen3_aligner/config.pbtxt")
    repository = Path(env.get(RENDERED_ENV, "").strip() or DEFAULT_RENDERED)
    return ContainerPlan(launch.checkpoint, launch.placement, template, repository)


def server_command(
    install: TritonInstallation, plan: ContainerPlan, args: Sequence[str]
) -> list[str]:
    """The ``tritonserver`` argument list; raises ValueError if ``args`` name a repository."""
    for arg in args:
        if arg.split("=", 1)[0] in OWNED_FLAGS:
            raise ValueError(
                f"{arg!r}: the entrypoint sets the model repository itself; "
                f"use {TEMPLATE_ENV} to serve another one"
            )
    cmd = [str(install.binary), f"--model-repository={plan.repository}"]
    if install.backend_dir is not None:
        cmd.append(f"--backend-directory={install.backend_dir}")
    if plan.placement.kind == "KIND_CPU":
        cmd += CPU_ONLY_ARGS
    return cmd + list(args)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Render the repository and exec ``tritonserver``; returns only on a configuration error."""
    args = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    try:
        plan = plan_container(environ, cuda_device_count())
        install = locate()
        cmd = server_command(install, plan, args)
    except (ValueError, ServerError) as e:
        print(f"entrypoint: error: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    render_repository(
        plan.repository, plan.placement, {"checkpoint": plan.checkpoint}, source=plan.template
    )
    where = "GPU" if plan.placement.kind == "KIND_GPU" else "CPU"
    print(f"entrypoint: serving {plan.checkpoint} on {where} x{plan.placement.count}", flush=True)
    print(f"entrypoint: exec {shlex.join(cmd)}", flush=True)
    os.execve(cmd[0], cmd, server_environment(dict(environ)))
    return EXIT_USAGE  # not reached: execve replaces this process or raises


if __name__ == "__main__":
    sys.exit(main())
