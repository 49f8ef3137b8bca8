"""The drift gate at the pipeline's quantile buckets: no drift between random halves of the
taxi CSV, a 4x fare caught (benchmarks/drift_buckets.py, at unit scale)."""
import numpy as np
import pandas as pd

from scarfx.benchmarks.drift_buckets import measure
from scarfx.pipeline.configs import ValidationSettings, bundled_taxi_csv
from scarfx.pipeline.pipeline import QUANTILE_BUCKETS


def test_random_halves_pass_and_a_real_shift_fails_at_the_pipelines_buckets():
    threshold = ValidationSettings().numeric_jsd
    wide = pd.DataFrame(np.random.default_rng(0).lognormal(0, 1, (50, 3)), columns=["a", "b", "c"])
    result = measure(QUANTILE_BUCKETS, wide, pd.read_csv(bundled_taxi_csv()))
    assert result["buckets"] == QUANTILE_BUCKETS and result["seconds"] > 0
    assert len(result["noise"]) >= 10 and max(result["noise"].values()) < threshold / 2
    assert result["fare_x4"] > 2 * threshold
