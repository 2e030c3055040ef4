"""Loading the upstream aligner on an instance's device, with errors that say what was tried."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .encoder_attention import set_encoder_attention
from .params import ConfigError

HUB_ID_HINT = "a Hugging Face Hub id such as Qwen/Qwen3-ForcedAligner-0.6B"


def import_qwen_asr(shadowing_dir: str | None = None) -> Any:
    """Import ``qwen_asr`` even when ``shadowing_dir`` holds a ``model.py``.

    ``qwen_asr`` imports ``nagisa``, whose ``train.py`` runs a bare ``import model``. Inside the
    Triton stub the model's version folder (with Triton's ``model.py``) is on ``sys.path`` and
    would be found instead of nagisa's own module. The folder is taken off ``sys.path`` for the
    import, and whatever ``sys.modules["model"]`` held is put back afterwards.
    """
    if "qwen_asr" in sys.modules:
        return sys.modules["qwen_asr"]
    saved_path = list(sys.path)
    saved_model = sys.modules.pop("model", None)
    if shadowing_dir is not None:
        target = os.path.realpath(shadowing_dir)
        sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != target]
    try:
        return importlib.import_module("qwen_asr")
    finally:
        sys.path[:] = saved_path
        if saved_model is not None:
            sys.modules["model"] = saved_model


def resolve_device(instance_kind: str, device_id: str | int | None) -> str:
    """Torch device for a Triton instance: KIND_GPU -> ``cuda:<id>``, KIND_CPU -> ``cpu``."""
    kind = str(instance_kind).upper().removeprefix("KIND_")
    if kind == "GPU":
        return f"cuda:{int(device_id or 0)}"
    if kind in ("CPU", "MODEL", "AUTO"):
        return "cpu"
    raise ConfigError(f"unsupported instance kind {instance_kind!r}; use KIND_GPU or KIND_CPU")


def resolve_dtype(setting: str, device: str) -> Any:
    """``auto`` is bfloat16 on GPU and float32 on CPU."""
    import torch

    if setting == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, setting)


def _looks_like_path(checkpoint: str) -> bool:
    return checkpoint.startswith(("/", "./", "../", "~")) or os.sep * 2 in checkpoint


def _folder_config(checkpoint: str, what: str) -> dict | None:
    """The ``config.json`` of the checkpoint folder ``checkpoint``, or None for a hub id; raises
    ConfigError for a path that holds no checkpoint. ``what`` names it in the messages."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise ConfigError(f"{what} folder {checkpoint!r} has no config.json")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:
            raise ConfigError(
                f"could not load {what} folder {checkpoint!r}: config.json is unreadable: {e}"
            ) from e
        return config if isinstance(config, dict) else {}
    if path.exists():
        raise ConfigError(f"{what} {checkpoint!r} is a file; give the checkpoint folder")
    if _looks_like_path(checkpoint):
        raise ConfigError(f"{what} folder {checkpoint!r} does not exist")
    return None


def _thinker_type(config: dict) -> str:
    thinker = config.get("thinker_config")
    return str(thinker.get("model_type", "")) if isinstance(thinker, dict) else ""


def describe_checkpoint(checkpoint: str) -> str:
    """Check a checkpoint reference before loading; returns 'folder' or 'hub'."""
    config = _folder_config(checkpoint, "checkpoint")
    if config is None:
        return "hub"
    thinker_type = _thinker_type(config)
    if config.get("model_type") == "qwen3_asr" and "forced_aligner" not in thinker_type:
        raise ConfigError(
            f"checkpoint {checkpoint!r} is not a forced-aligner checkpoint (thinker "
            f"model_type {thinker_type!r}); use Qwen3-ForcedAligner, not Qwen3-ASR"
        )
    return "folder"


