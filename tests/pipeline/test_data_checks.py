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
