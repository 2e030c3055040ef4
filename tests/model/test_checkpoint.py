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
from shared_fixtures import upstream_align

from qwen3_aligner_tools.bench import accuracy, mutation
from qwen3_aligner_tools.checkpoint_training import (
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
from qwen3_aligner_triton.inprocess import InProcessAligner
from qwen3_aligner_triton.languages import resolve_language
from qwen3_aligner_triton.loading import load_aligner
from qwen3_aligner_triton.params import PipelineSettings
from qwen3_aligner_triton.requests import AlignRequest

# The trained checkpoint is the same bytes on every machine (test below), so these figures are
# the same everywhere up to inference rounding. Bounds: about 1.5x the measured error, and far
# below what a checkpoint that does not listen gets (the random one, also checked relatively).
# Mean absolute boundary error (ms) at this test's size, measured: single 735, long 3620,
# cues 832; random checkpoint: 321960, 17023, 6153.
SINGLE_MS_BOUND = 1100.0  # one clip per request
LONG_MS_BOUND = 6000.0  # long recordings through the windowing (40 s windows)
CUES_MS_BOUND = 1300.0  # cue mode
# Mutations over the 23 parity cases, measured: blank 22, shift 23, drop 16, pad 6 (0.73); with
# scores: 23, 23, 23, 12 (0.88). Floors from what any checkpoint that listens must show: blanking
# half the audio or shifting it by 0.25 s changes what is heard under nearly every word, so it
# moves nearly every case; cutting the last 0.2 s touches only the last word's end, which a
# coarse (80 ms bins, ~0.7 s error) model moves in about half the cases; one frame of padding is
# silence after the last word, which a model that listens rightly ignores: no floor. Removing
# frames removes audio tokens, so it moves a score in every case whatever the weights.
NEARLY_ALL = 0.9  # blank, shift: share of cases moved
DROP_SHARE = 0.5  # drop the last 0.2 s: share of cases moved
CONTENT_KILL_RATE_BOUND = 0.8  # blank, shift and drop together (measured 0.88; random 0.58)
KILL_RATE_WITH_SCORES_BOUND = 0.8  # all four, scores counted (measured 0.88)
MUTATIONS_OF_CONTENT = ("blank the second half", "shift by 0.25 s", "drop the last 0.2 s")
# Distinct raw timestamps over the 23 cases, measured: trained 174 of 468 slots, 2-17 per case;
# random 68 of 468, a single value in 11 cases. A checkpoint that listens gives different words
# different times: many more distinct values over the set than one that does not, and a case
# collapsing onto one value is rare. No floor per case: where a coarse model puts a given case's
# words is not something every sound checkpoint shares.
DISTINCT_OVER_RANDOM = 2.0  # distinct values over the set, against the random checkpoint's
DISTINCT_SHARE = 0.3  # distinct values over the set, against all slots (measured 0.37)
SINGLE_VALUE_CASES = 2  # most cases whose slots all take one value (measured 0; random 11)


def case_requests() -> list[AlignRequest]:
    return [
        AlignRequest(c.audio(), c.sample_rate, c.text, resolve_language(c.language)) for c in CASES
    ]


@pytest.fixture(scope="module")
def engine(upstream):
    return InProcessAligner(upstream, PipelineSettings.of(checkpoint="tiny"))


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
        [sys.executable, "-m", "qwen3_aligner_tools.checkpoint_training", str(tmp_path), "{}"],
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


def distinct_over_cases(engine) -> tuple[int, int, int]:
    """(distinct values summed over the parity cases, their slots, cases of a single value)."""
    distinct_total = slots_total = single = 0
    for req in case_requests():
        distinct, slots = mutation.distinct_slots(engine, req)
        distinct_total += distinct
        slots_total += slots
        single += distinct == 1 and slots > 2
    return distinct_total, slots_total, single


def test_parity_cases_use_many_distinct_timestamps(engine, random_upstream):
    trained = distinct_over_cases(engine)
    random = distinct_over_cases(
        InProcessAligner(random_upstream, PipelineSettings.of(checkpoint="tiny"))
    )
    print("distinct, slots, single-valued cases: trained", trained, "random", random)
    distinct, slots, single = trained
    assert distinct >= DISTINCT_SHARE * slots, trained
    assert distinct >= DISTINCT_OVER_RANDOM * random[0], (trained, random)
    assert single <= SINGLE_VALUE_CASES, trained


def test_mutated_features_change_the_results(engine):
    """Blanking, shifting or cutting the audio moves the timestamps in nearly every parity case.

    One frame of padding more is no floor: it is silence after the last word, which a checkpoint
    that tracks the words rightly ignores; it moves the timestamps only in some of the 12 cases
    where the extra frame adds an audio token to the model's input."""
    report = mutation.kill_rate(engine, case_requests())
    print("kill rate", report.rate, report.killed, "of", report.requests)
    cases = report.requests
    content = sum(report.killed[m] for m in MUTATIONS_OF_CONTENT)
    assert content >= CONTENT_KILL_RATE_BOUND * cases * len(MUTATIONS_OF_CONTENT), report
    assert report.killed["blank the second half"] >= NEARLY_ALL * cases, report
    assert report.killed["shift by 0.25 s"] >= NEARLY_ALL * cases, report
    assert report.killed["drop the last 0.2 s"] >= DROP_SHARE * cases, report
    # The score parity tests see more: every mutation that removes audio tokens moves a score.
    assert report.rate_with_scores >= KILL_RATE_WITH_SCORES_BOUND, report
    assert report.killed_with_scores["drop the last 0.2 s"] == cases, report