def describe_asr_checkpoint(checkpoint: str) -> str:
    """Check an ASR checkpoint reference before it is fetched or loaded; returns 'folder' or
    'hub'. A path that holds no checkpoint, or a folder of the forced aligner, raises
    ConfigError."""
    config = _folder_config(checkpoint, "ASR checkpoint")
    if config is None:
        return "hub"
    if "forced_aligner" in _thinker_type(config):
        raise ConfigError(
            f"ASR checkpoint {checkpoint!r} is a forced aligner, not an ASR checkpoint; give "
            "Qwen3-ASR"
        )
    return "folder"


def load_aligner(
    checkpoint: str,
    device: str,
    dtype: str = "auto",
    attn_implementation: str = "auto",
    shadowing_dir: str | None = None,
    encoder_attention: str = "windowed",
) -> Any:
    """Load ``qwen_asr.Qwen3ForcedAligner`` from a folder or hub id onto ``device``.

    ``encoder_attention``: ``windowed`` applies the audio encoder's 8 s attention windows as the
    model was trained; ``full`` leaves upstream's modules as qwen-asr 0.0.6 runs them under sdpa
    (see :mod:`.encoder_attention`)."""
    kind = describe_checkpoint(checkpoint)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device {device} requested but torch sees no CUDA device")
    qwen_asr = import_qwen_asr(shadowing_dir)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, device), "device_map": device}
    if attn_implementation != "auto":
        kwargs["attn_implementation"] = attn_implementation
    try:
        aligner = qwen_asr.Qwen3ForcedAligner.from_pretrained(
            str(Path(checkpoint).expanduser()) if kind == "folder" else checkpoint, **kwargs
        )
    except Exception as e:
        where = (
            f"checkpoint folder {checkpoint!r}"
            if kind == "folder"
            else f"{checkpoint!r} as {HUB_ID_HINT} (no local folder of that name exists; "
            "the server reads hub ids from the Hugging Face cache only, which ./scripts/serve "
            "and ./scripts/fetch-model fill before it starts)"
        )
        raise ConfigError(f"could not load {where}: {type(e).__name__}: {e}") from e
    thinker_type = str(getattr(aligner.model.config.thinker_config, "model_type", ""))
    if "forced_aligner" not in thinker_type:
        raise ConfigError(
            f"checkpoint {checkpoint!r} is not a forced-aligner checkpoint "
            f"(thinker model_type {thinker_type!r}); use Qwen3-ForcedAligner, not Qwen3-ASR"
        )
    try:
        set_encoder_attention(aligner.model, encoder_attention)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return aligner


def load_checkpoint_config(checkpoint: str, shadowing_dir: str | None = None) -> Any:
    """The checkpoint's config (no weights): timestamp token, bin width, audio token."""
    kind = describe_checkpoint(checkpoint)
    import_qwen_asr(shadowing_dir)
    from qwen_asr.core.transformers_backend import Qwen3ASRConfig
    from transformers import AutoConfig

    AutoConfig.register("qwen3_asr", Qwen3ASRConfig, exist_ok=True)
    source = str(Path(checkpoint).expanduser()) if kind == "folder" else checkpoint
    try:
        return AutoConfig.from_pretrained(source)
    except Exception as e:
        raise ConfigError(f"could not load the config of {checkpoint!r}: {e}") from e


def load_preparer(checkpoint: str, settings: Any, shadowing_dir: str | None = None) -> Any:
    """Everything the front needs from a checkpoint: its processors and constants, no weights;
    ``settings`` are the front's (``params.FrontSettings``)."""
    config = load_checkpoint_config(checkpoint, shadowing_dir)
    from qwen_asr.core.transformers_backend import Qwen3ASRConfig, Qwen3ASRProcessor
    from qwen_asr.inference.qwen3_forced_aligner import Qwen3ForceAlignProcessor
    from transformers import AutoProcessor

    from .preparation import Preparer

    AutoProcessor.register(Qwen3ASRConfig, Qwen3ASRProcessor, exist_ok=True)
    kind = describe_checkpoint(checkpoint)
    source = str(Path(checkpoint).expanduser()) if kind == "folder" else checkpoint
    try:
        processor = AutoProcessor.from_pretrained(source, fix_mistral_regex=True)
    except Exception as e:
        raise ConfigError(f"could not load the processor of {checkpoint!r}: {e}") from e
    return Preparer(
        processor,
        Qwen3ForceAlignProcessor(),
        settings,
        float(config.timestamp_segment_time),
        int(config.thinker_config.audio_token_id),
    )


