"""Triton Python backend of ``qwen3_aligner_core``: the aligner's forward pass and nothing else.

The public model ``qwen3_aligner`` (the front) prepares each clip and sends it here: prompt ids and
either its log-mel FEATURES or its 16 kHz AUDIO, whose frames are then made here on the device.
Triton's dynamic batcher gathers clips of every front instance into one ``execute()``, which runs
them in length-bucketed forward passes (``qwen3_aligner_triton.core``) and answers, per clip, the
bin and the confidence of each ``<timestamp>`` slot.
"""

from __future__ import annotations

import gc
import json
import os
import time

import triton_python_backend_utils as pb_utils

from qwen3_aligner_triton.core import CoreInput, CoreRunner, refusal
from qwen3_aligner_triton.errors import describe
from qwen3_aligner_triton.loading import load_forward, resolve_device
from qwen3_aligner_triton.metrics import AlignerMetrics
from qwen3_aligner_triton.modelconfig import CORE_CONTRACT, check_config
from qwen3_aligner_triton.params import read_settings


class TritonPythonModel:
    """One forward instance on one device (or one simulated device)."""

    def initialize(self, args: dict) -> None:
        self.logger = pb_utils.Logger
        config = json.loads(args["model_config"])
        try:
            check_config(config, CORE_CONTRACT)
            self.settings = read_settings(config.get("parameters", {}))
            kind, device_id = args["model_instance_kind"], args["model_instance_device_id"]
            self.device = resolve_device(kind, device_id)
        except ValueError as e:
            raise pb_utils.TritonModelException(f"{args['model_name']}: {e}") from e
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        started = time.monotonic()
        try:
            self.forward = load_forward(self.settings, self.device, shadowing_dir=version_dir)
        except ValueError as e:
            raise pb_utils.TritonModelException(str(e)) from e
        self.metrics = AlignerMetrics(pb_utils, args["model_name"], args["model_version"])
        self.runner = CoreRunner(
            self.forward.run, self.settings, self.metrics, self.device.startswith("cuda")
        )
        self.logger.log_info(
            f"{args['model_instance_name']}: {self.forward.description} ready in "
            f"{time.monotonic() - started:.1f} s"
        )

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        items: list[CoreInput] = []
        slots: list[int] = []
        for i, request in enumerate(requests):
            ids = pb_utils.get_input_tensor_by_name(request, "INPUT_IDS")
            features = pb_utils.get_input_tensor_by_name(request, "FEATURES")
            audio = pb_utils.get_input_tensor_by_name(request, "AUDIO")
            if ids is None or (features is None and audio is None):
                responses[i] = _error(
                    "INPUT_IDS and one of FEATURES or AUDIO are required",
                    pb_utils.TritonError.INVALID_ARG,
                )
                continue
            frames = None if features is None else features.as_numpy()
            item = CoreInput(
                ids.as_numpy().reshape(-1),
                features=None if frames is None else frames.reshape(frames.shape[-2:]),
                wave=None if audio is None else audio.as_numpy().reshape(-1),
            )
            why = refusal(item, self.settings)
            if why is not None:
                responses[i] = _error(why, pb_utils.TritonError.INVALID_ARG)
                continue
            items.append(item)
            slots.append(i)
        try:
            results = self.runner.run(items) if items else []
        except Exception as e:  # never raise out of execute(): answer each clip with the error
            results = [e] * len(items)
        for i, result in zip(slots, results, strict=False):
            if isinstance(result, Exception):
                # The exception's text goes to the log only, under the id the caller is told.
                reply = describe(result, f"forward of clip {i}", "forward_failed")
                self.logger.log_error(reply.log or reply.message)
                responses[i] = _error(f"forward failed: {reply.message}")
                continue
            responses[i] = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("TIMESTAMP_BINS", result.bins[None, :]),
                    pb_utils.Tensor("SLOT_CONFIDENCE", result.confidence[None, :]),
                ]
            )
        for i, response in enumerate(responses):
            if response is None:  # a short results list: never leave a request unanswered
                responses[i] = _error("forward produced no result")
        return responses

    def finalize(self) -> None:
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            metrics.close()
        forward = getattr(self, "forward", None)
        device = getattr(self, "device", "cpu")
        self.forward = self.runner = None
        if forward is not None:
            del forward
            gc.collect()
            if device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()
        pb_utils.Logger.log_info(f"qwen3_aligner_core: released the forward on {device}")


def _error(message: str, code=None) -> object:
    """An error response (INTERNAL unless ``code`` says otherwise)."""
    code = pb_utils.TritonError.INTERNAL if code is None else code
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
