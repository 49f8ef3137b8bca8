"""Checks the user's CSV before any component runs, so bad input fails in one clear line.

TFX would fail too, but deep inside Beam with a stack trace, after work was done.
"""
from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
import re

import pandas as pd

from scarfx.pipeline.configs import DEFAULT_NA_VALUES, ConfigError

# tfx_bsl's CSV decoder (CsvExampleGen) reads with Python's csv module, whose default field
# limit is 131072 characters: a longer cell fails deep inside Beam, so it is refused here.
MAX_CELL_CHARS = csv.field_size_limit()
# A column is "numeric" when at least this share of its non-empty cells parse as numbers;
# a few text cells in such a column are a type flip (a bad export), not a categorical.
NUMERIC_SHARE = 0.9
_NON_FINITE = frozenset({"nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})


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
    # What CsvExampleGen could not read as the file is: a UTF-8 byte-order mark, quoted
    # header cells, cells spanning lines. Non-empty: the run reads a normalised copy
    # (stage_normalised_copy), and each entry says what changed.
    normalise: tuple[str, ...] = ()
    # Every column's role (label first), decided from the data: decide_roles.
    roles: tuple["ColumnRole", ...] = ()
    # Cells read as missing (stripped, compared exactly); the staged copy blanks them.
    na_values: tuple[str, ...] = DEFAULT_NA_VALUES
    # The file's delimiter; anything but "," is rewritten as "," in the staged copy.
    delimiter: str = ","

    @property
    def dropped_columns(self) -> list[str]:
        """Columns no model input is made of: the user's drops and the data's (IDs, constant, empty...)."""
        return [r.column for r in self.roles if r.dropped]

    @property
    def datetime_columns(self) -> list[str]:
        """Date/time columns whose year, month, day of week and hour the Transform derives."""
        return [r.column for r in self.roles if r.role == "datetime"]

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
        from scarfx.pipeline import spans

        if spans.is_span_directory(path):
            # ExampleGen ingests only the newest span this run; older spans were
            # checked by the run that ingested them.
            return list(spans.select_spans(path, "latest", 1).files)
        files = sorted(glob.glob(os.path.join(path, "*.csv")))
        if not files:
            raise InputDataError(
                f"data directory has no *.csv files and no {spans.SPAN_DIR_PREFIX}N/ span directories: {path}"
            )
        return files
    return [path]


UTF8_BOM = b"\xef\xbb\xbf"
# Delimiters of CSV exports that are not comma-separated (European Excel: ';').
OTHER_DELIMITERS = {";": "semicolon (;)", "\t": "tab", "|": "pipe (|)"}


def _first_line(path: str) -> str:
    """The header's physical first line, decoded, without a BOM or line ending."""
    with open(path, "rb") as f:
        raw = f.readline(1 << 20)
    return raw.decode("utf-8", errors="replace").removeprefix("\ufeff").rstrip("\r\n")


def detect_delimiter(path: str, header: list[str], label: str) -> str:
    """"," unless the comma header is one column, or lacks the label, while the header splits
    on ; tab or | into columns that include the label: then that delimiter (European Excel
    exports use ';'). Such a file is read from a comma-separated staged copy."""
    if label in header and len(header) > 1:
        return ","
    line = _first_line(path)
    for delimiter in OTHER_DELIMITERS:
        cells = next(csv.reader([line], delimiter=delimiter), [])
        if len(cells) >= 2 and label in cells:
            return delimiter
    return ","


def _refuse_unless_single_file(path: str, files: list, where: str, problems: list[str], hint: str) -> None:
    """The staged normalised copy is made for a single CSV file only; elsewhere, say what to fix."""
    if problems and (len(files) > 1 or os.path.isdir(path)):
        raise InputDataError(
            f"{where} needs normalising ({'; '.join(problems)}), which scarfx does for a single CSV file only: {hint}"
        )


def _header_problems(path: str, header: list[str]) -> list[str]:
    """What CsvExampleGen would misread in the header; raises where no copy can fix it.

    CsvExampleGen takes column names from `first_line.split(',')` (tfx io_utils), with no
    quote handling: a quoted name keeps its quotes, a name with a comma becomes two.
    """
    bad = [c for c in header if "," in c or "\n" in c or "\r" in c or '"' in c]
    if bad:
        raise InputDataError(
            f"column name {bad[0]!r} in {path} contains a comma, quote or line break; TFX's CSV reader splits "
            "the header on every comma: rename the column"
        )
    if _first_line(path).split(",") != header:
        return ["quoted header cells written without quotes"]
    return []


def _multiline_cells(path: str, delimiter: str = ",") -> int:
    """Cells whose quoted value spans lines (RFC 4180 allows it; scarfx's copy joins them)."""
    with open(path, "rb") as f:
        if not any(b'"' in block for block in iter(lambda: f.read(1 << 20), b"")):
            return 0
    with open(path, newline="", encoding="utf-8-sig") as f:
        return sum(1 for row in csv.reader(f, delimiter=delimiter) for cell in row if "\n" in cell or "\r" in cell)


def _header(path: str, delimiter: str = ",") -> list[str]:
    if os.path.getsize(path) == 0:
        raise InputDataError(f"data file is empty: {path}")
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which would
        # otherwise become part of the first column's name.
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f, delimiter=delimiter), [])
    except UnicodeDecodeError as e:
        raise InputDataError(f"data file is not UTF-8 text: {path} ({e.reason} at byte {e.start})") from e
    if not [c for c in header if c.strip()]:
        raise InputDataError(f"data file has no header row: {path}")
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise InputDataError(f"data file has duplicated column names {duplicates}: {path}")
    return header


