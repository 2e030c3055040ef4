"""Rendering the two-model repository: placement, parameters per model, the CPU policy."""

from __future__ import annotations

import pytest

from qwen3_aligner_triton.repository import (
    CPU_FORWARD_BATCH,
    CPU_FORWARD_TOKENS,
    Placement,
    default_front_instances,
    load_config,
    render_repository,
    split_parameters,
)
from qwen3_aligner_triton.serve import simulation_banner

FRONT, CORE = "qwen3_aligner", "qwen3_aligner_core"


def rendered(tmp_path, placement, parameters=None, **kwargs):
    repo = render_repository(tmp_path / "repo", placement, parameters or {}, **kwargs)
    return load_config(repo / FRONT / "config.pbtxt"), load_config(repo / CORE / "config.pbtxt")


def test_instances_place_the_forward_and_the_front_stays_on_cpu(tmp_path):
    front, core = rendered(tmp_path, Placement("KIND_GPU", 2, (1,)), front_instances=3)
    assert (core.instance_group[0].count, core.instance_group[0].kind) == (2, 1)  # KIND_GPU
    assert list(core.instance_group[0].gpus) == [1]
    assert (front.instance_group[0].count, front.instance_group[0].kind) == (3, 2)  # KIND_CPU
    assert (tmp_path / "repo" / CORE / "1" / "model.py").is_file()
    assert (tmp_path / "repo" / FRONT / "1" / "model.py").is_file()


def test_parameters_go_to_the_models_that_read_them():
    front, core = split_parameters(
        {"checkpoint": "/c", "warmup": "false", "max_forward_batch": "4", "window_seconds": "60"}
    )
    assert front == {"checkpoint": "/c", "warmup": "false", "window_seconds": "60"}
    assert core == {"checkpoint": "/c", "warmup": "false", "max_forward_batch": "4"}


def test_cpu_placement_runs_one_clip_per_forward_unless_told(tmp_path):
    front, core = rendered(tmp_path, Placement("KIND_CPU", 1), {"checkpoint": "/c"})
    assert core.parameters["max_forward_batch"].string_value == str(CPU_FORWARD_BATCH)
    # ... and one clip per execute(), so no short clip is answered only after a long window.
    assert list(core.dynamic_batching.preferred_batch_size) == [1]
    assert front.parameters["features_in_core"].string_value == "false"  # the fronts make frames
    _, core = rendered(tmp_path, Placement("KIND_CPU", 1), {"max_forward_batch": "16"})
    assert core.parameters["max_forward_batch"].string_value == "16"
    assert list(core.dynamic_batching.preferred_batch_size) == []
    front, core = rendered(tmp_path, Placement("KIND_GPU", 1), {"checkpoint": "/c"})
    assert core.parameters["max_forward_batch"].string_value == "64"
    assert list(core.dynamic_batching.preferred_batch_size) == []
    assert front.parameters["features_in_core"].string_value == "true"  # the GPU makes them


def test_a_cpu_placement_has_a_lower_prompt_limit_unless_told(tmp_path):
    _, core = rendered(tmp_path, Placement("KIND_CPU", 1), {"checkpoint": "/c"})
    assert core.parameters["max_forward_tokens"].string_value == str(CPU_FORWARD_TOKENS) == "8192"
    _, core = rendered(tmp_path, Placement("KIND_CPU", 1), {"max_forward_tokens": "16384"})
    assert core.parameters["max_forward_tokens"].string_value == "16384"
    _, core = rendered(tmp_path, Placement("KIND_GPU", 1), {"checkpoint": "/c"})
    assert core.parameters["max_forward_tokens"].string_value == "32768"  # the shipped value
    _, core = rendered(tmp_path, Placement("KIND_CPU", 1), {"simulate_gpu": "25+8.1n"})
    assert core.parameters["max_forward_tokens"].string_value == "32768"  # GPU policy


def test_a_simulated_gpu_keeps_the_gpu_batching_policy_on_cpu(tmp_path):
    _, core = rendered(tmp_path, Placement("KIND_CPU", 1), {"simulate_gpu": "25+8.1n"})
    assert core.parameters["max_forward_batch"].string_value == "64"
    assert core.parameters["simulate_gpu"].string_value == "25+8.1n"
    assert core.max_batch_size == 64
    front, _ = rendered(tmp_path, Placement("KIND_CPU", 1), {"simulate_gpu": "25+8.1n"})
    assert front.parameters["features_in_core"].string_value == "true"


