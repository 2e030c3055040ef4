import random

import pytest

from qwen3_aligner_triton.batching import plan_batches


def check_partition(groups, n):
    flat = sorted(i for g in groups for i in g)
    assert flat == list(range(n))


def test_every_index_once_and_limits_hold():
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 4000) for _ in range(rng.randint(0, 40))]
        groups = plan_batches(lengths, max_batch=8, max_tokens=20000, ratio=1.5)
        check_partition(groups, len(lengths))
        for g in groups:
            longest = max(lengths[i] for i in g)
            shortest = min(lengths[i] for i in g)
            assert len(g) <= 8
            assert len(g) == 1 or len(g) * longest <= 20000
            assert longest <= 1.5 * shortest


def test_short_clips_do_not_ride_with_long_ones():
    groups = plan_batches([100, 3000, 110, 2900], max_batch=16, max_tokens=10**6, ratio=1.5)
    assert sorted(map(sorted, groups)) == [[0, 2], [1, 3]]


def test_oversized_sequence_gets_its_own_group():
    assert plan_batches([50000, 10], max_batch=4, max_tokens=1000, ratio=10**6) == [[0], [1]]


@pytest.mark.parametrize("size", [1, 16])
def test_equal_lengths_fill_batches(size):
    groups = plan_batches([500] * 33, max_batch=size, max_tokens=10**6, ratio=1.0)
    assert [len(g) for g in groups] == [size] * (33 // size) + ([33 % size] if 33 % size else [])


def test_a_group_may_fill_max_tokens_exactly():
    # Two of 10 tokens pad to 20 = max_tokens: together; a third would make 30.
    assert plan_batches([10, 10, 10], max_batch=8, max_tokens=20, ratio=1.0) == [[0, 1], [2]]


def test_a_one_token_clip_counts_as_one_against_the_ratio():
    # 2 > 1.5 * 1: the two-token clip does not ride with the one-token clip.
    assert plan_batches([1, 2], max_batch=8, max_tokens=10**6, ratio=1.5) == [[1], [0]]
    assert plan_batches([1, 2], max_batch=8, max_tokens=10**6, ratio=2.0) == [[1, 0]]
