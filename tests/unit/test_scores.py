"""Confidence per unit: the formulas, from logits to slot confidences, unit scores, repaired flags
and the summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from score_reference import reference_confidence

from qwen3_aligner_triton.results import AlignedUnit, Alignment
from qwen3_aligner_triton.scores import slot_predictions, summary, unit_repaired, unit_scores


def test_slot_confidence_is_the_mass_within_one_bin_of_the_argmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (64, 500)).astype(np.float32)
    logits[0, 0] = 40.0  # argmax at the first bin: only b and b+1 exist
    logits[1, -1] = 40.0  # at the last bin
    logits[2, 250] = logits[2, 251] = 30.0  # a tie: the first maximal bin, as torch.argmax picks
    bins, conf = slot_predictions(torch.from_numpy(logits))
    want_bins, want_conf = reference_confidence(logits.astype(np.float64))
    assert bins.dtype == torch.int64 and conf.dtype == torch.float32
    np.testing.assert_array_equal(bins.numpy(), want_bins)
    np.testing.assert_allclose(conf.numpy(), want_conf, rtol=1e-5, atol=1e-6)
    assert bins[2] == 250 and conf[2] > 0.99  # the tied neighbour's mass counts
    assert conf[0] > 0.99 and conf[1] > 0.99


def test_confidence_range_extremes_and_argmax_of_any_dtype():
    classes = 5000
    sure = torch.full((1, classes), -50.0)
    sure[0, 1234] = 50.0
    flat = torch.zeros((1, classes))  # argmax 0: bins 0 and 1
    split = torch.full((1, classes), -50.0)
    split[0, 99] = split[0, 100] = 50.0  # a boundary between two bins: still sure within 80 ms
    far = torch.full((1, classes), -50.0)
    far[0, 10] = 50.0
    far[0, 3000] = 50.0 - 1e-3  # two far-apart guesses: about half
    bins, conf = slot_predictions(torch.cat([sure, flat, split, far]).to(torch.bfloat16))
    np.testing.assert_allclose(conf.numpy(), [1.0, 2 / classes, 1.0, 0.5], rtol=2e-2, atol=1e-6)
    assert bins.tolist() == [1234, 0, 99, 10]
    empty_bins, empty_conf = slot_predictions(torch.zeros((0, classes)))
    assert empty_bins.shape == (0,) and empty_conf.shape == (0,)


def test_unit_scores_repairs_and_summary():
    conf = np.array([0.81, 1.0, 0.25, 0.04, 0.0, 1.0], np.float32)
    np.testing.assert_allclose(unit_scores(conf), [0.9, 0.1, 0.0], rtol=1e-6)
    assert unit_repaired([False, False, True, False, False, True]) == [False, True, True]
    with pytest.raises(ValueError):
        unit_repaired([True])
    assert summary([0.9, 0.1, 0.5], [False, True, False]) == (pytest.approx(0.5), 1 / 3)
    assert summary([], []) == (0.0, 0.0)


def weights_logits(rows) -> torch.Tensor:
    """Logits whose softmax is each row's weights over their sum: ``log(w)``."""
    return torch.log(torch.tensor(rows, dtype=torch.float32))


def test_confidence_by_hand_in_the_middle_and_at_either_edge():
    # weights / sum: b=2 keeps 2+4+2 of 10; b=0 keeps 4+2 of 9; b=4 (last) keeps 1+2 of 6.
    bins, conf = slot_predictions(
        weights_logits([[1, 2, 4, 2, 1], [4, 2, 1, 1, 1], [1, 1, 1, 1, 2]])
    )
    assert bins.tolist() == [2, 0, 4]
    np.testing.assert_allclose(conf.numpy(), [0.8, 6 / 9, 3 / 6], rtol=1e-6)
    one_bins, one_conf = slot_predictions(weights_logits([[1, 2, 4, 2, 1]]))
    assert one_bins.tolist() == [2] and one_conf.dtype == torch.float32
    np.testing.assert_allclose(one_conf.numpy(), [0.8], rtol=1e-6)


