from dataclasses import asdict
from types import SimpleNamespace

import pytest

from qwen3_aligner_triton.params import (
    CORE_PARAMETERS,
    DEFAULT_CHECKPOINT,
    FRONT_PARAMETERS,
    ConfigError,
    CoreSettings,
    FrontSettings,
    GpuCost,
    PipelineSettings,
    Simulation,
    parse_gpu_cost,
    read_core_settings,
    read_front_settings,
    read_simulation,
)
from qwen3_aligner_triton.repository import split_parameters


def sv(value: str) -> dict:
    return {"string_value": value}


def read_settings(parameters: dict, environ: dict | None = None) -> SimpleNamespace:
    """Both models' settings from one set of parameters, each key read by the model(s) that
    declare it, as the launcher renders them; the front's prompt limit from the core's."""
    front = {
        k: v for k, v in parameters.items() if k not in CORE_PARAMETERS or k in FRONT_PARAMETERS
    }
    core = {k: v for k, v in parameters.items() if k in CORE_PARAMETERS}
    values = asdict(read_front_settings(front, core, environ=environ))
    values.update(asdict(read_core_settings(core, environ=environ)))
    values.update(asdict(read_simulation(core)))
    return SimpleNamespace(**values)


def defaults(checkpoint: str = DEFAULT_CHECKPOINT) -> dict:
    values = asdict(FrontSettings(checkpoint=checkpoint))
    values.update(asdict(CoreSettings(checkpoint=checkpoint)))
    values.update(asdict(Simulation()))
    return values


def test_defaults_when_nothing_is_set():
    assert vars(read_settings({}, environ={})) == defaults()


def test_typed_values():
    s = read_settings(
        {
            "max_audio_seconds": sv("120.5"),
            "max_forward_batch": sv("4"),
            "warmup": sv("False"),
            "dtype": sv("bfloat16"),
        },
        environ={},
    )
    assert s.max_audio_seconds == 120.5
    assert s.max_forward_batch == 4
    assert s.warmup is False
    assert s.dtype == "bfloat16"


@pytest.mark.parametrize("unset", ["", "   ", "${MODEL_PATH}", "${checkpoint}"])
def test_empty_and_unfilled_templates_are_unset(unset):
    s = read_settings({"checkpoint": sv(unset), "max_text_chars": sv(unset)}, environ={})
    assert s.checkpoint == DEFAULT_CHECKPOINT
    assert s.max_text_chars == FrontSettings().max_text_chars


def test_environment_supplies_the_checkpoint_when_config_does_not():
    s = read_settings({"checkpoint": sv("")}, environ={"MODEL_PATH": "/models/aligner"})
    assert s.checkpoint == "/models/aligner"


def test_config_checkpoint_wins_over_environment():
    s = read_settings({"checkpoint": sv("/a")}, environ={"MODEL_PATH": "/b"})
    assert s.checkpoint == "/a"


def test_unknown_key_is_rejected_by_name():
    with pytest.raises(ConfigError, match="max_audio_secs"):
        read_settings({"max_audio_secs": sv("10")}, environ={})


def test_triton_keys_are_allowed_and_change_nothing():
    s = read_settings({"EXECUTION_ENV_PATH": sv("/env.tar.gz")}, environ={})
    assert vars(s) == defaults()
    with pytest.raises(ConfigError, match="EXECUTION_ENV_PAT"):
        read_settings({"EXECUTION_ENV_PAT": sv("/env.tar.gz")}, environ={})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_forward_batch", "four", "expected int"),
        ("warmup", "maybe", "boolean"),
        ("dtype", "float64", "dtype"),
        ("attn_implementation", "flash", "attn_implementation"),
        ("max_audio_seconds", "0", "must be > 0"),
        ("bucket_ratio", "0.5", "bucket_ratio"),
        ("min_audio_seconds", "20000", "min_audio_seconds"),
        ("window_seconds", "400", "window_seconds. must be at most 300"),
        ("window_seconds", "5", "window_seconds. must be at least 10"),
    ],
)
def test_bad_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        read_settings({key: sv(value)}, environ={})


def test_cost_limits_are_typed_parameters():
    settings = read_settings(
        {
            "max_segments_bytes": {"string_value": "1000"},
            "japanese_chars_per_unit": {"string_value": "2.5"},
        },
        environ={},
    )
    assert settings.max_segments_bytes == 1000
    assert settings.japanese_chars_per_unit == 2.5
    for key in ("max_segments_bytes", "japanese_chars_per_unit"):
        with pytest.raises(ConfigError, match=key):
            read_settings({key: {"string_value": "0"}}, environ={})


