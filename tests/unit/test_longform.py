"""The long-recording window algorithm against a simulated aligner that knows the true times."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_aligner_triton.longform import (
    FRAME_SECONDS,
    LongformPlan,
    LongformSettings,
    Window,
    energy_envelope,
    place,
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
    assert plan.scores[250:] == [0.0] * 150  # unplaced words say so in their score too


def test_the_merge_clamps_words_placed_past_the_recording_and_before_the_last_word():
    """The model may place words past its window's audio (a last window padded or cut at the
    end of the recording) or before the previous window's last word: the merge moves them into
    the recording, after the words already placed, and flags them repaired. Both clamps act
    here; a merge that skipped either fails."""
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


# Exact cases worked out by hand: the windows a plan proposes, the words it accepts, the merge.

NO_FRAMES = np.zeros(1, np.float32)  # no frame to search: windows are cut at their length


def falling(duration):
    """An envelope that gets quieter to the end: a window is cut in the last frame it searches."""
    n = int(duration / FRAME_SECONDS) + 1
    return np.arange(n, 0, -1).astype(np.float32)


def rising(duration):
    """An envelope that gets louder to the end: a window is cut in the first frame it searches."""
    n = int(duration / FRAME_SECONDS) + 1
    return np.arange(1, n + 1).astype(np.float32)


def accept_spoken(plan, window, spoken):
    """The model's answer when the window's first ``spoken`` words lie at [k, k + 1] s into it
    and the others are piled at its end."""
    length = window.end - window.start
    starts = [float(k) if k < spoken else length for k in range(window.n_words)]
    ends = [float(k + 1) if k < spoken else length for k in range(window.n_words)]
    plan.accept(window, starts, ends)


def test_place_keeps_times_inside_the_window_unmoved():
    assert place(100.0, 5.0, 6.0, 0.0, 200.0) == (105.0, 106.0, False)


def test_place_flags_a_word_whose_start_alone_was_moved():
    assert place(0.0, 5.0, 10.0, 7.0, 100.0) == (7.0, 10.0, True)


def test_place_flags_a_word_whose_end_alone_was_moved():
    assert place(0.0, 5.0, 120.0, 0.0, 100.0) == (5.0, 100.0, True)


def test_place_does_not_flag_a_move_of_exactly_the_tolerance():
    # MOVED_SECONDS is 1e-6: a time moved by exactly that much counts as unmoved.
    assert place(0.0, 0.0, 10.0, 1e-6, 100.0) == (1e-6, 10.0, False)
    assert place(0.0, 0.0, 2e-6, 0.0, 1e-6) == (0.0, 1e-6, False)


@pytest.mark.parametrize("sample_rate", [10, 4])
def test_energy_envelope_at_ten_hertz_or_less_has_one_frame_per_sample(sample_rate):
    wave = np.array([3.0, -4.0, 0.0, 2.0], np.float32)
    np.testing.assert_array_equal(energy_envelope(wave, sample_rate), [3.0, 4.0, 0.0, 2.0])


def test_energy_envelope_of_audio_shorter_than_a_frame_is_one_silent_frame():
    env = energy_envelope(np.full(1599, 0.5, np.float32), 16000)
    assert env.shape == (1,) and env.dtype == np.float32 and env[0] == 0.0


def test_energy_envelope_of_exactly_one_frame_is_its_rms():
    np.testing.assert_array_equal(energy_envelope(np.full(1600, 0.5, np.float32), 16000), [0.5])


def test_energy_envelope_is_float32_whatever_the_wave_dtype():
    wave = np.concatenate([np.full(1600, 1000), np.full(1600, -3000)]).astype(np.int16)
    env = energy_envelope(wave, 16000)
    assert env.dtype == np.float32
    np.testing.assert_array_equal(env, [1000.0, 3000.0])


def test_a_recording_of_exactly_one_window_is_a_single_last_window():
    plan = LongformPlan(180.0, 5, np.ones(1801, np.float32))
    assert plan.next_window() == Window(0.0, 180.0, 0, 5, True)


def test_without_a_minimum_tail_a_recording_of_one_window_is_a_single_last_window():
    settings = LongformSettings(window=60.0, min_last_window=0.0)
    plan = LongformPlan(60.0, 5, np.ones(601, np.float32), settings)
    assert plan.next_window() == Window(0.0, 60.0, 0, 5, True)


def test_the_first_window_of_200_s_ends_by_170_s_to_leave_30_s_for_the_last():
    # Target 180 s moved to 200 - 30 = 170 s; searched over [150, 170) s, quietest at the end.
    plan = LongformPlan(200.0, 5, falling(200.0))
    w = plan.next_window()
    assert w.end == pytest.approx(169.95) and not w.is_last


def test_the_tail_kept_for_the_last_window_is_at_most_half_a_window():
    # 40 s windows over 58 s: the tail is min(30, 40 / 2) = 20 s, so the first window is cut
    # by 38 s (searched over [20, 38) s, quietest at the end), not by 40 s.
    plan = LongformPlan(58.0, 5, falling(58.0), LongformSettings(window=40.0))
    w = plan.next_window()
    assert w.end == pytest.approx(37.95) and not w.is_last


def test_a_window_is_never_cut_before_half_its_length():
    # A 30 s search in a 40 s window still starts at 20 s; the quietest frame is its first.
    settings = LongformSettings(window=40.0, cut_search=30.0)
    plan = LongformPlan(1000.0, 5, rising(1000.0), settings)
    assert plan.next_window().end == pytest.approx(20.05)


def test_without_a_search_range_a_window_ends_mid_frame_or_at_its_length():
    """cut_search=0 still searches the frame holding the window's nominal end: the cut is that
    frame's middle unless the nominal end comes first."""
    settings = LongformSettings(window=30.0, cut_search=0.0)
    plan = LongformPlan(1000.0, 10, falling(1000.0), settings)
    first = plan.next_window()
    assert (first.start, first.end) == (0.0, 30.0)  # frame [30.0, 30.1): its middle is later
    plan.accept(first, [0.0] + [30.0] * 9, [0.38] + [30.0] * 9)  # one word, ending at 0.38 s
    second = plan.next_window()
    assert second.start == pytest.approx(0.38)
    assert second.end == pytest.approx(30.35)  # frame [30.3, 30.4) holds the end, 30.38 s


