"""Triton Python backend for Qwen3-ForcedAligner: glue between Triton and ``qwen3_aligner_triton``.

Everything that needs no Triton (validation, audio preparation, batching, timestamp repair, result
documents) lives in the ``qwen3_aligner_triton`` package and is unit-tested there.
"""

from __future__ import annotations

import gc
import json
import os
import time

import triton_python_backend_utils as pb_utils

from qwen3_aligner_triton.engine import AlignerEngine
from qwen3_aligner_triton.errors import describe
from qwen3_aligner_triton.loading import load_aligner, resolve_device
from qwen3_aligner_triton.metrics import AlignerMetrics
from qwen3_aligner_triton.params import read_settings
from qwen3_aligner_triton.requests import decode_request

INPUTS = {
    "AUDIO": "TYPE_FP32",
    "SAMPLE_RATE": "TYPE_INT32",
    "TEXT": "TYPE_STRING",
    "LANGUAGE": "TYPE_STRING",
}
OUTPUTS = {
    "WORDS": "TYPE_STRING",
    "START_TIMES": "TYPE_FP32",
    "END_TIMES": "TYPE_FP32",
    "ALIGNMENT": "TYPE_STRING",
}
MIN_MAX_BATCH_SIZE = 16


def _check_config(config: dict) -> None:
    """Fail the load when config.pbtxt does not declare the contract's tensors."""
    for section, expected in (("input", INPUTS), ("output", OUTPUTS)):
        declared = {t["name"]: t["data_type"] for t in config.get(section, [])}
        for name, data_type in expected.items():
            if declared.get(name) != data_type:
                raise pb_utils.TritonModelException(
                    f"config.pbtxt: {section} {name} must be declared with {data_type}, "
                    f"found {declared.get(name)}"
                )
    if int(config.get("max_batch_size", 0)) < MIN_MAX_BATCH_SIZE:
        raise pb_utils.TritonModelException(
            f"config.pbtxt: max_batch_size must be >= {MIN_MAX_BATCH_SIZE}"
        )


class TritonPythonModel:
    """One model instance: one aligner on one device."""

    def initialize(self, args: dict) -> None:
        self.logger = pb_utils.Logger
        config = json.loads(args["model_config"])
        _check_config(config)
        try:
            self.settings = read_settings(config.get("parameters", {}))
            device = resolve_device(args["model_instance_kind"], args["model_instance_device_id"])
        except ValueError as e:
            raise pb_utils.TritonModelException(f"{args['model_name']}: {e}") from e
        self.device = device
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        started = time.monotonic()
        self.logger.log_info(
            f"{args['model_instance_name']}: loading {self.settings.checkpoint} on {device}"
        )
        try:
            aligner = load_aligner(
                self.settings.checkpoint,
                device,
                dtype=self.settings.dtype,
                attn_implementation=self.settings.attn_implementation,
                shadowing_dir=version_dir,
            )
        except ValueError as e:
            raise pb_utils.TritonModelException(str(e)) from e
        self.engine = AlignerEngine(aligner, self.settings)
        self.metrics = AlignerMetrics(pb_utils, args["model_name"], args["model_version"])
        if self.settings.warmup:
            self.engine.warmup()
        self.engine.observer = self.metrics  # after warm-up: count user traffic only
        self.logger.log_info(
            f"{args['model_instance_name']}: ready on {device} ({self.engine.dtype}) in "
            f"{time.monotonic() - started:.1f} s"
        )

    def execute(self, requests: list) -> list:
        started = time.perf_counter()
        responses: list = [None] * len(requests)
        prepared: list = []
        slots: list[int] = []
        for i, request in enumerate(requests):
            try:
                align_request = decode_request(
                    _input(request, "AUDIO"),
                    _input(request, "SAMPLE_RATE"),
                    _input(request, "TEXT"),
                    _input(request, "LANGUAGE"),
                    self.settings,
                    _input(request, "SEGMENTS"),
                )
                prepared.append(self.engine.prepare(align_request))
                slots.append(i)
            except Exception as e:  # never let one request fail its batch-mates
                responses[i] = self._failed(e, f"preparing request {i}", "internal")
        self.metrics.stage("preprocess", time.perf_counter() - started)

        if prepared:
            results = self.engine.align(prepared)
            for i, result in zip(slots, results, strict=False):
                if isinstance(result, Exception):
                    responses[i] = self._failed(result, f"aligning request {i}", "forward_failed")
                    continue
                self.metrics.aligned(result.duration, len(result.units))
                tensors = [
                    pb_utils.Tensor(name, array) for name, array in result.output_arrays().items()
                ]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
        return responses

    def _failed(self, error: Exception, stage: str, internal_reason: str):
        """The error response for one request (client mistakes name the input; ours get an id)."""
        reply = describe(error, stage, internal_reason)
        if reply.log is not None:
            self.logger.log_error(reply.log)
        self.metrics.rejected(reply.reason)
        return _error(reply.message, getattr(pb_utils.TritonError, reply.code))

    def finalize(self) -> None:
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            metrics.close()
        engine = getattr(self, "engine", None)
        self.engine = None
        if engine is not None:
            del engine
            gc.collect()
            if self.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()
        pb_utils.Logger.log_info(f"qwen3_aligner: released the model on {self.device}")


def _input(request, name: str):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _error(message: str, code) -> object:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
