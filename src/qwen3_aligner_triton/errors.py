"""What a client is told when its request fails, and what the server log records.

A request the client got wrong (:class:`~qwen3_aligner_triton.requests.RequestError`) is answered
INVALID_ARG with its own message, which names the input and the limit. Anything else is the
server's failure: the client gets ``internal error (id ...)`` and nothing of the exception, whose
text and traceback go to the server log under the same id, so an operator can find what a client
reports.
"""

from __future__ import annotations

import traceback
import uuid
from dataclasses import dataclass

from .requests import RequestError

INVALID_ARG = "INVALID_ARG"  # names of pb_utils.TritonError codes
INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class ErrorReply:
    """One failed request's response and log entry."""

    message: str  # what the client reads
    code: str  # INVALID_ARG or INTERNAL (an attribute of pb_utils.TritonError)
    reason: str  # label for rejected_requests_total{reason=...}
    log: str | None = None  # for the server log; None for client mistakes
    error_id: str | None = None


def new_error_id() -> str:
    """A short random id that ties a client's error to the server's log entry."""
    return uuid.uuid4().hex[:12]


def _out_of_memory(error: BaseException) -> bool:
    """Python's MemoryError, torch's OutOfMemoryError (matched by name: no torch import here), or
    an error that says so itself (``out_of_memory``: the forward-only core's answer)."""
    return (
        isinstance(error, MemoryError)
        or bool(getattr(error, "out_of_memory", False))
        or any(cls.__name__ == "OutOfMemoryError" for cls in type(error).__mro__)
    )


def describe(error: BaseException, stage: str, internal_reason: str = "internal") -> ErrorReply:
    """The reply for a request that failed with ``error`` while ``stage`` (e.g. "preparing").

    ``internal_reason`` labels server-side failures in the metrics (e.g. "forward_failed").
    """
    if isinstance(error, RequestError):
        return ErrorReply(str(error), INVALID_ARG, error.reason)
    error_id = new_error_id()
    details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    message = f"internal error (id {error_id})"
    if _out_of_memory(
        error
    ):  # the forward already retried it alone: say what the client can act on
        message += ": out of memory, the request does not fit on the device even alone"
    return ErrorReply(
        message=message,
        code=INTERNAL,
        reason=internal_reason,
        log=f"{stage} failed (error id {error_id}): {details.rstrip()}",
        error_id=error_id,
    )
