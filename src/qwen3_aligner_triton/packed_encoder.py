"""All clips of a pass through the audio encoder at once, as each would be encoded alone.

Upstream's ``Qwen3ASRThinkerForConditionalGeneration.get_audio_features`` (qwen-asr 0.0.6) runs
``Qwen3ASRAudioEncoder.forward`` once per clip: per clip a convolution stack, 24 layers and the
output projections, about 460 eager operations and a dozen host synchronisations (``.tolist()``
of chunk lengths, ``torch.ones`` per chunk, the window arithmetic on tensors). On a GPU that
launch overhead, not arithmetic, sets the time of a pass.

:func:`encode_packed` gives the same result with one convolution stack call for all the pass's
one-second chunks and one pass through the layers for all the pass's tokens. What makes that
exact is where the encoder mixes rows:

- the convolutions, GELU and the sinusoidal position embedding work per chunk (the embedding
  restarts in every chunk), so chunks of all clips can share a batch, as long as each chunk sees
  the zero padding it sees alone: upstream pads every chunk of a clip of one second or more to one
  second, but does not pad a clip shorter than a second (its only chunk is the call's widest);
  zero frames are not neutral (the first convolution's bias goes through GELU into its
  neighbours), so such clips get their own convolution call per width;
- everything after the convolutions but attention works per token row;
- attention works per segment: the clip's 8 s windows (``windowed``, upstream's ``cu_seqlens``
  for that clip alone, which :mod:`.encoder_attention` applies) or the whole clip (``full``,
  upstream's unmasked sdpa). Tokens are put once into "attention order", segments of equal length
  side by side, so that each length is one batched ``scaled_dot_product_attention`` call with no
  padding and no mask, and put back into clip order after the output projection.

Every length and index of a pass comes from :func:`pack_layout`, computed on the CPU from the
clips' frame counts (plain ints, known from the tensors' shapes); the indices reach the device in
one copy from pinned memory, and nothing in the pass reads a device tensor back to the host.

:func:`install_packed_encoder` puts this in place of ``get_audio_features`` on one thinker
instance; :func:`uninstall_packed_encoder` takes it out again.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .encoder_attention import ENCODER_ATTENTION, FULL, encoder_attention_of

CONV_LAYERS = 3  # stride-2 convolutions (kernel 3, padding 1) before conv_out, each halves time
# Bytes of first-convolution output per convolution call on the CPU. Past the cache, bigger
# batches only cost: 196 one-second chunks at once took 3.9x as long as 16 at a time with the tiny
# encoder (0.4 MB each), and 32 at once 1.25x as long as one at a time at full size (6 MB each).
# On a GPU the calls are as large as upstream's ``conv_chunksize`` allows.
CPU_CONV_BYTES = 8 << 20
_INSTALLED = "_qwen3_aligner_packed_encoder"  # instance attribute: the installed mode (or None)


def conv_tokens(frames: int) -> int:
    """Encoder tokens (rows after the convolutions) of one chunk of ``frames`` mel frames.

    Each convolution maps ``w`` columns to ``(w - 1) // 2 + 1``: 100 frames give 13 tokens.
    """
    for _ in range(CONV_LAYERS):
        frames = (frames - 1) // 2 + 1
    return frames


@dataclass(frozen=True)
class ClipLayout:
    """How the encoder cuts one clip of ``frames`` mel frames, as upstream does for it alone.

    ``chunk_frames``: the one-second chunks (``2 * n_window`` frames; the last one holds the
    remainder, or a full second); ``chunk_tokens``: their tokens after the convolutions;
    ``tokens``: the clip's total (upstream's ``_get_feat_extract_output_lengths``); ``segments``:
    lengths in tokens of the spans attention stays within, in order (``windowed``: upstream's
    ``cu_seqlens`` differences; ``full``: the whole clip); ``padded_to_chunk``: whether upstream
    pads the clip's chunks to a full chunk (a clip of at least one chunk; a shorter clip is its
    call's widest chunk and goes through the convolutions unpadded).
    """

    frames: int
    chunk_frames: tuple[int, ...]
    chunk_tokens: tuple[int, ...]
    tokens: int
    segments: tuple[int, ...]
    padded_to_chunk: bool


def clip_layout(frames: int, n_window: int, n_window_infer: int, mode: str) -> ClipLayout:
    """The :class:`ClipLayout` of a clip of ``frames`` mel frames, in attention ``mode``.

    ``n_window``: half a chunk, in frames (50); ``n_window_infer``: an attention window, in frames
    (800 = 8 s). As in upstream's ``forward``, a window holds ``n_window_infer // (2 * n_window)``
    times the widest chunk's tokens: 104 tokens from one second on, fewer for a shorter clip.
    """
    if mode not in ENCODER_ATTENTION:
        raise ValueError(f"encoder attention {mode!r} is not one of {', '.join(ENCODER_ATTENTION)}")
    if frames < 1:
        raise ValueError(f"a clip needs at least one mel frame, not {frames}")
    chunk = 2 * n_window
    chunks_per_window = n_window_infer // chunk
    if chunks_per_window < 1:
        raise ValueError(f"n_window_infer {n_window_infer} is shorter than a chunk ({chunk})")
    full_chunks, tail = divmod(frames, chunk)
    chunk_frames = (chunk,) * full_chunks + ((tail,) if tail else ())
    chunk_tokens = tuple(conv_tokens(c) for c in chunk_frames)
    tokens = sum(chunk_tokens)
    if mode == FULL:
        segments: tuple[int, ...] = (tokens,)
    else:
        window = max(chunk_tokens) * chunks_per_window
        whole, rest = divmod(tokens, window)
        segments = (window,) * whole + ((rest,) if rest else ())
    return ClipLayout(frames, chunk_frames, chunk_tokens, tokens, segments, frames >= chunk)


@dataclass(frozen=True)
class ConvGroup:
    """One width of chunks sharing a convolution call: ``count`` chunks of ``width`` frames, all
    chunks of the clips ``members`` (indices, in order), each chunk giving ``rows`` rows
    (``conv_tokens(width)``), the first at ``row_offset`` in the concatenated outputs of all
    groups."""

    width: int
    members: tuple[int, ...]
    count: int
    rows: int
    row_offset: int


@dataclass(frozen=True)
class AttentionGroup:
    """``count`` attention segments of ``length`` tokens, side by side from ``start`` in
    attention order: one batched attention call."""

    start: int
    count: int
    length: int


@dataclass(frozen=True)
class PackedLayout:
    """Everything the pass needs to know about its clips, computed on the CPU.

    ``token_offsets``: each clip's first token in the output (clip order); ``cu_seqlens``: the
    segment bounds in clip order (``windowed``: each clip's upstream ``cu_seqlens``, offset);
    ``conv_groups``: the full-chunk group first (every chunk of clips of a second or more,
    zero-padded to a chunk), then one group per width of shorter clips. ``gather`` picks, from
    the groups' concatenated convolution rows, the valid rows in attention order; ``restore``
    puts attention order back into clip order. Either is ``None`` where it is the identity.
    """

    mode: str
    clips: tuple[ClipLayout, ...]
    token_offsets: tuple[int, ...]
    cu_seqlens: tuple[int, ...]
    conv_groups: tuple[ConvGroup, ...]
    attention_groups: tuple[AttentionGroup, ...]
    gather: np.ndarray | None
    restore: np.ndarray | None

    @property
    def tokens(self) -> int:
        """All clips' tokens: the rows of the encoder's output."""
        return self.cu_seqlens[-1]


def pack_layout(
    frame_counts: Sequence[int], n_window: int, n_window_infer: int, mode: str
) -> PackedLayout:
    """The :class:`PackedLayout` of clips of ``frame_counts`` mel frames (see
    :func:`clip_layout` for ``n_window``, ``n_window_infer`` and ``mode``)."""
    clips = tuple(clip_layout(int(f), n_window, n_window_infer, mode) for f in frame_counts)
    chunk = 2 * n_window

    # Convolution groups: where each clip's chunk rows land in the concatenated outputs.
    wide = [i for i, c in enumerate(clips) if c.padded_to_chunk]
    narrow_widths = sorted({c.frames for c in clips if not c.padded_to_chunk})
    groups: list[ConvGroup] = []
    chunk_rows: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(clips)
    offset = 0
    if wide:
        rows = conv_tokens(chunk)
        count = sum(len(clips[i].chunk_frames) for i in wide)
        groups.append(ConvGroup(chunk, tuple(wide), count, rows, offset))
        tokens = np.array([t for i in wide for t in clips[i].chunk_tokens], dtype=np.int64)
        grid = np.arange(count * rows, dtype=np.int64).reshape(count, rows)
        valid = grid[np.arange(rows)[None, :] < tokens[:, None]]  # chunk by chunk, clip order
        bounds = np.cumsum([0] + [clips[i].tokens for i in wide])
        for k, i in enumerate(wide):
            chunk_rows[i] = valid[bounds[k] : bounds[k + 1]]
        offset += count * rows
    for width in narrow_widths:
        members = [i for i, c in enumerate(clips) if not c.padded_to_chunk and c.frames == width]
        rows = conv_tokens(width)
        groups.append(ConvGroup(width, tuple(members), len(members), rows, offset))
        for k, i in enumerate(members):
            chunk_rows[i] = offset + k * rows + np.arange(rows, dtype=np.int64)
        offset += len(members) * rows
    source = np.concatenate(chunk_rows) if clips else np.empty(0, dtype=np.int64)

    # Attention segments in clip order, then attention order: equal lengths side by side.
    lengths = np.array([s for c in clips for s in c.segments], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    order = np.lexsort((np.arange(len(lengths)), -lengths))  # longest first, then clip order
    attention_groups: list[AttentionGroup] = []
    position = 0
    for length in sorted({int(n) for n in lengths}, reverse=True):
        count = int(np.count_nonzero(lengths == length))
        attention_groups.append(AttentionGroup(position, count, length))
        position += count * length
    sorted_lengths = lengths[order]
    total = int(starts[-1])
    seg_first = np.repeat(starts[:-1][order], sorted_lengths)
    seg_base = np.repeat(np.cumsum(sorted_lengths) - sorted_lengths, sorted_lengths)
    permutation = seg_first + np.arange(total, dtype=np.int64) - seg_base  # attention -> clip
    gather = source[permutation]
    restore = np.empty(total, dtype=np.int64)
    restore[permutation] = np.arange(total, dtype=np.int64)
    identity = np.arange(total, dtype=np.int64)
    return PackedLayout(
        mode=mode,
        clips=clips,
        token_offsets=tuple(int(t) for t in np.cumsum([0] + [c.tokens for c in clips])[:-1]),
        cu_seqlens=tuple(int(s) for s in starts),
        conv_groups=tuple(groups),
        attention_groups=tuple(attention_groups),
        gather=None if offset == total and np.array_equal(gather, identity) else gather,
        restore=None if np.array_equal(restore, identity) else restore,
    )


def encoder_layout(encoder: Any, frame_counts: Sequence[int], mode: str) -> PackedLayout:
    """:func:`pack_layout` with ``encoder``'s own ``n_window`` and ``n_window_infer``."""
    return pack_layout(frame_counts, encoder.n_window, encoder.n_window_infer, mode)


def _device_indices(layout: PackedLayout, device: torch.device) -> dict[str, torch.Tensor]:
    """The layout's index arrays on ``device``, in one host-to-device copy (pinned, so that the
    copy does not wait for the device's queue)."""
    names = [n for n in ("gather", "restore") if getattr(layout, n) is not None]
    if not names:
        return {}
    host = torch.from_numpy(np.concatenate([getattr(layout, n) for n in names]))
    if device.type == "cuda":
        host = host.pin_memory()
    blob = host.to(device, non_blocking=True)
    out, at = {}, 0
    for name in names:
        size = len(getattr(layout, name))
        out[name] = blob[at : at + size]
        at += size
    return out


def _convolve(encoder: Any, batch: torch.Tensor) -> torch.Tensor:
    """Chunks [n, 1, mel, width] -> rows [n * tokens, d_model]: upstream's convolution stack,
    ``conv_out`` and per-chunk position embedding. Split by ``conv_chunksize`` as upstream does
    (memory of the first convolution's output), on the CPU by :data:`CPU_CONV_BYTES`."""
    per_call = encoder.conv_chunksize
    if batch.device.type == "cpu":
        _, _, mel, width = batch.shape
        first = encoder.conv2d1.out_channels * ((mel + 1) // 2) * ((width + 1) // 2)
        per_call = min(per_call, max(1, CPU_CONV_BYTES // (first * batch.element_size())))
    parts = []
    for part in batch.split(per_call, dim=0):
        hidden = F.gelu(encoder.conv2d1(part))
        hidden = F.gelu(encoder.conv2d2(hidden))
        parts.append(F.gelu(encoder.conv2d3(hidden)))
    hidden = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
    n, channels, mel, tokens = hidden.shape
    hidden = encoder.conv_out(
        hidden.permute(0, 3, 1, 2).contiguous().view(n, tokens, channels * mel)
    )
    position = encoder.positional_embedding.positional_embedding[:tokens].to(hidden.dtype)
    return (hidden + position).reshape(n * tokens, -1)


def _conv_inputs(
    clip_features: Sequence[torch.Tensor], layout: PackedLayout, dtype: torch.dtype, device: Any
) -> list[torch.Tensor]:
    """Each convolution group's input [count, 1, mel, width], chunks in clip order; the wide
    group's partial chunks zero-padded to a full chunk, as upstream's ``pad_sequence`` pads."""
    inputs = []
    for group in layout.conv_groups:
        clips = [(clip_features[i], layout.clips[i]) for i in group.members]
        if clips[0][1].padded_to_chunk:
            pieces = []
            for clip, c in clips:
                piece = clip[:, : c.frames]
                missing = len(c.chunk_frames) * group.width - c.frames
                pieces.append(F.pad(piece, (0, missing)) if missing else piece)
            frames = torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]
            batch = frames.reshape(frames.shape[0], group.count, group.width).transpose(0, 1)
        else:
            batch = torch.stack([clip[:, : c.frames] for clip, c in clips])
        inputs.append(batch.unsqueeze(1).to(device=device, dtype=dtype))
    return inputs


def _attention(attn: Any, hidden: torch.Tensor, groups: Sequence[AttentionGroup]) -> torch.Tensor:
    """Self-attention of rows in attention order, each segment on its own: one batched
    ``scaled_dot_product_attention`` per segment length, with upstream's scaling."""
    rows = hidden.shape[0]
    heads, head_dim = attn.num_heads, attn.head_dim
    query = attn.q_proj(hidden).view(rows, heads, head_dim)
    key = attn.k_proj(hidden).view(rows, heads, head_dim)
    value = attn.v_proj(hidden).view(rows, heads, head_dim)
    outputs = []
    for g in groups:
        span = slice(g.start, g.start + g.count * g.length)

        def batch(x: torch.Tensor, span: slice = span, g: AttentionGroup = g) -> torch.Tensor:
            return x[span].view(g.count, g.length, heads, head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            batch(query), batch(key), batch(value), scale=attn.scaling
        )
        outputs.append(out.transpose(1, 2).reshape(g.count * g.length, heads * head_dim))
    out = torch.cat(outputs, dim=0) if len(outputs) > 1 else outputs[0]
    return attn.out_proj(out)


def _layer(layer: Any, hidden: torch.Tensor, groups: Sequence[AttentionGroup]) -> torch.Tensor:
    """Upstream's ``Qwen3ASRAudioEncoderLayer`` (pre-LayerNorm, inference) on packed rows."""
    residual = hidden
    hidden = residual + _attention(layer.self_attn, layer.self_attn_layer_norm(hidden), groups)
    residual = hidden
    hidden = layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(hidden))))
    hidden = residual + hidden
    if hidden.dtype == torch.float16:  # upstream's overflow guard
        clamp = torch.finfo(hidden.dtype).max - 1000
        hidden = torch.clamp(hidden, min=-clamp, max=clamp)
    return hidden


