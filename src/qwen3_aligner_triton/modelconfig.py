"""Load-time checks of the two models' ``config.pbtxt``: the tensors each one must declare."""

from __future__ import annotations

from dataclasses import dataclass

from .params import ConfigError


@dataclass(frozen=True)
class Contract:
    """Tensors (name -> data type) and the smallest ``max_batch_size`` a model needs."""

    inputs: dict[str, str]
    outputs: dict[str, str]
    min_max_batch_size: int


FRONT_CONTRACT = Contract(
    inputs={
        "AUDIO": "TYPE_FP32",
        "SAMPLE_RATE": "TYPE_INT32",
        "TEXT": "TYPE_STRING",
        "LANGUAGE": "TYPE_STRING",
    },
    outputs={
        "WORDS": "TYPE_STRING",
        "START_TIMES": "TYPE_FP32",
        "END_TIMES": "TYPE_FP32",
        "ALIGNMENT": "TYPE_STRING",
        "SCORES": "TYPE_FP32",
    },
    min_max_batch_size=16,
)
CORE_CONTRACT = Contract(
    inputs={"INPUT_IDS": "TYPE_INT64", "FEATURES": "TYPE_FP32", "AUDIO": "TYPE_FP32"},
    outputs={"TIMESTAMP_BINS": "TYPE_INT32", "SLOT_CONFIDENCE": "TYPE_FP32"},
    min_max_batch_size=1,
)


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