def refusal(parameters: dict) -> str:
    """The message of the ConfigError that ``parameters`` fail the model load with."""
    with pytest.raises(ConfigError) as excinfo:
        read_settings(parameters, environ={})
    return str(excinfo.value)


def test_defaults_are_the_documented_ones():
    # docs/operations.md (Configuration) and docs/api.md (Limits, and the AUDIO and SAMPLE_RATE
    # refusals: shorter than 0.1 s, outside 1 kHz to 384 kHz).
    assert vars(read_settings({}, environ={})) == {
        "checkpoint": "Qwen/Qwen3-ForcedAligner-0.6B",
        "dtype": "auto",
        "attn_implementation": "auto",
        "encoder_attention": "windowed",
        "packed_encoder": True,
        "packed_decoder": True,
        "max_audio_seconds": 14400.0,
        "max_audio_samples": 230_400_000,
        "max_audio_file_bytes": 268_435_456,
        "max_held_audio_bytes": 2_147_483_648,
        "window_seconds": 180.0,
        "max_words": 50000,
        "segment_margin_seconds": 1.0,
        "max_segments": 20000,
        "max_segments_bytes": 8_000_000,
        "cue_cost_units": 7,
        "japanese_chars_per_unit": 4.0,
        "min_audio_seconds": 0.1,
        "max_text_chars": 400000,
        "max_amplitude": 1.0,
        "max_sample_rate": 384000,
        "min_sample_rate": 1000,
        "max_forward_batch": 16,
        "max_forward_tokens": 32768,
        "bucket_ratio": 1.5,
        "warmup": True,
        "simulate_oom_above_tokens": 0,
        "simulate_gpu": "",
        "features_in_core": False,
        "asr": False,
    }


@pytest.mark.parametrize("spelling", ["1", "true", "TRUE", "Yes", " on "])
def test_true_spellings_turn_a_boolean_on(spelling):
    s = read_settings({"features_in_core": sv(spelling)}, environ={})
    assert s.features_in_core is True


@pytest.mark.parametrize("spelling", ["0", "false", "No", " OFF "])
def test_false_spellings_turn_a_boolean_off(spelling):
    s = read_settings({"packed_encoder": sv(spelling)}, environ={})
    assert s.packed_encoder is False


def test_process_environment_supplies_the_checkpoint_by_default(monkeypatch):
    monkeypatch.setenv("MODEL_PATH", "/models/from-env")
    assert read_settings({}).checkpoint == "/models/from-env"


def test_blank_environment_checkpoint_falls_back_to_the_hub_id():
    s = read_settings({}, environ={"MODEL_PATH": "  "})
    assert s.checkpoint == "Qwen/Qwen3-ForcedAligner-0.6B"


def test_plain_values_are_read_like_string_values():
    s = read_settings({"max_words": 10, "dtype": "float16", "warmup": False}, environ={})
    assert (s.max_words, s.dtype, s.warmup) == (10, "float16", False)


def test_entries_without_a_string_value_are_unset():
    s = read_settings(
        {"max_words": {}, "checkpoint": {"string_value": None}, "dtype": {"int64_value": 3}},
        environ={},
    )
    assert (s.max_words, s.checkpoint, s.dtype) == (50000, "Qwen/Qwen3-ForcedAligner-0.6B", "auto")


def test_unset_and_triton_entries_do_not_hide_the_entries_after_them():
    s = read_settings(
        {
            "checkpoint": sv(""),
            "EXECUTION_ENV_PATH": sv("/env.tar.gz"),
            "max_text_chars": sv("${MAX_TEXT_CHARS}"),
            "max_words": sv("10"),
        },
        environ={},
    )
    assert (s.max_words, s.max_text_chars) == (10, 400000)


def test_unknown_keys_message_lists_them_and_every_key_the_model_knows():
    with pytest.raises(ConfigError) as excinfo:
        read_front_settings({"warm_up": sv("true"), "max_audio_secs": sv("10")}, environ={})
    assert str(excinfo.value) == (
        "unknown parameter(s) max_audio_secs, warm_up; known: asr, checkpoint, cue_cost_units, "
        "features_in_core, japanese_chars_per_unit, max_amplitude, max_audio_file_bytes, "
        "max_audio_samples, max_audio_seconds, max_held_audio_bytes, max_sample_rate, "
        "max_segments, max_segments_bytes, max_text_chars, max_words, min_audio_seconds, "
        "min_sample_rate, segment_margin_seconds, warmup, window_seconds"
    )
    with pytest.raises(ConfigError) as excinfo:
        read_core_settings({"warm_up": sv("true")}, environ={})
    assert str(excinfo.value) == (
        "unknown parameter(s) warm_up; known: attn_implementation, bucket_ratio, checkpoint, "
        "dtype, encoder_attention, max_forward_batch, max_forward_tokens, packed_decoder, "
        "packed_encoder, simulate_gpu, simulate_oom_above_tokens, warmup"
    )


