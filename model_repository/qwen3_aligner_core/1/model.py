"""Triton Python backend of ``qwen3_aligner_core``: the aligner's forward pass and nothing else.

The public model ``qwen3_aligner`` (the front) prepares each clip and sends it here: prompt ids and
either its log-mel FEATURES or its 16 kHz AUDIO, whose frames are then made here on the device.
``execute()`` is a coroutine that only queues the clips Triton hands it and returns, so Triton
copies in the next clips while the device works: whenever the device is free, its next pass takes
every clip waiting (``qwen3_aligner_triton.core.DeviceQueue``), in length-bucketed forward passes.
Each clip is answered through its response sender as soon as its pass is done: per
``<timestamp>`` slot, the bin and the model's confidence in it.

Only the front of this server may call it (``qwen3_aligner_triton.core_access``): every clip is
checked before it may share a pass with others, nothing raises out of ``execute()``, and a CUDA
error that leaves the device unusable ends this stub so that the server is restarted.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from functools import partial

# The stub's Python is isolated and reads no PYTHONPATH; the launcher names the served checkout's
# src/ there (why: qwen3_aligner/1/model.py).
if sys.flags.ignore_environment:
    sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]

import triton_python_backend_utils as pb_utils

from qwen3_aligner_triton.core import (
    ClipRules,
    CoreInput,
    CoreRunner,
    DeviceQueue,
    NoResult,
    Outcome,
    PassLog,
    clips_held,
    cpu_instances,
    fatal_device_error,
    forward_threads,
    refusal,
)
from qwen3_aligner_triton.core_access import REFUSED_MESSAGE, carries_key, server_key
from qwen3_aligner_triton.errors import describe
from qwen3_aligner_triton.loading import load_forward, resolve_device
from qwen3_aligner_triton.metrics import AlignerMetrics
from qwen3_aligner_triton.modelconfig import CORE_CONTRACT, check_config, instance_config
from qwen3_aligner_triton.params import read_core_settings, read_simulation

DEVICE_LOST_EXIT_CODE = 70  # the stub's exit status after a CUDA error (the server restarts)
DEVICE_LOST_GRACE_SECONDS = 1.0  # for the error responses to go out before the stub exits


class TritonPythonModel:
    """One forward instance on one device (or one simulated device)."""

    def initialize(self, args: dict) -> None:
        self.logger = pb_utils.Logger
        config = instance_config(args, self.logger.log_info)
        try:
            check_config(config, CORE_CONTRACT)
            parameters = config.get("parameters", {})
            self.settings = read_core_settings(parameters)
            self.simulation = read_simulation(parameters)
            kind, device_id = args["model_instance_kind"], args["model_instance_device_id"]
            self.device = resolve_device(kind, device_id)
        except ValueError as e:
            raise pb_utils.TritonModelException(f"{args['model_name']}: {e}") from e
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        started = time.monotonic()
        try:
            self.forward = load_forward(
                self.settings, self.device, shadowing_dir=version_dir, simulation=self.simulation
            )
        except ValueError as e:
            raise pb_utils.TritonModelException(str(e)) from e
        self.key = server_key()
        self.rules: ClipRules = self.forward.rules
        self.exit = os._exit  # replaced in tests
        self.metrics = AlignerMetrics(pb_utils, args["model_name"], args["model_version"])
        passes = PassLog(self.metrics)  # recorded on the device thread, sent from the loop
        self.runner = CoreRunner(
            self.forward.run,
            self.settings,
            passes,
            self.device.startswith("cuda"),
            oom_above_tokens=self.simulation.simulate_oom_above_tokens,
        )
        batch = self.settings.max_forward_batch
        self.queue = DeviceQueue(
            lambda items: self.runner.run(items),
            batch,
            clips_held(batch),
            after_pass=passes.flush,
            on_start=self._waited,
            thread_setup=self._share_cores(config),
        )
        self.logger.log_info(
            f"{args['model_instance_name']}: {self.forward.description} ready in "
            f"{time.monotonic() - started:.1f} s"
        )

    async def execute(self, requests: list) -> None:
        """Queue each valid clip for the device; each request is answered through its response
        sender (invalid ones at once). Returns once the instance can take another clip: at once
        on a GPU, where it holds up to two passes' worth; with one clip per pass (CPU) only
        when that clip is answered, so Triton hands the next clip to a free instance."""
        for i, request in enumerate(requests):
            try:
                if not carries_key(request.parameters(), self.key):
                    _send(request, _error(REFUSED_MESSAGE, pb_utils.TritonError.INVALID_ARG))
                    continue
                item, why = _core_input(request, self.settings, self.rules)
            except Exception as e:  # never raise out of execute(): the batch-mates are served
                self.logger.log_error(f"reading clip {i} failed: {e!r}")
                item, why = None, "the request's inputs could not be read"
            if item is None:
                _send(request, _error(why, pb_utils.TritonError.INVALID_ARG))
                continue
            future = await self.queue.submit(item)
            future.add_done_callback(partial(self._answer, request, i))
        await self.queue.room()
        return None

    def _share_cores(self, config: dict) -> Callable[[], None] | None:
        """On the CPU, the device thread's setup: each forward instance runs its passes with its
        share of the cores, unless OMP_NUM_THREADS says otherwise; None elsewhere."""
        if self.device != "cpu" or "OMP_NUM_THREADS" in os.environ:
            return None
        import torch

        threads = forward_threads(torch.get_num_threads(), cpu_instances(config))
        self.logger.log_info(f"forward on the CPU with {threads} torch thread(s) per instance")
        return partial(torch.set_num_threads, threads)

    def _waited(self, waits: list[float]) -> None:
        for seconds in waits:
            self.metrics.stage("device_queue", seconds)

    def _answer(self, request, index: int, future) -> None:
        """Answer ``request`` with its clip's outcome (runs on the loop once its pass is done)."""
        try:
            outcome: Outcome = future.result()
            if isinstance(outcome, NoResult):
                response = _error(str(outcome))
            elif isinstance(outcome, Exception):
                # The exception's text goes to the log only, under the id the caller is told.
                reply = describe(outcome, f"forward of clip {index}", "forward_failed")
                self.logger.log_error(reply.log or reply.message)
                response = _error(f"forward failed: {reply.message}")
                if fatal_device_error(outcome):
                    self._device_lost(outcome)
            else:
                response = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("TIMESTAMP_BINS", outcome.bins[None, :]),
                        pb_utils.Tensor("SLOT_CONFIDENCE", outcome.confidence[None, :]),
                    ]
                )
        except Exception as e:  # never leave a request unanswered
            self.logger.log_error(f"answering clip {index} failed: {e!r}")
            response = _error("forward produced no result")
        _send(request, response)

    def _device_lost(self, error: Exception) -> None:
        """End this stub shortly (once the error responses are out): its CUDA context is
        unusable, so every later forward would fail while the server still looked ready. The
        launcher's watchdog restarts the server; until it is back it is not ready."""
        if getattr(self, "_exiting", False):
            return
        self._exiting = True
        self.logger.log_error(
            f"the device is unusable after {type(error).__name__}; this stub exits so that the "
            "server restarts"
        )
        timer = threading.Timer(DEVICE_LOST_GRACE_SECONDS, self.exit, (DEVICE_LOST_EXIT_CODE,))
        timer.daemon = True
        timer.start()

    def finalize(self) -> None:
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            metrics.close()
        forward = getattr(self, "forward", None)
        device = getattr(self, "device", "cpu")
        queue = getattr(self, "queue", None)
        if queue is not None:
            queue.close()
        self.forward = self.runner = self.queue = None
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