SIMULATED_DEVICE_MODULE = "qwen3_aligner_tools.simulated_device"


def simulated_device_class() -> Any:
    """``SimulatedDevice`` of the development tools (``tools/`` of a checkout; not in the image).

    Imported only when the core simulates its device, so the product never needs the tools."""
    try:
        module = importlib.import_module(SIMULATED_DEVICE_MODULE)
    except ModuleNotFoundError as e:
        if e.name not in ("qwen3_aligner_tools", SIMULATED_DEVICE_MODULE):
            raise
        raise ConfigError(
            "parameter 'simulate_gpu': the simulated device is a development tool "
            f"({SIMULATED_DEVICE_MODULE}, in tools/ of a checkout) that this installation does "
            "not hold; run ./scripts/serve --simulate-gpu from a checkout, or unset simulate_gpu "
            "to serve the model"
        ) from None
    return module.SimulatedDevice


@dataclass(frozen=True)
class LoadedForward:
    """The forward a core instance runs, and how to describe it in the log."""

    run: Any  # core.Forward
    description: str
    rules: Any  # core.ClipRules: what a clip must satisfy for this checkpoint


def load_forward(
    settings: Any, device: str, shadowing_dir: str | None = None, simulation: Any = None
) -> LoadedForward:
    """The real model of the core's ``settings`` (``params.CoreSettings``) on ``device``, warmed
    up through the served pipeline, or the simulated device of ``simulation.simulate_gpu``."""
    from .core import clip_rules
    from .inprocess import InProcessAligner
    from .params import FrontSettings, PipelineSettings, parse_gpu_cost
    from .preparation import GPU_WARMUP_PASSES

    if simulation is not None and simulation.simulate_gpu:
        cost = parse_gpu_cost(simulation.simulate_gpu)
        config = load_checkpoint_config(settings.checkpoint, shadowing_dir)
        device_sim = simulated_device_class()(
            cost, int(config.timestamp_token_id), float(config.timestamp_segment_time)
        )
        return LoadedForward(
            device_sim,
            f"SIMULATED GPU ({simulation.simulate_gpu} ms per pass of n clips): "
            "placeholder timestamps",
            clip_rules(config),
        )
    aligner = load_aligner(
        settings.checkpoint,
        device,
        dtype=settings.dtype,
        attn_implementation=settings.attn_implementation,
        shadowing_dir=shadowing_dir,
        encoder_attention=settings.encoder_attention,
    )
    if settings.packed_encoder:
        from .packed_encoder import install_packed_encoder

        install_packed_encoder(aligner.model.thinker)  # one encoder call per pass, same results
    # Warm-up runs the served path: a front with the core's prompt limit over this core.
    front = FrontSettings(
        checkpoint=settings.checkpoint, max_forward_tokens=settings.max_forward_tokens
    )
    engine = InProcessAligner(aligner, PipelineSettings(front, settings))
    if settings.warmup:
        engine.warmup()  # one short clip, its frames made on the CPU (a front may send them)
        if device.startswith("cuda"):
            # A GPU placement's front sends waveforms: the frames are made on the device too.
            on_device = dataclasses.replace(front, features_in_core=True)
            InProcessAligner(aligner, PipelineSettings(on_device, settings)).warmup(
                GPU_WARMUP_PASSES
            )
    encoder = f"encoder {settings.encoder_attention}" + (
        ", packed" if settings.packed_encoder else ""
    )
    decoder = "decoder packed" if settings.packed_decoder else "decoder padded"
    return LoadedForward(
        engine.forward_pass,
        f"{settings.checkpoint} on {device} ({engine.dtype}; {encoder}; {decoder})",
        clip_rules(aligner.model.config),
    )
