"""The confidence formula of docs/api.md written plainly, apart from the code under test (unit
tests check the code against it, model tests the served scores)."""

from __future__ import annotations

import numpy as np


def reference_confidence(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The documented formula, written plainly: softmax mass of bins b-1, b, b+1 (float64)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    bins = logits.argmax(axis=-1)
    conf = np.array(
        [p[max(0, b - 1) : b + 2].sum() for p, b in zip(probs, bins, strict=True)], dtype=np.float64
    )
    return bins, conf