def inspect_csv_input(path: str, label: str, drop_columns=(), na_values=DEFAULT_NA_VALUES, keep_columns=(),
                      datetime_features: str = "derive") -> InputSummary:
    """Validates a CSV file (or directory of CSVs), counts the label's classes and decides
    each column's role (decide_roles). A cell that is blank or one of `na_values` (after
    stripping spaces) is missing."""
    na = {"", *(v.strip() for v in na_values)}
    files = csv_files(path)
    header = _header(files[0])
    for other in files[1:]:
        if _header(other) != header:
            raise InputDataError(f"{other} has a different header from {files[0]}")
    delimiter = detect_delimiter(files[0], header, label)
    if delimiter != ",":
        header = _header(files[0], delimiter)
        for other in files[1:]:
            if _header(other, delimiter) != header:
                raise InputDataError(f"{other} has a different header from {files[0]}")
    if label not in header:
        raise InputDataError(f"label column {label!r} is not in the CSV header; columns: {', '.join(header)}")
    normalise = []
    for f in files:
        problems = []
        with open(f, "rb") as handle:
            if handle.read(len(UTF8_BOM)) == UTF8_BOM:
                problems.append("UTF-8 byte-order mark removed")
        if delimiter != ",":
            problems.append(f"{OTHER_DELIMITERS[delimiter]} delimiters rewritten as commas")
            bad = [c for c in header if "," in c or '"' in c]
            if bad:
                raise InputDataError(f"column name {bad[0]!r} in {f} contains a comma or quote; TFX's CSV reader "
                                     "splits the header on every comma: rename the column")
        else:
            problems += _header_problems(f, header)
        multiline = _multiline_cells(f, delimiter)
        if multiline:
            problems.append(f"{multiline} quoted cells spanning lines joined with spaces")
        _refuse_unless_single_file(path, files, f, problems, "fix the file, or pass it on its own with --data")
        normalise += problems
    missing_drops = [c for c in drop_columns if c not in header]
    if missing_drops:
        raise InputDataError(f"drop_columns {missing_drops} are not in the CSV header")
    missing_keeps = [c for c in keep_columns if c not in header]
    if missing_keeps:
        raise InputDataError(f"--keep / keep_columns {missing_keeps} are not in the CSV header")
    if len([c for c in header if c != label and c not in drop_columns]) == 0:
        raise InputDataError("the CSV has no feature columns besides the label")

    rows = 0
    counts: dict[str, int] = {}
    for f in files:
        try:
            for chunk in pd.read_csv(
                f, usecols=[label], dtype=str, keep_default_na=False, chunksize=200_000, encoding="utf-8-sig",
                sep=delimiter,
            ):
                values = chunk[label].str.strip()
                rows += len(values)
                for value, n in values[~values.isin(na)].value_counts().items():
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
    tallies, _ = _scan_features(files, [c for c in header if c != label and c not in drop_columns], na, delimiter)
    _check_tallies(tallies)
    roles = decide_roles(tallies, rows, label, drop_columns, keep_columns, datetime_features)
    if not [r for r in roles if r.role != "label" and not r.dropped]:
        raise InputDataError("no feature column is left: " + "; ".join(
            f"{r.column!r} dropped ({r.why})" for r in roles if r.dropped) + "; keep one with --keep COLUMN")
    # CsvExampleGen infers a column's type from its raw cells: an NA token or a blank of
    # spaces in a numeric column would make it a string column, so the copy blanks them.
    # (String columns and the label get the same treatment inside the Transform graph.)
    numeric = [c for c, t in tallies.items() if t.text == 0 and t.present]
    tokens = sum(tallies[c].na_tokens for c in numeric)
    padded = sum(tallies[c].padded for c in numeric)
    extra = []
    if tokens:
        shown = ", ".join(repr(v) for v in sorted(na) if v)
        extra.append(f"{tokens} missing-value tokens ({shown}) in numeric columns blanked")
    if padded:
        extra.append(f"{padded} numeric cells with surrounding spaces trimmed")
    _refuse_unless_single_file(path, files, path, extra, "blank those cells, or pass one file with --data")
    normalise += extra
    classes = tuple(sorted(counts, key=lambda c: (-counts[c], c)))
    return InputSummary(
        files=tuple(files),
        columns=tuple(header),
        rows=rows,
        labelled_rows=sum(counts.values()),
        classes=classes,
        class_counts=tuple(counts[c] for c in classes),
        normalise=tuple(normalise),
        roles=roles,
        na_values=tuple(sorted(na)),
        delimiter=delimiter,
    )


