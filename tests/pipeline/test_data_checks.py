"""Bad inputs end in one clear InputDataError before any component runs; the CSVs users
really have (spreadsheet exports, awkward columns) train and serve."""
import dataclasses
import pathlib

import pytest

from scarfx.pipeline.data_checks import InputDataError, inspect_csv_input


def write(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(p)


@pytest.mark.parametrize(
    "content,label,message",
    [
        (None, "y", "does not exist"),
        ("", "y", "empty"),
        ("a,y\n", "y", "header but no rows"),
        ("a,y\n1,2\n", "z", "label column 'z' is not in the CSV header"),
        ("a,y\n1,k\n2,k\n3,\n", "y", "only one class"),
        ("a,y\n1,\n2,\n", "y", "empty in every row"),
        ("a,a,y\n1,2,3\n", "y", "duplicated column names"),
        ("y\n1\n2\n", "y", "no feature columns"),
        (b"a,y\n\xff\xfe,1\n2,0\n", "y", "not UTF-8"),
        ('a,y\n1,"unclosed\n', "y", "not well-formed CSV"),
    ],
)
def test_bad_input(tmp_path, content, label, message):
    path = str(tmp_path / "missing.csv") if content is None else write(tmp_path, content)
    with pytest.raises(InputDataError, match=message):
        inspect_csv_input(path, label)


def test_directory_of_csvs_must_share_header(tmp_path):
    write(tmp_path, "a,y\n1,0\n", "one.csv")
    write(tmp_path, "b,y\n1,1\n", "two.csv")
    with pytest.raises(InputDataError, match="different header"):
        inspect_csv_input(str(tmp_path), "y")


def test_empty_directory(tmp_path):
    with pytest.raises(InputDataError, match="no \\*.csv files"):
        inspect_csv_input(str(tmp_path), "y")


def test_good_input_counts_classes_and_labelled_rows(tmp_path):
    path = write(tmp_path, "a,y\n1,b\n2,a\n3,b\n4,\n5, c \n")
    summary = inspect_csv_input(path, "y")
    assert summary.rows == 5 and summary.labelled_rows == 4
    assert summary.classes == ("b", "a", "c") and summary.class_counts == (2, 1, 1)
    assert summary.majority_rate == 0.5
    assert not summary.binary


def test_drop_columns_must_exist(tmp_path):
    path = write(tmp_path, "a,y\n1,0\n2,1\n")
    with pytest.raises(InputDataError, match="drop_columns"):
        inspect_csv_input(path, "y", ["tips"])


def test_excel_bom_no_longer_hides_the_first_column(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM: the first column is still found by its name."""
    path = write(tmp_path, b"\xef\xbb\xbfdeny,income\r\nyes,1\r\nno,2\r\nno,3\r\n")
    summary = inspect_csv_input(path, "deny")
    assert summary.columns == ("deny", "income") and summary.classes == ("no", "yes")
    assert summary.normalise == ("UTF-8 byte-order mark removed",)


def test_dialects_tfx_misreads_are_normalised_into_a_content_addressed_copy(tmp_path):
    import os

    from tfx.utils.io_utils import load_csv_column_names

    from scarfx.pipeline.data_checks import stage_normalised_copy

    original = b'\xef\xbb\xbf"fare","company","y"\r\n1.5,"Flash\r\nCab",0\r\n2.5,"Blue, Inc",1\r\n3.0,x,1\r\n'
    path = write(tmp_path, original)
    summary = inspect_csv_input(path, "y")
    assert summary.columns == ("fare", "company", "y") and summary.rows == 3
    assert summary.normalise == ("UTF-8 byte-order mark removed", "quoted header cells written without quotes",
                                 "1 quoted cells spanning lines joined with spaces")
    root = str(tmp_path / "root")
    staged = stage_normalised_copy(summary, root)
    assert staged.startswith(os.path.join(root, "staged_data")) and staged.endswith("d.csv")
    assert load_csv_column_names(staged) == ["fare", "company", "y"]  # what CsvExampleGen will see
    with open(staged, "rb") as f:
        assert f.read() == b'fare,company,y\n1.5,Flash Cab,0\n2.5,"Blue, Inc",1\n3.0,x,1\n'
    assert inspect_csv_input(staged, "y").normalise == ()
    # Same content, same copy, not rewritten (ExampleGen's fingerprint includes mtimes).
    before = os.stat(staged).st_mtime_ns
    again = str(tmp_path / "again")
    os.makedirs(again)
    assert stage_normalised_copy(inspect_csv_input(write(tmp_path / "again", original), "y"), root) == staged
    assert os.stat(staged).st_mtime_ns == before
    changed = write(tmp_path, original.replace(b"3.0,x,1", b"4.0,x,1"), "d2.csv")
    assert os.path.dirname(stage_normalised_copy(inspect_csv_input(changed, "y"), root)) != os.path.dirname(staged)


@pytest.mark.parametrize("delimiter,name", [(";", "semicolon (;)"), ("\t", "tab"), ("|", "pipe (|)")])
def test_other_delimiters_are_rewritten_as_commas_in_the_staged_copy(tmp_path, delimiter, name):
    from tfx.utils.io_utils import load_csv_column_names

    from scarfx.pipeline.data_checks import stage_normalised_copy

    d = delimiter
    text = f"fare{d}company{d}y\n1.5{d}Flash, Cab{d}0\n2.5{d}{d}1\n3.5{d}Blue{d}NA\n"
    summary = inspect_csv_input(write(tmp_path, text), "y")
    assert summary.delimiter == delimiter and summary.columns == ("fare", "company", "y")
    assert summary.rows == 3 and summary.labelled_rows == 2 and summary.classes == ("0", "1")
    assert summary.normalise == (f"{name} delimiters rewritten as commas",)
    staged = stage_normalised_copy(summary, str(tmp_path / "root"))
    assert load_csv_column_names(staged) == ["fare", "company", "y"]
    with open(staged) as f:
        assert f.read() == 'fare,company,y\n1.5,"Flash, Cab",0\n2.5,,1\n3.5,Blue,\n'  # nothing lost
    assert inspect_csv_input(staged, "y").normalise == ()


def test_a_comma_file_whose_cells_hold_semicolons_stays_a_comma_file(tmp_path):
    summary = inspect_csv_input(write(tmp_path, "note,y\na;b,0\nc;d,1\n"), "y")
    assert summary.delimiter == "," and summary.normalise == ()


def test_plain_csv_needs_no_copy(tmp_path):
    path = write(tmp_path, 'fare,company,y\n1.5,"Flash, Cab",0\n2.5,Blue,1\n')
    assert inspect_csv_input(path, "y").normalise == ()


NA_TOKENS = ("NA", "N/A", "null", "NaN", "?")


def _real_world_csv(path, rows=300, seed=5):
    """One file with every column kind users' exports have: NA tokens in a numeric column,
    two IDs, a timestamp, a constant and an empty column, names with a space, a dot, a
    slash and a non-ASCII letter, and a label with spaces around it."""
    import datetime
    import random

    rnd = random.Random(seed)
    header = ["trip miles", "fare.usd", "pay/type", "café", "customer_id", "row", "started at", "constant",
              "empty", "y"]
    lines = [",".join(header)]
    start = datetime.datetime(2024, 1, 1)
    for i in range(rows):
        miles = rnd.gauss(0, 1)
        pay = rnd.choice(["cash", "card"])
        signal = miles + (0.8 if pay == "card" else -0.8) + rnd.gauss(0, 0.4)
        cell = NA_TOKENS[i // 20 % len(NA_TOKENS)] if i % 20 == 7 else f"{miles:.3f}"
        label = " yes" if signal > 0 else "no "
        stamp = (start + datetime.timedelta(hours=7 * i)).isoformat()
        lines.append(f"{cell},{rnd.gauss(10, 2):.2f},{pay},{rnd.choice(['x', 'ü'])},C{i:05d},{1000 + i},{stamp},"
                     f"1,{'NA' if i % 2 else ''},{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("token", [*NA_TOKENS, " NA ", ""])
def test_each_na_token_in_a_numeric_column_is_missing_and_blanked_in_the_staged_copy(tmp_path, token):
    from scarfx.pipeline.data_checks import stage_normalised_copy

    rows = [f"{i}.5,{i % 2}" for i in range(24)]
    rows[3] = f"{token},1"
    path = write(tmp_path, "fare,y\n" + "\n".join(rows) + "\n")
    summary = inspect_csv_input(path, "y")
    assert {r.column: r.role for r in summary.roles} == {"y": "label", "fare": "numeric"}
    if token.strip():
        assert any("1 missing-value tokens" in n and "blanked" in n for n in summary.normalise), summary.normalise
        staged = stage_normalised_copy(summary, str(tmp_path / "root"))
        assert open(staged).read().splitlines()[4] == ",1"
    else:
        assert summary.normalise == ()


def test_na_values_is_a_setting_and_other_spellings_stay_refused(tmp_path):
    path = write(tmp_path, "fare,y\n" + "".join(f"{i}.5,{i % 2}\n" for i in range(20)) + "missing,1\n")
    with pytest.raises(InputDataError, match="numeric in 20 of 21 rows"):
        inspect_csv_input(path, "y")
    summary = inspect_csv_input(path, "y", na_values=["missing"])
    assert [r.role for r in summary.roles] == ["label", "numeric"]


def test_na_tokens_in_labels_are_unlabelled_rows(tmp_path):
    path = write(tmp_path, "a,y\n1,b\n2,NA\n3, a \n4,?\n5,b\n")
    summary = inspect_csv_input(path, "y")
    assert summary.rows == 5 and summary.labelled_rows == 3 and summary.classes == ("b", "a")


def test_na_tokens_in_a_directory_cannot_be_staged_and_say_so(tmp_path):
    write(tmp_path, "fare,y\n1.5,0\n2.5,1\n", "a.csv")
    write(tmp_path, "fare,y\nN/A,0\n2.5,1\n", "b.csv")
    with pytest.raises(InputDataError, match="missing-value tokens .* single CSV file only"):
        inspect_csv_input(str(tmp_path), "y")


def test_column_roles_are_decided_from_the_data(tmp_path):
    summary = inspect_csv_input(_real_world_csv(tmp_path / "d.csv"), "y")
    roles = {r.column: r.role for r in summary.roles}
    assert roles == {
        "y": "label", "trip miles": "numeric", "fare.usd": "numeric", "pay/type": "categorical",
        "café": "categorical", "customer_id": "id", "row": "id", "started at": "datetime",
        "constant": "constant", "empty": "empty",
    }
    assert summary.dropped_columns == ["customer_id", "row", "constant", "empty"]
    assert summary.datetime_columns == ["started at"]
    assert summary.classes == ("no", "yes")  # " yes" and "no ": the spaces are not the class
    why = {r.column: r.why for r in summary.roles}
    assert "distinct value in each of the 300 rows" in why["customer_id"]
    assert "the same value '1'" in why["constant"] and "every cell is missing" in why["empty"]


def test_keep_overrides_and_datetime_can_be_dropped(tmp_path):
    path = _real_world_csv(tmp_path / "d.csv")
    summary = inspect_csv_input(path, "y", keep_columns=["row", "constant"], datetime_features="drop")
    roles = {r.column: r for r in summary.roles}
    assert roles["row"].role == "numeric" and "kept by --keep" in roles["row"].why
    assert roles["constant"].role == "numeric"
    assert roles["started at"].role == "datetime_dropped" and "started at" in summary.dropped_columns
    with pytest.raises(InputDataError, match="keep_columns"):
        inspect_csv_input(path, "y", keep_columns=["nope"])


@pytest.mark.parametrize("values,role", [
    ([f"{i}" for i in range(30)], "id"),  # whole numbers, all distinct
    ([f"{i}.5" for i in range(30)], "numeric"),  # distinct, but measurements
    ([f"{i % 29}" for i in range(30)], "numeric"),  # one repeat
    ([f"k{i}" for i in range(30)], "id"),
    ([f"k{i}" for i in range(10)], "categorical"),  # too few rows to call unique an ID
    ([f"k{i}" for i in range(29)] + [""], "categorical"),  # a missing cell: not one per row
    (["2024-05-01"] * 29 + [""], "datetime"),
    ([f"2024-05-{1 + i % 28:02d} 10:{i:02d}:00+02:00" for i in range(30)], "datetime"),
    (["2024-05-01"] * 29 + ["soon"], "categorical"),
    (["a"] * 29 + ["NA"], "categorical"),  # one value and missing cells: a presence flag, not constant
])
def test_role_of_one_column(tmp_path, values, role):
    path = write(tmp_path, "c,n,y\n" + "".join(f"{v},{i % 3},{i % 2}\n" for i, v in enumerate(values)))
    assert {r.column: r.role for r in inspect_csv_input(path, "y").roles}["c"] == role


def test_nothing_left_after_drops_is_refused_with_the_reasons(tmp_path):
    path = write(tmp_path, "id,y\n" + "".join(f"k{i},{i % 2}\n" for i in range(30)))
    with pytest.raises(InputDataError, match="no feature column is left: 'id' dropped .*--keep"):
        inspect_csv_input(path, "y")


def test_config_keys_for_columns_and_missing_values(tmp_path):
    from scarfx.pipeline.configs import ConfigError, DEFAULT_NA_VALUES, config_from_dict

    base = {"data": __file__, "label": "y"}
    cfg = config_from_dict(base).resolved()
    assert set(cfg.na_values) == set(DEFAULT_NA_VALUES) and cfg.datetime_features == "derive"
    assert config_from_dict({**base, "na_values": [" -- "]}).resolved().na_values == ["", "--"]
    for bad, message in [({"na_values": "NA"}, "na_values"), ({"datetime_features": "keep"}, "datetime_features"),
                         ({"keep_columns": ["a"], "drop_columns": ["a"]}, "both to keep and to drop")]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({**base, **bad}).resolved()


@dataclasses.dataclass
class ExportRun:
    first: tuple  # (exit code, output) of the first run
    rerun: tuple  # the same command again
    root: pathlib.Path
    serving: pathlib.Path


@pytest.fixture(scope="module")
def export_run(tmp_path_factory):
    """One `scarfx run` on a file as spreadsheets export it (a UTF-8 byte-order mark, CRLF
    line ends, quoted header cells, quoted cells spanning lines) holding every column kind
    of `_real_world_csv`, then the same command again: the tests below read both runs."""
    from tests.conftest import run_cli

    tmp_path = tmp_path_factory.mktemp("export")
    plain = _real_world_csv(tmp_path / "plain.csv")
    with open(plain, encoding="utf-8") as f:
        header, *rows = f.read().splitlines()
    lines = [",".join(f'"{name}"' for name in header.split(",")) + ',"note"']
    multiline = '"line one\r\nline two"'
    lines += [f"{row},{multiline if i % 50 == 0 else 'ab'[i % 2]}" for i, row in enumerate(rows)]
    data = tmp_path / "export.csv"
    data.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    config = tmp_path / "config.yaml"
    config.write_text("scarf: {pretrain_epochs: 2, finetune_epochs: 5, ensemble_size: 1}\n")
    root, serving = tmp_path / "root", tmp_path / "serving"
    argv = ["run", "--data", str(data), "--label", "y", "--config", str(config), "--pipeline-root", str(root),
            "--serving-dir", str(serving)]
    first = run_cli(argv)
    return ExportRun(first, run_cli(argv), root, serving)


@pytest.mark.e2e
def test_excel_export_with_bom_crlf_quoted_header_and_multiline_cells_trains_pushes_and_reruns_cached(export_run):
    """The copy CsvExampleGen reads is the original's content; an unchanged file stays a cache hit."""
    import os

    from scarfx.components.metadata import run_outcome
    from tests.conftest import run_id_of

    code, output = export_run.first
    assert code == 0, output
    assert ("UTF-8 byte-order mark removed; quoted header cells written without quotes; "
            "6 quoted cells spanning lines joined with spaces") in output, output
    assert "verdict BLESSED" in output and len(os.listdir(export_run.serving)) == 1, output
    code, output = export_run.rerun
    assert code == 0, output
    record = run_outcome(str(export_run.root / "metadata.sqlite"), run_id_of(output))
    assert record.states["CsvExampleGen"] == "CACHED" and record.states["Trainer"] == "CACHED", record.states


@pytest.mark.e2e
def test_real_world_columns_train_and_serve_raw_requests_with_the_original_names(export_run):
    """NA tokens, IDs, a timestamp, a constant and an empty column, awkward names and a
    padded label in one file: it trains, and the pushed model serves a raw request that
    uses the CSV's own column names, an NA token and a date string."""
    import glob
    import json
    import os

    from scarfx.models.features import RAW_SIGNATURE
    from scarfx.serving.model import LoadedModel
    from scarfx.serving.rest import raw_columns

    code, output = export_run.first
    root, serving = export_run.root, export_run.serving
    assert code == 0, output
    for line in ["column 'customer_id' dropped: a distinct value in each of the 300 rows (an ID); --keep customer_id",
                 "column 'row' dropped: a distinct whole number", "column 'constant' dropped: the same value '1'",
                 "column 'empty' dropped: every cell is missing", "column 'started at': ISO-8601 date/time",
                 "15 missing-value tokens", "verdict BLESSED"]:
        assert line in output, output
    (version,) = os.listdir(serving)
    model_dir = os.path.join(serving, version)
    with open(os.path.join(model_dir, "assets.extra", "scarfx_metadata.json"), encoding="utf-8") as f:
        metadata = json.load(f)
    assert sorted(metadata["raw_features"]) == ["café", "fare.usd", "note", "pay/type", "started at", "trip miles"]
    assert sorted(metadata["classes"]) == ["no", "yes"] and "NA" in metadata["na_values"]

    model = LoadedModel("scarfx", int(version), model_dir)
    model.load()
    rows = [{"trip miles": 2.5, "fare.usd": 10.0, "pay/type": "card", "café": "ü", "started at": "2024-03-01T18:00:00"},
            {"trip miles": "NA", "fare.usd": "?", "pay/type": " cash ", "café": "x", "started at": "2024-03-02"},
            {"trip miles": -2.5, "pay/type": "cash"}]
    out = model.run(RAW_SIGNATURE, raw_columns(rows, None, model, "instance"))
    predicted = [c.decode() for c in out["predicted_class"]]
    assert predicted[0] == "yes" and predicted[2] == "no", out
    assert all(p in ("yes", "no") for p in predicted)

    (report,) = glob.glob(str(root / "RunReport" / "report" / "*" / "report.html"))
    page = open(report, encoding="utf-8").read()
    assert "<h3>Columns</h3>" in page and "dropped: ID" in page and "input (date/time" in page
    assert "trip_miles" in page  # predict_raw's input name for "trip miles", beside it
