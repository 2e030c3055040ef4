"""Rendering the model repository for one deployment choice.

The repository holds two models: the public front ``qwen3_aligner`` (CPU instances: validation,
preparation, results) and the forward-only ``qwen3_aligner_core`` (GPU instances). A launch on a
CPU-only machine, with other instance counts or another checkpoint, gets a rendered copy: each
config is parsed with Triton's own ``ModelConfig`` protobuf, changed, and written into a fresh
folder next to a copy of the model code. The repository in the source tree is never modified.
Given an ASR checkpoint (``./scripts/serve --asr``) the rendered repository also holds the ASR
model ``qwen3_asr``; otherwise it has none.

``--instances`` means forward instances (the core's ``instance_group``); the front's instance count
follows the machine's CPU cores. On a CPU placement the core runs one clip per forward pass
(batched forwards are slower there, measured in docs/benchmarks.md) unless told otherwise; a
simulated GPU keeps the GPU's batching policy.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from .contract import ASR_MODEL_NAME, CORE_MODEL_NAME, MODEL_NAME
from .params import CORE_PARAMETERS, FRONT_PARAMETERS

SOURCE_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"


@dataclass(frozen=True)
class Placement:
    """Where the model instances run."""

    kind: str  # "KIND_GPU" or "KIND_CPU"
    count: int = 1  # instances per device (GPU) or in total (CPU)
    gpus: tuple[int, ...] = ()  # empty: every visible GPU


CPU_FORWARD_BATCH = 1  # clips per forward pass on a CPU placement (batching loses there)
# The prompt limit of a CPU placement (the core's max_forward_tokens, which the front takes too):
# the full-size model took 198 s for 8 clips of 2,516 audio tokens on two CPU cores
# (docs/benchmarks.md), so one prompt of the GPU placement's 32,768 tokens would hold the forward
# for the better part of an hour; 8,192 holds a 180 s window of natural speech, and a long
# recording's windows take only the words that fit.
CPU_FORWARD_TOKENS = 8192
MAX_FRONT_INSTANCES = 8


def default_front_instances(cpus: int | None = None) -> int:
    """Front instances for a machine: two per CPU core (one prepares while one waits), 2..8."""
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(2, min(MAX_FRONT_INSTANCES, 2 * cpus))


def split_parameters(parameters: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``(front, core)`` parameters: each key goes to the model(s) whose settings declare it
    (``params.FrontSettings``; ``params.CoreSettings`` and ``params.Simulation``), both where
    both do (``checkpoint``, ``warmup``); a key neither declares goes to the front, whose load
    then names it."""
    front: dict[str, str] = {}
    core: dict[str, str] = {}
    for key, value in parameters.items():
        if key in CORE_PARAMETERS:
            core[key] = value
        if key in FRONT_PARAMETERS or key not in CORE_PARAMETERS:
            front[key] = value
    return front, core


def load_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def core_parameters(front_dir: str | Path) -> dict[str, dict[str, str]] | None:
    """The parameters of the core beside the front at ``front_dir`` (its model folder), read
    from the core's ``config.pbtxt`` in the shape Triton hands a model its own; None when there
    is no core. The front takes the core's limits from there: one value in one place."""
    path = Path(front_dir).parent / CORE_MODEL_NAME / "config.pbtxt"
    if not path.is_file():
        return None
    return {
        key: {"string_value": value.string_value}
        for key, value in load_config(path).parameters.items()
    }


def render_config(
    config: model_config_pb2.ModelConfig,
    placement: Placement,
    parameters: Mapping[str, str] | None = None,
) -> model_config_pb2.ModelConfig:
    """A copy of ``config`` with ``placement`` and ``parameters`` applied."""
    if placement.count < 1:
        raise ValueError(f"instance count must be >= 1, got {placement.count}")
    out = model_config_pb2.ModelConfig()
    out.CopyFrom(config)
    del out.instance_group[:]
    group = out.instance_group.add()
    group.count = placement.count
    group.kind = model_config_pb2.ModelInstanceGroup.Kind.Value(placement.kind)
    group.gpus.extend(placement.gpus)
    for key, value in (parameters or {}).items():
        out.parameters[key].string_value = value
    return out


