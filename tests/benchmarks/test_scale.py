"""The scale benchmark's CSV generator and its slope; no pipeline runs (those are the benchmark)."""
import csv
import hashlib
import math

import numpy as np
import pandas as pd
import pytest

from scarfx.benchmarks import scale


@pytest.fixture(scope="module")
def taxi():
    return scale.load_taxi()


def _digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _read(path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_width_tables_are_deterministic_and_have_the_asked_shape(taxi, tmp_path):
    a, b, other = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    shape = scale.write_width_csv(str(a), 40, rows=500, seed=3, taxi=taxi)
    scale.write_width_csv(str(b), 40, rows=500, seed=3, taxi=taxi)
    scale.write_width_csv(str(other), 40, rows=500, seed=4, taxi=taxi)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(other)
    header, rows = _read(a)
    assert shape == {"rows": 500, "features": 40, "columns": 42, "bytes": a.stat().st_size}
    assert len(header) == 42 and len(set(header)) == 42 and len(rows) == 500
    assert all(len(r) == 42 for r in rows)
    assert header[-2:] == [scale.LEAKY, scale.LABEL]
    assert header[:17] == scale.taxi_features(taxi)
    extra = pd.read_csv(a)[header[17:40]]
    assert all(extra[c].dtype.kind == "f" for c in extra.columns)
    # Each extra column is a noisy function of its source, not noise: it correlates with it.
    table = pd.read_csv(a)
    fare = [c for c in header[17:40] if c.endswith("_fare")][0]
    assert abs(table[fare].corr(table["fare"])) > 0.5


def test_a_narrow_width_keeps_the_first_taxi_features(taxi, tmp_path):
    path = tmp_path / "narrow.csv"
    scale.write_width_csv(str(path), 15, rows=200, taxi=taxi)
    header, rows = _read(path)
    assert header == scale.taxi_features(taxi)[:15] + [scale.LEAKY, scale.LABEL]
    assert len(rows) == 200


def test_row_tables_are_deterministic_taxi_shaped_and_noisy(taxi, tmp_path, monkeypatch):
    monkeypatch.setattr(scale, "CHUNK_ROWS", 300)  # several chunks, each seeded on its own
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    shape = scale.write_rows_csv(str(a), 1000, seed=1, taxi=taxi)
    scale.write_rows_csv(str(b), 1000, seed=1, taxi=taxi)
    assert _digest(a) == _digest(b)
    header, rows = _read(a)
    assert header == list(taxi.columns) and len(rows) == 1000 and shape["rows"] == 1000
    table = pd.read_csv(a)
    # Categories and the label come from the taxi rows; continuous columns are jittered.
    assert set(table["payment_type"].dropna()) <= set(taxi["payment_type"].dropna())
    assert set(table[scale.LABEL]) <= {0, 1}
    assert not set(table["fare"].dropna()) <= set(taxi["fare"].dropna())
    # Integer columns with blank cells stay whole numbers (census tracts have 11 digits).
    tracts = table["dropoff_census_tract"].dropna()
    assert len(tracts) and set(tracts) <= set(taxi["dropoff_census_tract"].dropna())
    assert table["fare"].mean() == pytest.approx(taxi["fare"].mean(), rel=0.15)


def test_bad_sizes_are_refused(taxi, tmp_path):
    with pytest.raises(ValueError, match="width"):
        scale.write_width_csv(str(tmp_path / "x.csv"), 0, taxi=taxi)
    with pytest.raises(ValueError, match="rows"):
        scale.write_rows_csv(str(tmp_path / "x.csv"), 0, taxi=taxi)
    with pytest.raises(SystemExit):
        scale.main(["--widths", "-5", "--rows"])


def test_loglog_slope_recovers_the_exponent():
    xs = [15_000, 150_000, 1_500_000]
    assert scale.loglog_slope(xs, [2 * x ** 1.0 for x in xs]) == pytest.approx(1.0)
    assert scale.loglog_slope(xs, [x ** 0.5 for x in xs]) == pytest.approx(0.5)
    assert scale.loglog_slope([10], [3.0]) is None


def test_slopes_and_markdown_read_the_results():
    runs = [{"axis": "rows", "name": f"rows-{n}", "rows": n, "features": 17, "bytes": n * 100,
             "first": {"wall_s": 10 + n / 1000, "components_s": {"Transform": n / 2000, "Pusher": 1.0},
                       "peak_rss_mb": 900, "peak_rss_by_component_mb": {"Transform": 800},
                       "loadavg_1m_before": 2.0, "loadavg_1m_after": 3.0}}
            for n in (15_000, 150_000)]
    s = scale.slopes(runs, "rows", "rows")
    assert s["Transform"] == pytest.approx(1.0) and s["Pusher"] == pytest.approx(0.0)
    assert 0 < s["wall"] < 1
    text = scale.markdown(runs, {"slope_rows": s})
    assert "| rows | 150,000 | 17 |" in text and "| Transform | 7.5 s / 800 MB | 75.0 s / 800 MB |" in text
    runs[0]["first"]["cpu_by_component_s"] = {"Transform": 9.0}
    assert "| Transform | 7.5 s / 9 CPU s / 800 MB |" in scale.markdown(runs, {})
    assert not math.isnan(s["wall"])
