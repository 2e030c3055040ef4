"""The OpenAI-style front's way to the aligner: one request to ``qwen3_aligner`` over Triton's gRPC.

The uploaded file goes to the model as ``AUDIO_FILE`` (decoded and checked there, never here), the
transcript as ``TEXT``. Triton's errors become :class:`BackendError` with the HTTP status and
OpenAI error type the front answers with.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from ..contract import MODEL_NAME

# gRPC status -> (HTTP status, OpenAI error type). What the model refuses (INVALID_ARGUMENT) is the
# caller's to fix; UNAVAILABLE is a server that is stopping, restarting or turning work away.
STATUS_MAP: dict[str, tuple[int, str]] = {
    "StatusCode.INVALID_ARGUMENT": (400, "invalid_request_error"),
    "StatusCode.NOT_FOUND": (503, "service_unavailable"),
    "StatusCode.UNAVAILABLE": (503, "service_unavailable"),
    "StatusCode.RESOURCE_EXHAUSTED": (429, "rate_limit_error"),
    "StatusCode.DEADLINE_EXCEEDED": (504, "timeout_error"),
    "StatusCode.CANCELLED": (499, "cancelled"),
}
# Over gRPC a message is capped at 4 MiB unless both sides raise it; the front's upload limit is
# what bounds a request.
GRPC_MESSAGE_BYTES = 2**31 - 1


class BackendError(Exception):
    """A request Triton did not answer with an alignment; ``status`` is the HTTP status to give."""

    def __init__(self, message: str, status: int, error_type: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


@dataclass(frozen=True)
class AlignRequest:
    """What one upload asks of the aligner: ``text`` None asks the server to transcribe first
    (its ASR model), in ``language`` or, None, the detected one, guided by ``context``."""

    audio_file: bytes
    text: str | None
    language: str | None
    context: str = ""


def _string_tensor(name: str, value: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[value]], dtype=np.object_))
    return tensor


def request_tensors(request: AlignRequest) -> list[grpcclient.InferInput]:
    """The model's inputs for ``request``: ``AUDIO_FILE``, then ``TEXT``, ``LANGUAGE`` and
    ``CONTEXT`` where given."""
    tensors = [_string_tensor("AUDIO_FILE", request.audio_file)]
    for name, value in (("TEXT", request.text), ("LANGUAGE", request.language)):
        if value is not None:
            tensors.append(_string_tensor(name, value.encode("utf-8")))
    if request.context:
        tensors.append(_string_tensor("CONTEXT", request.context.encode("utf-8")))
    return tensors


def classify(error: InferenceServerException) -> BackendError:
    """``error`` as the front reports it: the model's message, the status it maps to."""
    status = str(error.status() or "")
    message = error.message() or str(error)
    http_status, error_type = STATUS_MAP.get(status, (500, "server_error"))
    if http_status == 500:
        message = f"the aligner failed: {message}"
    return BackendError(message, http_status, error_type)


class TritonAligner:
    """A gRPC connection to Triton, shared by every request of the front (its calls interleave)."""

    def __init__(self, url: str, timeout: float, model: str = MODEL_NAME) -> None:
        self.url = url
        self.timeout = timeout
        self.model = model
        self._connection: Any = None

    @property
    def _client(self) -> Any:
        # Made on first use: a gRPC aio channel belongs to the event loop it was made in, which is
        # the server's, not the one (if any) that built the app.
        if self._connection is None:
            self._connection = grpcclient.InferenceServerClient(
                self.url,
                channel_args=[
                    ("grpc.max_send_message_length", GRPC_MESSAGE_BYTES),
                    ("grpc.max_receive_message_length", GRPC_MESSAGE_BYTES),
                ],
            )
        return self._connection

    async def ready(self) -> bool:
        """True when Triton is ready and serves the model (what Triton's own readiness says)."""
        try:
            if not await self._client.is_server_ready():
                return False
            return bool(await self._client.is_model_ready(self.model))
        except (InferenceServerException, grpc.RpcError, OSError):
            return False

    async def align(self, request: AlignRequest) -> str:
        """The model's ``ALIGNMENT`` document for ``request``; raises :class:`BackendError`."""
        try:
            result = await self._client.infer(
                self.model,
                request_tensors(request),
                outputs=[grpcclient.InferRequestedOutput("ALIGNMENT")],
                client_timeout=self.timeout,
            )
        except InferenceServerException as e:
            raise classify(e) from e
        except asyncio.TimeoutError as e:
            raise BackendError(
                f"the aligner gave no answer in {self.timeout:g} s", 504, "timeout_error"
            ) from e
        output = result.as_numpy("ALIGNMENT")
        if output is None or output.size != 1:
            raise BackendError("the aligner's answer has no ALIGNMENT", 502, "server_error")
        document = output.reshape(-1)[0]
        return document.decode("utf-8") if isinstance(document, bytes) else str(document)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
