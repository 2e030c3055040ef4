"""The audio encoder's attention windows, applied as the model was trained.

Qwen3-ASR's audio encoder cuts each clip's tokens into windows of ``n_window_infer`` mel frames
(800 frames = 8 s = 104 encoder tokens) and lets a token attend only within its window. Upstream's
``Qwen3ASRAudioEncoder.forward`` (qwen-asr 0.0.6) computes the windows as ``cu_seqlens`` but
hands them only to flash-attention-2; under ``sdpa`` and ``eager`` (every CPU, and a GPU without
flash-attn) no mask reaches the layers, so every token attends to the whole clip and clips over
8 s are encoded unlike training (QwenLM/Qwen3-ASR issue #213; the fix is PR #103: pass the
encoder's own ``_prepare_attention_mask(hidden_states, cu_seqlens)`` to every layer).

:func:`set_encoder_attention` does exactly that fix from outside, with forward pre-hooks on the
upstream modules: ``windowed`` gives each encoder layer the block-diagonal mask over its
``cu_seqlens`` (built once per encoder call; ``None`` under flash-attention-2, which reads the
windows itself); ``full`` removes the hooks and reproduces qwen-asr 0.0.6's sdpa behaviour.
"""

from __future__ import annotations

from typing import Any

WINDOWED = "windowed"  # each token attends within its 8 s window, as the model was trained
FULL = "full"  # qwen-asr 0.0.6 under sdpa/eager: every token attends to the whole clip
ENCODER_ATTENTION = (WINDOWED, FULL)
_HOOKS = "_qwen3_aligner_window_hooks"


def audio_encoder(model: Any) -> Any:
    """The audio encoder of a ``Qwen3ASRForConditionalGeneration`` (or of its thinker)."""
    thinker = getattr(model, "thinker", model)
    return thinker.audio_tower


class _WindowMask:
    """The block-diagonal mask of one encoder call, built once and shared by its layers."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.cu_seqlens: Any = None
        self.mask: Any = None

    def layer_pre_hook(self, module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        hidden_states = args[0] if args else kwargs["hidden_states"]
        cu_seqlens = args[1] if len(args) > 1 else kwargs["cu_seqlens"]
        if cu_seqlens is not self.cu_seqlens:
            self.cu_seqlens = cu_seqlens
            self.mask = self.encoder._prepare_attention_mask(hidden_states, cu_seqlens)
        return args, {**kwargs, "attention_mask": self.mask}

    def encoder_done(self, module: Any, args: Any, output: Any) -> None:
        self.cu_seqlens = self.mask = None  # the next call builds its own; free the memory now


def encoder_attention_of(model: Any) -> str:
    """``windowed`` when :func:`set_encoder_attention` applied the windows, else ``full``."""
    return WINDOWED if getattr(audio_encoder(model), _HOOKS, None) else FULL


def set_encoder_attention(model: Any, mode: str) -> None:
    """Make ``model``'s audio encoder attend ``windowed`` (as trained) or ``full`` (0.0.6 sdpa).

    Idempotent; the weights are untouched. Under flash-attention-2 the encoder is windowed
    whatever is asked here (upstream's varlen call uses the windows), so ``full`` is refused.
    """
    if mode not in ENCODER_ATTENTION:
        raise ValueError(f"encoder attention {mode!r} is not one of {', '.join(ENCODER_ATTENTION)}")
    encoder = audio_encoder(model)
    for handle in getattr(encoder, _HOOKS, None) or ():
        handle.remove()
    setattr(encoder, _HOOKS, None)
    if mode == FULL:
        implementation = getattr(encoder.config, "_attn_implementation", None)
        if implementation == "flash_attention_2":
            raise ValueError(
                "encoder attention 'full' reproduces qwen-asr 0.0.6 under sdpa or eager; "
                "flash_attention_2 always applies the windows"
            )
        return
    window = _WindowMask(encoder)
    handles = [
        layer.register_forward_pre_hook(window.layer_pre_hook, with_kwargs=True)
        for layer in encoder.layers
    ]
    handles.append(encoder.register_forward_hook(window.encoder_done))
    setattr(encoder, _HOOKS, handles)
