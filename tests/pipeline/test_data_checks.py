"""Bad inputs end in one clear InputDataError before any component runs."""
import pytest

from pipeline.data_checks import InputDataError, inspect_csv_input


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

    from pipeline.data_checks import stage_normalised_copy

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


def test_plain_csv_needs_no_copy(tmp_path):
    path = write(tmp_path, 'fare,company,y\n1.5,"Flash, Cab",0\n2.5,Blue,1\n')
    assert inspect_csv_input(path, "y").normalise == ()


@pytest.mark.e2e
def test_excel_export_with_bom_crlf_quoted_header_and_multiline_cells_trains_pushes_and_reruns_cached(tmp_path):
    """The copy CsvExampleGen reads is the original's content; an unchanged file stays a cache hit."""
    import os
    import random

    from pipeline.retrain import latest_run_record
    from tests.conftest import run_cli

    rnd = random.Random(3)
    lines = ['"deny","income","note"']
    for i in range(300):
        income = rnd.gauss(0, 1)
        note = '"line one\r\nline two"' if i % 50 == 0 else rnd.choice(["a", "b"])
        lines.append(f"{'yes' if income + rnd.gauss(0, 0.3) > 0 else 'no'},{income:.3f},{note}")
    data = tmp_path / "excel.csv"
    data.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    config = tmp_path / "config.yaml"
    config.write_text("scarf:\n  pretrain_epochs: 1\n  finetune_epochs: 5\n  ensemble_size: 1\n")
    root, serving = tmp_path / "root", tmp_path / "serving"
    argv = ["run", "--data", str(data), "--label", "deny", "--config", str(config), "--pipeline-root", str(root),
            "--serving-dir", str(serving)]
    code, output = run_cli(argv)
    assert code == 0, output
    assert ("UTF-8 byte-order mark removed; quoted header cells written without quotes; "
            "6 quoted cells spanning lines joined with spaces; reading the copy") in output
    assert "verdict BLESSED" in output and len(os.listdir(serving)) == 1, output
    code, output = run_cli(argv)
    assert code == 0, output
    record = latest_run_record(str(root / "metadata.sqlite"))
    assert record.states["CsvExampleGen"] == "CACHED" and record.states["Trainer"] == "CACHED", record.states
