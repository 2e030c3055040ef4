"""The test checkpoint can tell: its timestamps follow the audio, so broken features show.

The suite's parity and invariance tests compare the server with upstream on the tiny checkpoint;
they only catch a bug in the audio path if the checkpoint's timestamps depend on the audio. These
tests pin that down: the trained checkpoint places words near their true times on held-out
synthetic speech (far better than the random one), uses many distinct timestamps per parity case,
and a mutated feature pipeline changes the results in nearly every case.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from cases import CASES, UNITS
from conftest import upstream_align

from qwen3_aligner_triton.bench import accuracy, mutation
from qwen3_aligner_triton.checkpoint_training import (
    EXPECTED_DIGEST_FILE,
    PINNED_KERNELS,
    RECORD_NAME,
    TrainSettings,
    cache_key,
    cached_trained_checkpoint,
    checkpoint_digest,
    concatenate,
    expected_digest,
    synthetic_set,
    train_reproducibly,
)
from qwen3_aligner_triton.engine import AlignerEngine
from qwen3_aligner_triton.languages import resolve_language
from qwen3_aligner_triton.loading import load_aligner
from qwen3_aligner_triton.params import ModelSettings
from qwen3_aligner_triton.requests import AlignRequest

# Bounds with room for a rebuild on another machine (figures: docs/testing.md).
# Mean absolute boundary error (ms) at this test's size, measured: single 731, long 3653, cues 853;
# random checkpoint: 321960, 17023, 6153.
SINGLE_MS_BOUND = 1100.0  # one clip per request
LONG_MS_BOUND = 6000.0  # long recordings through the windowing (40 s windows)
CUES_MS_BOUND = 1300.0  # cue mode
# Mutation kills over the 23 parity cases, measured: blank 23, shift 23, drop 19, pad 6 (0.77).
KILL_RATE_BOUND = 0.7  # all four mutations
# With scores held to upstream's forward within 1e-5: blank 23, shift 23, drop 23, pad 12 (0.88).
KILL_RATE_WITH_SCORES_BOUND = 0.85
CONTENT_KILL_RATE_BOUND = 0.88  # blank, shift and drop (measured 0.94)
MUTATIONS_OF_CONTENT = ("blank the second half", "shift by 0.25 s", "drop the last 0.2 s")


def case_requests() -> list[AlignRequest]:
    return [
        AlignRequest(c.audio(), c.sample_rate, c.text, resolve_language(c.language)) for c in CASES
    ]


@pytest.fixture(scope="module")
def engine(upstream):
    return AlignerEngine(upstream, ModelSettings(checkpoint="tiny"))


@pytest.fixture(scope="module")
def random_upstream(random_checkpoint):
    return load_aligner(str(random_checkpoint), "cpu")


def test_synthetic_speech_is_reproducible_and_consistent():
    a, b = synthetic_set(3, 4, 2.0, 8.0), synthetic_set(3, 4, 2.0, 8.0)
    for x, y in zip(a, b, strict=True):
        assert x.words == y.words and x.starts == y.starts and (x.wave == y.wave).all()
    for clip in a:
        assert len(clip.words) == len(clip.starts) == len(clip.ends) >= 1
        assert all(0 <= s < e <= clip.duration for s, e in zip(clip.starts, clip.ends, strict=True))
        assert all(e < s for e, s in zip(clip.ends, clip.starts[1:], strict=False))  # pauses
    whole = concatenate(a)
    assert whole.duration == pytest.approx(sum(c.duration for c in a))
    assert whole.starts[len(a[0].words)] == pytest.approx(a[0].duration + a[1].starts[0])


def test_each_parity_case_speaks_one_burst_per_unit(upstream):
    """The cases' audio holds as many words as upstream aligns, so listening has one answer."""
    assert set(UNITS) == {c.text_key for c in CASES}
    for key, units in UNITS.items():
        case = next(c for c in CASES if c.text_key == key)
        result = upstream_align(
            upstream, case.audio(), case.sample_rate, case.text, case.upstream_language
        )
        assert len(result) == units, case.name


def test_cache_key_follows_the_settings():
    assert cache_key() == cache_key(TrainSettings())
    assert cache_key(TrainSettings(steps=1)) != cache_key()
    assert cache_key(TrainSettings(seed=1)) != cache_key()


def test_the_suite_checkpoint_is_the_cached_trained_one(tiny_checkpoint):
    import os

    if os.environ.get("QWEN3_ALIGNER_TINY"):
        pytest.skip("$QWEN3_ALIGNER_TINY names another checkpoint for this run")
    assert tiny_checkpoint == cached_trained_checkpoint()
    assert tiny_checkpoint.name == f"tiny-trained-{cache_key()}"
    record = json.loads((tiny_checkpoint / "TRAINED.json").read_text())
    assert record["settings"] == dataclasses.asdict(TrainSettings())


