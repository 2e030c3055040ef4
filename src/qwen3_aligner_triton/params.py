"""The one typed reader of the model's ``config.pbtxt`` parameters.

Triton hands parameters over as ``{"key": {"string_value": "..."}}``. Every key the model knows is
declared once here with its type and default; an empty value or an unfilled ``${...}`` template
counts as unset; an unknown key or a value of the wrong type fails the model load with a message
that names the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .encoder_attention import ENCODER_ATTENTION, FULL

DEFAULT_CHECKPOINT = "Qwen/Qwen3-ForcedAligner-0.6B"
CHECKPOINT_ENV = "MODEL_PATH"  # the variable operators of the FastAPI service already set
# Parameters Triton itself interprets; allowed in the file, ignored by the model.
TRITON_KEYS = frozenset({"EXECUTION_ENV_PATH"})
_COST = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*\+\s*(\d+(?:\.\d+)?)\s*\*?\s*n\s*$")
_UNFILLED = re.compile(r"^\$\{[^}]*\}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
MAX_WINDOW_SECONDS = 300.0
MIN_WINDOW_SECONDS = 10.0  # long-recording windows: well above the 2 s guard of each window
DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2")


@dataclass(frozen=True)
class GpuCost:
    """A simulated device's cost per pass of n clips: ``fixed_ms + per_item_ms * n``."""

    fixed_ms: float
    per_item_ms: float

    def seconds(self, n: int) -> float:
        return (self.fixed_ms + self.per_item_ms * n) / 1000.0


def parse_gpu_cost(spec: str) -> GpuCost:
    """``"25+8.1n"`` -> ``GpuCost(25.0, 8.1)``; raises ValueError naming the expected form."""
    match = _COST.match(spec)
    if not match:
        raise ValueError(f"simulated GPU cost {spec!r} must read A+Bn (milliseconds), e.g. 25+8.1n")
    return GpuCost(float(match.group(1)), float(match.group(2)))


class ConfigError(ValueError):
    """A model configuration that cannot be served; raised at load time."""


@dataclass(frozen=True)
class ModelSettings:
    """Typed model settings read from ``config.pbtxt``."""

    checkpoint: str = ""  # "" -> $MODEL_PATH -> DEFAULT_CHECKPOINT
    dtype: str = "auto"  # auto: bfloat16 on GPU, float32 on CPU
    attn_implementation: str = "auto"  # auto: the transformers default (sdpa)
    # windowed: the audio encoder attends within its 8 s windows, as the model was trained;
    # full: every token of a clip attends to the whole clip, as qwen-asr 0.0.6 runs under sdpa.
    encoder_attention: str = "windowed"
    # All clips of a forward pass through the audio encoder in one call (packed_encoder.py), equal
    # to upstream's per-clip loop up to float rounding; false: upstream's loop, one call per clip.
    packed_encoder: bool = True
    # The clips of a forward pass laid end to end in one sequence through the text decoder, each
    # attending to itself only, the timestamp head at the <timestamp> rows only
    # (packed_decoder.py), equal to each clip alone up to float rounding; false: upstream's
    # forward over a left-padded batch.
    packed_decoder: bool = True
    max_audio_seconds: float = 14400.0  # longest accepted recording (4 h)
    max_audio_samples: int = 230_400_000  # 4 h at 16 kHz (922 MB of float32), also once resampled
    # Largest AUDIO_FILE (the bytes of an encoded file), checked before anything is parsed: 4 h
    # of 16 kHz 16-bit WAV is 461 MB, of 128 kbit/s MP3 230 MB.
    max_audio_file_bytes: int = 268_435_456  # 256 MiB
    # Bytes of audio one front instance holds for its requests at once (each request: its input
    # and its 16 kHz waveform). Over it, a request is refused UNAVAILABLE while others are held
    # (retry), INVALID_ARG if it exceeds it alone. The default holds one maximal request.
    max_held_audio_bytes: int = 2_147_483_648
    window_seconds: float = 180.0  # longer audio is aligned window by window
    max_words: int = 50000  # most words/characters to align in one request
    segment_margin_seconds: float = 1.0  # a cue is aligned within its span plus this margin
    max_segments: int = 20000  # most cues in SEGMENTS
    max_segments_bytes: int = 8_000_000  # largest SEGMENTS document, checked before parsing
    # Each cue counts as this many units toward max_words besides its own: a cue is a forward
    # pass of its own. Measured (bench.cues: 2 CPU cores, tiny checkpoint, one clip per pass):
    # 1,000 one-word cues 7.8 s, their charge of 8,000 words as TEXT 10.2 s (0.76x), so the
    # costliest cue request within max_words costs no more than the costliest TEXT request.
    cue_cost_units: int = 7
    # Japanese TEXT longer (in NFKC characters) than this many per alignable unit (max_words, or
    # one unit per 80 ms of audio) is refused before the word splitter runs: ordinary Japanese
    # holds 2-3 characters per unit, punctuation and spaces included.
    japanese_chars_per_unit: float = 4.0
    min_audio_seconds: float = 0.1  # shortest accepted AUDIO
    max_text_chars: int = 400000  # longest accepted TEXT, in characters
    max_amplitude: float = 1.0  # largest accepted |sample|
    max_sample_rate: int = 384000  # Hz
    min_sample_rate: int = 1000  # Hz
    max_forward_batch: int = 16  # requests in one forward pass
    max_forward_tokens: int = 32768  # padded prompt tokens in one forward pass
    bucket_ratio: float = 1.5  # longest/shortest prompt allowed in one forward pass
    warmup: bool = True  # run one alignment at load so the first request is not the slow one
    # Fault injection for tests: forward passes with more padded tokens than this raise an
    # out-of-memory error (0: off). Lets CPU test suites exercise the split-and-retry path.
    simulate_oom_above_tokens: int = 0
    # Benchmarking only: "A+Bn" replaces the forward by a machine-wide simulated device held for
    # A + B*n ms per pass of n clips, answering placeholder timestamps ("": the real model).
    simulate_gpu: str = ""
    # The front sends each clip's 16 kHz waveform and the core makes its log-mel frames on the
    # forward's device (a GPU does it in microseconds; the front's CPU time goes to the next
    # clip). Off: the front makes the frames (CPU placements, where the front's processes run in
    # parallel and the core's one instance is the bottleneck).
    features_in_core: bool = False
    # The ASR model (contract.ASR_MODEL_NAME) sits beside the front: a request without TEXT is
    # transcribed first (the launcher's --asr sets it when it renders that model).
    asr: bool = False