STAGED_DIR = "staged_data"


def stage_normalised_copy(summary: InputSummary, pipeline_root: str) -> str:
    """Writes the one input file as CsvExampleGen can read it; returns the copy's path.

    The copy is <pipeline_root>/staged_data/<sha256 of the original and na_values>/<file name>:
    nothing is dropped (the BOM goes, a ; tab or | delimiter becomes a comma, quoted names
    are written plainly, a line break inside
    a quoted cell becomes a space, spaces around a value go, and a missing-value token
    becomes a blank cell), and an unchanged original maps to the existing copy, which is
    not rewritten, so ExampleGen's input fingerprint and the cache hold.
    """
    import hashlib
    import tempfile

    (source,) = summary.files
    if "://" in pipeline_root:
        raise InputDataError(f"{source} needs normalising ({'; '.join(summary.normalise)}), and the pipeline root "
                             f"{pipeline_root} is not a local directory to stage a copy in: fix the file")
    na = set(summary.na_values) | {""}
    digest = hashlib.sha256(json.dumps([sorted(na), summary.delimiter]).encode())
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    folder = os.path.join(pipeline_root, STAGED_DIR, digest.hexdigest()[:16])
    target = os.path.join(folder, os.path.basename(source))
    if os.path.exists(target):
        return target
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".partial")
    with open(source, newline="", encoding="utf-8-sig") as src, os.fdopen(fd, "w", newline="", encoding="utf-8") as dst:
        writer = csv.writer(dst, lineterminator="\n")
        for i, row in enumerate(csv.reader(src, delimiter=summary.delimiter)):
            cells = [c.replace("\r\n", " ").replace("\n", " ").replace("\r", " ") for c in row]
            if i:  # not the header
                cells = ["" if c.strip() in na else c.strip() for c in cells]
            writer.writerow(cells)
    os.replace(tmp, target)
    return target


