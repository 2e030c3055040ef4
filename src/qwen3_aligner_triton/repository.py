"""Rendering the model repository for one deployment choice.

The repository's ``config.pbtxt`` targets GPUs. A launch on a CPU-only machine, with another
instance count or another checkpoint, gets a rendered copy: the config is parsed with Triton's own
``ModelConfig`` protobuf, changed, and written into a fresh folder next to a copy of the model code.
The repository in the source tree is never modified.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from .tritonserver import MODEL_NAME

SOURCE_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"


@dataclass(frozen=True)
class Placement:
    """Where the model instances run."""

    kind: str  # "KIND_GPU" or "KIND_CPU"
    count: int = 1  # instances per device (GPU) or in total (CPU)
    gpus: tuple[int, ...] = ()  # empty: every visible GPU


def load_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


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


def render_repository(
    destination: Path,
    placement: Placement,
    parameters: Mapping[str, str] | None = None,
    source: Path = SOURCE_REPOSITORY,
    model_files: Sequence[str] = ("model.py",),
) -> Path:
    """Write a one-model repository into ``destination`` (emptied first); returns it."""
    src_model = source / MODEL_NAME
    dst_model = destination / MODEL_NAME
    if destination.exists():
        shutil.rmtree(destination)
    (dst_model / "1").mkdir(parents=True)
    for name in model_files:
        shutil.copy2(src_model / "1" / name, dst_model / "1" / name)
    config = render_config(load_config(src_model / "config.pbtxt"), placement, parameters)
    (dst_model / "config.pbtxt").write_text(text_format.MessageToString(config))
    return destination
