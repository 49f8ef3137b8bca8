"""The in-memory table (TabularData), its feature layout, and the input checks every
source runs before training, so bad rows fail with a clear error instead of mid-fit.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from scarfx.models.scarf_config import ScarfConfig, setting_errors


@dataclasses.dataclass(frozen=True)
class FeatureLayout:
    numeric_names: tuple[str, ...]
    categorical_names: tuple[str, ...]
    categorical_cardinalities: tuple[int, ...]  # ids lie in [0, cardinality)

    @property
    def num_features(self) -> int:
        return len(self.numeric_names) + len(self.categorical_names)


@dataclasses.dataclass
class TabularData:
    numeric: np.ndarray  # float32 [N, Dn]   (Dn may be 0); NaN = missing
    categorical: np.ndarray  # int64 [N, Dc]   (Dc may be 0)
    labels: np.ndarray  # int64 [N]; -1 = unlabelled

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray) -> "TabularData":
        return TabularData(self.numeric[rows], self.categorical[rows], self.labels[rows])

    def inputs(self) -> dict[str, np.ndarray]:
        return {"numeric": self.numeric, "categorical": self.categorical}


def _check_batch(numeric: np.ndarray, categorical: np.ndarray, labels: np.ndarray, layout: FeatureLayout,
                 num_classes: int) -> None:
    """check_inputs' per-row checks, for one batch of a stream."""
    dn, dc = len(layout.numeric_names), len(layout.categorical_names)
    if numeric.shape[1:] != (dn,) or categorical.shape[1:] != (dc,):
        raise ValueError(f"expected numeric [B, {dn}] and categorical [B, {dc}], "
                         f"got {numeric.shape} and {categorical.shape}")
    if dn and np.any(np.isinf(numeric)):
        raise ValueError("numeric features must be finite or NaN (missing), not inf")
    if dc and len(categorical):
        cards = np.asarray(layout.categorical_cardinalities)
        bad = np.flatnonzero((categorical.min(axis=0) < 0) | (categorical.max(axis=0) >= cards))
        if len(bad):
            raise ValueError(f"categorical feature {layout.categorical_names[bad[0]]!r} has ids outside "
                             f"[0, {cards[bad[0]]})")
    if np.any((labels < -1) | (labels >= num_classes)):
        raise ValueError(f"labels must lie in [0, {num_classes}) or be -1 (unlabelled)")


def check_inputs(data: TabularData | None, layout: FeatureLayout, num_classes: int | None,
                 config: ScarfConfig | None = None) -> None:
    """Raises ValueError, before any training, on inputs the model cannot use. Without
    `data` (a stream), only the layout and config; a stream's rows are checked batch by
    batch as its survey reads them. Without `num_classes` (pretraining alone), labels
    are not checked."""
    dn, dc = len(layout.numeric_names), len(layout.categorical_names)
    if dn + dc == 0:
        raise ValueError("no features to train on")
    if num_classes is not None and num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    if len(layout.categorical_cardinalities) != dc or any(c < 1 for c in layout.categorical_cardinalities):
        raise ValueError(f"need one cardinality >= 1 per categorical feature, got {layout.categorical_cardinalities}")
    if config is not None:
        errors = setting_errors(config)
        if errors:
            raise ValueError(errors[0])
    if data is None:
        return
    n = len(data.labels)
    if data.numeric.shape != (n, dn) or data.categorical.shape != (n, dc):
        raise ValueError(
            f"expected numeric [{n}, {dn}] and categorical [{n}, {dc}], "
            f"got {data.numeric.shape} and {data.categorical.shape}"
        )
    if n == 0:
        raise ValueError("no rows to train on")
    _check_batch(data.numeric, data.categorical, data.labels, layout, num_classes if num_classes is not None else 1 << 62)
    if num_classes is not None and not np.any(data.labels >= 0):
        raise ValueError("no labelled rows to fine-tune on")