@dataclasses.dataclass
class _ColumnTally:
    numeric: int = 0
    text: int = 0
    text_example: str = ""
    non_finite: int = 0
    non_finite_example: str = ""
    numeric_files: set = dataclasses.field(default_factory=set)  # files where every value is a number
    text_files: set = dataclasses.field(default_factory=set)  # files where no value is a number
    # For the column's role (decide_roles):
    present: int = 0  # cells that are not missing (blank or an NA token)
    na_tokens: int = 0  # cells holding a non-blank NA token (`NA`, `?`...)
    padded: int = 0  # non-missing cells with spaces around the value
    integers: int = 0  # numeric cells that are whole numbers written without a point
    datetimes: int = 0  # cells that are ISO-8601 dates or date-times
    first: str | None = None  # the first value; constant while no other value is seen
    constant: bool = True
    seen: set | None = dataclasses.field(default_factory=set)  # values so far; None once one repeats


# ISO-8601 calendar dates, optionally with a time ("T" or a space), seconds, fraction and zone.
ISO_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"
)
_INTEGER = re.compile(r"[+-]?\d+")
# Uniqueness says "ID" only with enough rows: in a handful of rows most columns are unique.
ID_MIN_ROWS = 20


def _scan_features(files: list[str], features: list[str], na_values,
                   delimiter: str = ",") -> tuple[dict[str, _ColumnTally], int]:
    """One pass over the feature columns: value types, NA tokens, distinctness; and the row count.

    Refuses a cell over MAX_CELL_CHARS here: CsvExampleGen's csv reader fails on it after
    minutes of work.
    """
    na = set(na_values) | {""}
    tallies = {c: _ColumnTally() for c in features}
    rows = 0
    for f in files:
        per_file = {c: [0, 0] for c in features}  # numeric, text
        for chunk in pd.read_csv(f, usecols=features, dtype=str, keep_default_na=False, chunksize=200_000,
                                 encoding="utf-8-sig", sep=delimiter):
            rows += len(chunk)
            for column in features:
                t = tallies[column]
                raw = chunk[column]
                values = raw.str.strip()
                missing = values.isin(na)
                t.na_tokens += int((missing & (values != "")).sum())
                t.padded += int(((raw != values) & ~missing).sum())
                values = values[~missing]
                if values.empty:
                    continue
                t.present += len(values)
                too_long = values.str.len() > MAX_CELL_CHARS
                if too_long.any():
                    n = int(values[too_long].str.len().max())
                    raise InputDataError(f"column {column!r} has a {n}-character value in {f}; "
                                         f"CSV cells are limited to {MAX_CELL_CHARS} characters")
                non_finite = values.str.lower().isin(_NON_FINITE)
                if non_finite.any():
                    t.non_finite += int(non_finite.sum())
                    t.non_finite_example = t.non_finite_example or str(values[non_finite].iloc[0])
                is_number = pd.to_numeric(values, errors="coerce").notna() | non_finite
                numeric, text = int(is_number.sum()), int((~is_number).sum())
                t.numeric += numeric
                t.text += text
                if text and not t.text_example:
                    t.text_example = str(values[~is_number].iloc[0])
                per_file[column][0] += numeric
                per_file[column][1] += text
                t.integers += int(values[is_number].str.fullmatch(_INTEGER).sum())
                if text:
                    t.datetimes += int(values[~is_number].str.fullmatch(ISO_DATETIME).sum())
                if t.first is None:
                    t.first = str(values.iloc[0])
                if t.constant and (values != t.first).any():
                    t.constant = False
                if t.seen is not None:
                    distinct = set(values)
                    if len(distinct) < len(values) or not t.seen.isdisjoint(distinct):
                        t.seen = None
                    else:
                        t.seen |= distinct
        for column, (numeric, text) in per_file.items():
            if numeric and not text:
                tallies[column].numeric_files.add(f)
            elif text and not numeric:
                tallies[column].text_files.add(f)
    return tallies, rows


