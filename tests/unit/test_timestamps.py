import itertools
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen3_aligner_triton.scores import unit_repaired
from qwen3_aligner_triton.timestamps import repair, repair_timestamps


@pytest.fixture(scope="module")
def upstream_fix():
    from qwen3_aligner_triton.loading import import_qwen_asr

    import_qwen_asr()
    from qwen_asr.inference.qwen3_forced_aligner import Qwen3ForceAlignProcessor

    processor = Qwen3ForceAlignProcessor()
    return lambda values: processor.fix_timestamp(np.asarray(values, dtype=np.float32))


@pytest.fixture(scope="module")
def upstream_decisions(upstream_fix):
    """Upstream's own repair decisions: ``fix_timestamp``'s ``is_normal`` list, read from its
    frame as it returns (so the test compares with the decisions, not with a re-implementation).
    """

    def decide(values):
        seen = {}

        def profile(frame, event, arg):
            if event == "return" and frame.f_code.co_name == "fix_timestamp":
                seen["is_normal"] = list(frame.f_locals["is_normal"])
                seen["result"] = arg

        previous = sys.getprofile()
        sys.setprofile(profile)
        try:
            upstream_fix(values)
        finally:
            sys.setprofile(previous)
        return seen["result"], [not normal for normal in seen["is_normal"]]

    return decide


def bins(max_bin: int):
    return st.integers(min_value=0, max_value=max_bin).map(lambda b: b * 80.0)


# Few distinct values give ties and plateaus; many give long anomalous runs.
sequences = st.one_of(
    st.lists(bins(3), min_size=1, max_size=60),
    st.lists(bins(40), min_size=1, max_size=120),
    st.lists(bins(4999), min_size=1, max_size=200),
)


@settings(max_examples=400, deadline=None)
@given(sequences)
def test_repair_equals_upstream(upstream_fix, values):
    assert repair_timestamps(values) == upstream_fix(values)


# Pairs of slots (start, end per unit); runs of equal or out-of-order values at either end.
edge_runs = st.tuples(
    st.lists(bins(6), max_size=6),
    st.lists(bins(60), min_size=0, max_size=40),
    st.lists(bins(6), max_size=6),
    st.sampled_from([0.0, 80.0 * 30, 80.0 * 70]),
).map(lambda t: [*(v + t[3] for v in t[0]), *t[1], *t[2]])


@settings(max_examples=400, deadline=None)
@given(st.one_of(sequences, edge_runs).filter(lambda v: len(v) % 2 == 0 and v))
def test_replaced_slots_are_upstreams_decisions(upstream_decisions, values):
    result = repair(values)
    upstream_values, upstream_replaced = upstream_decisions(values)
    assert result.values == upstream_values
    assert result.replaced == upstream_replaced
    # A unit is repaired exactly when upstream replaced its start or its end.
    flags = unit_repaired(result.replaced)
    pairs = zip(upstream_replaced[0::2], upstream_replaced[1::2], strict=True)
    assert flags == [a or b for a, b in pairs]


def test_every_changed_value_is_reported_replaced():
    values = [800.0, 0.0, 0.0, 80.0, 80.0, 4000.0, 160.0, 160.0]
    result = repair(values)
    changed = [a != b for a, b in zip(values, result.values, strict=True)]
    assert any(changed)
    assert all(r for r, c in zip(result.replaced, changed, strict=True) if c)
    assert unit_repaired(result.replaced) == [True, False, True, False]


def test_monotonic_input_is_not_repaired():
    assert repair([0.0, 80.0, 80.0, 160.0]).replaced == [False] * 4


@pytest.mark.parametrize(
    "values",
    [
        [0.0],
        [80.0, 0.0],
        [800.0, 0.0, 0.0, 0.0, 160.0],  # anomaly at the left edge
        [0.0, 80.0, 160.0, 0.0, 0.0, 0.0, 0.0, 320.0],  # long run in the middle: interpolated
        [0.0, 80.0, 160.0, 0.0],  # anomaly at the right edge
        [400.0, 400.0, 0.0, 400.0, 400.0],  # plateau with one dip
        [5.0, 3.0, 4.0, 1.0, 2.0, 0.0],
    ],
)
def test_repair_edge_cases(upstream_fix, values):
    assert repair_timestamps(values) == upstream_fix(values)


def test_repair_makes_monotonic():
    rng = np.random.default_rng(3)
    values = (rng.integers(0, 5000, 500) * 80).astype(float).tolist()
    fixed = repair_timestamps(values)
    assert all(a <= b for a, b in itertools.pairwise(fixed))


def test_interpolation_of_long_runs():
    # Three anomalies between 80 and 400 ms are spaced evenly.
    assert repair_timestamps([0, 80, 4000, 3000, 2000, 400, 480]) == [
        0,
        80,
        160,
        240,
        320,
        400,
        480,
    ]


def test_empty():
    assert repair_timestamps([]) == []
