"""Transcribe-then-align in this process against upstream's one call, side by side.

    .venv/bin/python -m qwen3_aligner_tools.bench.asr --checkpoint full --asr-checkpoint full

One loaded ASR model and one loaded aligner serve both modes, on the same clips (speech-like
synthetic audio, 30 s each by default):

* ``upstream``: ``Qwen3ASRModel.from_pretrained(asr, forced_aligner=aligner).transcribe(clip,
  language=None, return_time_stamps=True)``, one call per clip, in order;
* ``served``: the served front in this process (``InProcessAligner`` with the ASR model): every
  clip one request without TEXT, all given together, each transcribed in its own generate call
  and aligned through the core (packed encoder and decoder, as a server runs them).

Both run the audio encoders with their attention windows (the server's default). Each round runs
both modes, in alternating order, after one untimed round; the table gives the median round per
clip, clips per second and the ratio, and the new tokens generated per clip: a random full-size
ASR model rarely says its end token, so it generates up to the bound (the cost bound of hostile
audio). Upstream's ``max_new_tokens`` is set to the served bound for the clips' length so that
both generate alike; the results (transcript, language, every timestamp) must be equal.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .stats import format_table
from .workload import SAMPLE_RATE, speech_like_audio

UPSTREAM = "upstream"
SERVED = "served"
MODES = (UPSTREAM, SERVED)

Answer = tuple[str, str, list[tuple[str, float, float]]]  # transcript, language, units


def log(message: str) -> None:
    print(f"[asr] {message}", file=sys.stderr, flush=True)


@dataclass
class Row:
    """One mode's figures over the timed rounds."""

    mode: str
    seconds_per_clip: float  # median round's wall time / clips
    clips_per_second: float
    ratio: float  # upstream's seconds per clip / this mode's
    new_tokens_per_clip: float  # mean over the timed rounds
    words_per_clip: float
    rounds: list[float]  # each round's wall seconds


class TokenCount:
    """Wraps the ASR model's ``generate``: counts the new tokens of every chunk (up to and with
    its end token) and the bound each call was given."""

    def __init__(self, model: Any, end_token: int) -> None:
        self.model = model
        self.original = model.generate
        self.end_token = end_token
        self.tokens: list[int] = []
        self.bounds: list[int] = []
        model.generate = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.original(*args, **kwargs)
        for row in out.sequences[:, kwargs["input_ids"].shape[1] :].tolist():
            self.tokens.append(row.index(self.end_token) + 1 if self.end_token in row else len(row))
        self.bounds.append(int(kwargs["max_new_tokens"]))
        return out

    def take(self) -> tuple[list[int], list[int]]:
        tokens, bounds = self.tokens, self.bounds
        self.tokens, self.bounds = [], []
        return tokens, bounds

    def restore(self) -> None:
        self.model.generate = self.original


def upstream_answers(model: Any, clips: Sequence[np.ndarray]) -> list[Answer]:
    """Upstream's ``transcribe`` with timestamps, one call per clip; times through float32, as
    the served tensors carry them."""
    out = []
    for clip in clips:
        (result,) = model.transcribe((clip, SAMPLE_RATE), language=None, return_time_stamps=True)
        items = [] if result.time_stamps is None else result.time_stamps.items
        out.append(
            (
                result.text,
                result.language,
                [(it.text, float(np.float32(it.start_time)), float(np.float32(it.end_time)))
                 for it in items],
            )
        )  # fmt: skip
    return out


def served_answers(engine: Any, clips: Sequence[np.ndarray]) -> list[Answer]:
    """The served front's answers, every clip a request without TEXT, all given together."""
    outcomes = engine.serve([{"AUDIO": clip[None, :]} for clip in clips])
    out = []
    for outcome in outcomes:
        if outcome.error is not None:
            raise RuntimeError(f"the served front answered an error: {outcome.error}")
        arrays = outcome.outputs
        out.append(
            (
                arrays["TRANSCRIPT"][0][0].decode(),
                arrays["TRANSCRIPT_LANGUAGE"][0][0].decode(),
                [(w.decode(), float(s), float(e)) for w, s, e in zip(
                    arrays["WORDS"][0], arrays["START_TIMES"][0], arrays["END_TIMES"][0],
                    strict=True,
                )],
            )
        )  # fmt: skip
    return out


def differences(a: Sequence[Answer], b: Sequence[Answer]) -> list[str]:
    """Where two modes' answers differ, one line per clip."""
    out = []
    for k, (x, y) in enumerate(zip(a, b, strict=True)):
        if x[:2] != y[:2]:
            out.append(f"clip {k}: transcript/language {x[:2]!r} vs {y[:2]!r}")
        elif x[2] != y[2]:
            first = next(
                (i for i, (u, v) in enumerate(zip(x[2], y[2], strict=False)) if u != v),
                min(len(x[2]), len(y[2])),
            )
            out.append(f"clip {k}: units differ from unit {first} ({len(x[2])} vs {len(y[2])})")
    return out


