"""The model's own Prometheus metrics, exported through Triton's metrics port.

Triton counts a request answered with a per-request error as a *success*, so rejected requests are
counted here by reason. The families are created through ``pb_utils.MetricFamily`` and labelled
with the model name and version; every metric here is a plain method call for model.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

AUDIO_SECONDS = "qwen3_aligner_audio_seconds_total"
UNITS = "qwen3_aligner_units_total"
REJECTED = "qwen3_aligner_rejected_requests_total"
BATCH_SIZE = "qwen3_aligner_forward_batch_size"
STAGE_SECONDS = "qwen3_aligner_stage_seconds"
MEAN_SCORE = "qwen3_aligner_request_mean_score"
REPAIRED_SHARE = "qwen3_aligner_request_repaired_share"
IN_FLIGHT = "qwen3_aligner_requests_in_flight"
SERVER_RESTARTS = "qwen3_aligner_server_restarts"
# Set by the launcher's watchdog in the environment of each tritonserver it starts (the stubs
# inherit it): how often it has restarted the server (tritonserver.RESTARTS_ENV).
RESTARTS_ENV = "QWEN3_ALIGNER_SERVER_RESTARTS"
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64]
STAGE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
# device_queue: in the core, each clip's wait from its arrival to the start of its forward pass.
# transcribe: in the front, a request's calls of the ASR model (requests without TEXT).
STAGES = ("preprocess", "device_queue", "forward", "postprocess", "transcribe")
# Per-request quality, both in [0, 1]: finer steps near the ends, where drift first shows.
SCORE_BUCKETS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0]
SHARE_BUCKETS = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0]


def server_restarts(environ: Mapping[str, str] | None = None) -> int:
    """How often the launcher's watchdog has restarted this server: 0 when not told."""
    value = (os.environ if environ is None else environ).get(RESTARTS_ENV, "")
    try:
        return max(0, int(value))
    except ValueError:
        return 0


class AlignerMetrics:
    """Counters and histograms of one model instance (``pb`` is triton_python_backend_utils)."""

    def __init__(self, pb: Any, model: str, version: str) -> None:
        family = pb.MetricFamily
        self._labels = {"model": model, "version": str(version)}
        # Triton requires each MetricFamily to outlive its Metrics: keep references to both.
        self._families = {
            AUDIO_SECONDS: family(
                AUDIO_SECONDS, "Seconds of audio aligned successfully", family.COUNTER
            ),
            UNITS: family(UNITS, "Words/characters aligned", family.COUNTER),
            REJECTED: family(
                REJECTED, "Requests answered with an error, by reason", family.COUNTER
            ),
            BATCH_SIZE: family(BATCH_SIZE, "Requests per executed forward pass", family.HISTOGRAM),
            STAGE_SECONDS: family(
                STAGE_SECONDS, "Seconds spent per stage of one execute()", family.HISTOGRAM
            ),
            MEAN_SCORE: family(
                MEAN_SCORE, "Mean unit score of each aligned request (0-1)", family.HISTOGRAM
            ),
            REPAIRED_SHARE: family(
                REPAIRED_SHARE,
                "Share of each aligned request's units whose timestamps were repaired",
                family.HISTOGRAM,
            ),
            IN_FLIGHT: family(
                IN_FLIGHT,
                "Requests the front has accepted and not yet answered",
                family.GAUGE,
            ),
            SERVER_RESTARTS: family(
                SERVER_RESTARTS,
                "Times the launcher's watchdog restarted tritonserver after a backend stub died",
                family.GAUGE,
            ),
        }
        # Set once: a restart starts a new server, whose models read the new count.
        self._restarts = self._families[SERVER_RESTARTS].Metric(labels=self._labels)
        self._restarts.set(server_restarts())
        self._in_flight = self._families[IN_FLIGHT].Metric(labels=self._labels)
        self._audio = self._families[AUDIO_SECONDS].Metric(labels=self._labels)
        self._units = self._families[UNITS].Metric(labels=self._labels)
        self._rejected: dict[str, Any] = {}
        self._batch = self._families[BATCH_SIZE].Metric(labels=self._labels, buckets=BATCH_BUCKETS)
        self._mean_score = self._families[MEAN_SCORE].Metric(
            labels=self._labels, buckets=SCORE_BUCKETS
        )
        self._repaired_share = self._families[REPAIRED_SHARE].Metric(
            labels=self._labels, buckets=SHARE_BUCKETS
        )
        self._stages = {
            stage: self._families[STAGE_SECONDS].Metric(
                labels={**self._labels, "stage": stage}, buckets=STAGE_BUCKETS
            )
            for stage in STAGES
        }

    def close(self) -> None:
        """Drop the metrics before their families, in the order Triton requires."""
        self._rejected.clear()
        self._stages.clear()
        self._audio = self._units = self._batch = self._in_flight = self._restarts = None
        self._mean_score = self._repaired_share = None
        self._families.clear()

    def request_started(self) -> None:
        """A request was accepted; :meth:`request_answered` follows once its response is sent.
        The launcher's drain waits for the sum over instances to reach zero."""
        self._in_flight.increment(1)

    def request_answered(self) -> None:
        self._in_flight.increment(-1)

    def rejected(self, reason: str) -> None:
        metric = self._rejected.get(reason)
        if metric is None:
            metric = self._families[REJECTED].Metric(labels={**self._labels, "reason": reason})
            self._rejected[reason] = metric
        metric.increment(1)

    def aligned(self, audio_seconds: float, units: int) -> None:
        self._audio.increment(audio_seconds)
        self._units.increment(units)

    def scored(self, mean_score: float, repaired_share: float) -> None:
        """One aligned request's quality: its mean unit score and repaired share."""
        self._mean_score.observe(mean_score)
        self._repaired_share.observe(repaired_share)

    def stage(self, name: str, seconds: float) -> None:
        self._stages[name].observe(seconds)

    def forward_done(self, batch_size: int, forward_s: float, postprocess_s: float) -> None:
        self._batch.observe(batch_size)
        self._stages["forward"].observe(forward_s)
        self._stages["postprocess"].observe(postprocess_s)
