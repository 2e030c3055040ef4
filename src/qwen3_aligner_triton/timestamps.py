"""Timestamp repair: the upstream rule, in O(n log n).

The aligner predicts one timestamp per slot (two slots per unit). Predictions are not always
monotonic; upstream ``Qwen3ForceAlignProcessor.fix_timestamp`` keeps the longest non-decreasing
subsequence (LNDS) and rebuilds the other values from their normal neighbours: runs of at most two
take the nearer neighbour, longer runs are interpolated linearly. Its LNDS is an O(n^2) dynamic
programme (~5 s for 10,000 timestamps). This module computes the same subsequence, with the same
tie-breaking, with a Fenwick tree over value ranks, so the output is identical.

:func:`repair` also says which slots the repair overruled: a slot outside the kept subsequence
had its predicted value replaced (by a neighbour's or an interpolated one), which is where the
model's predictions and the transcript's order disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SHORT_RUN = 2  # anomalous runs up to this length copy the nearer neighbour


def _longest_non_decreasing(values: Sequence[float]) -> list[bool]:
    """Mark the members of the LNDS that upstream's dynamic programme picks.

    Upstream sets, for each i, ``dp[i]`` to the longest chain ending at i and ``parent[i]`` to the
    SMALLEST j < i with ``values[j] <= values[i]`` achieving it; the chain ends at the first
    index of maximal ``dp``. Keys ``(dp[j], -j)`` maximised over a prefix of value ranks give
    exactly that j.
    """
    n = len(values)
    ranks = {v: r for r, v in enumerate(sorted(set(values)), start=1)}
    size = len(ranks)
    tree: list[tuple[int, int]] = [(0, 1)] * (size + 1)  # (dp, -index); (0, 1) means empty
    dp = [1] * n
    parent = [-1] * n
    for i, v in enumerate(values):
        r = ranks[v]
        best = (0, 1)
        k = r
        while k > 0:
            if tree[k] > best:
                best = tree[k]
            k -= k & -k
        if best[0] > 0:
            dp[i] = best[0] + 1
            parent[i] = -best[1]
        key = (dp[i], -i)
        k = r
        while k <= size:
            if key > tree[k]:
                tree[k] = key
            k += k & -k
    normal = [False] * n
    if n == 0:
        return normal
    best_len = max(dp)
    idx = dp.index(best_len)
    while idx != -1:
        normal[idx] = True
        idx = parent[idx]
    return normal


@dataclass(frozen=True)
class Repair:
    """Upstream's repair of one sequence of slot predictions."""

    values: list[int]  # whole milliseconds, exactly what upstream returns
    replaced: list[bool]  # per slot: outside the kept subsequence, so its prediction was overruled


def repair_timestamps(values: Sequence[float]) -> list[int]:
    """Make ``values`` (milliseconds) monotonic the way upstream does; returns whole ms."""
    return repair(values).values


def repair(values: Sequence[float]) -> Repair:
    """Upstream's repair of ``values`` (milliseconds) and which slots it replaced.

    A replaced slot may end up with its own value again (a neighbour can hold the same bin); it is
    still reported, since upstream did not keep the model's prediction there.
    """
    data = [float(v) for v in values]
    n = len(data)
    normal = _longest_non_decreasing(data)
    result: list[float] = list(data)
    i = 0
    while i < n:
        if normal[i]:
            i += 1
            continue
        j = i
        while j < n and not normal[j]:
            j += 1
        # Normal values are never rewritten, so the nearest normal neighbours are i-1 and j.
        left = result[i - 1] if i > 0 else None
        right = result[j] if j < n else None
        count = j - i
        for k in range(i, j):
            if left is None:
                result[k] = right  # an LNDS is never empty, so one side exists
            elif right is None:
                result[k] = left
            elif count <= SHORT_RUN:
                result[k] = left if (k - (i - 1)) <= (j - k) else right
            else:
                step = (right - left) / (count + 1)
                result[k] = left + step * (k - i + 1)
        i = j
    return Repair([int(v) for v in result], [not keep for keep in normal])
