"""Forward passes with the packed decoder against upstream's padded batch, side by side.

    .venv/bin/python -m qwen3_aligner_tools.bench.decoder --checkpoint full --clips 8

One loaded model, one set of prepared clips (2-60 s by default); each round runs all clips in one
forward pass (what a GPU placement runs) once with upstream's ``thinker`` over a left-padded
batch (``packed_decoder`` false) and once with :mod:`..packed_decoder` (true), in alternating
order. Both use the packed encoder, as a served core does, unless ``--upstream-encoder``. Prints
the medians, their ratio, the pass's padded and packed tokens, and whether the bins were the same
(and how far apart the confidences were).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

PADDED = "padded"
PACKED = "packed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="tiny", help="tiny, trained, full or a folder")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per mode (3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (1)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument(
        "--upstream-encoder", action="store_true", help="upstream's per-clip encoder loop"
    )
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from qwen3_aligner_triton.core import ModelForward
    from qwen3_aligner_triton.inprocess import InProcessAligner
    from qwen3_aligner_triton.languages import resolve_language
    from qwen3_aligner_triton.loading import load_aligner
    from qwen3_aligner_triton.packed_encoder import install_packed_encoder
    from qwen3_aligner_triton.params import PipelineSettings
    from qwen3_aligner_triton.requests import AlignRequest

    from .checkpoints import resolve_checkpoint
    from .workload import SAMPLE_RATE, make_clips

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="qwen3-aligner-bench-decoder-") as scratch:
        choice = resolve_checkpoint(args.checkpoint, Path(scratch))
        aligner = load_aligner(choice.location, "cpu")
    if not args.upstream_encoder:
        install_packed_encoder(aligner.model.thinker)
    settings = PipelineSettings.of(checkpoint=choice.location)
    engine = InProcessAligner(aligner, settings)
    clips = make_clips(args.clips, args.min_seconds, args.max_seconds)
    batch = [
        engine.prepare(
            AlignRequest(c.audio, SAMPLE_RATE, c.text, resolve_language(c.language))
        ).core_input()
        for c in clips
    ]
    forwards = {
        mode: ModelForward(engine.model, engine.pad_token_id, packed_decoder=mode == PACKED)
        for mode in (PADDED, PACKED)
    }
    times: dict[str, list[float]] = {PADDED: [], PACKED: []}
    outputs: dict[str, list] = {}
    for round_ in range(args.warmup + args.rounds):
        order = [PADDED, PACKED] if round_ % 2 else [PACKED, PADDED]
        for mode in order:
            started = time.perf_counter()
            outputs[mode] = forwards[mode](batch)
            if round_ >= args.warmup:
                times[mode].append(time.perf_counter() - started)
    same = all(
        np.array_equal(a.bins, b.bins)
        for a, b in zip(outputs[PADDED], outputs[PACKED], strict=True)
    )
    confidence_diff = max(
        float(np.abs(a.confidence - b.confidence).max(initial=0.0))
        for a, b in zip(outputs[PADDED], outputs[PACKED], strict=True)
    )
    tokens = [it.tokens for it in batch]
    audio = sum(c.seconds for c in clips)
    padded_s, packed_s = statistics.median(times[PADDED]), statistics.median(times[PACKED])
    encoder = "upstream loop" if args.upstream_encoder else "packed"
    print(
        f"{choice.description}; {len(clips)} clips, {audio:.1f} s of audio in one pass; "
        f"{sum(tokens)} prompt tokens ({len(tokens) * max(tokens)} padded); encoder {encoder}; "
        f"torch threads {torch.get_num_threads()}; median of {args.rounds} alternating rounds"
    )
    print(
        f"padded {padded_s:.3f} s {_all(times[PADDED])}, packed {packed_s:.3f} s "
        f"{_all(times[PACKED])}, ratio {padded_s / packed_s:.2f}x; bins "
        f"{'identical' if same else 'DIFFER'}, confidences within {confidence_diff:.1e}"
    )
    if args.json:
        report = {
            "checkpoint": choice.description,
            "clips": len(clips),
            "audio_seconds": audio,
            "prompt_tokens": sum(tokens),
            "padded_tokens": len(tokens) * max(tokens),
            "encoder": encoder,
            "padded_s": times[PADDED],
            "packed_s": times[PACKED],
            "ratio": padded_s / packed_s,
            "identical": same,
            "confidence_diff": confidence_diff,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _all(seconds: list[float]) -> str:
    return "(" + ", ".join(f"{s:.3f}" for s in seconds) + ")"


if __name__ == "__main__":
    sys.exit(main())