def test_confidence_of_the_whole_mass_is_never_above_one():
    # Three bins, argmax in the middle: the window holds every bin, so the confidence is the
    # whole mass, 1; the float32 softmax of some of these rows sums to 1 + 2**-23.
    rows = [[1, 3, 1], [1, 7, 1], [2, 6, 1], [3, 5, 1], [1, 3, 2], [2, 4, 1], [1, 7, 6]]
    bins, conf = slot_predictions(weights_logits(rows))
    assert bins.tolist() == [1] * len(rows)
    assert torch.all(conf <= 1.0)
    np.testing.assert_allclose(conf.numpy(), 1.0, rtol=0, atol=1e-6)


def test_windows_batched_on_a_leading_axis_score_each_slot_as_alone():
    rows = [[[1, 2, 4, 2, 1], [1, 1, 1, 1, 2]], [[4, 2, 1, 1, 1], [1, 4, 1, 2, 2]]]
    bins, conf = slot_predictions(weights_logits(rows))
    assert bins.tolist() == [[2, 4], [0, 1]]
    np.testing.assert_allclose(conf.numpy(), [[0.8, 0.5], [6 / 9, 0.6]], rtol=1e-6)
    for window, logits in enumerate(weights_logits(rows)):
        alone_bins, alone_conf = slot_predictions(logits)
        assert torch.equal(bins[window], alone_bins) and torch.equal(conf[window], alone_conf)


@pytest.mark.parametrize("slots", [0, 3])
def test_bins_and_confidence_stay_on_the_device_of_the_logits(slots):
    bins, conf = slot_predictions(torch.zeros((slots, 5), device="meta"))
    assert (bins.device.type, conf.device.type) == ("meta", "meta")
    assert bins.shape == conf.shape == (slots,) and conf.dtype == torch.float32


def test_no_slots_give_float32_confidence_whatever_the_default_dtype():
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        bins, conf = slot_predictions(torch.zeros((0, 5)))
    finally:
        torch.set_default_dtype(default)
    assert bins.dtype == torch.int64 and conf.dtype == torch.float32 and conf.shape == (0,)


def test_unit_scores_are_float32_and_tiny_confidences_do_not_underflow():
    # sqrt(2**-100 * 2**-98) = 2**-99; the product itself, 2**-198, is zero in float32.
    conf = np.array([2.0**-100, 2.0**-98, 0.25, 1.0], dtype=np.float32)
    scores = unit_scores(conf)
    assert scores.dtype == np.float32
    assert scores.tolist() == [2.0**-99, 0.5]


def test_unit_repaired_flags_each_pair_and_names_the_rule_for_odd_slots():
    assert unit_repaired([True, False]) == [True]
    assert unit_repaired([False, False]) == [False]
    assert unit_repaired([]) == []
    for odd in ([True], [False, True, False]):
        with pytest.raises(ValueError) as error:
            unit_repaired(odd)
        assert str(error.value) == "two slots (start, end) per unit"


def test_summary_mean_of_float32_scores_is_not_rounded_in_float32():
    # 1 + 2**-24 rounds to 1 in float32: a float32 mean would read 0.5.
    scores = list(unit_scores(np.array([1.0, 1.0, 2.0**-24, 2.0**-24], dtype=np.float32)))
    assert summary(scores, [True, False]) == (0.5 + 2.0**-25, 0.5)


def test_document_and_tensors_carry_scores():
    units = (
        AlignedUnit("a", 0.0, 0.1, score=0.25, repaired=False),
        AlignedUnit("b", 0.1, 0.2, score=0.75, repaired=True),
    )
    alignment = Alignment("English", 1.0, units, "a b")
    doc = json.loads(alignment.to_json())
    assert [(w["score"], w["repaired"]) for w in doc["words"]] == [(0.25, False), (0.75, True)]
    assert (doc["mean_score"], doc["repaired_share"]) == (0.5, 0.5)
    scores = alignment.output_arrays()["SCORES"]
    assert scores.dtype == np.float32 and scores.tolist() == [[0.25, 0.75]]
