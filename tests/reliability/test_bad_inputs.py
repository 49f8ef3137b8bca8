"""The bad-input catalogue (docs/RELIABILITY.md): each kind of bad data, one row, one outcome.

Pipeline rows are caught by the up-front CSV checks (milliseconds, before any component runs);
`scarfx run` turns them into one `scarfx: error:` line and exit 2 with nothing pushed. Server
rows go to a real server on loopback, which must answer them and stay healthy. Rows already
proven elsewhere (tests/pipeline/test_data_checks.py, tests/serving/test_api.py) are only
listed in docs/RELIABILITY.md, not repeated here.
"""
import json

import pytest

from scarfx.pipeline.data_checks import MAX_CELL_CHARS, InputDataError, inspect_csv_input
from tests.conftest import run_cli
from tests.serving.helpers import MODEL, push

pytestmark = pytest.mark.timeout(120)

GOOD = "fare,company,y\n1.5,Flash Cab,0\n2.5,Blue Cab,1\n3.0,Flash Cab,1\n"

# (id, {file name: bytes or str}, label, message fragment the one-line error must carry)
BAD_CSV = [
    ("missing_column_in_second_file", {"a.csv": GOOD, "b.csv": "fare,y\n1.0,0\n2.0,1\n"}, "y", "different header"),
    ("extra_column_in_second_file",
     {"a.csv": GOOD, "b.csv": "fare,company,extra,y\n1.0,A,x,0\n"}, "y", "different header"),
    ("type_flip_within_file",
     {"d.csv": "fare,y\n" + "".join(f"{i}.5,{i % 2}\n" for i in range(20)) + "twelve,1\n"}, "y",
     "'fare' is numeric in 20 of 21 rows but has 1 text values (e.g. 'twelve')"),
    ("type_flip_between_files",
     {"a.csv": "fare,y\n1.5,0\n2.5,1\n", "b.csv": "fare,y\ncheap,0\ndear,1\n"}, "y", "'fare' changed type"),
    # NaN is a default missing-value token (na_values); other spellings stay refused.
    ("nan_spelled_out", {"d.csv": "fare,y\n1.5,0\nnan,1\n2.0,1\n"}, "y", "non-finite values (e.g. 'nan')"),
    ("inf_spelled_out", {"d.csv": "fare,y\n1.5,0\n-inf,1\n2.0,1\n"}, "y", "non-finite values (e.g. '-inf')"),
    ("huge_string_cell", {"d.csv": f"fare,company,y\n1.5,{'x' * (MAX_CELL_CHARS + 1)},0\n2.0,A,1\n"}, "y",
     f"'company' has a {MAX_CELL_CHARS + 1}-character value"),
    ("non_utf8_header", {"d.csv": b"f\xe9e,y\n1,0\n2,1\n"}, "y", "not UTF-8"),
    ("non_utf8_in_feature_cell", {"d.csv": b"fare,company,y\n1,A,0\n2,Caf\xe9,1\n"}, "y", "not UTF-8"),
    ("whitespace_only_label", {"d.csv": "fare,y\n1, \n2,  \n"}, "y", "empty in every row"),
    ("label_only_in_one_of_two_files", {"a.csv": "fare,y\n1,0\n", "b.csv": "fare,z\n1,0\n"}, "y",
     "different header"),
    # Delimited files are normalised into a staged comma copy for a single file only.
    ("semicolon_delimited_directory", {"a.csv": "fare;company;y\n1.5;Flash;0\n", "b.csv": "fare;company;y\n2.5;B;1\n"},
     "y", "semicolon (;) delimiters rewritten as commas), which scarfx does for a single CSV file only"),
    ("quoted_header_cell_with_comma", {"d.csv": 'fare,"city, state",y\n1.5,"Chicago, IL",0\n2.5,"Austin, TX",1\n'},
     "y", "column name 'city, state' in"),
    ("bom_in_a_directory_of_files", {"a.csv": "\ufefffare,y\n1,0\n2,1\n", "b.csv": "fare,y\n3,0\n4,1\n"}, "y",
     "needs normalising (UTF-8 byte-order mark removed), which scarfx does for a single CSV file only"),
]


def _write(tmp_path, files):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return str(tmp_path / next(iter(files))) if len(files) == 1 else str(tmp_path)


@pytest.mark.parametrize("case", BAD_CSV, ids=[c[0] for c in BAD_CSV])
def test_bad_csv_is_refused_up_front(tmp_path, case):
    _, files, label, fragment = case
    with pytest.raises(InputDataError) as e:
        inspect_csv_input(_write(tmp_path, files), label)
    assert fragment in str(e.value)


