"""StatisticsGen's quantile buckets: what they cost at width, against the drift gate's noise and power.

    .venv/bin/python -m scarfx.benchmarks.drift_buckets [--buckets 100 25 10] [--columns 1000] [--rows 4000]

For each bucket count B (`num_quantiles_histogram_buckets`, what pipeline.QUANTILE_BUCKETS sets):
- cost: TFDV statistics of a seeded lognormal table of `--rows` x `--columns` (TFDV builds
  each numeric feature's standard histogram from 100·B quantiles in a Python loop);
- noise: DriftGate's `numeric_jsd` of five random pairs of 600-row halves of the bundled
  taxi CSV, the largest per feature (no drift there: should stay far below the 0.15 threshold);
- power: the same for one half against the other with `fare` multiplied by 4 (real drift).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from scarfx.components.drift_gate import _numeric_features, numeric_jsd
from scarfx.pipeline.configs import bundled_taxi_csv

HALF = 600
PAIRS = 5


def _numeric_stats(frame: pd.DataFrame, options) -> dict:
    import tensorflow_data_validation as tfdv

    frame = frame.reset_index(drop=True)  # a slice's index would be read as one more column
    return _numeric_features(tfdv.generate_statistics_from_dataframe(frame, stats_options=options))


def measure(buckets: int, wide: pd.DataFrame, taxi: pd.DataFrame) -> dict:
    import tensorflow_data_validation as tfdv

    options = tfdv.StatsOptions(num_quantiles_histogram_buckets=buckets)
    start = time.perf_counter()
    tfdv.generate_statistics_from_dataframe(wide, stats_options=options)
    seconds = time.perf_counter() - start
    noise: dict[str, float] = {}
    for seed in range(PAIRS):
        order = np.random.default_rng(seed).permutation(len(taxi))
        a = _numeric_stats(taxi.iloc[order[:HALF]], options)
        b = _numeric_stats(taxi.iloc[order[HALF:2 * HALF]], options)
        for name in a.keys() & b.keys():
            value = numeric_jsd(a[name].num_stats, b[name].num_stats)
            if value is not None:
                noise[name] = max(value, noise.get(name, 0.0))
    shifted = taxi.iloc[order[HALF:2 * HALF]].copy()
    shifted["fare"] = shifted["fare"] * 4
    power = numeric_jsd(_numeric_stats(shifted, options)["fare"].num_stats, a["fare"].num_stats)
    return {"buckets": buckets, "seconds": seconds, "noise": noise, "fare_x4": power}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--buckets", nargs="+", type=int, default=[100, 25, 10])
    parser.add_argument("--columns", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=4000)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    wide = pd.DataFrame(rng.lognormal(0, 1, (args.rows, args.columns)), columns=[f"c{i}" for i in range(args.columns)])
    taxi = pd.read_csv(bundled_taxi_csv())
    results = [measure(b, wide, taxi) for b in args.buckets]
    anchor = results[0]["seconds"]
    print(f"| quantile buckets | stats, {args.rows:,} x {args.columns:,} | vs {args.buckets[0]} buckets "
          "| half vs half, max JSD (feature) | 4x fare |")
    print("|---|---|---|---|---|")
    for r in results:
        worst = max(r["noise"], key=r["noise"].get)
        print(f"| {r['buckets']} | {r['seconds']:.1f} s | {r['seconds'] / anchor:.2f}x "
              f"| {r['noise'][worst]:.3f} ({worst}) | {r['fare_x4']:.3f} |")
        print("  " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(r["noise"].items())))


if __name__ == "__main__":
    main()
