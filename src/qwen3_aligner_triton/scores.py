"""How sure the model was of each timestamp: confidence per slot and per unit.

The aligner predicts, at each ``<timestamp>`` slot, a distribution over 80 ms bins; the time is
the argmax bin (exactly as upstream picks it). A slot's confidence is the probability the model
gave that bin; a unit's score combines its start and end slots.
"""

from __future__ import annotations

import numpy as np
import torch


def slot_predictions(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bins and confidences of timestamp slots.

    ``logits``: ``[slots, classes]``, the head's output at the ``<timestamp>`` positions only (the
    softmax is never computed elsewhere). Returns ``(bins, confidence)``: ``bins`` is upstream's
    ``argmax`` (int64), ``confidence`` the softmax probability of that bin, float32 in [0, 1].
    """
    bins = logits.argmax(dim=-1)
    probs = torch.softmax(logits.float(), dim=-1)
    confidence = probs.gather(-1, bins.unsqueeze(-1)).squeeze(-1)
    return bins, confidence


def unit_scores(slot_confidence: np.ndarray) -> np.ndarray:
    """One score per unit from its two slots (start, end): their geometric mean, float32."""
    conf = np.asarray(slot_confidence, dtype=np.float64).reshape(-1, 2)
    return np.sqrt(conf[:, 0] * conf[:, 1]).astype(np.float32)