@pytest.mark.parametrize(("cpus", "fronts"), [(1, 2), (2, 4), (3, 6), (16, 8)])
def test_front_instances_follow_the_cores(cpus, fronts):
    assert default_front_instances(cpus) == fronts


def test_the_simulation_banner_says_results_are_placeholders():
    text = "\n".join(simulation_banner("25+8.1n"))
    assert "SIMULATED GPU" in text and "PLACEHOLDER" in text and "25+8.1n" in text


# --- the ASR model (./scripts/serve --asr) ----------------------------------------------------


def as_dict(config) -> dict:
    import json

    from google.protobuf import json_format

    return json.loads(json_format.MessageToJson(config, preserving_proto_field_name=True))


def test_without_asr_the_repository_has_no_asr_model(tmp_path):
    front, _ = rendered(tmp_path, Placement("KIND_CPU"))
    assert not (tmp_path / "repo" / "qwen3_asr").exists()
    assert front.parameters["asr"].string_value == "false"


@pytest.mark.parametrize(
    ("placement", "kind"),
    [(Placement("KIND_GPU", 2, (1,)), 1), (Placement("KIND_CPU", 3), 2)],
)
def test_an_asr_checkpoint_adds_the_asr_model_beside_the_forward(tmp_path, placement, kind):
    from qwen3_aligner_triton.modelconfig import (
        ASR_CONTRACT,
        FRONT_ASR_CONTRACT,
        FRONT_CONTRACT,
        check_config,
        check_optional_transcript,
    )
    from qwen3_aligner_triton.params import read_asr_settings, read_front_settings

    front, core = rendered(
        tmp_path, placement, {"checkpoint": "/aligner"}, asr={"checkpoint": "/asr"}
    )
    asr = load_config(tmp_path / "repo" / "qwen3_asr" / "config.pbtxt")
    assert (tmp_path / "repo" / "qwen3_asr" / "1" / "model.py").is_file()
    # One instance on the forward's kind of device (and GPU), whatever --instances says.
    assert (asr.instance_group[0].count, asr.instance_group[0].kind) == (1, kind)
    assert list(asr.instance_group[0].gpus) == list(placement.gpus)
    settings = read_asr_settings(as_dict(asr)["parameters"])
    assert (settings.checkpoint, settings.max_new_tokens) == ("/asr", 512)
    check_config(as_dict(asr), ASR_CONTRACT)
    front_config = as_dict(front)
    for contract in (FRONT_CONTRACT, FRONT_ASR_CONTRACT):
        check_config(front_config, contract)
    check_optional_transcript(front_config)
    assert read_front_settings(front_config["parameters"]).asr is True
    assert "asr" not in core.parameters and core.parameters["checkpoint"].string_value == "/aligner"


def test_the_asr_model_needs_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="the ASR model needs a checkpoint"):
        render_repository(tmp_path / "repo", Placement("KIND_CPU"), {}, asr={})


def test_a_front_config_with_required_text_is_refused_for_asr():
    from qwen3_aligner_triton.modelconfig import check_optional_transcript
    from qwen3_aligner_triton.params import ConfigError

    config = {
        "input": [
            {"name": "TEXT", "optional": True},
            {"name": "LANGUAGE"},
            {"name": "CONTEXT", "optional": True},
        ]
    }
    with pytest.raises(ConfigError, match="input LANGUAGE must be declared optional: true"):
        check_optional_transcript(config)


def test_a_transcribing_front_needs_the_asr_model_beside_it(tmp_path):
    from qwen3_aligner_triton.modelconfig import check_asr_beside
    from qwen3_aligner_triton.params import ConfigError

    with_asr = render_repository(
        tmp_path / "a", Placement("KIND_CPU"), {}, asr={"checkpoint": "/asr"}
    )
    check_asr_beside(with_asr / FRONT)
    without = render_repository(tmp_path / "b", Placement("KIND_CPU"), {})
    with pytest.raises(ConfigError, match="parameter 'asr' is true but the repository holds no"):
        check_asr_beside(without / FRONT)
