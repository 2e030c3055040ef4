"""The model's input tensors as ``tritonclient`` objects (HTTP or gRPC module alike)."""

from __future__ import annotations

from typing import Any

import numpy as np


def infer_inputs(
    module: Any, audio: np.ndarray, sample_rate: int | None, text: str, language: str
) -> list:
    """``AUDIO``, ``TEXT``, ``LANGUAGE`` and, unless ``sample_rate`` is None, ``SAMPLE_RATE``.

    ``module`` is ``tritonclient.http`` or ``tritonclient.grpc``.
    """
    wave = np.asarray(audio, dtype=np.float32).reshape(1, -1)
    inputs = [
        module.InferInput("AUDIO", list(wave.shape), "FP32"),
        module.InferInput("TEXT", [1, 1], "BYTES"),
        module.InferInput("LANGUAGE", [1, 1], "BYTES"),
    ]
    inputs[0].set_data_from_numpy(wave)
    inputs[1].set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=np.object_))
    inputs[2].set_data_from_numpy(np.array([[language.encode("utf-8")]], dtype=np.object_))
    if sample_rate is not None:
        rate = module.InferInput("SAMPLE_RATE", [1, 1], "INT32")
        rate.set_data_from_numpy(np.array([[sample_rate]], dtype=np.int32))
        inputs.append(rate)
    return inputs


def file_inputs(module: Any, data: bytes, text: str, language: str) -> list:
    """``AUDIO_FILE`` (the bytes of an audio file, decoded by the server), ``TEXT`` and
    ``LANGUAGE``; ``module`` is ``tritonclient.http`` or ``tritonclient.grpc``."""
    inputs = [
        module.InferInput("AUDIO_FILE", [1, 1], "BYTES"),
        module.InferInput("TEXT", [1, 1], "BYTES"),
        module.InferInput("LANGUAGE", [1, 1], "BYTES"),
    ]
    inputs[0].set_data_from_numpy(np.array([[data]], dtype=np.object_))
    inputs[1].set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=np.object_))
    inputs[2].set_data_from_numpy(np.array([[language.encode("utf-8")]], dtype=np.object_))
    return inputs