def _core_input(request, settings, rules: ClipRules) -> tuple[CoreInput | None, str]:
    """The request's clip, or None and why it is refused."""
    ids = pb_utils.get_input_tensor_by_name(request, "INPUT_IDS")
    features = pb_utils.get_input_tensor_by_name(request, "FEATURES")
    audio = pb_utils.get_input_tensor_by_name(request, "AUDIO")
    if ids is None or (features is None and audio is None):
        return None, "INPUT_IDS and one of FEATURES or AUDIO are required"
    ids = ids.as_numpy()
    frames = None if features is None else features.as_numpy()
    wave = None if audio is None else audio.as_numpy()
    # One clip per request, batch dimension 1: a second row would be read as more of the clip.
    for name, array, rank in (("INPUT_IDS", ids, 2), ("FEATURES", frames, 3), ("AUDIO", wave, 2)):
        if array is not None and (array.ndim != rank or array.shape[0] != 1):
            return None, f"{name} must hold one clip (batch dimension 1), got shape {array.shape}"
    item = CoreInput(
        ids[0],
        features=None if frames is None else frames[0],
        wave=None if wave is None else wave[0],
    )
    why = refusal(item, settings, rules)
    return (None, why) if why is not None else (item, "")


def _send(request, response) -> None:
    """The request's one and final response."""
    try:
        request.get_response_sender().send(
            response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        )
    except Exception as e:
        pb_utils.Logger.log_error(f"sending a response failed: {e!r}")
