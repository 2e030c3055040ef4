#!/usr/bin/env python3
"""Write a deterministic Qwen3-ForcedAligner checkpoint of the real architecture.

    .venv/bin/python scripts/make_tiny_model.py OUT_DIR            # tiny, random: ~2 MB, fast
    .venv/bin/python scripts/make_tiny_model.py --trained OUT_DIR  # tiny, trained: timestamps
                                                                   # follow the audio (the suite's)
    .venv/bin/python scripts/make_tiny_model.py --full OUT_DIR     # real sizes, ~3.5 GB

The checkpoint loads with ``qwen_asr.Qwen3ForcedAligner.from_pretrained(OUT_DIR)``. Random weights
give deterministic but meaningless timestamps. ``--trained`` trains the tiny one for a few CPU
minutes on synthetic speech with known word times (fixed seeds, one thread); the test suite uses
that one, from its cache under ~/.cache/qwen3-aligner-triton/.
"""

from __future__ import annotations

import argparse
import sys

from qwen3_aligner_triton.checkpoint_builder import build_checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write the checkpoint into")
    flavour = parser.add_mutually_exclusive_group()
    flavour.add_argument(
        "--full",
        action="store_true",
        help="the real model's sizes (about 0.9 B parameters) instead of tiny",
    )
    flavour.add_argument(
        "--trained",
        action="store_true",
        help="tiny, trained on synthetic speech so that its timestamps follow the audio",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.trained:
        from qwen3_aligner_triton.checkpoint_training import TrainSettings, train_checkpoint

        out = train_checkpoint(args.out_dir, TrainSettings(seed=args.seed))
    else:
        out = build_checkpoint(
            args.out_dir, flavour="full" if args.full else "tiny", seed=args.seed
        )
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
