"""What cues cost next to the same words as ``TEXT``: the figures behind ``cue_cost_units``.

    .venv/bin/python -m qwen3_aligner_tools.bench.cues --checkpoint trained --cues 1000

One loaded model, one recording of ``cues / 2`` seconds; alternating rounds align (a) ``--cues``
one-word cues in ``SEGMENTS``, (b) the same words as ``TEXT``, (c) ``cue_cost_units + 1`` times
as many words as ``TEXT`` (what the cues are charged as), through the served pipeline in process
with one clip per forward pass (a CPU placement). Prints each median and the ratio of (a) to (c):
about 1 when the charge matches the cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="trained", help="tiny, trained, full or a folder")
    parser.add_argument("--cues", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per request (2)")
    args = parser.parse_args(argv)

    import numpy as np

    from qwen3_aligner_triton.inprocess import InProcessAligner
    from qwen3_aligner_triton.loading import load_aligner
    from qwen3_aligner_triton.params import PipelineSettings
    from qwen3_aligner_triton.requests import AlignRequest, Segment

    from .checkpoints import resolve_checkpoint

    with tempfile.TemporaryDirectory(prefix="qwen3-aligner-bench-cues-") as scratch:
        choice = resolve_checkpoint(args.checkpoint, Path(scratch))
        aligner = load_aligner(choice.location, "cpu")
    settings = PipelineSettings.of(checkpoint=choice.location, max_forward_batch=1)
    engine = InProcessAligner(aligner, settings)
    engine.warmup()
    charged = (settings.front.cue_cost_units + 1) * args.cues
    # long enough for the cues (one per 0.5 s) and for the charged words' 80 ms slots
    seconds = max(args.cues * 0.5 + 1.0, charged * 0.1)
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)
    words = [f"w{k}" for k in range(args.cues)]
    segments = tuple(Segment(0.5 * k, 0.5 * k + 0.4, w) for k, w in enumerate(words))
    requests = {
        f"{args.cues} one-word cues": AlignRequest(
            audio, 16000, "\n".join(words), "English", segments
        ),
        f"{args.cues} words as TEXT": AlignRequest(audio, 16000, " ".join(words), "English"),
        f"{charged} words as TEXT": AlignRequest(
            audio, 16000, " ".join(f"w{k}" for k in range(charged)), "English"
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in requests}
    for _ in range(args.rounds):
        for name, request in requests.items():
            started = time.perf_counter()
            (result,) = engine.align([request])
            if isinstance(result, Exception):
                print(f"{name}: {result}", file=sys.stderr)
                return 1
            times[name].append(time.perf_counter() - started)
    for name, values in times.items():
        print(f"{name:>28}: median {statistics.median(values):.2f} s  ({values})")
    cues, _, as_charged = (statistics.median(v) for v in times.values())
    print(
        f"cues / their charge as TEXT (cue_cost_units {settings.front.cue_cost_units}): "
        f"{cues / as_charged:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