def _check_tallies(tallies: dict[str, _ColumnTally]) -> None:
    """Refuses cell values that TFX would accept but that silently corrupt training.

    - NaN/inf spelled out in a numeric column (unless `na_values` lists the spelling):
      CsvExampleGen keeps them as floats and they poison Transform's statistics and the loss.
    - A type flip (a numeric column with some text cells, or numeric in one file and text in
      another): CsvExampleGen would silently turn the whole column into a categorical.
    """
    for column, t in tallies.items():
        if t.non_finite and not t.text:
            raise InputDataError(f"numeric column {column!r} has {t.non_finite} non-finite values "
                                 f"(e.g. {t.non_finite_example!r}); write missing values as empty cells "
                                 "(or list the spelling in na_values)")
        if t.numeric_files and t.text_files:
            raise InputDataError(f"column {column!r} changed type: numbers in {sorted(t.numeric_files)[0]}, "
                                 f"text in {sorted(t.text_files)[0]}")
        total = t.numeric + t.text
        if t.text and t.numeric >= NUMERIC_SHARE * total:
            raise InputDataError(f"column {column!r} is numeric in {t.numeric} of {total} rows but has "
                                 f"{t.text} text values (e.g. {t.text_example[:40]!r}); fix, blank them "
                                 "or list the spelling in na_values")


@dataclasses.dataclass(frozen=True)
class ColumnRole:
    """What the pipeline does with one column, and why; listed in the run report."""

    column: str
    role: str  # one of ROLES
    why: str = ""

    @property
    def dropped(self) -> bool:
        return self.role in DROPPED_ROLES


# Roles: label; features: numeric, categorical, datetime (year, month, day of week and hour
# derived in the Transform graph); dropped: id, constant, empty, datetime_dropped, dropped
# (by the user: --drop / drop_columns).
ROLES = ("label", "numeric", "categorical", "datetime", "id", "constant", "empty", "datetime_dropped", "dropped")
DROPPED_ROLES = ("id", "constant", "empty", "datetime_dropped", "dropped")


def decide_roles(tallies: dict[str, _ColumnTally], rows: int, label: str, drop_columns=(), keep_columns=(),
                 datetime_features: str = "derive") -> tuple[ColumnRole, ...]:
    """Each feature column's role, from what _scan_features counted; the label first.

    `tallies` holds every feature column but those in `drop_columns` (dropped by the user).
    Dropped by default, each with its reason (`keep_columns` overrides all of these):
    - unique in every row (an ID): a string column, or one of whole numbers, with a
      distinct value in each of at least ID_MIN_ROWS rows: a vocabulary of IDs, or a
      number that only counts rows, carries nothing that generalises;
    - constant (one value, no missing cell) or empty (every cell missing): no signal;
    - ISO-8601 date/time when `datetime_features` is "drop" (else they become features).
    """
    roles = [ColumnRole(label, "label")]
    roles += [ColumnRole(c, "dropped", "--drop / drop_columns") for c in drop_columns]
    keep = set(keep_columns)
    for column, t in tallies.items():
        numeric = t.text == 0 and t.present > 0
        if t.present == 0:
            role = ColumnRole(column, "empty", f"every cell is missing (blank or an NA token) in {rows} rows")
        elif t.constant and t.present == rows:
            role = ColumnRole(column, "constant", f"the same value {t.first[:40]!r} in all {rows} rows")
        elif not numeric and t.datetimes == t.present:
            if datetime_features == "derive":
                role = ColumnRole(column, "datetime", "ISO-8601 date/time: year, month, day of week and hour "
                                                      "derived as numeric features")
            else:
                role = ColumnRole(column, "datetime_dropped", "ISO-8601 date/time (datetime_features: drop)")
        elif (t.seen is not None and t.present == rows and rows >= ID_MIN_ROWS
              and (not numeric or t.integers == t.present)):
            kind = "whole number" if numeric else "value"
            role = ColumnRole(column, "id", f"a distinct {kind} in each of the {rows} rows (an ID)")
        else:
            role = ColumnRole(column, "numeric" if numeric else "categorical")
        if role.dropped and column in keep:
            kept = "datetime" if role.role == "datetime_dropped" else ("numeric" if numeric else "categorical")
            role = ColumnRole(column, kept, f"kept by --keep (would be dropped: {role.why})")
        roles.append(role)
    return tuple(roles)
