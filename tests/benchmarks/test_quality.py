"""Cheap checks of the quality benchmark's scoring and reporting (no TensorFlow, no training)."""
import json

import numpy as np
import pandas as pd
import pytest

from scarfx.benchmarks import quality


def test_scores_binary_multiclass_and_a_class_missing_from_the_test_set():
    y = np.array([0, 1, 1, 0])
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [1.0, 0.0]])
    s = quality.scores(y, p)
    assert s["accuracy"] == 1.0 and s["auc"] == 1.0
    assert s["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.6, 1.0])), rel=1e-6)
    three = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    assert quality.scores(np.array([0, 1, 0]), three)["auc"] == 1.0  # class 2 absent: macro over 0 and 1
    assert quality.scores(np.array([0, 0]), p[:2])["auc"] is None


def test_peer_scatters_probabilities_back_to_the_transform_class_ids():
    x = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0, np.nan, 5.0], "c": ["u", "v", None, "u", "v", "u"]})
    y = np.array([0, 2, 0, 2, 0, 2])  # class 1 has no labelled row
    proba = quality.fit_peer("logreg", x, y, x, num_classes=3, seed=0)
    assert proba.shape == (6, 3) and np.all(proba[:, 1] == 0) and np.allclose(proba.sum(axis=1), 1)


def _cells(shift=0.0):
    rng = np.random.default_rng(0)
    cells = []
    for d in quality.DATASETS:
        for seed in range(2):
            results = {m: {"accuracy": 0.8 + rng.normal(0, 0.01), "auc": 0.85 + rng.normal(0, 0.01),
                           "log_loss": 0.4 + rng.normal(0, 0.01), "seconds": 1.0, "single_class": False}
                       for m in quality.MODELS}
            results["scarf"]["auc"] += shift
            results["scarf"]["single_class"] = d == "Default"
            results["scarf"]["accuracy"] = 0.5 if d == "Default" else results["scarf"]["accuracy"]
            cells.append({"dataset": d, "fraction": 0.25, "seed": seed, "results": results})
    return cells


def test_summary_compare_and_plot(tmp_path):
    text = quality.summarise(_cells())
    assert text.count("| **mean** |") == 3 and "gap to CatBoost" in text
    assert "SCARF vs catboost: better on" in text and "single class on Default" in text
    paths = []
    for name, shift in (("base", 0.0), ("better", 0.05)):
        paths.append(str(tmp_path / f"{name}.json"))
        with open(paths[-1], "w") as f:
            json.dump({"args": {}, "cells": _cells(shift)}, f)
    table = quality.compare(paths)
    assert "better vs base: better on 20/20" in table and "(+0.0500)" in table
    quality.plot(_cells(), str(tmp_path / "q.png"))
    assert (tmp_path / "q.png").stat().st_size > 0
