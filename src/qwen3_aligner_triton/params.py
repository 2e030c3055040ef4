"""The typed readers of the models' ``config.pbtxt`` parameters: each model's settings from its
own configuration (the front's :class:`FrontSettings`, the core's :class:`CoreSettings` and
:class:`Simulation`, the ASR model's ``asr.AsrSettings``).

Triton hands parameters over as ``{"key": {"string_value": "..."}}``. Every key a model knows is
declared once, as a field of its settings class with its type and default; an empty value or an
unfilled ``${...}`` template counts as unset; an unknown key or a value of the wrong type fails the
model load with a message that names the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
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
class FrontSettings:
    """The public model's settings (the front: requests, preparation, results), read from its
    ``config.pbtxt``; ``max_forward_tokens`` is the core's, read from the core's."""

    checkpoint: str = ""  # "" -> $MODEL_PATH -> DEFAULT_CHECKPOINT (its tokenizer, processor)
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
    # The core's prompt limit (CoreSettings.max_forward_tokens, from the core's configuration):
    # a clip over it is refused here, a long recording's windows take only the words that fit.
    max_forward_tokens: int = 32768
    warmup: bool = True  # load the Japanese and Korean word splitters at start-up
    # The front sends each clip's 16 kHz waveform and the core makes its log-mel frames on the
    # forward's device (a GPU does it in microseconds; the front's CPU time goes to the next
    # clip). Off: the front makes the frames (CPU placements, where the front's processes run in
    # parallel and the core's one instance is the bottleneck).
    features_in_core: bool = False
    # The ASR model (contract.ASR_MODEL_NAME) sits beside the front: a request without TEXT is
    # transcribed first (the launcher's --asr sets it when it renders that model).
    asr: bool = False


@dataclass(frozen=True)
class CoreSettings:
    """The forward-only core's settings, read from its ``config.pbtxt``."""

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
    max_forward_batch: int = 16  # requests in one forward pass
    max_forward_tokens: int = 32768  # padded prompt tokens in one forward pass
    bucket_ratio: float = 1.5  # longest/shortest prompt allowed in one forward pass
    warmup: bool = True  # run one alignment at load so the first request is not the slow one


@dataclass(frozen=True)
class Simulation:
    """Benchmark and fault-injection switches of the core, never set in production: the
    launcher's ``--simulate-gpu`` and the tests render them into the core's parameters."""

    # "A+Bn" replaces the forward by a machine-wide simulated device held for A + B*n ms per
    # pass of n clips, answering placeholder timestamps ("": the real model).
    simulate_gpu: str = ""
    # Forward passes with more padded tokens than this raise an out-of-memory error (0: off):
    # lets CPU test suites exercise the split-and-retry path.
    simulate_oom_above_tokens: int = 0


# The front's field that is the core's parameter, not one of its own.
FROM_CORE = frozenset({"max_forward_tokens"})
FRONT_PARAMETERS = frozenset(FrontSettings.__dataclass_fields__) - FROM_CORE
CORE_PARAMETERS = frozenset(CoreSettings.__dataclass_fields__) | frozenset(
    Simulation.__dataclass_fields__
)


@dataclass(frozen=True)
class PipelineSettings:
    """Both models' settings for the pipeline hosted in one process (``inprocess``): the front's,
    the core's and the simulation's, as the server would read them from the two configurations."""

    front: FrontSettings = FrontSettings()
    core: CoreSettings = CoreSettings()
    simulation: Simulation = Simulation()

    @classmethod
    def of(cls, **values: Any) -> PipelineSettings:
        """Each keyword to the settings that own it (``checkpoint``, ``warmup`` and
        ``max_forward_tokens`` to both front and core), e.g. ``of(checkpoint="tiny",
        window_seconds=20.0, max_forward_batch=4)``; an unknown keyword is a TypeError."""
        unknown = sorted(set(values) - FRONT_PARAMETERS - CORE_PARAMETERS - FROM_CORE)
        if unknown:
            raise TypeError(f"unknown setting(s) {', '.join(unknown)}")
        fields = FrontSettings.__dataclass_fields__
        return cls(
            FrontSettings(**{k: v for k, v in values.items() if k in fields}),
            CoreSettings(
                **{k: v for k, v in values.items() if k in CoreSettings.__dataclass_fields__}
            ),
            Simulation(**{k: v for k, v in values.items() if k in Simulation.__dataclass_fields__}),
        )


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


