"""The long-recording window algorithm against a simulated aligner that knows the true times."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_aligner_triton.longform import (
    FRAME_SECONDS,
    LongformPlan,
    LongformSettings,
    energy_envelope,
)
from qwen3_aligner_triton.timestamps import repair_timestamps

BIN = 0.08  # seconds per timestamp class


def simulated_window(true_starts, true_ends, window):
    """What the model does with a window: words inside get their (quantised) times; words that
    are not inside are piled at the window's end. Then the timestamp repair runs, as it does on
    the model's output."""
    length = window.end - window.start
    starts, ends = [], []
    for k in range(window.first_word, window.first_word + window.n_words):
        s, e = true_starts[k] - window.start, true_ends[k] - window.start
        if s >= length or e > length:
            s = e = length  # piled at the end
        s, e = max(s, 0.0), max(e, 0.0)
        starts.append(round(s / BIN) * BIN)
        ends.append(round(e / BIN) * BIN)
    slots = [v for pair in zip(starts, ends, strict=True) for v in pair]
    fixed = repair_timestamps([round(v * 1000) for v in slots])
    return [v / 1000 for v in fixed[0::2]], [v / 1000 for v in fixed[1::2]]


def run(true_starts, true_ends, duration, envelope=None, settings=None):
    settings = settings or LongformSettings()
    if envelope is None:
        envelope = np.ones(int(duration / FRAME_SECONDS) + 1, np.float32)
    plan = LongformPlan(duration, len(true_starts), envelope, settings)
    guard = 0
    while (window := plan.next_window()) is not None:
        starts, ends = simulated_window(true_starts, true_ends, window)
        plan.accept(window, starts, ends)
        guard += 1
        assert guard < 10_000, "no progress"
    return plan


def speech(duration, rate_fn, rng, silences=()):
    """True word times: words follow each other at a (varying) rate, with given silences."""
    starts, ends = [], []
    t = 0.5
    while t < duration - 1.0:
        for a, b in silences:
            if a <= t < b:
                t = b
        if t >= duration - 1.0:
            break
        length = max(0.12, rng.normal(1.0 / rate_fn(t), 0.05))
        starts.append(t)
        ends.append(min(t + length * 0.8, duration))
        t += length
    return np.array(starts), np.array(ends)


def check(plan, true_starts, true_ends, duration):
    starts, ends = np.array(plan.starts), np.array(plan.ends)
    assert len(starts) == len(true_starts)  # every word exactly once
    assert np.all(np.diff(starts) >= 0) and np.all(ends >= starts)  # in order, monotonic
    assert np.all(starts[1:] >= ends[:-1] - 1e-9)
    assert starts.min() >= 0 and ends.max() <= duration
    err = np.maximum(np.abs(starts - true_starts), np.abs(ends - true_ends))
    return err


def test_one_hour_every_word_within_one_bin():
    rng = np.random.default_rng(0)
    duration = 3600.0
    ts, te = speech(duration, lambda t: 2.5, rng)
    plan = run(ts, te, duration)
    err = check(plan, ts, te, duration)
    assert err.max() <= BIN / 2 + 1e-9, err.max()
    assert plan.windows < 60  # ~3600 / 180 plus the overlaps


def test_long_silences_and_music():
    rng = np.random.default_rng(1)
    duration = 1800.0
    silences = [(100, 500), (700, 720), (1000, 1400)]
    ts, te = speech(duration, lambda t: 3.0, rng, silences)
    err = check(run(ts, te, duration), ts, te, duration)
    assert err.max() <= BIN / 2 + 1e-9