def _parse_bool(key: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"parameter {key!r}: expected a boolean (true/false), got {raw!r}")


def _convert(key: str, raw: str, kind: type) -> Any:
    if kind is bool:
        return _parse_bool(key, raw)
    try:
        return kind(raw.strip())
    except ValueError:
        raise ConfigError(f"parameter {key!r}: expected {kind.__name__}, got {raw!r}") from None


def _raw_values(parameters: Mapping[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, entry in parameters.items():
        raw = entry.get("string_value", "") if isinstance(entry, Mapping) else str(entry)
        raw = "" if raw is None else str(raw)
        if raw.strip() == "" or _UNFILLED.match(raw.strip()):
            continue
        values[key] = raw
    return values


def _typed_values(parameters: Mapping[str, Any], settings_class: type) -> dict[str, Any]:
    """The set values of ``parameters`` converted to the types of ``settings_class``'s fields
    (a dataclass with a default for each); unknown keys are a ConfigError naming the known."""
    fields = settings_class.__dataclass_fields__
    unknown = sorted(set(parameters) - set(fields) - TRITON_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
        )
    return {
        key: _convert(key, raw, type(getattr(settings_class, key)))
        for key, raw in _raw_values(parameters).items()
        if key not in TRITON_KEYS
    }


def read_settings(
    parameters: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> ModelSettings:
    """Build :class:`ModelSettings` from the ``parameters`` block of a model config."""
    environ = os.environ if environ is None else environ
    settings = ModelSettings(**_typed_values(parameters, ModelSettings))
    if not settings.checkpoint:
        env_value = environ.get(CHECKPOINT_ENV, "").strip()
        settings = _replace(settings, checkpoint=env_value or DEFAULT_CHECKPOINT)
    _validate(settings)
    return settings


def read_asr_settings(parameters: Mapping[str, Any]) -> Any:
    """Build ``asr.AsrSettings`` from the ``parameters`` block of the ASR model's config, with
    the rules of :func:`read_settings` (unset values, unknown keys, types)."""
    from .asr import AsrSettings

    settings = AsrSettings(**_typed_values(parameters, AsrSettings))
    if settings.dtype not in DTYPES:
        raise ConfigError(
            f"parameter 'dtype': {settings.dtype!r} is not one of {', '.join(DTYPES)}"
        )
    if settings.attn_implementation not in ATTENTION:
        raise ConfigError(
            f"parameter 'attn_implementation': {settings.attn_implementation!r} is not one of "
            f"{', '.join(ATTENTION)}"
        )
    if settings.encoder_attention not in ENCODER_ATTENTION:
        raise ConfigError(
            f"parameter 'encoder_attention': {settings.encoder_attention!r} is not one of "
            f"{', '.join(ENCODER_ATTENTION)}"
        )
    for key in ("max_new_tokens", "new_tokens_per_second"):
        if getattr(settings, key) <= 0:
            raise ConfigError(f"parameter {key!r} must be > 0, got {getattr(settings, key)}")
    if settings.base_new_tokens < 0:
        raise ConfigError("parameter 'base_new_tokens' must be >= 0")
    return settings


def _replace(settings: ModelSettings, **changes: Any) -> ModelSettings:
    from dataclasses import replace

    return replace(settings, **changes)


def _validate(s: ModelSettings) -> None:
    if s.dtype not in DTYPES:
        raise ConfigError(f"parameter 'dtype': {s.dtype!r} is not one of {', '.join(DTYPES)}")
    if s.attn_implementation not in ATTENTION:
        raise ConfigError(
            f"parameter 'attn_implementation': {s.attn_implementation!r} is not one of "
            f"{', '.join(ATTENTION)}"
        )
    if s.encoder_attention not in ENCODER_ATTENTION:
        raise ConfigError(
            f"parameter 'encoder_attention': {s.encoder_attention!r} is not one of "
            f"{', '.join(ENCODER_ATTENTION)}"
        )
    if s.encoder_attention == FULL and s.attn_implementation == "flash_attention_2":
        raise ConfigError(
            "parameter 'encoder_attention': 'full' reproduces qwen-asr 0.0.6 under sdpa or eager; "
            "flash_attention_2 always applies the encoder's windows"
        )
    positive = {
        "max_audio_seconds": s.max_audio_seconds,
        "max_audio_samples": s.max_audio_samples,
        "max_audio_file_bytes": s.max_audio_file_bytes,
        "max_held_audio_bytes": s.max_held_audio_bytes,
        "window_seconds": s.window_seconds,
        "max_words": s.max_words,
        "max_segments": s.max_segments,
        "max_segments_bytes": s.max_segments_bytes,
        "japanese_chars_per_unit": s.japanese_chars_per_unit,
        "min_audio_seconds": s.min_audio_seconds,
        "max_text_chars": s.max_text_chars,
        "max_sample_rate": s.max_sample_rate,
        "max_amplitude": s.max_amplitude,
        "min_sample_rate": s.min_sample_rate,
        "max_forward_batch": s.max_forward_batch,
        "max_forward_tokens": s.max_forward_tokens,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"parameter {key!r} must be > 0, got {value}")
    if s.min_audio_seconds >= s.max_audio_seconds:
        raise ConfigError("parameter 'min_audio_seconds' must be below 'max_audio_seconds'")
    if s.min_sample_rate > s.max_sample_rate:
        raise ConfigError("parameter 'min_sample_rate' must not exceed 'max_sample_rate'")
    if s.window_seconds < MIN_WINDOW_SECONDS:
        raise ConfigError(f"parameter 'window_seconds' must be at least {MIN_WINDOW_SECONDS:g}")
    if s.window_seconds > MAX_WINDOW_SECONDS:
        raise ConfigError(
            f"parameter 'window_seconds' must be at most {MAX_WINDOW_SECONDS:g} "
            "(the model's timestamps end at 400 s; it is reliable up to about 270 s)"
        )
    if s.cue_cost_units < 0:
        raise ConfigError("parameter 'cue_cost_units' must be >= 0")
    if s.segment_margin_seconds < 0:
        raise ConfigError("parameter 'segment_margin_seconds' must be >= 0")
    if s.simulate_gpu:
        try:
            parse_gpu_cost(s.simulate_gpu)
        except ValueError as e:
            raise ConfigError(f"parameter 'simulate_gpu': {e}") from None
    if s.bucket_ratio < 1.0:
        raise ConfigError(f"parameter 'bucket_ratio' must be >= 1, got {s.bucket_ratio}")
