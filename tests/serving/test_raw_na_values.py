"""A raw request's value for a numeric feature that is one of the model's NA tokens is missing."""
import math
import types

import pytest

from scarfx.serving.rest import raw_columns


def _model(na_values):
    return types.SimpleNamespace(
        raw_kinds={"fare": "float", "trips": "int", "company": "string"},
        raw_dtypes={"fare": "float32", "trips": "int64", "company": "string"},
        raw_aliases={"trip count": "trips"},
        na_values=frozenset(na_values),
    )


def test_na_tokens_for_numbers_are_the_missing_value_and_strings_pass_through():
    model = _model({"", "NA", "?"})
    rows = [{"fare": "NA", "trip count": " ? ", "company": "NA"}, {"fare": 2.5, "trip count": 3, "company": ""},
            {"fare": "", "trip count": None}]
    out = raw_columns(rows, None, model, "instance")
    assert math.isnan(out["fare"][0]) and out["fare"][1] == 2.5 and math.isnan(out["fare"][2])
    assert list(out["trips"]) == [-(1 << 63), 3, -(1 << 63)]
    # Strings go to the graph as sent: the transform reads "NA" as missing itself.
    assert list(out["company"]) == [b"NA", b"", b""]


def test_other_strings_for_numbers_are_still_refused():
    from scarfx.serving.rest import HTTPError

    with pytest.raises(HTTPError, match="fare"):
        raw_columns([{"fare": "twelve"}], None, _model({"", "NA"}), "instance")
    with pytest.raises(HTTPError, match="fare"):  # a model exported without na_values
        raw_columns([{"fare": "NA"}], None, _model(set()), "instance")