RENDERED_MARKER = ".rendered-by-qwen3-aligner-triton"  # a folder render_repository may replace
# The marker's line naming the folder that holds the qwen3_aligner_triton package of the checkout
# the repository was rendered from: the server imports it from there (tritonserver.start).
PACKAGE_SOURCE_LINE = "package-source: "


def package_source(repository: Path) -> Path | None:
    """The folder to import ``qwen3_aligner_triton`` from when serving ``repository``: the
    ``src/`` of the source checkout it was rendered from (recorded in its RENDERED_MARKER) or
    whose ``model_repository/`` it is. None when it comes from no checkout (the image's template:
    the installed package serves) or that checkout's package is gone."""
    repository = Path(repository)
    marker = repository / RENDERED_MARKER
    if marker.is_file():
        recorded = [
            line[len(PACKAGE_SOURCE_LINE) :]
            for line in marker.read_text().splitlines()
            if line.startswith(PACKAGE_SOURCE_LINE)
        ]
        folder = Path(recorded[-1]) if recorded else None
    else:
        folder = repository.resolve().parent / "src"
    if folder is None or not (folder / "qwen3_aligner_triton" / "__init__.py").is_file():
        return None
    return folder


def render_repository(
    destination: Path,
    placement: Placement,
    parameters: Mapping[str, str] | None = None,
    source: Path = SOURCE_REPOSITORY,
    model_files: Sequence[str] = ("model.py",),
    front_instances: int | None = None,
    asr: Mapping[str, str] | None = None,
) -> Path:
    """Write the two-model repository into ``destination``; returns it.

    ``destination`` may be absent, empty, or a repository rendered here before (it is then
    replaced); any other folder is refused with ValueError rather than deleted, since operators
    name it (``--repository-dir``, ``ALIGNER_REPOSITORY_DIR``). ``placement`` places the forward
    (the core); the front always runs ``front_instances`` CPU instances (default:
    :func:`default_front_instances`).

    ``asr`` (the ASR model's parameters, its ``checkpoint`` at least) adds the ASR model
    ``qwen3_asr`` on the forward's device kind, one instance, and tells the front
    (parameter ``asr``); without it the repository has no ASR model.
    """
    if asr is not None and not asr.get("checkpoint"):
        raise ValueError("the ASR model needs a checkpoint")
    front_params, core_params = split_parameters(parameters or {})
    package = package_source(source)
    if placement.kind == "KIND_CPU" and not core_params.get("simulate_gpu"):
        core_params.setdefault("max_forward_batch", str(CPU_FORWARD_BATCH))
        core_params.setdefault("max_forward_tokens", str(CPU_FORWARD_TOKENS))
    else:  # a GPU (or a simulated one) makes the log-mel frames; the front's CPU prepares more
        front_params.setdefault("features_in_core", "true")
    count = front_instances if front_instances is not None else default_front_instances()
    models = [(CORE_MODEL_NAME, placement, core_params)]
    if asr is not None:
        front_params["asr"] = "true"
        models.append((ASR_MODEL_NAME, Placement(placement.kind, 1, placement.gpus), dict(asr)))
    models.append((MODEL_NAME, Placement("KIND_CPU", count), front_params))
    if destination.exists():
        if not destination.is_dir():
            raise ValueError(f"{destination} is not a folder")
        if (destination / RENDERED_MARKER).is_file():
            shutil.rmtree(destination)
        elif any(destination.iterdir()):
            raise ValueError(
                f"{destination} is not empty and holds no repository rendered by this project; "
                "name an empty or new folder for the model repository"
            )
    destination.mkdir(parents=True, exist_ok=True)
    (destination / RENDERED_MARKER).write_text(
        "rendered from model_repository/; replaced on start\n"
        + (f"{PACKAGE_SOURCE_LINE}{package}\n" if package is not None else "")
    )
    for name, where, params in models:
        (destination / name / "1").mkdir(parents=True)
        for file in model_files:
            shutil.copy2(source / name / "1" / file, destination / name / "1" / file)
        config = render_config(load_config(source / name / "config.pbtxt"), where, params)
        if name == CORE_MODEL_NAME and params.get("max_forward_batch") == "1":
            # One clip per forward pass: hand the core one clip per execute() too. A batch of
            # several would be answered only once all its passes are done, so a short clip
            # would wait for a long window handed over with it.
            config.dynamic_batching.preferred_batch_size[:] = [1]
        (destination / name / "config.pbtxt").write_text(text_format.MessageToString(config))
    return destination
