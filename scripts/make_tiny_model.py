#!/usr/bin/env python3
"""Write a deterministic, randomly initialised Qwen3-ForcedAligner checkpoint.

    .venv/bin/python scripts/make_tiny_model.py OUT_DIR            # tiny: ~2 MB, for tests
    .venv/bin/python scripts/make_tiny_model.py --full OUT_DIR  # real sizes, ~3.5 GB

The checkpoint loads with ``qwen_asr.Qwen3ForcedAligner.from_pretrained(OUT_DIR)``. Its weights are
random: timestamps are deterministic but meaningless.
"""

from __future__ import annotations

import argparse
import sys

from qwen3_aligner_triton.checkpoint_builder import build_checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write the checkpoint into")
    parser.add_argument(
        "--full",
        action="store_true",
        help="the real model's sizes (about 0.9 B parameters) instead of tiny",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = build_checkpoint(args.out_dir, flavour="full" if args.full else "tiny", seed=args.seed)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