@pytest.mark.parametrize(
    "content",
    [
        "fare,company,y\n1.5,Flash Cab,0\n2.5,,1\n,Blue Cab,1\n",  # empty cells are missing values
        "zip,y\n" + "".join(f"{60600 + i},{i % 2}\n" for i in range(5)) + "N/A,0\nunknown,1\n",  # 5 of 7 numeric
        "name,y\nnan,0\nNana,1\nInfinity Cab,1\n",  # 'nan' as a category among text is just text
        f"fare,company,y\n1.5,{'x' * MAX_CELL_CHARS},0\n2.0,A,1\n",  # exactly at the limit
    ],
    ids=["empty_cells", "mostly_numeric_codes_with_text", "nan_word_in_text_column", "longest_allowed_cell"],
)
def test_near_misses_are_accepted(tmp_path, content):
    """The checks must not refuse data that trains fine."""
    assert inspect_csv_input(_write(tmp_path, {"d.csv": content}), "y").rows >= 2


@pytest.mark.parametrize("case", [c for c in BAD_CSV if c[0] in ("type_flip_within_file", "nan_spelled_out",
                                                                  "semicolon_delimited_directory",
                                                                  "quoted_header_cell_with_comma")],
                         ids=lambda c: c[0])
def test_cli_exits_2_with_one_line_and_pushes_nothing(tmp_path, case):
    _, files, label, fragment = case
    serving = tmp_path / "serving"
    code, output = run_cli(["run", "--data", _write(tmp_path, files), "--label", label,
                            "--pipeline-root", str(tmp_path / "root"), "--serving-dir", str(serving)])
    assert code == 2 and output.startswith("scarfx: error:") and output.strip().count("\n") == 0, output
    assert fragment in output
    assert not serving.exists() and not (tmp_path / "root").exists()


# --- server: requests a real server must answer without falling over ------------------------


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    from scarfx.serving.server import ModelServer

    d = tmp_path_factory.mktemp("reliability") / "serving_model"
    d.mkdir()
    push(models, str(d), 3, variant=2)
    s = ModelServer(str(d), MODEL, port=0, poll_interval=0.2, max_body_bytes=64 * 1024, max_batch_size=16)
    s.start(wait_ready=60)
    yield s
    s.stop()


def _post(server, body: bytes, path=f"/v1/models/{MODEL}:predict"):
    import http.client

    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


# (id, request body bytes, expected status, fragment of the error (or None on 200))
BAD_REQUESTS = [
    ("unseen_category", json.dumps({"instances": [{"company": "Never Seen Cab Co", "payment_type": "Bitcoin"}]}),
     200, None),
    ("missing_features_use_defaults", json.dumps({"instances": [{"fare": 2.0}]}), 200, None),
    ("empty_string_category", json.dumps({"instances": [{"company": ""}]}), 200, None),
    ("long_string_within_body_limit", json.dumps({"instances": [{"company": "y" * 30000}]}), 200, None),
    ("non_utf8_body", b'{"instances": [{"company": "Caf\xe9"}]}', 400, "malformed JSON"),
    # TF Serving's JSON parser takes bare NaN / Infinity; a non-finite float cell is a missing value.
    ("nan_literal", b'{"instances": [{"fare": NaN}]}', 200, None),
    ("infinity_literal", b'{"instances": [{"fare": -Infinity}]}', 200, None),
    ("huge_number", b'{"instances": [{"fare": 1e999}]}', 400, "number is infinity"),
    ("null_feature", json.dumps({"instances": [{"fare": None}]}), 200, None),
    ("object_for_float", json.dumps({"instances": [{"fare": {"x": 1}}]}), 400, "fare"),
    ("list_for_signature_name", json.dumps({"signature_name": ["serving_default"], "instances": [{}]}), 400,
     "signature_name"),
    ("deeply_nested_json", b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, None),
    ("pickle_payload", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.", 400, "malformed JSON"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_server_request_catalogue(server, case):
    _, body, status, fragment = case
    code, answer = _post(server, body if isinstance(body, bytes) else body.encode())
    assert code == status, answer
    if status == 200:
        assert len(answer["predictions"]) == 1 and abs(sum(answer["predictions"][0]["probabilities"]) - 1) < 1e-5
    else:
        assert set(answer) == {"error"}, answer
        assert fragment is None or fragment in answer["error"], answer
    healthy, ok = _post(server, b'{"instances": [{}]}')
    assert healthy == 200 and ok["predictions"], ok