def encode_packed(
    encoder: Any,
    clip_features: Sequence[torch.Tensor],
    mode: str,
    layout: PackedLayout | None = None,
) -> torch.Tensor:
    """Encode clips' log-mel frames ([mel, frames_i] each) in one pass: [sum of tokens, output_dim].

    The rows are each clip's encoding as upstream's ``Qwen3ASRAudioEncoder.forward`` gives it for
    that clip alone, concatenated in clip order (what upstream's ``get_audio_features`` returns),
    attending in ``mode`` (``windowed`` or ``full``, see :mod:`.encoder_attention`). Runs with
    ``encoder``'s weights, dtype and device; inference only (no dropout). ``layout``, when given,
    must be :func:`encoder_layout` of these clips' frame counts in ``mode``.
    """
    if layout is None:
        layout = encoder_layout(encoder, [int(c.shape[-1]) for c in clip_features], mode)
    elif layout.mode != mode or [c.frames for c in layout.clips] != [
        int(c.shape[-1]) for c in clip_features
    ]:
        raise ValueError("the layout was made for other clips or another attention mode")
    proj = encoder.proj2
    dtype, device = proj.weight.dtype, proj.weight.device
    if not layout.clips:
        return torch.empty((0, proj.out_features), dtype=dtype, device=device)
    indices = _device_indices(layout, device)
    rows = [
        _convolve(encoder, batch) for batch in _conv_inputs(clip_features, layout, dtype, device)
    ]
    hidden = torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]
    if "gather" in indices:
        hidden = hidden.index_select(0, indices["gather"])
    for layer in encoder.layers:
        hidden = _layer(layer, hidden, layout.attention_groups)
    hidden = encoder.proj2(encoder.act(encoder.proj1(encoder.ln_post(hidden))))
    if "restore" in indices:
        hidden = hidden.index_select(0, indices["restore"])
    return hidden


