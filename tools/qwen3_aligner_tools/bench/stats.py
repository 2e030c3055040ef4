"""Numbers of one measured pass, their summaries across repeats, and plain-text tables."""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def metric_sum(text: str, name: str, labels: Sequence[str]) -> float:
    """Sum, in a scrape of Triton's metrics port, of the samples of ``name`` whose labels include
    every one of ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text, _, value = line[len(name) + 1 :].rpartition("}")
        have = label_text.split(",")
        if all(want in have for want in labels):
            total += float(value.split()[0])
    return total


@dataclass
class PassResult:
    """One pass of a mode over the whole workload."""

    mode: str
    wall_seconds: float
    audio_seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds, one per successful request
    errors: int = 0
    first_error: str = ""
    # CPU seconds the alignment used (all threads; client + server processes when served): the
    # cost side of throughput. Contention inflates it too, though less than wall time.
    cpu_seconds: float = float("nan")
    load_average: float = float("nan")  # 1-minute load average when the pass ended

    @property
    def requests(self) -> int:
        """Requests answered successfully."""
        return len(self.latencies)

    @property
    def audio_per_second(self) -> float:
        """Seconds of audio aligned per wall-clock second (throughput, x real time)."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("nan")

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.wall_seconds if self.wall_seconds > 0 else float("nan")

    @property
    def cpu_per_audio_second(self) -> float:
        """CPU seconds spent per second of audio aligned (cost, whatever the neighbours do)."""
        return self.cpu_seconds / self.audio_seconds if self.audio_seconds > 0 else float("nan")

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99)


@dataclass
class ModeSummary:
    """All passes of one mode: the median pass stands for the mode."""

    mode: str
    passes: list[PassResult]

    def _median(self, values: Iterable[float]) -> float:
        data = list(values)
        return statistics.median(data) if data else float("nan")

    @property
    def audio_per_second(self) -> float:
        return self._median(p.audio_per_second for p in self.passes)

    @property
    def requests_per_second(self) -> float:
        return self._median(p.requests_per_second for p in self.passes)

    @property
    def cpu_per_audio_second(self) -> float:
        return self._median(p.cpu_per_audio_second for p in self.passes)

    @property
    def load_average(self) -> float:
        return self._median(p.load_average for p in self.passes)

    @property
    def p50(self) -> float:
        return self._median(p.p50 for p in self.passes)

    @property
    def p99(self) -> float:
        return self._median(p.p99 for p in self.passes)

    @property
    def errors(self) -> int:
        return sum(p.errors for p in self.passes)


def load_average() -> float:
    """The 1-minute load average (NaN where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def paired_ratio(numerator: Sequence[PassResult], denominator: Sequence[PassResult]) -> float:
    """Median over rounds of numerator/denominator throughput, pairing passes of the same round.

    Passes of one round ran minutes apart at most, so their ratio cancels most of the drift of a
    shared, noisy machine; the median of the per-round ratios then drops outlier rounds.
    """
    ratios = [
        n.audio_per_second / d.audio_per_second
        for n, d in zip(numerator, denominator, strict=False)
        if d.audio_per_second > 0
    ]
    return statistics.median(ratios) if ratios else float("nan")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (readable as plain text): numbers right-aligned, text left-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells for {len(headers)} columns: {row}")
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if num else ("-" * (w + 2))
            for w, num in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return "\n".join([line(list(headers)), rule, *(line(row) for row in cells)])


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)
