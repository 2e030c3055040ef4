"""A stand-in for the core's forward, to measure the pipeline without a GPU (``simulate_gpu``).

:class:`SimulatedDevice` holds one machine-wide device (a file lock shared by every process) for
``A + B*n`` ms per pass of ``n`` clips and answers placeholder bins. The core loads it instead of
the model when its ``simulate_gpu`` parameter is set (``./scripts/serve --simulate-gpu``); the
parameter itself is parsed and validated by the product (``params.parse_gpu_cost``).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Sequence

import numpy as np

from qwen3_aligner_triton.contract import MEL_FRAME_MS
from qwen3_aligner_triton.core import CoreInput, SlotResult
from qwen3_aligner_triton.params import GpuCost

SIMULATED_DEVICE_LOCK = os.path.join(
    "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(),
    "qwen3-aligner-simulated-gpu.lock",
)


def placeholder_bins(slots: int, frames: int, segment_ms: float) -> np.ndarray:
    """Ordered start/end bins, one pair per unit, spread evenly inside ``frames`` of audio."""
    units = slots // 2
    duration_ms = frames * MEL_FRAME_MS
    k = np.arange(units, dtype=np.float64)
    starts = k * duration_ms / max(units, 1)
    ends = (k + 0.5) * duration_ms / max(units, 1)
    pairs = np.stack([starts, ends], axis=1).reshape(-1)
    return np.floor(pairs / segment_ms).astype(np.int32)


class SimulatedDevice:
    """Stands in for the forward: one machine-wide device held for ``A + B*n`` ms per pass.

    The device is a file lock, so every core instance and every server process on the machine
    shares it, as they would share one GPU. Results are placeholders, never alignments.
    """

    def __init__(
        self,
        cost: GpuCost,
        timestamp_token_id: int,
        segment_ms: float,
        lock_path: str = SIMULATED_DEVICE_LOCK,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cost = cost
        self.timestamp_token_id = timestamp_token_id
        self.segment_ms = segment_ms
        self.lock_path = lock_path
        self._sleep = sleep
        self.busy_s = 0.0  # seconds this process held the device

    def __call__(self, batch: Sequence[CoreInput]) -> list[SlotResult]:
        out = []
        for it in batch:
            slots = int(np.count_nonzero(it.input_ids == self.timestamp_token_id))
            bins = placeholder_bins(slots, it.frames, self.segment_ms)
            out.append(SlotResult(bins=bins, confidence=np.ones(slots, dtype=np.float32)))
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                started = time.perf_counter()
                self._sleep(self.cost.seconds(len(batch)))
                self.busy_s += time.perf_counter() - started
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return out
