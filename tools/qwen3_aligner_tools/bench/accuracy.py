"""Word-boundary accuracy of the engine on held-out synthetic speech with known word times.

    .venv/bin/python -m qwen3_aligner_tools.bench.accuracy [--checkpoint DIR] [--random]

Three figures, each the mean absolute error (ms) of every word start and end against the truth:

* ``single``: clips of 2-16 s aligned one request each;
* ``long``: recordings of several such clips back to back, longer than the window, aligned window
  by window (``window_seconds`` below the recording's length);
* ``cues``: the same long recordings sent with one cue per clip (SEGMENTS mode).

The held-out clips come from seeds the trained checkpoint never saw.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qwen3_aligner_triton.inprocess import InProcessAligner
from qwen3_aligner_triton.params import PipelineSettings
from qwen3_aligner_triton.requests import AlignRequest, Segment
from qwen3_aligner_triton.results import Alignment

from ..checkpoint_training import SAMPLE_RATE, SyntheticClip, concatenate, synthetic_set

HELD_OUT_SEED = 10_000  # training draws from seed + 1 of its settings; far from this
LONG_WINDOW_SECONDS = 40.0  # at most 32 s can loop: see the longform plan's last-window rule
CUE_PAD_SECONDS = 0.2


@dataclass(frozen=True)
class Accuracy:
    """Mean absolute boundary error (ms) per mode and the number of words measured."""

    single_ms: float
    long_ms: float
    cues_ms: float
    words: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "single_ms": round(self.single_ms, 1),
            "long_ms": round(self.long_ms, 1),
            "cues_ms": round(self.cues_ms, 1),
            "words": self.words,
        }


def boundary_errors(result: Alignment, clip: SyntheticClip) -> np.ndarray:
    """Absolute errors (seconds) of every predicted start and end against ``clip``'s truth."""
    if len(result.units) != len(clip.words):
        raise ValueError(f"{len(result.units)} units for {len(clip.words)} words")
    pred = np.array([[u.start, u.end] for u in result.units], dtype=np.float64)
    true = np.array([clip.starts, clip.ends], dtype=np.float64).T
    return np.abs(pred - true).ravel()


def _request(clip: SyntheticClip, segments=None) -> AlignRequest:
    return AlignRequest(clip.wave, SAMPLE_RATE, clip.text, "English", segments)


def cue_segments(parts: list[SyntheticClip]) -> tuple[Segment, ...]:
    """One cue per part: its words' span, padded a little, as a subtitle file would give it."""
    out = []
    offset = 0.0
    for part in parts:
        start = max(offset, offset + part.starts[0] - CUE_PAD_SECONDS)
        end = min(offset + part.duration, offset + part.ends[-1] + CUE_PAD_SECONDS)
        out.append(Segment(round(start, 3), round(end, 3), part.text))
        offset += part.duration
    return tuple(out)


def measure(
    aligner: Any,
    single: int = 24,
    recordings: int = 3,
    parts_per_recording: int = 8,
) -> Accuracy:
    """Measure the three figures for a loaded upstream aligner."""
    engine = InProcessAligner(
        aligner,
        PipelineSettings.of(
            checkpoint="accuracy", window_seconds=LONG_WINDOW_SECONDS, warmup=False
        ),
    )
    clips = synthetic_set(HELD_OUT_SEED, single, 2.0, 16.0)
    results = engine.align([engine.prepare(_request(c)) for c in clips])
    single_err = np.concatenate(
        [boundary_errors(r, c) for r, c in zip(results, clips, strict=True)]
    )

    long_err: list[np.ndarray] = []
    cue_err: list[np.ndarray] = []
    for k in range(recordings):
        parts = synthetic_set(HELD_OUT_SEED + 1 + k, parts_per_recording, 6.0, 16.0)
        whole = concatenate(parts)
        (long_result,) = engine.align([engine.prepare(_request(whole))])
        long_err.append(boundary_errors(long_result, whole))
        (cue_result,) = engine.align([engine.prepare(_request(whole, cue_segments(parts)))])
        cue_err.append(boundary_errors(cue_result, whole))
    long_all = np.concatenate(long_err)
    cue_all = np.concatenate(cue_err)
    return Accuracy(
        single_ms=1000 * float(single_err.mean()),
        long_ms=1000 * float(long_all.mean()),
        cues_ms=1000 * float(cue_all.mean()),
        words={
            "single": single_err.size // 2,
            "long": long_all.size // 2,
            "cues": cue_all.size // 2,
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="checkpoint folder (default: the trained tiny one)")
    parser.add_argument(
        "--random", action="store_true", help="also measure the random tiny checkpoint"
    )
    args = parser.parse_args(argv)
    import tempfile

    from qwen3_aligner_triton.loading import load_aligner

    from ..checkpoint_builder import build_checkpoint
    from ..checkpoint_training import cached_trained_checkpoint

    checkpoints: dict[str, Path] = {
        "trained": Path(args.checkpoint) if args.checkpoint else cached_trained_checkpoint()
    }
    with tempfile.TemporaryDirectory() as tmp:
        if args.random:
            checkpoints["random"] = build_checkpoint(Path(tmp) / "random")
        report = {
            name: measure(load_aligner(str(path), "cpu")).as_dict()
            for name, path in checkpoints.items()
        }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
