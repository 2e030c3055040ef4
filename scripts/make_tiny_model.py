#!/usr/bin/env python3
"""Write a deterministic Qwen3-ForcedAligner (or Qwen3-ASR) checkpoint of the real architecture.

    .venv/bin/python scripts/make_tiny_model.py OUT_DIR            # tiny, random: ~2 MB, fast
    .venv/bin/python scripts/make_tiny_model.py --trained OUT_DIR  # tiny, trained: timestamps
                                                                   # follow the audio (the suite's)
    .venv/bin/python scripts/make_tiny_model.py --full OUT_DIR     # real sizes, ~3.5 GB
    .venv/bin/python scripts/make_tiny_model.py --asr OUT_DIR      # tiny Qwen3-ASR: ~12 MB, fast

The checkpoint loads with ``qwen_asr.Qwen3ForcedAligner.from_pretrained(OUT_DIR)``. Random weights
give deterministic but meaningless timestamps. ``--trained`` trains the tiny one for a few CPU
minutes on synthetic speech with known word times (fixed seeds, one thread, processor-independent
kernels: the same bytes on every machine) into the cache under ~/.cache/qwen3-aligner-triton/,
where the test suite takes it from, and copies it to OUT_DIR; when the cache holds it already, it
is only copied.

``--asr`` writes a tiny Qwen3-ASR checkpoint instead, for
``qwen_asr.Qwen3ASRModel.from_pretrained(OUT_DIR)``: its weights are set by hand so that greedy
decoding answers ``language English<asr_text> one two three ...`` with about one word per second
of audio, for any audio (``qwen3_aligner_tools.asr_checkpoint_builder``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from qwen3_aligner_tools.asr_checkpoint_builder import build_asr_checkpoint
from qwen3_aligner_tools.checkpoint_builder import build_checkpoint


def trained(out_dir: str, seed: int) -> Path:
    """The cached trained checkpoint of ``seed`` (trained first when missing), copied to out_dir."""
    from qwen3_aligner_tools.checkpoint_training import (
        TrainSettings,
        cache_key,
        cache_root,
        cached_trained_checkpoint,
    )

    settings = TrainSettings(seed=seed)
    cached = cache_root() / f"tiny-trained-{cache_key(settings)}"
    if (cached / "config.json").is_file():
        print(f"make_tiny_model: the cache holds it: copying {cached}", file=sys.stderr)
    else:
        print(
            f"make_tiny_model: training (a few CPU minutes) into the cache {cached}",
            file=sys.stderr,
        )
        cached = cached_trained_checkpoint(settings)
    shutil.copytree(cached, out_dir, dirs_exist_ok=True)
    return Path(out_dir)


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
    flavour.add_argument(
        "--asr",
        action="store_true",
        help="a tiny Qwen3-ASR checkpoint (transcribes any audio as counted words) instead",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.asr:
        out = build_asr_checkpoint(args.out_dir, seed=args.seed)
    elif args.trained:
        out = trained(args.out_dir, args.seed)
    else:
        out = build_checkpoint(
            args.out_dir, flavour="full" if args.full else "tiny", seed=args.seed
        )
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