def test_an_envelope_ending_before_the_search_range_cuts_at_the_window_length():
    plan = LongformPlan(1000.0, 5, NO_FRAMES)
    assert plan.next_window() == Window(0.0, 180.0, 0, 5, False)


def test_a_window_is_handed_its_share_of_the_words_times_overshoot_plus_extra():
    # 180 of 1000 s: ceil(1000 * 0.18 * 1.5) + 16 = 286 words.
    plan = LongformPlan(1000.0, 1000, NO_FRAMES)
    assert plan.next_window() == Window(0.0, 180.0, 0, 286, False)


def test_a_later_window_is_handed_its_share_of_the_words_and_audio_left():
    # After 100 words ending at 100 s: 180 of the 900 s left, ceil(900 * 0.2 * 1.5) + 16 = 286.
    plan = LongformPlan(1000.0, 1000, NO_FRAMES)
    accept_spoken(plan, plan.next_window(), 100)
    assert plan.next_window() == Window(100.0, 280.0, 100, 286, False)


def test_a_later_window_is_handed_no_more_words_than_its_own_slots():
    # One slot per second: 180 words for [0, 180] s and again for [100, 280] s.
    plan = LongformPlan(1000.0, 1000, NO_FRAMES, LongformSettings(max_units_per_second=1.0))
    first = plan.next_window()
    assert first == Window(0.0, 180.0, 0, 180, False)
    accept_spoken(plan, first, 100)
    assert plan.next_window() == Window(100.0, 280.0, 100, 180, False)


def test_a_window_of_a_recording_under_a_second_is_handed_its_share_of_the_words():
    # 0.5 s windows over 0.9 s: ceil(200 * 0.5 / 0.9 * 1.5) + 16 = 167 + 16 = 183 words.
    plan = LongformPlan(0.9, 200, NO_FRAMES, LongformSettings(window=0.5))
    assert plan.next_window() == Window(0.0, 0.5, 0, 183, False)


def test_a_window_shorter_than_one_slot_is_still_handed_one_word():
    plan = LongformPlan(0.5, 5, NO_FRAMES, LongformSettings(max_units_per_second=1.0))
    assert plan.next_window() == Window(0.0, 0.5, 0, 1, True)


@pytest.mark.parametrize(
    ("starts", "ends"), [([1.0, 2.0], [1.5]), ([1.0], [1.5, 2.5])], ids=["ends", "starts"]
)
def test_accept_rejects_times_that_do_not_match_the_window_words(starts, ends):
    plan = LongformPlan(100.0, 2, np.ones(1001, np.float32))
    with pytest.raises(ValueError) as raised:
        plan.accept(Window(0.0, 60.0, 0, 2, False), starts, ends)
    assert str(raised.value) == "one start and one end per word of the window"
    assert plan.starts == [] and plan.windows == 0