@pytest.mark.parametrize(
    "key", ["dtype", "max_forward_batch", "max_forward_tokens", "simulate_gpu"]
)
def test_the_front_refuses_the_cores_parameters(key):
    with pytest.raises(ConfigError, match=f"unknown parameter.s. {key};"):
        read_front_settings({key: sv("1")}, environ={})


@pytest.mark.parametrize("key", ["max_words", "window_seconds", "asr", "features_in_core"])
def test_the_core_refuses_the_fronts_parameters(key):
    with pytest.raises(ConfigError, match=f"unknown parameter.s. {key};"):
        read_core_settings({key: sv("1")}, environ={})


def test_the_fronts_prompt_limit_is_the_cores():
    core = {"max_forward_tokens": sv("65536"), "simulate_gpu": sv("1+1n")}
    assert read_front_settings({}, core, environ={}).max_forward_tokens == 65536
    assert read_front_settings({}, {}, environ={}).max_forward_tokens == 32768
    assert read_front_settings({}, environ={}).max_forward_tokens == 32768
    with pytest.raises(ConfigError, match="max_forward_tokens"):  # the core's value is checked
        read_front_settings({}, {"max_forward_tokens": sv("many")}, environ={})


def test_simulation_switches_are_not_production_settings():
    core = {"simulate_gpu": sv("2+3n"), "simulate_oom_above_tokens": sv("100")}
    assert read_core_settings(core, environ={}) == CoreSettings(checkpoint=DEFAULT_CHECKPOINT)
    assert read_simulation(core) == Simulation("2+3n", 100)
    assert read_simulation({}) == Simulation()
    assert not set(asdict(Simulation())) & (
        set(asdict(CoreSettings())) | set(asdict(FrontSettings()))
    )
    with pytest.raises(ConfigError, match="simulate_oom_above_tokens"):
        read_simulation({"simulate_oom_above_tokens": sv("-1")})


def test_pipeline_settings_send_each_value_to_the_settings_that_own_it():
    p = PipelineSettings.of(
        checkpoint="c",
        window_seconds=20.0,
        max_forward_batch=3,
        max_forward_tokens=99,
        simulate_oom_above_tokens=7,
        warmup=False,
    )
    assert (p.front.checkpoint, p.core.checkpoint) == ("c", "c")
    assert (p.front.warmup, p.core.warmup) == (False, False)
    assert (p.front.max_forward_tokens, p.core.max_forward_tokens) == (99, 99)
    assert (p.front.window_seconds, p.core.max_forward_batch) == (20.0, 3)
    assert p.simulation == Simulation(simulate_oom_above_tokens=7)
    with pytest.raises(TypeError, match="window_secs"):
        PipelineSettings.of(window_secs=20.0)


