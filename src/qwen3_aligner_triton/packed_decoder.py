"""All clips of a pass through the text decoder as one sequence, as each would run alone.

Upstream's ``Qwen3ASRThinkerForConditionalGeneration.forward`` (qwen-asr 0.0.6) takes a
left-padded batch: every clip is padded to the pass's longest prompt, attention gets a 4-D mask
over ``[clips, tokens, tokens]`` (under sdpa that takes the memory-efficient kernel and copies
the key/value heads with ``repeat_kv``), the final norm and the timestamp head run over every
token, and the caller picks the ``<timestamp>`` rows clip by clip, with a copy to the host each.

:func:`decode_packed` gives each clip what it gets alone, with none of that. What makes it exact
is where the decoder mixes rows:

- the embedding, every RMSNorm (the layers', the per-head ``q_norm``/``k_norm``, the final one),
  every linear layer and the rotary embedding work per token row; the rotary embedding depends
  on the row's position only, and upstream's positions (``get_rope_index``) are
  ``cumsum(attention_mask) - 1``, the same in all three MRoPE rows: for a clip alone,
  ``0 .. tokens - 1``. The packed sequence restarts them at every clip;
- the audio encodings go to the ``<|audio_pad|>`` rows in order, as ``masked_scatter`` puts them:
  the encoder returns them in clip order, each clip's in prompt order;
- attention mixes rows of one clip only, causally. Clips are put once into "attention order"
  (longest first, prompts of equal length side by side), so that each length is one batched
  causal ``scaled_dot_product_attention`` call with no padding and no mask (with grouped
  key/value heads, as upstream's sdpa runs a lone clip); on CUDA with ``flash_attn`` installed
  (the model loaded with ``flash_attention_2``) one varlen call covers the whole pass. Nothing
  has to be put back in clip order: only the ``<timestamp>`` rows leave the pass;
- the final norm and the head run at the ``<timestamp>`` rows only (``[slots, classes]``, a few
  rows per word, against ``[clips, longest prompt, classes]``).

Every length and index of a pass comes from :func:`decoder_layout`, computed on the CPU from the
clips' prompts; the indices reach the device in one copy from pinned memory, and nothing in the
pass reads a device tensor back to the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .packed_encoder import AttentionGroup

FLASH_ATTENTION = "flash_attention_2"  # the attention implementation that gets the varlen call
_FLASH_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class DecoderLayout:
    """Everything a packed decoder pass needs to know about its clips, computed on the CPU.

    Rows are in attention order: clips by prompt length, longest first, then in clip order
    (``order``: the clips in that order). ``input_ids`` and ``positions`` are per row;
    ``cu_seqlens`` bounds each clip's rows; ``attention_groups`` are the runs of clips of one
    length. ``audio_rows``: the rows of the ``<|audio_pad|>`` tokens, clip by clip in clip order
    and in prompt order within a clip (the order of the encoder's output), ``audio_counts`` of
    them per clip; ``slot_rows``: the rows of the ``<timestamp>`` tokens in the same order,
    ``slot_counts`` of them per clip.
    """

    tokens: tuple[int, ...]
    order: tuple[int, ...]
    cu_seqlens: tuple[int, ...]
    attention_groups: tuple[AttentionGroup, ...]
    input_ids: np.ndarray
    positions: np.ndarray
    audio_rows: np.ndarray
    audio_counts: tuple[int, ...]
    slot_rows: np.ndarray
    slot_counts: tuple[int, ...]

    @property
    def rows(self) -> int:
        """All clips' tokens: the rows of the packed sequence."""
        return self.cu_seqlens[-1]

    @property
    def longest(self) -> int:
        """The longest clip's tokens (0 for no clips)."""
        return max(self.tokens, default=0)


def decoder_layout(
    prompts: Sequence[np.ndarray], audio_token_id: int, timestamp_token_id: int
) -> DecoderLayout:
    """The :class:`DecoderLayout` of clips whose prompts (token ids, ``<|audio_pad|>`` expanded)
    are ``prompts``."""
    ids = [np.asarray(p, dtype=np.int64).reshape(-1) for p in prompts]
    tokens = [len(p) for p in ids]
    if any(n == 0 for n in tokens):
        raise ValueError("every clip needs at least one token")
    order = [int(i) for i in np.lexsort((np.arange(len(ids)), -np.array(tokens, dtype=np.int64)))]
    starts = np.zeros(len(ids), dtype=np.int64)  # each clip's first row, by clip index
    cu_seqlens = [0]
    for i in order:
        starts[i] = cu_seqlens[-1]
        cu_seqlens.append(cu_seqlens[-1] + tokens[i])
    groups: list[AttentionGroup] = []
    for i in order:
        last = groups[-1] if groups else None
        if last is not None and last.length == tokens[i]:
            groups[-1] = AttentionGroup(last.start, last.count + 1, last.length)
        else:
            groups.append(AttentionGroup(int(starts[i]), 1, tokens[i]))
    empty = np.empty(0, dtype=np.int64)
    audio_rows = [starts[i] + np.flatnonzero(ids[i] == audio_token_id) for i in range(len(ids))]
    slot_rows = [starts[i] + np.flatnonzero(ids[i] == timestamp_token_id) for i in range(len(ids))]
    return DecoderLayout(
        tokens=tuple(tokens),
        order=tuple(order),
        cu_seqlens=tuple(cu_seqlens),
        attention_groups=tuple(groups),
        input_ids=np.concatenate([ids[i] for i in order]) if ids else empty,
        positions=np.concatenate([np.arange(tokens[i]) for i in order]) if ids else empty,
        audio_rows=np.concatenate(audio_rows) if ids else empty,
        audio_counts=tuple(len(a) for a in audio_rows),
        slot_rows=np.concatenate(slot_rows) if ids else empty,
        slot_counts=tuple(len(s) for s in slot_rows),
    )


def _device_indices(layout: DecoderLayout, device: torch.device) -> dict[str, torch.Tensor]:
    """The layout's per-row arrays and indices (and ``cu_seqlens``) on ``device``, in one
    host-to-device copy (pinned, so that the copy does not wait for the device's queue)."""
    arrays = {
        "input_ids": layout.input_ids,
        "positions": layout.positions,
        "audio_rows": layout.audio_rows,
        "slot_rows": layout.slot_rows,
        "cu_seqlens": np.asarray(layout.cu_seqlens, dtype=np.int64),
    }
    host = torch.from_numpy(np.concatenate(list(arrays.values())))
    if device.type == "cuda":
        host = host.pin_memory()
    blob = host.to(device, non_blocking=True)
    out, at = {}, 0
    for name, array in arrays.items():
        out[name] = blob[at : at + len(array)]
        at += len(array)
    return out


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Upstream's ``apply_rotary_pos_emb`` on rows ``[rows, heads, head_dim]``."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos) + (rotated * sin)


def uses_varlen(attn: Any, hidden: torch.Tensor) -> bool:
    """Whether :func:`decode_packed` runs ``attn`` as one varlen flash-attention call: on CUDA,
    in half precision, with the model loaded with ``flash_attention_2`` (which needs the
    ``flash_attn`` package)."""
    return (
        hidden.device.type == "cuda"
        and hidden.dtype in _FLASH_DTYPES
        and getattr(attn.config, "_attn_implementation", None) == FLASH_ATTENTION
    )


def _attention(
    attn: Any,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    layout: DecoderLayout,
    cu_seqlens: torch.Tensor,
) -> torch.Tensor:
    """Upstream's ``Qwen3ASRThinkerTextAttention`` on packed rows, each clip causal on its own."""
    rows, head_dim = hidden.shape[0], attn.head_dim
    query = _rotate(attn.q_norm(attn.q_proj(hidden).view(rows, -1, head_dim)), cos, sin)
    key = _rotate(attn.k_norm(attn.k_proj(hidden).view(rows, -1, head_dim)), cos, sin)
    value = attn.v_proj(hidden).view(rows, -1, head_dim)
    heads = query.shape[1]
    if uses_varlen(attn, hidden):
        from flash_attn import flash_attn_varlen_func

        bounds = cu_seqlens.to(torch.int32)
        out = flash_attn_varlen_func(
            query,
            key,
            value,
            bounds,
            bounds,
            layout.longest,
            layout.longest,
            softmax_scale=attn.scaling,
            causal=True,
        )
        return attn.o_proj(out.reshape(rows, heads * head_dim))
    outputs = []
    for g in layout.attention_groups:
        span = slice(g.start, g.start + g.count * g.length)

        def batch(x: torch.Tensor, span: slice = span, g: AttentionGroup = g) -> torch.Tensor:
            return x[span].view(g.count, g.length, x.shape[1], head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            batch(query), batch(key), batch(value), scale=attn.scaling, is_causal=True,
            enable_gqa=key.shape[1] != heads,
        )  # fmt: skip
        outputs.append(out.transpose(1, 2).reshape(g.count * g.length, heads * head_dim))
    out = torch.cat(outputs, dim=0) if len(outputs) > 1 else outputs[0]
    return attn.o_proj(out)


def decode_packed(
    thinker: Any, layout: DecoderLayout, audio_features: torch.Tensor
) -> torch.Tensor:
    """The timestamp head's logits at every ``<timestamp>`` slot of the pass: ``[slots,
    classes]``, clip by clip in clip order, each clip's slots in prompt order.

    Each clip's rows are what upstream's ``thinker`` gives that clip alone (its final norm and
    ``lm_head``, picked at the clip's ``<timestamp>`` tokens). ``audio_features``: the clips'
    audio encodings concatenated in clip order, as ``get_audio_features`` returns them. Runs
    with ``thinker``'s weights, dtype and device; inference only.
    """
    text = thinker.model
    head = thinker.lm_head
    if audio_features.shape[0] != len(layout.audio_rows):
        raise ValueError(
            f"the prompts hold {len(layout.audio_rows)} audio tokens but the encoder gave "
            f"{audio_features.shape[0]} rows"
        )
    device = head.weight.device
    if not layout.tokens:
        return torch.empty((0, head.out_features), dtype=head.weight.dtype, device=device)
    indices = _device_indices(layout, device)
    hidden = text.embed_tokens(indices["input_ids"])
    if len(layout.audio_rows):
        hidden = hidden.index_copy(0, indices["audio_rows"], audio_features.to(hidden.dtype))
    # [1, rows] positions: the rotary embedding's three MRoPE rows equal, as upstream's are.
    cos, sin = text.rotary_emb(hidden, indices["positions"][None])
    cos, sin = cos[0].unsqueeze(1), sin[0].unsqueeze(1)  # [rows, 1, head_dim]: every head
    for layer in text.layers:
        residual = hidden
        attended = _attention(
            layer.self_attn, layer.input_layernorm(hidden), cos, sin, layout, indices["cu_seqlens"]
        )
        hidden = residual + attended
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    slots = hidden.index_select(0, indices["slot_rows"])
    return head(text.norm(slots))


def split_slots(layout: DecoderLayout, values: np.ndarray) -> list[np.ndarray]:
    """Per clip (clip order), its slots' entries of ``values`` (the pass's slots, clip by clip)."""
    return np.split(values, np.cumsum(layout.slot_counts)[:-1]) if layout.tokens else []
