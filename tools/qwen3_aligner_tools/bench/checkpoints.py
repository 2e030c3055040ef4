"""Which checkpoint a benchmark runs: tiny (built on the fly), tiny trained on synthetic speech
(trained once and cached), full-size random (built once and cached), or a real checkpoint folder /
hub id; and likewise which ASR checkpoint (tiny, full-size random or given).

The full-size random checkpoint has the published sizes of Qwen3-ForcedAligner-0.6B, so it costs
the same compute and memory as the real weights. It is ~3.5 GB in float32 and takes minutes to
write, so it is built once into a cache folder (atomically: into a temporary sibling, then renamed)
and reused by every later run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "QWEN3_ALIGNER_CACHE"  # overrides the cache root
DEFAULT_CACHE = Path("~/.cache/qwen3-aligner-triton")
COMPLETE_MARKER = ".complete"  # written last: a folder without it is an interrupted build
SPECIAL_NAMES = ("tiny", "trained", "full")


def cache_root() -> Path:
    """Where benchmark caches live: ``$QWEN3_ALIGNER_CACHE`` or ~/.cache/qwen3-aligner-triton."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


@dataclass(frozen=True)
class CheckpointChoice:
    """A resolved ``--checkpoint`` argument."""

    kind: str  # "tiny", "full" or "given"
    location: str  # folder path or hub id, as ``from_pretrained`` takes it
    description: str  # one line for reports


def _build_atomically(
    target: Path, flavour: str, convert_bf16: bool = False, asr: bool = False
) -> Path:
    from ..asr_checkpoint_builder import build_asr_checkpoint
    from ..checkpoint_builder import build_checkpoint

    if (target / COMPLETE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
    partial.chmod(0o755)  # mkdtemp makes it private; the cache is shared with servers and users
    try:
        (build_asr_checkpoint if asr else build_checkpoint)(partial, flavour=flavour)
        if convert_bf16:
            convert_to_bfloat16(partial)
        (partial / COMPLETE_MARKER).write_text("built by qwen3_aligner_tools.bench\n")
        if target.exists():  # an interrupted earlier build
            shutil.rmtree(target)
        partial.rename(target)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return target


def full_random_checkpoint(dtype: str = "float32", cache: Path | None = None) -> Path:
    """The cached full-size random checkpoint (built on first use; minutes, ~3.5 GB in float32)."""
    root = cache or cache_root()
    if dtype == "float32":
        return _build_atomically(root / "full-random", "full")
    if dtype == "bfloat16":
        return _build_atomically(root / "full-random-bf16", "full", convert_bf16=True)
    raise ValueError(f"unsupported checkpoint dtype {dtype!r}; use float32 or bfloat16")


def full_random_asr_checkpoint(cache: Path | None = None) -> Path:
    """The cached full-size random Qwen3-ASR checkpoint (the sizes of Qwen3-ASR-0.6B; built on
    first use, ~3 GB in float32)."""
    return _build_atomically((cache or cache_root()) / "full-random-asr", "full", asr=True)


def resolve_asr_checkpoint(spec: str, scratch: Path) -> CheckpointChoice:
    """Turn ``--asr-checkpoint`` into something loadable: tiny (built into ``scratch``), full
    (cached) or a folder / hub id."""
    if spec == "tiny":
        from ..asr_checkpoint_builder import build_asr_checkpoint

        path = build_asr_checkpoint(scratch / "tiny-asr-checkpoint")
        return CheckpointChoice("tiny", str(path), "tiny ASR checkpoint (built for this run)")
    if spec == "full":
        path = full_random_asr_checkpoint()
        return CheckpointChoice(
            "full", str(path), f"full-size random ASR checkpoint, float32 ({path})"
        )
    from qwen3_aligner_triton.hub import resolve_checkpoint as fetched

    return CheckpointChoice("given", fetched(spec), f"ASR checkpoint {spec}")


def convert_to_bfloat16(folder: Path) -> None:
    """Rewrite every ``*.safetensors`` file in ``folder`` in bfloat16 and record it in config.json.

    Halves the files (and the load time) for GPU runs; the values are the float32 weights rounded.
    """
    import torch
    from safetensors.torch import load_file, save_file

    for path in sorted(folder.glob("*.safetensors")):
        tensors = load_file(str(path))
        converted = {
            name: (t.to(torch.bfloat16) if t.is_floating_point() else t).contiguous()
            for name, t in tensors.items()
        }
        del tensors
        save_file(converted, str(path), metadata={"format": "pt"})
        del converted
    config_path = folder / "config.json"
    data = json.loads(config_path.read_text())
    data["torch_dtype"] = "bfloat16"
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def resolve_checkpoint(spec: str, scratch: Path) -> CheckpointChoice:
    """Turn ``--checkpoint`` into something loadable; builds tiny into ``scratch`` if asked."""
    if spec == "tiny":
        from ..checkpoint_builder import build_checkpoint

        path = build_checkpoint(scratch / "tiny-checkpoint", flavour="tiny")
        return CheckpointChoice("tiny", str(path), "tiny random checkpoint (built for this run)")
    if spec == "trained":
        from ..checkpoint_training import cached_trained_checkpoint

        path = cached_trained_checkpoint()
        return CheckpointChoice(
            "trained", str(path), f"tiny checkpoint trained on synthetic speech ({path})"
        )
    if spec == "full":
        path = full_random_checkpoint()
        return CheckpointChoice("full", str(path), f"full-size random checkpoint, float32 ({path})")
    from qwen3_aligner_triton.hub import resolve_checkpoint as fetched

    # A hub id is downloaded here, as ./scripts/serve does: the servers never reach the network.
    return CheckpointChoice("given", fetched(spec), f"checkpoint {spec}")
