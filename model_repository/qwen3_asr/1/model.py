"""Triton Python backend of ``qwen3_asr``: Qwen3-ASR for requests that come without a transcript.

Glue only: each request is one call of the front (``qwen3_aligner``) holding up to 32 chunks of
one recording, transcribed in one generate call exactly as upstream's ``Qwen3ASRModel`` does
(``qwen3_aligner_triton.asr.AsrRunner``). Requests are never mixed in one generate call, so a
request's answer does not depend on its batch-mates. Only the front of this server may call it
(``qwen3_aligner_triton.core_access``); exactly one response per request, nothing raises out of
``execute``.
"""

from __future__ import annotations

import os
import sys
import time

# The nvidia-pytriton wheel's stub embeds Python isolated: honour the launcher's PYTHONPATH (the
# served checkout's src/, triton_install.server_environment) as the other models do.
if sys.flags.ignore_environment:
    sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]

import numpy as np
import triton_python_backend_utils as pb_utils

from qwen3_aligner_triton.asr import (
    AsrCall,
    AsrCallError,
    asr_call_from_arrays,
    load_asr,
    transcript_arrays,
)
from qwen3_aligner_triton.contract import ASR_INPUTS, MODEL_SAMPLE_RATE
from qwen3_aligner_triton.core_access import REFUSED_MESSAGE, carries_key, server_key
from qwen3_aligner_triton.loading import resolve_device
from qwen3_aligner_triton.modelconfig import ASR_CONTRACT, check_config, instance_config
from qwen3_aligner_triton.params import read_asr_settings

WARMUP_SECONDS = 1.0  # of silence, transcribed once at load
# On a CPU placement the ASR instance shares the cores with the aligner's forward and the fronts:
# it takes half of them for its torch threads.
CPU_SHARE = 2


class TritonPythonModel:
    """One ASR instance on one device."""

    def initialize(self, args: dict) -> None:
        self.logger = pb_utils.Logger
        config = instance_config(args, self.logger.log_info)
        try:
            check_config(config, ASR_CONTRACT)
            settings = read_asr_settings(config.get("parameters", {}))
            device = resolve_device(args["model_instance_kind"], args["model_instance_device_id"])
        except ValueError as e:
            raise pb_utils.TritonModelException(f"{args['model_name']}: {e}") from e
        if device == "cpu":
            import torch

            torch.set_num_threads(max(1, (os.cpu_count() or 1) // CPU_SHARE))
        started = time.monotonic()
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        try:
            self.runner = load_asr(settings, device, shadowing_dir=version_dir)
        except ValueError as e:
            raise pb_utils.TritonModelException(str(e)) from e
        if settings.warmup:
            silence = np.zeros(int(WARMUP_SECONDS * MODEL_SAMPLE_RATE), dtype=np.float32)
            self.runner.run(AsrCall((silence,), ("",), (None,)))
        self.key = server_key()
        self.logger.log_info(
            f"{args['model_instance_name']}: ASR {settings.checkpoint} on {device} ready in "
            f"{time.monotonic() - started:.1f} s"
        )

    def execute(self, requests: list) -> list:
        """One generate call per request, in order; one response each."""
        responses = []
        for request in requests:
            try:
                if not carries_key(request.parameters(), self.key):
                    raise AsrCallError(REFUSED_MESSAGE)
                arrays = {}
                for name in ASR_INPUTS:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    arrays[name] = None if tensor is None else tensor.as_numpy()
                parts = self.runner.run(asr_call_from_arrays(arrays))
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[
                            pb_utils.Tensor(name, array)
                            for name, array in transcript_arrays(parts).items()
                        ]
                    )
                )
            except AsrCallError as e:
                responses.append(_error(str(e), pb_utils.TritonError.INVALID_ARG))
            except Exception as e:  # never raise out of execute(): the batch-mates are served
                self.logger.log_error(f"transcription failed: {e!r}")
                responses.append(_error("transcription failed", pb_utils.TritonError.INTERNAL))
        return responses

    def finalize(self) -> None:
        """Free the model's memory as the instance unloads."""
        self.runner = None
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass
        pb_utils.Logger.log_info("qwen3_asr: stopped")


def _error(message: str, code: object) -> object:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