def _typed_values(
    parameters: Mapping[str, Any], *classes: type, exclude: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The set values of ``parameters`` converted to the types of the fields of ``classes``
    (dataclasses with a default for each), less ``exclude``; an unknown key is a ConfigError
    naming the known ones."""
    kinds = {
        key: type(getattr(cls, key))
        for cls in classes
        for key in cls.__dataclass_fields__
        if key not in exclude
    }
    unknown = sorted(set(parameters) - set(kinds) - TRITON_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(kinds))}"
        )
    return {
        key: _convert(key, raw, kinds[key])
        for key, raw in _raw_values(parameters).items()
        if key not in TRITON_KEYS
    }


def _own(values: Mapping[str, Any], cls: type) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k in cls.__dataclass_fields__}


def _with_checkpoint(settings: Any, environ: Mapping[str, str] | None) -> Any:
    """``settings`` with its checkpoint resolved: the config's, else $MODEL_PATH, else the
    default Hub id."""
    if settings.checkpoint:
        return settings
    environ = os.environ if environ is None else environ
    env_value = environ.get(CHECKPOINT_ENV, "").strip()
    return replace(settings, checkpoint=env_value or DEFAULT_CHECKPOINT)


def read_front_settings(
    parameters: Mapping[str, Any],
    core_parameters: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> FrontSettings:
    """Build :class:`FrontSettings` from the front's ``parameters``; its prompt limit is the
    core's, from ``core_parameters`` (the core's configuration beside it) when given."""
    values = _own(_typed_values(parameters, FrontSettings, exclude=FROM_CORE), FrontSettings)
    if core_parameters is not None:
        core = read_core_settings(core_parameters, environ)
        values.update({key: getattr(core, key) for key in FROM_CORE})
    settings = _with_checkpoint(FrontSettings(**values), environ)
    _validate_front(settings)
    return settings


def read_core_settings(
    parameters: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> CoreSettings:
    """Build :class:`CoreSettings` from the core's ``parameters`` (which may also hold the
    :class:`Simulation` switches, read by :func:`read_simulation`)."""
    values = _typed_values(parameters, CoreSettings, Simulation)
    settings = _with_checkpoint(CoreSettings(**_own(values, CoreSettings)), environ)
    _validate_core(settings)
    return settings


def read_simulation(parameters: Mapping[str, Any]) -> Simulation:
    """The :class:`Simulation` switches among the core's ``parameters`` (all off when unset)."""
    simulation = Simulation(**_own(_typed_values(parameters, CoreSettings, Simulation), Simulation))
    if simulation.simulate_gpu:
        try:
            parse_gpu_cost(simulation.simulate_gpu)
        except ValueError as e:
            raise ConfigError(f"parameter 'simulate_gpu': {e}") from None
    if simulation.simulate_oom_above_tokens < 0:
        raise ConfigError("parameter 'simulate_oom_above_tokens' must be >= 0")
    return simulation


def read_asr_settings(parameters: Mapping[str, Any]) -> Any:
    """Build ``asr.AsrSettings`` from the ``parameters`` block of the ASR model's config, with
    the rules of :func:`read_front_settings` (unset values, unknown keys, types)."""
    from .asr import AsrSettings

    settings = AsrSettings(**_typed_values(parameters, AsrSettings))
    _check_choices(settings)
    for key in ("max_new_tokens", "new_tokens_per_second"):
        if getattr(settings, key) <= 0:
            raise ConfigError(f"parameter {key!r} must be > 0, got {getattr(settings, key)}")
    if settings.base_new_tokens < 0:
        raise ConfigError("parameter 'base_new_tokens' must be >= 0")
    return settings


def _check_choices(s: Any) -> None:
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


def _check_positive(values: Mapping[str, float]) -> None:
    for key, value in values.items():
        if value <= 0:
            raise ConfigError(f"parameter {key!r} must be > 0, got {value}")


def _validate_core(s: CoreSettings) -> None:
    _check_choices(s)
    if s.encoder_attention == FULL and s.attn_implementation == "flash_attention_2":
        raise ConfigError(
            "parameter 'encoder_attention': 'full' reproduces qwen-asr 0.0.6 under sdpa or eager; "
            "flash_attention_2 always applies the encoder's windows"
        )
    _check_positive(
        {"max_forward_batch": s.max_forward_batch, "max_forward_tokens": s.max_forward_tokens}
    )
    if s.bucket_ratio < 1.0:
        raise ConfigError(f"parameter 'bucket_ratio' must be >= 1, got {s.bucket_ratio}")


def _validate_front(s: FrontSettings) -> None:
    _check_positive(
        {
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
            "max_forward_tokens": s.max_forward_tokens,
        }
    )
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
