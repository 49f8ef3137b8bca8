"""Checks the user's CSV before any component runs, so bad input fails in one clear line.

TFX would fail too, but deep inside Beam with a stack trace, after work was done.
"""
from __future__ import annotations

import csv
import dataclasses
import glob
import os

import pandas as pd

from pipeline.configs import ConfigError


class InputDataError(ConfigError):
    """The data the user pointed at cannot produce a model."""


@dataclasses.dataclass(frozen=True)
class InputSummary:
    files: tuple[str, ...]
    columns: tuple[str, ...]
    rows: int
    labelled_rows: int
    classes: tuple[str, ...]  # most frequent first
    class_counts: tuple[int, ...]

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    @property
    def majority_rate(self) -> float:
        """Accuracy of always predicting the most frequent class: the floor to beat."""
        return self.class_counts[0] / self.labelled_rows


def csv_files(path: str) -> list[str]:
    if not os.path.exists(path):
        raise InputDataError(f"data path does not exist: {path}")
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.csv")))
        if not files:
            raise InputDataError(f"data directory has no *.csv files: {path}")
        return files
    return [path]


def _header(path: str) -> list[str]:
    if os.path.getsize(path) == 0:
        raise InputDataError(f"data file is empty: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except UnicodeDecodeError as e:
        raise InputDataError(f"data file is not UTF-8 text: {path} ({e.reason} at byte {e.start})") from e
    if not [c for c in header if c.strip()]:
        raise InputDataError(f"data file has no header row: {path}")
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise InputDataError(f"data file has duplicated column names {duplicates}: {path}")
    return header


def inspect_csv_input(path: str, label: str, drop_columns=()) -> InputSummary:
    """Validates a CSV file (or directory of CSVs) and counts the label's classes."""
    files = csv_files(path)
    header = _header(files[0])
    for other in files[1:]:
        if _header(other) != header:
            raise InputDataError(f"{other} has a different header from {files[0]}")
    if label not in header:
        raise InputDataError(f"label column {label!r} is not in the CSV header; columns: {', '.join(header)}")
    missing_drops = [c for c in drop_columns if c not in header]
    if missing_drops:
        raise InputDataError(f"drop_columns {missing_drops} are not in the CSV header")
    if len([c for c in header if c != label and c not in drop_columns]) == 0:
        raise InputDataError("the CSV has no feature columns besides the label")

    rows = 0
    counts: dict[str, int] = {}
    for f in files:
        try:
            for chunk in pd.read_csv(
                f, usecols=[label], dtype=str, keep_default_na=False, chunksize=200_000, encoding="utf-8"
            ):
                values = chunk[label].str.strip()
                rows += len(values)
                for value, n in values[values != ""].value_counts().items():
                    counts[value] = counts.get(value, 0) + int(n)
        except UnicodeDecodeError as e:
            raise InputDataError(f"data file is not UTF-8 text: {f} ({e.reason})") from e
        except pd.errors.ParserError as e:
            raise InputDataError(f"data file is not well-formed CSV: {f} ({e})") from e
    if rows == 0:
        raise InputDataError(f"the CSV has a header but no rows: {path}")
    if not counts:
        raise InputDataError(f"label column {label!r} is empty in every row")
    if len(counts) == 1:
        raise InputDataError(f"label column {label!r} has only one class ({next(iter(counts))!r}); need at least 2")
    classes = tuple(sorted(counts, key=lambda c: (-counts[c], c)))
    return InputSummary(
        files=tuple(files),
        columns=tuple(header),
        rows=rows,
        labelled_rows=sum(counts.values()),
        classes=classes,
        class_counts=tuple(counts[c] for c in classes),
    )
