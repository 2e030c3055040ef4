"""Grouping prepared requests into forward passes by length.

Every sequence in a forward pass is padded to the longest one, so a 2 s clip batched with a 60 s
clip pays for 60 s. Requests are sorted by prompt length and cut into groups whose longest member is
at most ``ratio`` times the shortest, with at most ``max_batch`` members and ``max_tokens`` padded
tokens. Results never depend on the grouping (each request is computed as if alone); only speed
does.
"""

from __future__ import annotations

from collections.abc import Sequence


def plan_batches(
    lengths: Sequence[int], max_batch: int, max_tokens: int, ratio: float
) -> list[list[int]]:
    """Return groups of indices into ``lengths``; every index appears exactly once.

    A sequence longer than ``max_tokens`` on its own still gets a group of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    groups: list[list[int]] = []
    current: list[int] = []
    for idx in order:
        if current:
            longest = lengths[current[0]]
            fits = (
                len(current) < max_batch
                and (len(current) + 1) * longest <= max_tokens
                and longest <= ratio * max(lengths[idx], 1)
            )
            if not fits:
                groups.append(current)
                current = []
        current.append(idx)
    if current:
        groups.append(current)
    return groups