def table(rows: Sequence[Row]) -> str:
    headers = ["mode", "s per clip", "clips/s", "vs upstream", "new tokens/clip", "words/clip"]
    cells = [
        [
            r.mode,
            f"{r.seconds_per_clip:.3f}",
            f"{r.clips_per_second:.3f}",
            f"{r.ratio:.2f}x",
            f"{r.new_tokens_per_clip:.1f}",
            f"{r.words_per_clip:.1f}",
        ]
        for r in rows
    ]
    return format_table(headers, cells)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m qwen3_aligner_tools.bench.asr",
        description="Transcribe-then-align in this process (the served front with a local ASR "
        "model and core) against upstream's transcribe(..., return_time_stamps=True), on CPU.",
    )
    parser.add_argument(
        "--checkpoint", default="tiny", help="aligner: tiny, trained, full or a folder (tiny)"
    )
    parser.add_argument(
        "--asr-checkpoint", default="tiny", help="ASR model: tiny, full or a folder (tiny)"
    )
    parser.add_argument("--clips", type=int, default=2, help="clips per round (2)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each clip (30)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per mode (2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (1)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Load, measure both modes side by side, print the table; 0 when the results are equal."""
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qwen3-aligner-bench-asr-") as scratch:
        return run(args, Path(scratch))


def run(args: argparse.Namespace, scratch: Path) -> int:
    """``main`` with tiny checkpoints built into ``scratch``."""
    import torch
    from qwen_asr import Qwen3ASRModel

    from qwen3_aligner_triton.asr import AsrRunner, AsrSettings, new_token_limit
    from qwen3_aligner_triton.encoder_attention import set_encoder_attention
    from qwen3_aligner_triton.inprocess import InProcessAligner
    from qwen3_aligner_triton.packed_encoder import install_packed_encoder, uninstall_packed_encoder
    from qwen3_aligner_triton.params import PipelineSettings

    from .checkpoints import resolve_asr_checkpoint, resolve_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    asr_settings = AsrSettings()
    bound = new_token_limit(asr_settings, args.seconds)
    aligner_choice = resolve_checkpoint(args.checkpoint, scratch)
    asr_choice = resolve_asr_checkpoint(args.asr_checkpoint, scratch)
    log(f"loading {asr_choice.description} and {aligner_choice.description}")
    cpu = {"dtype": torch.float32, "device_map": "cpu"}
    upstream = Qwen3ASRModel.from_pretrained(
        asr_choice.location,
        forced_aligner=aligner_choice.location,
        forced_aligner_kwargs=cpu,
        max_new_tokens=bound,
        **cpu,
    )
    for model in (upstream.model, upstream.forced_aligner.model):
        set_encoder_attention(model, asr_settings.encoder_attention)
    # The served pipeline runs on the same loaded models: the ASR runner as the ASR model's
    # instance runs it, the aligner with the packed encoder installed for its rounds only.
    thinker = upstream.forced_aligner.model.thinker
    runner = AsrRunner(upstream.model, upstream.processor, asr_settings)
    engine = InProcessAligner(
        upstream.forced_aligner, PipelineSettings.of(checkpoint=aligner_choice.location), asr=runner
    )
    clips = [speech_like_audio(args.seconds, seed) for seed in range(args.clips)]
    end_token = int(upstream.processor.tokenizer.convert_tokens_to_ids("<|im_end|>"))
    counter = TokenCount(upstream.model, end_token)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    tokens: dict[str, list[int]] = {mode: [] for mode in MODES}
    answers: dict[str, list[Answer]] = {}
    try:
        for round_ in range(args.warmup + args.rounds):
            order = MODES if round_ % 2 else MODES[::-1]
            for mode in order:
                if mode == SERVED:
                    install_packed_encoder(thinker)
                else:
                    uninstall_packed_encoder(thinker)
                started = time.perf_counter()
                if mode == SERVED:
                    got = served_answers(engine, clips)
                else:
                    got = upstream_answers(upstream, clips)
                elapsed = time.perf_counter() - started
                new, bounds = counter.take()
                if any(b != bound for b in bounds):
                    raise RuntimeError(f"{mode}: generate calls bounded at {bounds}, not {bound}")
                if answers.setdefault(mode, got) != got:
                    raise RuntimeError(f"{mode}: the answers changed between rounds")
                if round_ >= args.warmup:
                    times[mode].append(elapsed)
                    tokens[mode].extend(new)
                log(f"round {round_} {mode}: {elapsed:.2f} s")
    finally:
        counter.restore()
        uninstall_packed_encoder(thinker)
    diffs = differences(answers[UPSTREAM], answers[SERVED])
    base = statistics.median(times[UPSTREAM]) / len(clips)
    rows = []
    for mode in MODES:
        per_clip = statistics.median(times[mode]) / len(clips)
        rows.append(
            Row(
                mode,
                per_clip,
                1.0 / per_clip,
                base / per_clip,
                statistics.fmean(tokens[mode]),
                statistics.fmean(len(a[2]) for a in answers[mode]),
                times[mode],
            )
        )
    print(
        f"{asr_choice.description}; {aligner_choice.description}; {len(clips)} clips of "
        f"{args.seconds:g} s; new tokens bounded at {bound} per chunk; torch threads "
        f"{torch.get_num_threads()}; median of {args.rounds} alternating rounds"
    )
    print(table(rows))
    print(
        "results: "
        + ("equal (transcript, language, every timestamp)" if not diffs else "; ".join(diffs))
    )
    if args.json:
        report = {
            "asr_checkpoint": asr_choice.description,
            "checkpoint": aligner_choice.description,
            "clips": len(clips),
            "seconds": args.seconds,
            "new_token_bound": bound,
            "rows": [asdict(r) for r in rows],
            "equal": not diffs,
            "differences": diffs,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
