"""Triton Python backend of the public ``qwen3_aligner`` model: the front.

Each front instance validates and prepares requests (``qwen3_aligner_triton.front``), sends every
clip, window or cue to the forward-only ``qwen3_aligner_core`` with a BLS ``async_exec()`` and
answers each request through its response sender as soon as its own result is ready. ``execute``
is a coroutine: while one clip waits for the core, the instance prepares the next one. Exactly one
response per request; nothing raises out of ``execute``.

``execute`` takes one request at a time (``preferred_batch_size: [1]``) and returns once the front
has copied that request's inputs out of shared memory, so this instance's region holds one
request's inputs at most (``qwen3_aligner_triton.shared_memory``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

# The backend stub of the nvidia-pytriton wheel embeds Python isolated: it reads no PYTHONPATH,
# and qwen3_aligner_triton would come from wherever this environment's install points. The
# launcher names the served checkout's src/ first on PYTHONPATH (triton_install.server_environment):
# honour it as a Python that reads its environment would.
if sys.flags.ignore_environment:
    sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]

import triton_python_backend_utils as pb_utils

from qwen3_aligner_triton.asr import (
    ASR_MODEL_NAME,
    AsrCall,
    asr_request_arrays,
    transcripts_from_arrays,
)
from qwen3_aligner_triton.contract import ASR_OUTPUTS, DRAIN_MARKER
from qwen3_aligner_triton.core_access import key_parameters, server_key
from qwen3_aligner_triton.front import (
    CORE_MODEL_NAME,
    CORE_OUTPUTS,
    REQUEST_INPUTS,
    AlignerFront,
    AsrFailed,
    CoreFailed,
    Outcome,
    core_request_arrays,
    slots_from_arrays,
)
from qwen3_aligner_triton.loading import load_preparer
from qwen3_aligner_triton.metrics import AlignerMetrics
from qwen3_aligner_triton.modelconfig import (
    FRONT_ASR_CONTRACT,
    FRONT_CONTRACT,
    check_asr_beside,
    check_audio_inputs,
    check_config,
    check_one_request_per_execute,
    check_optional_transcript,
    instance_config,
)
from qwen3_aligner_triton.params import read_front_settings
from qwen3_aligner_triton.repository import core_parameters
from qwen3_aligner_triton.shared_memory import front_instances, plan, shm_size

FRONT_TORCH_THREADS = 1  # several front instances share the cores; one thread each
# Requests one instance holds at once (as many as one execute() call may bring). Beyond that,
# execute() waits and Triton's queue (with its size and timeout policy) holds the rest.
MAX_REQUESTS_PER_INSTANCE = 16
# async_exec() runs each core call in the event loop's default executor and holds one of its
# threads for the call's whole round trip. Python's default pool has min(32, CPUs + 4) threads
# (6 on two cores): fewer than the clips one instance keeps in flight, which then waited for a
# thread before reaching the core's batcher. The parent process serves up to 32 calls of one
# instance at once (the Python backend's thread-pool-size).
CORE_CALL_THREADS = 32


class TritonPythonModel:
    """One front instance: preparation and results on the CPU, the forward in the core."""

    def initialize(self, args: dict) -> None:
        import torch

        torch.set_num_threads(FRONT_TORCH_THREADS)
        self.logger = pb_utils.Logger
        config = instance_config(args, self.logger.log_info)
        try:
            check_config(config, FRONT_CONTRACT)
            check_audio_inputs(config)
            check_one_request_per_execute(config)
            # The prompt limit is the core's: one value, in the core's configuration.
            settings = read_front_settings(
                config.get("parameters", {}), core_parameters(args["model_repository"])
            )
            if settings.asr:  # requests without TEXT: the ASR model beside this one
                check_config(config, FRONT_ASR_CONTRACT)
                check_optional_transcript(config)
                check_asr_beside(args["model_repository"])
            # The largest request every front instance can hold in /dev/shm at once.
            shm = plan(settings, front_instances(config), shm_size())
            if shm.lowered:
                self.logger.log_warn(f"{args['model_instance_name']}: {shm.describe()}")
                settings = replace(
                    settings,
                    max_audio_samples=shm.max_audio_samples,
                    max_audio_file_bytes=shm.max_audio_file_bytes,
                )
            self.settings = settings
        except ValueError as e:
            raise pb_utils.TritonModelException(f"{args['model_name']}: {e}") from e
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        started = time.monotonic()
        try:
            preparer = load_preparer(self.settings.checkpoint, self.settings, version_dir)
        except ValueError as e:
            raise pb_utils.TritonModelException(str(e)) from e
        if self.settings.warmup:
            preparer.load_word_splitters()
        # The core serves only this server's front: each call carries the server's key.
        self._core_parameters = key_parameters(server_key())
        self.metrics = AlignerMetrics(pb_utils, args["model_name"], args["model_version"])
        self._tasks: set[asyncio.Task] = set()  # requests started and not yet answered
        self._room = asyncio.Semaphore(MAX_REQUESTS_PER_INSTANCE)
        self._core_calls: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # While this file exists the server is stopping: requests that reach the front are
        # refused (UNAVAILABLE) so that the ones in flight can finish first.
        marker = os.path.join(args["model_repository"], DRAIN_MARKER)
        self.front = AlignerFront(
            preparer,
            self._core,
            self.metrics,
            self.logger.log_error,
            stopping=lambda: os.path.exists(marker),
            # OpenMP keeps its thread count per thread: the preparation thread sets its own.
            thread_setup=lambda: torch.set_num_threads(FRONT_TORCH_THREADS),
            asr=self._asr if self.settings.asr else None,
        )
        self.logger.log_info(
            f"{args['model_instance_name']}: front ready in {time.monotonic() - started:.1f} s"
        )

    async def execute(self, requests: list) -> None:
        """Start answering ``requests`` and return: each is answered through its response sender
        when its result is ready, so the instance takes the next requests meanwhile (prepares
        them while earlier clips are in the core's batch)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # the stub's loop: give its core calls enough threads
            self._core_calls = ThreadPoolExecutor(CORE_CALL_THREADS, thread_name_prefix="core")
            loop.set_default_executor(self._core_calls)
            self._loop = loop
            # Decoding and results run on this thread (preparation on the front's own). OpenMP
            # keeps its thread count per thread: initialize()'s setting does not reach this one.
            import torch

            torch.set_num_threads(FRONT_TORCH_THREADS)
        for request in requests:
            await self._room.acquire()
            # The task keeps the response sender and views of the inputs, never the request:
            # once the front has copied what it keeps, the views go, and when this call returns
            # nothing holds the request's shared memory.
            sender = request.get_response_sender()
            arrays = {}
            for name in REQUEST_INPUTS:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                arrays[name] = None if tensor is None else tensor.as_numpy()
            del tensor
            released = asyncio.Event()
            task = loop.create_task(self._answer(sender, arrays, released))
            del arrays
            self._tasks.add(task)
            task.add_done_callback(self._done)
            await released.wait()
        return None

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._room.release()

    async def idle(self) -> None:
        """Wait until every started request is answered."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _answer(self, sender, arrays: dict, released: asyncio.Event) -> None:
        self.metrics.request_started()
        try:
            await self._serve(sender, arrays, released)
        finally:
            released.set()
            self.metrics.request_answered()

    async def _serve(self, sender, arrays: dict, released: asyncio.Event) -> None:
        try:
            outcome = await self.front.serve(arrays, released.set)
        except Exception as e:  # serve() catches everything; this is the last resort
            self.logger.log_error(f"answering a request failed: {e!r}")
            outcome = Outcome(error=f"cannot serve request: {e}")
        try:
            sender.send(_response(outcome), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as e:
            self.logger.log_error(f"sending a response failed: {e!r}")

    async def _core(self, item) -> object:
        """One clip, window or cue through the core: its slots."""
        outputs = await self._call(
            CORE_MODEL_NAME, CORE_OUTPUTS, core_request_arrays(item), CoreFailed
        )
        return slots_from_arrays(outputs)

    async def _asr(self, call: AsrCall) -> list:
        """One call of the ASR model: up to 32 chunks of one request, one generate call."""
        outputs = await self._call(ASR_MODEL_NAME, ASR_OUTPUTS, asr_request_arrays(call), AsrFailed)
        return transcripts_from_arrays(outputs)

    async def _call(self, model: str, outputs, arrays: dict, failure: type) -> dict:
        """A BLS call of ``model`` beside this one (with the server's key): its ``outputs`` as
        arrays, or ``failure`` raised with the model's message."""
        request = pb_utils.InferenceRequest(
            model_name=model,
            requested_output_names=list(outputs),
            inputs=[pb_utils.Tensor(name, array) for name, array in arrays.items()],
            parameters=self._core_parameters,
        )
        response = await request.async_exec()
        if response.has_error():
            raise failure(response.error().message())
        return {
            name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs
        }

    def finalize(self) -> None:
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            metrics.close()
        core_calls = getattr(self, "_core_calls", None)
        if core_calls is not None:
            core_calls.shutdown(wait=False)
        front = getattr(self, "front", None)
        if front is not None:
            front.close()
        self.front = None
        pb_utils.Logger.log_info("qwen3_aligner: front stopped")


def _response(outcome: Outcome) -> object:
    if outcome.outputs is not None:
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(n, a) for n, a in outcome.outputs.items()]
        )
    if outcome.invalid:
        code = pb_utils.TritonError.INVALID_ARG
    elif outcome.unavailable:
        code = pb_utils.TritonError.UNAVAILABLE
    else:
        code = pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(outcome.error, code))
