import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen3_aligner_triton.timestamps import repair_timestamps


@pytest.fixture(scope="module")
def upstream_fix():
    from qwen3_aligner_triton.loading import import_qwen_asr

    import_qwen_asr()
    from qwen_asr.inference.qwen3_forced_aligner import Qwen3ForceAlignProcessor

    processor = Qwen3ForceAlignProcessor()
    return lambda values: processor.fix_timestamp(np.asarray(values, dtype=np.float32))


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
