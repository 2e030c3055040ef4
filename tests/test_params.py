import pytest

from qwen3_aligner_triton.params import (
    DEFAULT_CHECKPOINT,
    ConfigError,
    ModelSettings,
    read_settings,
)


def sv(value: str) -> dict:
    return {"string_value": value}


def test_defaults_when_nothing_is_set():
    s = read_settings({}, environ={})
    assert s == ModelSettings(checkpoint=DEFAULT_CHECKPOINT)


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
    assert s.max_text_chars == ModelSettings().max_text_chars


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
    assert s == ModelSettings(checkpoint=DEFAULT_CHECKPOINT)
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