def install_packed_encoder(thinker: Any, mode: str | None = None) -> None:
    """Make ``thinker.get_audio_features`` (this instance only) encode all clips in one pass.

    The replacement takes upstream's arguments (``input_features`` [clips, mel, most frames],
    ``feature_attention_mask`` [clips, most frames]) and returns upstream's result, the clips'
    encodings concatenated, through :func:`encode_packed`. ``mode``: ``windowed`` or ``full``;
    ``None`` follows the model's :func:`.encoder_attention_of` at each call. Idempotent;
    :func:`uninstall_packed_encoder` undoes it.
    """
    if mode is not None and mode not in ENCODER_ATTENTION:
        raise ValueError(f"encoder attention {mode!r} is not one of {', '.join(ENCODER_ATTENTION)}")

    def get_audio_features(
        self: Any,
        input_features: torch.Tensor,
        feature_attention_mask: torch.Tensor | None = None,
        audio_feature_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if feature_attention_mask is not None:
            lengths = feature_attention_mask.sum(-1)
        elif audio_feature_lengths is not None:
            lengths = audio_feature_lengths
        else:
            lengths = torch.full((input_features.shape[0],), input_features.shape[-1])
        # The pass's one read from the device when the mask lives there: the frame counts, which
        # the layout needs on the host (upstream reads them per chunk, per clip).
        frames = [int(n) for n in lengths.tolist()]
        clips = [input_features[b, :, :n] for b, n in enumerate(frames)]
        return encode_packed(self.audio_tower, clips, installed_encoder_attention(self))

    thinker.get_audio_features = types.MethodType(get_audio_features, thinker)
    setattr(thinker, _INSTALLED, mode)


def uninstall_packed_encoder(thinker: Any) -> None:
    """Give ``thinker`` back upstream's ``get_audio_features`` (a no-op when not installed)."""
    if "get_audio_features" in vars(thinker) and hasattr(thinker, _INSTALLED):
        del thinker.get_audio_features
        delattr(thinker, _INSTALLED)


def installed_encoder_attention(thinker: Any) -> str:
    """The attention mode the installed packed encoder of ``thinker`` runs in: the one given to
    :func:`install_packed_encoder`, else the model's (:func:`.encoder_attention_of`)."""
    return getattr(thinker, _INSTALLED, None) or encoder_attention_of(thinker)


def packed_encoder_installed(thinker: Any) -> bool:
    """Whether :func:`install_packed_encoder` is in place on ``thinker``."""
    return "get_audio_features" in vars(thinker) and hasattr(thinker, _INSTALLED)