def test_very_uneven_speaking_rate():
    rng = np.random.default_rng(2)
    duration = 2400.0
    ts, te = speech(duration, lambda t: 0.3 if (t // 300) % 2 else 6.0, rng)
    err = check(run(ts, te, duration), ts, te, duration)
    assert err.max() <= BIN / 2 + 1e-9


def test_window_cut_inside_a_word_is_recovered():
    duration = 400.0
    ts = np.arange(0.5, 399.0, 1.0)
    te = ts + 0.95  # words almost touch: any cut lands in a word
    err = check(run(ts, te, duration), ts, te, duration)
    assert err.max() <= BIN / 2 + 1e-9


def test_transcript_with_words_never_spoken():
    """Extra words the audio does not contain get piled up; all words stay, in order, inside."""
    rng = np.random.default_rng(3)
    duration = 900.0
    ts, te = speech(duration, lambda t: 2.0, rng)
    # 40 spoken-nowhere words in the middle: the simulated model piles them at window ends.
    k = len(ts) // 2
    ts = np.concatenate([ts[:k], np.full(40, 10_000.0), ts[k:]])
    te = np.concatenate([te[:k], np.full(40, 10_000.0), te[k:]])
    plan = run(ts, te, duration)
    starts = np.array(plan.starts)
    assert len(starts) == len(ts)
    assert np.all(np.diff(starts) >= 0) and starts.max() <= duration
    spoken = np.r_[0:k, k + 40 : len(ts)]
    err = np.abs(starts[spoken] - ts[spoken])
    assert np.quantile(err, 0.99) <= BIN  # the spoken words keep their places


def test_cut_points_prefer_quiet_frames():
    duration = 600.0
    env = np.ones(int(duration / FRAME_SECONDS), np.float32)
    env[1712] = 0.0  # a quiet frame (171.2-171.3 s) inside the search range
    plan = LongformPlan(duration, 10, env)
    window = plan.next_window()
    assert window.end == pytest.approx(171.25)


def test_short_tail_is_not_left_alone():
    plan = LongformPlan(200.0, 5, np.ones(2000, np.float32))
    w = plan.next_window()
    assert w.end <= 170.0 and not w.is_last


def test_energy_envelope():
    wave = np.concatenate([np.zeros(1600), np.ones(1600)]).astype(np.float32)
    np.testing.assert_allclose(energy_envelope(wave, 16000), [0.0, 1.0])


@pytest.mark.parametrize("window", [10.0, 20.0, 30.0, 32.0, 40.0])
def test_short_windows_always_move_on_when_the_model_piles_every_word_at_the_end(window):
    """The worst answer a window can get (every word at its very end) still ends the plan: a
    66 s recording with 30 s windows once repeated the window [34, 36] s forever."""
    duration, n_words = 66.0, 120
    plan = LongformPlan(
        duration, n_words, np.ones(int(duration * 10), np.float32), LongformSettings(window=window)
    )
    for _ in range(1000):
        w = plan.next_window()
        if w is None:
            break
        assert w.end > w.start
        length = w.end - w.start
        plan.accept(w, [length] * w.n_words, [length] * w.n_words)
    else:
        pytest.fail("the plan never finished")
    assert len(plan.starts) == n_words
    assert plan.starts == sorted(plan.starts) and plan.ends[-1] <= duration


def test_forty_minutes_with_a_tenth_never_spoken_succeed_with_every_window_in_budget():
    """A natural 2.2 words/s transcript of 40 minutes with 10 % of its words never spoken: the
    unspoken words pile up and are carried forward, yet no window is handed more words than its
    slots hold, every word comes back inside the recording in order, and the ones no window could
    take are flagged."""
    rng = np.random.default_rng(4)
    duration = 2400.0
    ts, te = speech(duration, lambda t: 2.2, rng)
    never = np.sort(rng.choice(len(ts), size=len(ts) // 9, replace=False))
    ts = np.insert(ts, never, 10_000.0)
    te = np.insert(te, never, 10_000.0)
    per_second = 1000.0 / 80.0  # one word per timestamp slot
    settings = LongformSettings(max_units_per_second=per_second)
    plan = LongformPlan(
        duration, len(ts), np.ones(int(duration / FRAME_SECONDS) + 1, np.float32), settings
    )
    handed = []
    while (window := plan.next_window()) is not None:
        handed.append((window.n_words, window.end - window.start))
        plan.accept(window, *simulated_window(ts, te, window))
        assert len(handed) < 10_000, "no progress"
    assert all(n <= per_second * length for n, length in handed)
    starts, ends = np.array(plan.starts), np.array(plan.ends)
    assert len(starts) == len(ts)
    assert np.all(np.diff(starts) >= 0) and np.all(ends >= starts)
    assert starts.min() >= 0 and ends.max() <= duration
    spoken = ts < duration
    err = np.abs(starts[spoken] - ts[spoken])
    assert np.quantile(err, 0.95) <= BIN  # the spoken words keep their places


def test_the_last_window_takes_what_it_holds_and_flags_the_rest():
    plan = LongformPlan(
        20.0, 400, np.ones(201, np.float32), LongformSettings(max_units_per_second=12.5)
    )
    window = plan.next_window()
    assert window is not None and window.is_last and window.n_words == 250
    plan.accept(window, [k * 0.05 for k in range(250)], [k * 0.05 + 0.04 for k in range(250)])
    assert plan.done and plan.next_window() is None and plan.unplaced == 150
    assert plan.starts[250:] == [plan.ends[249]] * 150 and all(plan.repaired[250:])


def test_the_merge_clamps_words_placed_past_the_recording_and_before_the_last_word():
    """The model may place words past its window's audio (a last window padded or cut at the
    end of the recording) or before the previous window's last word: the merge moves them into
    the recording, after the words already placed, and flags them repaired. Both clamps act
    here; a merge that skipped either fails."""
    from qwen3_aligner_triton.longform import Window

    plan = LongformPlan(100.0, 4, np.ones(1001, np.float32), LongformSettings(window=60.0))
    plan.accept(Window(0.0, 60.0, 0, 2, False), [10.0, 20.0], [11.0, 21.0], [0.9, 0.8], None)
    assert plan.starts == [10.0, 20.0] and plan.repaired == [False, False]
    assert plan.position == 21.0  # the next window starts where the last accepted word ended
    last = Window(plan.position, 100.0, 2, 2, True)
    # Word 3 placed before word 2's end (15 s into the recording), word 4 past its end (125 s).
    plan.accept(last, [-6.0, 104.0], [-5.0, 105.0], [0.7, 0.6], [False, False])
    assert plan.starts == [10.0, 20.0, 21.0, 100.0]
    assert plan.ends == [11.0, 21.0, 21.0, 100.0]
    assert plan.repaired == [False, False, True, True]
    assert plan.scores == [0.9, 0.8, 0.7, 0.6]  # the window's own scores stay
