"""Label-scarce experiments: hide a stratified share of labels (they become -1)."""
from __future__ import annotations

import numpy as np


def hide_labels(labels: np.ndarray, keep_fraction: float, seed: int) -> np.ndarray:
    """Returns a copy where all but a stratified `keep_fraction` of labelled rows are -1.

    Every class keeps at least one labelled row, so fine-tuning always sees each class.
    Rows already unlabelled (-1) stay unlabelled.
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"label fraction must lie in (0, 1], got {keep_fraction}")
    out = np.array(labels, copy=True)
    if keep_fraction == 1.0:
        return out
    rng = np.random.default_rng(seed)
    for cls in np.unique(out[out >= 0]):
        rows = rng.permutation(np.flatnonzero(out == cls))
        keep = max(1, int(round(len(rows) * keep_fraction)))
        out[rows[keep:]] = -1
    return out
