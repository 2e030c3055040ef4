"""What computing scores costs per request: the engine with and without them, in one run.

``python -m qwen3_aligner_tools.bench.scores [--checkpoint PATH] [--rounds N]`` aligns one 30 s
clip (75 words) through :class:`~qwen3_aligner_triton.engine.InProcessAligner` with the real
:func:`~qwen3_aligner_triton.scores.slot_predictions` and with an argmax-only stand-in (what the
engine computed before scores existed: no softmax, confidence 0), interleaved round by round, and
prints the median milliseconds per request of each and their difference. It also times the head's
post-processing alone on logits of the real checkpoint's shape (5,000 bins at the 150 slots of the
clip), where the softmax is the whole extra cost, so the figure does not depend on the checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qwen3_aligner_triton import core as core_module
from qwen3_aligner_triton.scores import slot_predictions, unit_scores

CLIP_SECONDS = 30.0
WORDS_PER_SECOND = 2.5  # a brisk speaking rate: 75 words in 30 s
REAL_CLASSES = 5000  # bins of the real checkpoint's timestamp head (80 ms each)


def argmax_only(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream's bins and no confidence: the cost floor of the timestamp head."""
    return logits.argmax(dim=-1), torch.zeros(logits.shape[0], dtype=torch.float32)


@contextlib.contextmanager
def predictions(function: Callable) -> Iterator[None]:
    """Make the forward use ``function`` in place of ``slot_predictions`` for a while."""
    saved = core_module.slot_predictions
    core_module.slot_predictions = function
    try:
        yield
    finally:
        core_module.slot_predictions = saved


@dataclass(frozen=True)
class ScoreCost:
    """Median milliseconds per request (engine) and per clip's slots (head alone)."""

    checkpoint: str
    rounds: int
    with_scores_ms: float
    without_scores_ms: float
    head_with_ms: float  # real-size head: softmax at the slots + unit scores
    head_without_ms: float  # real-size head: argmax at the slots

    @property
    def extra_ms(self) -> float:
        return self.with_scores_ms - self.without_scores_ms

    @property
    def head_extra_ms(self) -> float:
        return self.head_with_ms - self.head_without_ms


def _clip(seed: int = 0) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng(seed)
    rate = 16000
    t = np.arange(int(CLIP_SECONDS * rate)) / rate
    wave = 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t)) * np.sin(2 * np.pi * 200 * t)
    wave = (wave + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]
    count = int(CLIP_SECONDS * WORDS_PER_SECOND)
    return wave, " ".join(words[k % len(words)] for k in range(count))


def _best_of(function: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - t0)
    return best * 1000.0


def measure(checkpoint: str, rounds: int = 7) -> ScoreCost:
    """Time the engine with and without scores, and the real-size head, interleaved."""
    from qwen3_aligner_triton.inprocess import InProcessAligner
    from qwen3_aligner_triton.loading import load_aligner
    from qwen3_aligner_triton.params import PipelineSettings
    from qwen3_aligner_triton.requests import AlignRequest

    torch.manual_seed(0)
    engine = InProcessAligner(
        load_aligner(checkpoint, "cpu"), PipelineSettings.of(checkpoint=checkpoint)
    )
    wave, text = _clip()
    request = AlignRequest(wave, 16000, text, "English")

    def align() -> None:
        result = engine.align([engine.prepare(request)])[0]
        if isinstance(result, Exception):
            raise result
        result.output_arrays()  # the documents and tensors, scores included

    slots = 2 * int(CLIP_SECONDS * WORDS_PER_SECOND)
    logits = torch.randn(slots, REAL_CLASSES) * 4.0

    def head_with() -> None:
        _, conf = slot_predictions(logits)
        unit_scores(conf.numpy())

    def head_without() -> None:
        argmax_only(logits)

    align()  # warm up
    with_ms: list[float] = []
    without_ms: list[float] = []
    head_w: list[float] = []
    head_wo: list[float] = []
    for _ in range(max(1, rounds)):
        with_ms.append(_best_of(align, 2))
        with predictions(argmax_only):
            without_ms.append(_best_of(align, 2))
        head_w.append(_best_of(head_with, 20))
        head_wo.append(_best_of(head_without, 20))
    return ScoreCost(
        checkpoint=checkpoint,
        rounds=max(1, rounds),
        with_scores_ms=statistics.median(with_ms),
        without_scores_ms=statistics.median(without_ms),
        head_with_ms=statistics.median(head_w),
        head_without_ms=statistics.median(head_wo),
    )


def table(cost: ScoreCost) -> str:
    """The measurement as a markdown table."""
    rows = [
        "| per 30 s clip (75 words, 150 slots) | with scores | without | extra |",
        "|---|---|---|---|",
        f"| engine, checkpoint {Path(cost.checkpoint).name} (prepare, forward, repair, outputs) | "
        f"{cost.with_scores_ms:.2f} ms | {cost.without_scores_ms:.2f} ms | "
        f"{cost.extra_ms:+.2f} ms |",
        f"| timestamp head of the real size ({REAL_CLASSES} bins) | {cost.head_with_ms:.3f} ms | "
        f"{cost.head_without_ms:.3f} ms | {cost.head_extra_ms:+.3f} ms |",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="checkpoint folder (default: a fresh tiny one)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint
    if checkpoint is None:
        import tempfile

        from ..checkpoint_builder import build_checkpoint

        checkpoint = str(build_checkpoint(tempfile.mkdtemp(prefix="tiny-") + "/checkpoint"))
    print(table(measure(checkpoint, args.rounds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
