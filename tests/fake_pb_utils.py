"""A small stand-in for ``triton_python_backend_utils`` so model.py runs without Triton."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import ClassVar

import numpy as np


class TritonModelException(Exception):
    pass


class TritonError:
    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message: str, code: int = 1) -> None:
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def __call__(self) -> TritonError:
        # A BLS response's error is read as ``response.error()``; model.py's as ``.error``.
        return self


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name = name
        self._array = array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1


class ResponseSender:
    """Records what a model sends for one request."""

    def __init__(self) -> None:
        self.sent: list[tuple[object, int]] = []
        self.final = threading.Event()  # set once the final response is sent

    def send(self, response=None, flags: int = 0) -> None:
        self.sent.append((response, flags))
        if flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            self.final.set()


class InferenceRequest:
    """A request as the backend sees it (named input tensors), or one a model builds for BLS.

    ``InferenceRequest.handler`` answers BLS calls: a function of the request returning an
    ``InferenceResponse`` (tests wire it to another model's ``execute``).
    """

    handler: ClassVar[Callable[[InferenceRequest], InferenceResponse] | None] = None

    def __init__(
        self, inputs=None, model_name: str = "", requested_output_names=None, parameters=None
    ) -> None:
        if isinstance(inputs, list):
            inputs = {t.name(): t.as_numpy() for t in inputs}
        self.inputs: dict[str, np.ndarray] = dict(inputs or {})
        self.model_name = model_name
        self.requested_output_names = list(requested_output_names or [])
        if parameters is not None:  # as the stub checks a BLS request's parameters
            for key, value in parameters.items():
                if not isinstance(key, str) or not isinstance(value, bool | int | str):
                    raise TypeError(f"parameter {key!r}: keys str, values bool/int/str")
        self._parameters = dict(parameters or {})
        self.sender = ResponseSender()

    def parameters(self) -> str:
        """The request's parameters as the JSON text the stub returns."""
        return json.dumps(self._parameters)

    def get_response_sender(self) -> ResponseSender:
        return self.sender

    async def async_exec(self) -> InferenceResponse:
        """As the stub does: the blocking call runs in the event loop's default executor."""
        handler = InferenceRequest.handler
        assert handler is not None, "no BLS handler installed"
        return await asyncio.get_running_loop().run_in_executor(None, handler, self)


class InferenceResponse:
    def __init__(self, output_tensors=None, error: TritonError | None = None) -> None:
        self.output_tensors = list(output_tensors or [])
        self.error = error

    def has_error(self) -> bool:
        return self.error is not None

    def output(self, name: str) -> np.ndarray:
        for t in self.output_tensors:
            if t.name() == name:
                return t.as_numpy()
        raise KeyError(name)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    for t in response.output_tensors:
        if t.name() == name:
            return t
    return None


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    array = request.inputs.get(name)
    return None if array is None else Tensor(name, array)


class Logger:
    records: ClassVar[list[tuple[str, str]]] = []

    @classmethod
    def log_info(cls, message: str) -> None:
        cls.records.append(("info", message))

    @classmethod
    def log_warn(cls, message: str) -> None:
        cls.records.append(("warn", message))

    @classmethod
    def log_error(cls, message: str) -> None:
        cls.records.append(("error", message))

    @classmethod
    def log_verbose(cls, message: str) -> None:
        cls.records.append(("verbose", message))


class _FakeMetric:
    def __init__(self, labels: dict, buckets=None) -> None:
        self.labels = labels
        self.buckets = buckets
        self.value = 0.0
        self.observations: list[float] = []

    def increment(self, value: float) -> None:
        self.value += value

    def set(self, value: float) -> None:
        self.value = value

    def observe(self, value: float) -> None:
        self.observations.append(value)


class MetricFamily:
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2
    families: ClassVar[dict[str, MetricFamily]] = {}  # the latest family of each name
    instances: ClassVar[list[MetricFamily]] = []  # every family (each model instance has its own)

    def __init__(self, name: str, description: str, kind: int) -> None:
        self.name = name
        self.kind = kind
        self.metrics: list[_FakeMetric] = []
        MetricFamily.families[name] = self
        MetricFamily.instances.append(self)

    def Metric(self, labels: dict, buckets=None) -> _FakeMetric:
        metric = _FakeMetric(labels, buckets)
        self.metrics.append(metric)
        return metric
