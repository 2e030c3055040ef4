"""Can a test on this checkpoint tell a broken feature pipeline from a working one?

Each mutation below is a plausible server bug: part of a clip's features blanked or shifted, the
last frames dropped, one frame of padding too many. A mutation is *killed* when the engine's
result on the mutated input differs from its result on the real input; a checkpoint whose
timestamps ignore the audio lets such bugs pass the parity tests. Two rates: on the units'
timestamps alone (held to upstream ``align()`` by the parity tests), and on timestamps or scores
(a score moved by more than the 1e-5 to which the score parity tests hold scores against
upstream's own forward pass). ``kill_rate`` runs every
mutation on every request; ``distinct_slots`` counts how many different raw timestamps a result
uses (a checkpoint that predicts one value everywhere cannot show a shift).

    .venv/bin/python -m qwen3_aligner_tools.bench.mutation [--checkpoint DIR] [--random]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from qwen3_aligner_triton.audio import MODEL_SAMPLE_RATE, prepare_waveform
from qwen3_aligner_triton.inprocess import InProcessAligner
from qwen3_aligner_triton.preparation import PreparedItem
from qwen3_aligner_triton.requests import AlignRequest

HOP = 160  # samples per mel frame at 16 kHz


def _blank_second_half(engine: InProcessAligner, req: AlignRequest) -> PreparedItem:
    item = _prepared(engine, req)
    feats = item.input_features.clone()
    frames = int(item.feature_attention_mask.sum())
    feats[:, frames // 2 : frames] = feats[:, :frames].min()
    return dataclasses.replace(item, input_features=feats)


def _shift_quarter_second(engine: InProcessAligner, req: AlignRequest) -> PreparedItem:
    item = _prepared(engine, req)
    frames = int(item.feature_attention_mask.sum())
    feats = item.input_features.clone()
    shift = 25  # 0.25 s: about three timestamp bins
    feats[:, shift:frames] = item.input_features[:, : frames - shift]
    feats[:, :shift] = item.input_features[:, :frames].min()
    return dataclasses.replace(item, input_features=feats)


def _on_wave(edit: Callable[[np.ndarray], np.ndarray]):
    def mutate(engine: InProcessAligner, req: AlignRequest) -> PreparedItem:
        wave = edit(prepare_waveform(req.audio, req.sample_rate))
        edited = dataclasses.replace(req, audio=wave, sample_rate=MODEL_SAMPLE_RATE)
        return _prepared(engine, edited)

    return mutate


MUTATIONS: dict[str, Callable[[InProcessAligner, AlignRequest], PreparedItem]] = {
    "blank the second half": _blank_second_half,
    "shift by 0.25 s": _shift_quarter_second,
    "drop the last 0.2 s": _on_wave(lambda w: w[: max(HOP * 10, w.shape[0] - 20 * HOP)]),
    "pad one more frame": _on_wave(lambda w: np.concatenate([w, np.zeros(HOP, w.dtype)])),
}


def _prepared(engine: InProcessAligner, req: AlignRequest) -> PreparedItem:
    item = engine.prepare(req)
    if not isinstance(item, PreparedItem):
        raise ValueError("mutation checks take requests within one window")
    return item


SCORE_TOLERANCE = 1e-5  # what tests/model/test_engine.py and test_server.py allow against upstream


def _outcome(
    engine: InProcessAligner, item: PreparedItem
) -> tuple[list[tuple[float, float]], np.ndarray]:
    (result,) = engine.forward([item])
    return [(u.start, u.end) for u in result.units], np.array([u.score for u in result.units])


def _scores_moved(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape != b.shape or bool(np.abs(a - b).max(initial=0.0) > SCORE_TOLERANCE)


@dataclass(frozen=True)
class KillReport:
    """Mutations killed per mutation name, out of ``requests`` each."""

    requests: int
    killed: dict[str, int]  # the timestamps changed
    survivors: dict[str, list[int]]  # indices of the requests each mutation survived on
    killed_with_scores: dict[str, int]  # the timestamps or a score changed

    @property
    def rate(self) -> float:
        return sum(self.killed.values()) / (self.requests * len(self.killed))

    @property
    def rate_with_scores(self) -> float:
        total = self.requests * len(self.killed_with_scores)
        return sum(self.killed_with_scores.values()) / total


def kill_rate(engine: InProcessAligner, requests: Sequence[AlignRequest]) -> KillReport:
    """Run every mutation on every request; a mutation is killed when the result changes."""
    killed = dict.fromkeys(MUTATIONS, 0)
    with_scores = dict.fromkeys(MUTATIONS, 0)
    survivors: dict[str, list[int]] = {name: [] for name in MUTATIONS}
    for i, req in enumerate(requests):
        times, scores = _outcome(engine, _prepared(engine, req))
        for name, mutate in MUTATIONS.items():
            mutated_times, mutated_scores = _outcome(engine, mutate(engine, req))
            if mutated_times != times:
                killed[name] += 1
            else:
                survivors[name].append(i)
            if mutated_times != times or _scores_moved(mutated_scores, scores):
                with_scores[name] += 1
    return KillReport(len(requests), killed, survivors, with_scores)


@torch.inference_mode()
def raw_slots(engine: InProcessAligner, item: PreparedItem) -> np.ndarray:
    """The model's raw timestamp classes for one item (before upstream's repair)."""
    logits = engine.model.thinker(
        input_ids=item.input_ids[None].to(engine.device),
        attention_mask=item.attention_mask[None].to(engine.device),
        input_features=item.input_features[None].to(engine.device, engine.dtype),
        feature_attention_mask=item.feature_attention_mask[None].to(engine.device),
        use_cache=False,
    ).logits[0]
    return logits.argmax(-1)[item.input_ids == engine.timestamp_token_id].cpu().numpy()


def distinct_slots(engine: InProcessAligner, req: AlignRequest) -> tuple[int, int]:
    """(distinct raw timestamp values, timestamp slots) of one request."""
    slots = raw_slots(engine, _prepared(engine, req))
    return len(np.unique(slots)), int(slots.shape[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="checkpoint folder (default: the trained tiny one)")
    parser.add_argument("--random", action="store_true", help="also the random tiny checkpoint")
    parser.add_argument("--cases", required=True, help="folder holding the suite's cases.py")
    args = parser.parse_args(argv)
    import tempfile
    from pathlib import Path

    from qwen3_aligner_triton.languages import resolve_language
    from qwen3_aligner_triton.loading import load_aligner
    from qwen3_aligner_triton.params import PipelineSettings

    from ..checkpoint_builder import build_checkpoint
    from ..checkpoint_training import cached_trained_checkpoint

    sys.path.insert(0, args.cases)
    from cases import CASES  # type: ignore[import-not-found]

    requests = [
        AlignRequest(c.audio(), c.sample_rate, c.text, resolve_language(c.language)) for c in CASES
    ]
    checkpoints = {
        "trained": Path(args.checkpoint) if args.checkpoint else cached_trained_checkpoint()
    }
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.random:
            checkpoints["random"] = build_checkpoint(Path(tmp) / "random")
        for name, path in checkpoints.items():
            engine = InProcessAligner(
                load_aligner(str(path), "cpu"), PipelineSettings.of(checkpoint="x")
            )
            kills = kill_rate(engine, requests)
            report[name] = {
                "kill_rate": round(kills.rate, 3),
                "killed": kills.killed,
                "kill_rate_with_scores": round(kills.rate_with_scores, 3),
                "killed_with_scores": kills.killed_with_scores,
                "of": kills.requests,
                "survived_on": {k: [CASES[i].name for i in v] for k, v in kills.survivors.items()},
                "distinct": {
                    c.name: "{}/{}".format(*distinct_slots(engine, r))
                    for c, r in zip(CASES, requests, strict=True)
                },
            }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