def test_the_trained_checkpoint_is_the_recorded_one_byte_for_byte(tiny_checkpoint):
    """Training pins its CPU kernels, so every machine trains the same bytes: the digest recorded
    where it was first trained is the one this machine got (a mismatch means a kernel escaped the
    pinning, and the suite's thresholds no longer speak of the checkpoint they were set on)."""
    import os

    if os.environ.get("QWEN3_ALIGNER_TINY"):
        pytest.skip("$QWEN3_ALIGNER_TINY names another checkpoint for this run")
    record = expected_digest()
    assert record is not None, f"no {EXPECTED_DIGEST_FILE.name}"
    assert record["cache_key"] == cache_key(), (
        f"the builders changed (key {cache_key()}, recorded {record['cache_key']}): train once, "
        f"then record the new key and digest from {tiny_checkpoint / RECORD_NAME} in "
        f"{EXPECTED_DIGEST_FILE}"
    )
    assert checkpoint_digest(tiny_checkpoint) == record["digest"]
    assert json.loads((tiny_checkpoint / RECORD_NAME).read_text())["digest"] == record["digest"]


def test_pinned_training_ignores_which_kernels_the_processor_offers(tmp_path):
    """Three steps trained twice, the second time with MKL, oneDNN, numpy and OpenBLAS held to
    older processors' instruction sets: the same bytes. (Unpinned, ATen's AVX2 and AVX-512 kernels
    trained different checkpoints within 15 steps on one machine.)"""
    settings = TrainSettings(steps=3, batch=2, max_seconds=4.0, long_share=0.0)
    older = {
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "ATEN_CPU_CAPABILITY": "avx2",  # overridden by the pinning, as any caller's would be
    }
    a = train_reproducibly(tmp_path / "a", settings)
    b = train_reproducibly(tmp_path / "b", settings, extra_env=older)
    assert checkpoint_digest(a) == checkpoint_digest(b)


def test_training_refuses_to_run_with_unpinned_kernels(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in PINNED_KERNELS}
    done = subprocess.run(
        [sys.executable, "-m", "qwen3_aligner_triton.checkpoint_training", str(tmp_path), "{}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "not pinned" in done.stderr
    assert not any(tmp_path.iterdir())


def test_trained_checkpoint_places_words_near_their_true_times(upstream, random_upstream):
    trained = accuracy.measure(upstream, single=12, recordings=2, parts_per_recording=6)
    random = accuracy.measure(random_upstream, single=12, recordings=2, parts_per_recording=6)
    print("trained", trained.as_dict(), "random", random.as_dict())
    assert trained.single_ms < SINGLE_MS_BOUND, trained
    assert trained.long_ms < LONG_MS_BOUND, trained
    assert trained.cues_ms < CUES_MS_BOUND, trained
    for mode in ("single_ms", "cues_ms"):
        assert getattr(trained, mode) < getattr(random, mode) / 4, (mode, trained, random)
    assert trained.long_ms < random.long_ms * 0.75, (trained, random)


def test_parity_cases_use_many_distinct_timestamps(engine):
    """Measured: 2-14 values per case, 205 of 468 slots (the random checkpoint: 1-8 per case,
    one for 9 of the 10 cases of 13 s or more; 67 of 468)."""
    distinct_total = slots_total = 0
    for case, req in zip(CASES, case_requests(), strict=True):
        distinct, slots = mutation.distinct_slots(engine, req)
        assert distinct >= max(2, slots // 5), (case.name, distinct, slots)
        distinct_total += distinct
        slots_total += slots
    assert distinct_total >= 0.35 * slots_total, (distinct_total, slots_total)


def test_mutated_features_change_the_results(engine):
    """Blanking, shifting or cutting the audio moves the timestamps in nearly every parity case.

    One frame of padding more is no floor: it is silence after the last word, which a checkpoint
    that tracks the words rightly ignores; it moves the timestamps only in some of the 12 cases
    where the extra frame adds an audio token to the model's input."""
    report = mutation.kill_rate(engine, case_requests())
    print("kill rate", report.rate, report.killed, "of", report.requests)
    content = sum(report.killed[m] for m in MUTATIONS_OF_CONTENT)
    assert content >= CONTENT_KILL_RATE_BOUND * report.requests * len(MUTATIONS_OF_CONTENT), report
    assert report.rate >= KILL_RATE_BOUND, report
    assert report.killed["blank the second half"] >= report.requests - 1, report
    assert report.killed["shift by 0.25 s"] >= report.requests - 1, report
    assert report.killed["drop the last 0.2 s"] >= report.requests - 6, report
    # The score parity tests see more: every mutation that adds an audio token moves a score.
    assert report.rate_with_scores >= KILL_RATE_WITH_SCORES_BOUND, report
    assert report.killed_with_scores["drop the last 0.2 s"] == report.requests, report
