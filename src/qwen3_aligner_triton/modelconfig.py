"""Load-time checks of the models' ``config.pbtxt``: the tensors each one must declare."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .contract import (
    ASR_INPUTS,
    ASR_MIN_MAX_BATCH_SIZE,
    ASR_MODEL_NAME,
    ASR_OUTPUTS,
    CORE_INPUTS,
    CORE_MIN_MAX_BATCH_SIZE,
    CORE_OUTPUTS,
    FRONT_ALTERNATIVE_INPUTS,
    FRONT_ASR_INPUTS,
    FRONT_ASR_OUTPUTS,
    FRONT_INPUTS,
    FRONT_MIN_MAX_BATCH_SIZE,
    FRONT_OUTPUTS,
    FRONT_REQUIRED_INPUTS,
)
from .params import ConfigError


@dataclass(frozen=True)
class Contract:
    """Tensors (name -> data type) and the smallest ``max_batch_size`` a model needs."""

    inputs: dict[str, str]
    outputs: dict[str, str]
    min_max_batch_size: int


FRONT_CONTRACT = Contract(
    inputs={name: FRONT_INPUTS[name] for name in FRONT_REQUIRED_INPUTS},
    outputs=dict(FRONT_OUTPUTS),
    min_max_batch_size=FRONT_MIN_MAX_BATCH_SIZE,
)
CORE_CONTRACT = Contract(
    inputs=dict(CORE_INPUTS),
    outputs=dict(CORE_OUTPUTS),
    min_max_batch_size=CORE_MIN_MAX_BATCH_SIZE,
)

ASR_CONTRACT = Contract(
    inputs=dict(ASR_INPUTS),
    outputs=dict(ASR_OUTPUTS),
    min_max_batch_size=ASR_MIN_MAX_BATCH_SIZE,
)
# What a front that transcribes (parameter asr) declares besides FRONT_CONTRACT.
FRONT_ASR_CONTRACT = Contract(
    inputs=dict(FRONT_ASR_INPUTS),
    outputs=dict(FRONT_ASR_OUTPUTS),
    min_max_batch_size=FRONT_MIN_MAX_BATCH_SIZE,
)


PACKAGE_DIR = Path(__file__).resolve().parent


def instance_config(args: dict, log: Callable[[str], None]) -> dict:
    """What every model's ``initialize`` starts with: a log line naming the folder of the
    ``qwen3_aligner_triton`` that serves this instance (the launcher's PYTHONPATH chooses the
    checkout; ``tritonserver.start``), then the model's configuration, parsed."""
    log(f"{args['model_instance_name']}: package qwen3_aligner_triton from {PACKAGE_DIR}")
    return json.loads(args["model_config"])


def check_config(config: dict, contract: Contract) -> None:
    """Raise :class:`ConfigError` when ``config`` does not declare the contract's tensors."""
    for section, expected in (("input", contract.inputs), ("output", contract.outputs)):
        declared = {t["name"]: t["data_type"] for t in config.get(section, [])}
        for name, data_type in expected.items():
            if declared.get(name) != data_type:
                raise ConfigError(
                    f"config.pbtxt: {section} {name} must be declared with {data_type}, "
                    f"found {declared.get(name)}"
                )
    if int(config.get("max_batch_size", 0)) < contract.min_max_batch_size:
        raise ConfigError(f"config.pbtxt: max_batch_size must be >= {contract.min_max_batch_size}")


def check_audio_inputs(config: dict) -> None:
    """A front config that declares ``AUDIO_FILE`` declares it and ``AUDIO`` ``optional: true``
    (a request carries one of them; Triton refuses a request that lacks a required input)."""
    declared = {t["name"]: t for t in config.get("input", [])}
    if "AUDIO_FILE" not in declared:
        return
    if declared["AUDIO_FILE"].get("data_type") != FRONT_INPUTS["AUDIO_FILE"]:
        raise ConfigError(
            f"config.pbtxt: input AUDIO_FILE must be declared with {FRONT_INPUTS['AUDIO_FILE']}"
        )
    required = [n for n in FRONT_ALTERNATIVE_INPUTS if not declared.get(n, {}).get("optional")]
    if required:
        raise ConfigError(
            f"config.pbtxt: input {' and '.join(required)} must be declared optional: true "
            "(a request carries exactly one of AUDIO and AUDIO_FILE)"
        )


def check_one_request_per_execute(config: dict) -> None:
    """The front's ``dynamic_batching`` must hand it one request per ``execute()`` call
    (``preferred_batch_size: [ 1 ]``): its shared-memory region then holds one request's inputs
    at a time, which is what ``shared_memory.plan`` sizes ``/dev/shm`` for."""
    batching = config.get("dynamic_batching")
    preferred = [int(size) for size in (batching or {}).get("preferred_batch_size", [])]
    if batching is None or preferred != [1]:
        raise ConfigError(
            "config.pbtxt: dynamic_batching must set preferred_batch_size: [ 1 ] (one request "
            "per execute() call keeps each request's inputs in shared memory only until the "
            f"front has copied them), found {preferred or 'none'}"
        )


def check_optional_transcript(config: dict) -> None:
    """A front that transcribes declares ``TEXT``, ``LANGUAGE`` and ``CONTEXT`` ``optional:
    true``: a request without ``TEXT`` is transcribed first (Triton refuses a request that lacks
    a required input before the front sees it)."""
    declared = {t["name"]: t for t in config.get("input", [])}
    required = [
        n for n in ("TEXT", "LANGUAGE", "CONTEXT") if not declared.get(n, {}).get("optional")
    ]
    if required:
        raise ConfigError(
            f"config.pbtxt: input {' and '.join(required)} must be declared optional: true "
            "(with the ASR model a request may leave TEXT, LANGUAGE and CONTEXT out)"
        )


def check_asr_beside(front_dir: str | Path) -> None:
    """A front that transcribes (parameter ``asr``) needs the ASR model beside it in the
    repository (``repository.render_repository(asr=...)`` puts it there)."""
    path = Path(front_dir).parent / ASR_MODEL_NAME / "config.pbtxt"
    if not path.is_file():
        raise ConfigError(
            f"parameter 'asr' is true but the repository holds no {ASR_MODEL_NAME} model "
            f"({path} is missing); render it with the ASR checkpoint (./scripts/serve --asr)"
        )
