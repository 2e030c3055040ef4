"""How sure the model was of each timestamp: confidence per slot and per unit.

The aligner predicts, at each ``<timestamp>`` slot, a distribution ``p`` over 80 ms bins; the time
is the argmax bin ``b`` (exactly as upstream picks it). A boundary that falls near the edge of a
bin splits the model's belief between two neighbouring bins, so the probability of ``b`` alone
reads "unsure" for a prediction that is sure to within 80 ms. A slot's confidence is therefore the
probability mass within one bin of the argmax::

    confidence = p[b - 1] + p[b] + p[b + 1]        (terms outside 0 .. classes - 1 omitted)

and a unit's score is the geometric mean of its start and end slots' confidences,
``sqrt(c_start * c_end)``: a unit is only as trustworthy as its less certain end, and one
near-zero end pulls the score near zero. Both are in [0, 1]. The softmax is computed only at the
timestamp positions (a few rows per word, never over the whole sequence), in float32.

Measured on the tiny checkpoint trained on synthetic speech (888 slots of 40 clips, median error
416 ms): the argmax probability alone, the mass within one bin, within two bins and one minus the
normalised entropy all track the timestamp error about equally (Spearman -0.53 to -0.54; AUROC
0.73 for telling slots within 80 ms of the truth from slots off by more than 160 ms). The one-bin
mass is kept because it reads as "sure to within 80 ms" and does not punish a boundary that falls
between two bins; the random tiny checkpoint shows no relation at all (its slots are off by
minutes), so it can test these formulas' plumbing, not their meaning.

Whether upstream's monotonic repair overruled a unit's slots is reported beside the score
(:func:`unit_repaired`), not folded into it: the score is the model's own belief in the bins it
predicted, the repair flag says the transcript's order disagreed with them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

NEIGHBOUR_BINS = 1  # bins either side of the argmax whose probability counts towards confidence


def slot_predictions(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bins and confidences of timestamp slots.

    ``logits``: ``[slots, classes]``, the head's output at the ``<timestamp>`` positions only (the
    softmax is never computed elsewhere); leading axes (``[windows, slots, classes]``) are scored
    slot by slot alike. Returns ``(bins, confidence)``: ``bins`` is upstream's
    ``argmax`` of the logits as given (int64), ``confidence`` the softmax probability mass of the
    bins within :data:`NEIGHBOUR_BINS` of it, float32 in [0, 1].
    """
    bins = logits.argmax(dim=-1)
    if logits.shape[0] == 0:
        return bins, torch.zeros(0, dtype=torch.float32, device=logits.device)
    probs = torch.softmax(logits.float(), dim=-1)
    classes = probs.shape[-1]
    offsets = torch.arange(-NEIGHBOUR_BINS, NEIGHBOUR_BINS + 1, device=logits.device)
    window = bins.unsqueeze(-1) + offsets  # [slots, 2 * NEIGHBOUR_BINS + 1]
    inside = (window >= 0) & (window < classes)
    mass = probs.gather(-1, window.clamp(0, classes - 1)) * inside
    confidence = mass.sum(dim=-1).clamp(0.0, 1.0)
    return bins, confidence


def unit_scores(slot_confidence: np.ndarray) -> np.ndarray:
    """One score per unit from its two slots (start, end): their geometric mean, float32."""
    conf = np.asarray(slot_confidence, dtype=np.float64).reshape(-1, 2)
    return np.sqrt(conf[:, 0] * conf[:, 1]).astype(np.float32)


def unit_repaired(slot_replaced: Sequence[bool]) -> list[bool]:
    """One flag per unit from its two slots (start, end): whether the repair replaced either."""
    if len(slot_replaced) % 2:
        raise ValueError("two slots (start, end) per unit")
    return [bool(a or b) for a, b in zip(slot_replaced[0::2], slot_replaced[1::2], strict=True)]


def summary(scores: Sequence[float], repaired: Sequence[bool]) -> tuple[float, float]:
    """A document's ``(mean_score, repaired_share)``; ``(0.0, 0.0)`` when it has no units."""
    if not scores:
        return 0.0, 0.0
    mean = float(np.mean(np.asarray(scores, dtype=np.float64)))
    share = sum(1 for r in repaired if r) / len(repaired)
    return mean, share
