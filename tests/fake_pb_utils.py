"""A small stand-in for ``triton_python_backend_utils`` so model.py runs without Triton."""

from __future__ import annotations

from dataclasses import dataclass, field
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


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name = name
        self._array = array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


@dataclass
class InferenceRequest:
    """A request as the backend sees it: named input tensors."""

    inputs: dict[str, np.ndarray] = field(default_factory=dict)


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
    families: ClassVar[dict[str, MetricFamily]] = {}

    def __init__(self, name: str, description: str, kind: int) -> None:
        self.name = name
        self.kind = kind
        self.metrics: list[_FakeMetric] = []
        MetricFamily.families[name] = self

    def Metric(self, labels: dict, buckets=None) -> _FakeMetric:
        metric = _FakeMetric(labels, buckets)
        self.metrics.append(metric)
        return metric
