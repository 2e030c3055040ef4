"""The forward pass with the packed audio encoder against upstream's per-clip loop, side by side.

    .venv/bin/python -m qwen3_aligner_tools.bench.encoder --checkpoint full --clips 8

One loaded model, one set of prepared clips (2-60 s by default); each round times every clip in
a pass of its own (what a CPU placement runs) and, with ``--shared-pass``, all clips in one pass
(what a GPU placement runs), once with upstream's ``get_audio_features`` loop and once with
:func:`..packed_encoder.install_packed_encoder`, in alternating order. Prints the medians, their
ratio and whether the timestamps were the same. Both use the encoder's 8 s windows unless
``--encoder-attention full``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

UPSTREAM = "upstream loop"
PACKED = "packed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="tiny", help="tiny, trained, full or a folder")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per mode (3)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--shared-pass", action="store_true", help="also time one pass of all")
    parser.add_argument("--encoder-attention", choices=("windowed", "full"), default="windowed")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)

    import torch

    from qwen3_aligner_triton.inprocess import InProcessAligner
    from qwen3_aligner_triton.languages import resolve_language
    from qwen3_aligner_triton.loading import load_aligner
    from qwen3_aligner_triton.packed_encoder import install_packed_encoder, uninstall_packed_encoder
    from qwen3_aligner_triton.params import PipelineSettings
    from qwen3_aligner_triton.requests import AlignRequest

    from .checkpoints import resolve_checkpoint
    from .workload import SAMPLE_RATE, make_clips

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="qwen3-aligner-bench-encoder-") as scratch:
        choice = resolve_checkpoint(args.checkpoint, Path(scratch))
        aligner = load_aligner(choice.location, "cpu", encoder_attention=args.encoder_attention)
    thinker = aligner.model.thinker
    settings = PipelineSettings.of(
        checkpoint=choice.location, max_forward_batch=max(1, args.clips), max_forward_tokens=1 << 20
    )
    engine = InProcessAligner(aligner, settings)
    clips = make_clips(args.clips, args.min_seconds, args.max_seconds)
    prepared = [
        engine.prepare(AlignRequest(c.audio, SAMPLE_RATE, c.text, resolve_language(c.language)))
        for c in clips
    ]

    def units(results) -> list:
        return [[(u.text, u.start, u.end) for u in r.units] for r in results]

    def run(shared: bool) -> tuple[float, list]:
        started = time.perf_counter()
        results = engine.align(prepared) if shared else [engine.align([p])[0] for p in prepared]
        return time.perf_counter() - started, units(results)

    shapes = [False, True] if args.shared_pass else [False]
    times: dict[str, dict[str, list[float]]] = {}
    outputs: dict[tuple[str, str], list] = {}
    with torch.inference_mode():
        for round_ in range(args.rounds + 1):  # round 0 warms both up, untimed
            order = [UPSTREAM, PACKED] if round_ % 2 else [PACKED, UPSTREAM]
            for mode in order:
                if mode == PACKED:
                    install_packed_encoder(thinker)
                else:
                    uninstall_packed_encoder(thinker)
                for shared in shapes:
                    shape = "one pass of all" if shared else "a pass per clip"
                    seconds, out = run(shared)
                    outputs[(mode, shape)] = out
                    if round_:
                        times.setdefault(shape, {}).setdefault(mode, []).append(seconds)
    uninstall_packed_encoder(thinker)
    audio = sum(c.seconds for c in clips)
    print(
        f"{choice.description}; {len(clips)} clips, {audio:.1f} s of audio; encoder "
        f"{args.encoder_attention}; torch threads {torch.get_num_threads()}; "
        f"median of {args.rounds} alternating rounds"
    )
    report = {"checkpoint": choice.description, "clips": len(clips), "audio_seconds": audio}
    for shape, by_mode in times.items():
        up, packed = statistics.median(by_mode[UPSTREAM]), statistics.median(by_mode[PACKED])
        same = outputs[(UPSTREAM, shape)] == outputs[(PACKED, shape)]
        print(
            f"{shape:>16}: upstream loop {up:.3f} s, packed {packed:.3f} s, "
            f"ratio {up / packed:.2f}x; timestamps {'identical' if same else 'DIFFER'}"
        )
        report[shape] = {
            "upstream_s": by_mode[UPSTREAM],
            "packed_s": by_mode[PACKED],
            "ratio": up / packed,
            "identical": same,
        }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