@pytest.mark.parametrize(
    ("scores", "repaired"), [([0.5], None), (None, [False])], ids=["scores", "repaired"]
)
def test_accept_rejects_scores_or_flags_that_do_not_match_the_window_words(scores, repaired):
    plan = LongformPlan(100.0, 2, np.ones(1001, np.float32))
    with pytest.raises(ValueError) as raised:
        plan.accept(Window(0.0, 60.0, 0, 2, False), [1.0, 2.0], [1.5, 2.5], scores, repaired)
    assert str(raised.value) == "one score and one repair flag per word of the window"
    assert plan.starts == [] and plan.windows == 0


def test_accepted_words_default_to_score_zero_and_keep_the_window_repair_flags():
    plan = LongformPlan(100.0, 4, np.ones(1001, np.float32))
    plan.accept(Window(0.0, 60.0, 0, 2, False), [1.0, 2.0], [1.5, 2.5])
    assert plan.scores == [0.0, 0.0] and plan.repaired == [False, False]
    plan.accept(Window(2.5, 100.0, 2, 2, True), [1.0, 2.0], [1.5, 2.5], None, [True, False])
    assert plan.scores == [0.0] * 4 and plan.repaired == [False, False, True, False]


def test_the_plan_counts_the_windows_it_accepted():
    plan = LongformPlan(100.0, 4, np.ones(1001, np.float32))
    plan.accept(Window(0.0, 60.0, 0, 2, False), [1.0, 2.0], [1.5, 2.5])
    plan.accept(Window(2.5, 100.0, 2, 2, True), [1.0, 2.0], [1.5, 2.5])
    assert plan.windows == 2


def test_a_word_placed_before_the_last_accepted_word_ends_is_moved_after_it():
    plan = LongformPlan(100.0, 4, np.ones(1001, np.float32))
    plan.accept(Window(0.0, 60.0, 0, 3, False), [0.0, 1.0, 2.0], [1.0, 2.0, 3.0])
    # 2.5 s into the recording, before the third word's end (3 s) but after the second's (2 s).
    plan.accept(Window(3.0, 100.0, 3, 1, True), [-0.5], [1.0])
    assert plan.starts[3] == 3.0 and plan.ends[3] == 4.0 and plan.repaired[3]


def test_a_word_ending_exactly_the_guard_before_the_window_end_is_accepted():
    plan = LongformPlan(100.0, 3, np.ones(1001, np.float32))  # guard 2 s
    plan.accept(Window(0.0, 60.0, 0, 2, False), [57.0, 58.0], [58.0, 58.5])
    assert plan.starts == [57.0] and plan.ends == [58.0] and plan.position == 58.0


def test_a_window_keeping_only_zero_length_words_at_its_start_moves_on_one_frame():
    plan = LongformPlan(100.0, 3, np.ones(1001, np.float32))
    plan.accept(Window(0.0, 60.0, 0, 2, False), [0.0, 60.0], [0.0, 60.0])
    assert plan.starts == [0.0] and plan.position == pytest.approx(0.1)
    assert plan.next_window().start == pytest.approx(0.1)


def test_a_window_keeping_no_word_is_skipped_keeping_the_guard_as_overlap():
    plan = LongformPlan(100.0, 3, np.ones(1001, np.float32))  # guard 2 s
    plan.accept(Window(0.0, 60.0, 0, 2, False), [60.0, 60.0], [60.0, 60.0])
    assert plan.starts == [] and plan.position == 58.0


def test_a_window_shorter_than_the_guard_keeping_no_word_moves_on_one_frame():
    plan = LongformPlan(100.0, 3, np.ones(1001, np.float32))  # guard 2 s
    plan.accept(Window(0.0, 1.5, 0, 1, False), [1.5], [1.5])
    assert plan.starts == [] and plan.position == pytest.approx(0.1)


def test_a_last_window_handed_no_words_flags_every_word_unplaced_at_zero():
    plan = LongformPlan(10.0, 3, np.ones(101, np.float32))
    plan.accept(Window(0.0, 10.0, 0, 0, True), [], [])
    assert plan.starts == [0.0] * 3 and plan.ends == [0.0] * 3
    assert plan.scores == [0.0] * 3 and plan.repaired == [True] * 3 and plan.unplaced == 3


def test_an_empty_last_window_after_the_plan_is_done_keeps_the_unplaced_count():
    plan = LongformPlan(10.0, 3, np.ones(101, np.float32))
    plan.accept(Window(0.0, 10.0, 0, 1, True), [1.0], [2.0])
    assert plan.unplaced == 2 and plan.done
    plan.accept(Window(2.0, 10.0, 3, 0, True), [], [])
    assert plan.unplaced == 2 and plan.starts == [1.0, 2.0, 2.0]