def test_the_launcher_sends_each_parameter_to_the_models_that_declare_it():
    front, core = split_parameters(
        {
            "checkpoint": "c",
            "warmup": "false",
            "max_words": "9",
            "dtype": "float32",
            "max_forward_tokens": "8192",
            "simulate_gpu": "1+1n",
            "unknown_key": "x",
        }
    )
    assert front == {"checkpoint": "c", "warmup": "false", "max_words": "9", "unknown_key": "x"}
    assert core == {
        "checkpoint": "c",
        "warmup": "false",
        "dtype": "float32",
        "max_forward_tokens": "8192",
        "simulate_gpu": "1+1n",
    }


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"max_forward_batch": "four"}, "parameter 'max_forward_batch': expected int, got 'four'"),
        ({"bucket_ratio": "wide"}, "parameter 'bucket_ratio': expected float, got 'wide'"),
        (
            {"warmup": "maybe"},
            "parameter 'warmup': expected a boolean (true/false), got 'maybe'",
        ),
        (
            {"dtype": "float64"},
            "parameter 'dtype': 'float64' is not one of auto, float32, bfloat16, float16",
        ),
        (
            {"attn_implementation": "flash"},
            "parameter 'attn_implementation': 'flash' is not one of "
            "auto, sdpa, eager, flash_attention_2",
        ),
        (
            {"encoder_attention": "global"},
            "parameter 'encoder_attention': 'global' is not one of windowed, full",
        ),
        (
            {"encoder_attention": "full", "attn_implementation": "flash_attention_2"},
            "parameter 'encoder_attention': 'full' reproduces qwen-asr 0.0.6 under sdpa or eager; "
            "flash_attention_2 always applies the encoder's windows",
        ),
        (
            {"min_audio_seconds": "14400"},
            "parameter 'min_audio_seconds' must be below 'max_audio_seconds'",
        ),
        (
            {"min_sample_rate": "384001"},
            "parameter 'min_sample_rate' must not exceed 'max_sample_rate'",
        ),
        ({"window_seconds": "9.5"}, "parameter 'window_seconds' must be at least 10"),
        (
            {"window_seconds": "300.5"},
            "parameter 'window_seconds' must be at most 300 "
            "(the model's timestamps end at 400 s; it is reliable up to about 270 s)",
        ),
        ({"cue_cost_units": "-1"}, "parameter 'cue_cost_units' must be >= 0"),
        ({"segment_margin_seconds": "-0.5"}, "parameter 'segment_margin_seconds' must be >= 0"),
        ({"bucket_ratio": "0.99"}, "parameter 'bucket_ratio' must be >= 1, got 0.99"),
        (
            {"simulate_gpu": "fast"},
            "parameter 'simulate_gpu': simulated GPU cost 'fast' must read A+Bn (milliseconds), "
            "e.g. 25+8.1n",
        ),
    ],
)
def test_refusal_messages_are_exact(parameters, message):
    assert refusal({key: sv(value) for key, value in parameters.items()}) == message


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("max_audio_seconds", "0.0"),
        ("max_audio_samples", "0"),
        ("max_audio_file_bytes", "0"),
        ("max_held_audio_bytes", "0"),
        ("window_seconds", "0.0"),
        ("max_words", "0"),
        ("max_segments", "0"),
        ("max_segments_bytes", "0"),
        ("japanese_chars_per_unit", "0.0"),
        ("min_audio_seconds", "0.0"),
        ("max_text_chars", "0"),
        ("max_sample_rate", "0"),
        ("max_amplitude", "0.0"),
        ("min_sample_rate", "0"),
        ("max_forward_batch", "0"),
        ("max_forward_tokens", "0"),
    ],
)
def test_zero_limit_is_refused_naming_the_key_and_value(key, shown):
    assert refusal({key: sv("0")}) == f"parameter {key!r} must be > 0, got {shown}"


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"window_seconds": "10"}, {"window_seconds": 10.0}),
        ({"window_seconds": "300"}, {"window_seconds": 300.0}),
        ({"min_sample_rate": "384000"}, {"min_sample_rate": 384000}),
        ({"min_audio_seconds": "14399.9"}, {"min_audio_seconds": 14399.9}),
        ({"cue_cost_units": "0"}, {"cue_cost_units": 0}),
        ({"segment_margin_seconds": "0"}, {"segment_margin_seconds": 0.0}),
        ({"segment_margin_seconds": "0.5"}, {"segment_margin_seconds": 0.5}),
        ({"bucket_ratio": "1.0"}, {"bucket_ratio": 1.0}),
        ({"simulate_gpu": "25+8.1n"}, {"simulate_gpu": "25+8.1n"}),
    ],
)
def test_values_on_the_limits_are_accepted(parameters, expected):
    s = read_settings({key: sv(value) for key, value in parameters.items()}, environ={})
    assert {key: getattr(s, key) for key in expected} == expected


@pytest.mark.parametrize("attention", ["sdpa", "eager", "auto"])
def test_full_encoder_attention_runs_under_other_attention_implementations(attention):
    s = read_settings(
        {"encoder_attention": sv("full"), "attn_implementation": sv(attention)}, environ={}
    )
    assert (s.encoder_attention, s.attn_implementation) == ("full", attention)


def test_windowed_encoder_attention_runs_under_flash_attention_2():
    s = read_settings({"attn_implementation": sv("flash_attention_2")}, environ={})
    assert (s.encoder_attention, s.attn_implementation) == ("windowed", "flash_attention_2")


@pytest.mark.parametrize(
    ("spec", "cost"),
    [
        ("25+8.1n", GpuCost(25.0, 8.1)),
        (" 3 + 2 * n ", GpuCost(3.0, 2.0)),
        ("0.5+12n", GpuCost(0.5, 12.0)),
    ],
)
def test_gpu_cost_spec_reads_fixed_and_per_clip_milliseconds(spec, cost):
    assert parse_gpu_cost(spec) == cost


def test_gpu_cost_spec_refusal_names_the_expected_form():
    with pytest.raises(ValueError) as excinfo:
        parse_gpu_cost("8.1n+25")
    assert str(excinfo.value) == (
        "simulated GPU cost '8.1n+25' must read A+Bn (milliseconds), e.g. 25+8.1n"
    )


def test_gpu_cost_of_a_pass_is_fixed_plus_per_clip_times_clips_in_seconds():
    assert GpuCost(20.0, 5.0).seconds(4) == 0.04
    assert GpuCost(20.0, 5.0).seconds(0) == 0.02
