"""Raw JSON features -> tf.Example bytes, checked against TensorFlow's own proto."""
import pytest

from scarfx.serving.examples import (
    FeatureError,
    MetadataError,
    check_features,
    encode_example,
    features_to_examples,
    read_metadata,
    serialize_features,
)

KINDS = {"fare": "float", "trip_start_hour": "int", "company": "string", "tags": "string", "ünï": "float"}


def _tf_example(data: bytes):
    import tensorflow as tf

    return tf.train.Example.FromString(data)


def _feature_values(example, name):
    f = example.features.feature[name]
    kind = f.WhichOneof("kind")
    return kind, list(getattr(f, kind).value)


def test_encoding_matches_tensorflow():
    import tensorflow as tf

    inst = {"fare": 12.5, "trip_start_hour": -3, "company": "Flash Cab", "tags": ["a", "bé", {"b64": "AAE="}],
            "ünï": 2}
    got = _tf_example(serialize_features(inst, KINDS))
    want = tf.train.Example()
    f = want.features.feature
    f["fare"].float_list.value.append(12.5)
    f["trip_start_hour"].int64_list.value.append(-3)
    f["company"].bytes_list.value.append(b"Flash Cab")
    f["tags"].bytes_list.value.extend([b"a", "bé".encode(), b"\x00\x01"])
    f["ünï"].float_list.value.append(2.0)
    assert got == want
    # The general path (lists) encodes the same message as the scalar fast paths.
    assert _tf_example(encode_example(check_features(inst, KINDS))) == want


def test_large_values_and_lists():
    inst = {"trip_start_hour": [2**63 - 1, -(2**63), 0, 300], "fare": [1e-3, -7.25, 3.0e38], "company": "x" * 300}
    ex = _tf_example(serialize_features(inst, KINDS))
    assert _feature_values(ex, "trip_start_hour") == ("int64_list", [2**63 - 1, -(2**63), 0, 300])
    kind, fares = _feature_values(ex, "fare")
    assert kind == "float_list" and fares[1] == -7.25 and fares[2] == pytest.approx(3.0e38, rel=1e-6)
    assert _feature_values(ex, "company") == ("bytes_list", [b"x" * 300])
    assert serialize_features({"trip_start_hour": 4.0}, KINDS) == serialize_features({"trip_start_hour": 4}, KINDS)


def test_missing_null_and_empty_are_left_out():
    assert serialize_features({}, KINDS) == b""
    ex = _tf_example(serialize_features({"fare": None, "company": [], "trip_start_hour": 1}, KINDS))
    assert set(ex.features.feature) == {"trip_start_hour"}


def test_context_is_merged_and_examples_win():
    ex = _tf_example(serialize_features({"fare": 1.0}, KINDS, context={"fare": 9.0, "company": "c"}))
    assert _feature_values(ex, "fare") == ("float_list", [1.0])
    assert _feature_values(ex, "company") == ("bytes_list", [b"c"])


@pytest.mark.parametrize(
    "inst, message",
    [
        ({"fare": "12.5"}, "'fare' is a float feature; got a string"),
        ({"fare": True}, "got a boolean"),
        ({"fare": [[1.0]]}, "nested lists"),
        ({"fare": [1.0, None]}, "nulls inside lists"),
        ({"fare": {"x": 1}}, "got a object"),
        ({"fare": 1e39}, "out of range for a float32"),
        ({"trip_start_hour": 1.5}, "int feature; got 1.5"),
        ({"trip_start_hour": 2**63}, "out of range for an int64"),
        ({"trip_start_hour": "3"}, "got a string"),
        ({"company": 3}, "'company' is a string feature; got a number"),
        ({"company": {"b64": "not base64!"}}, "invalid base64"),
        ({"nope": 1}, "unknown feature \"nope\""),
        ([1, 2], "expected an object of feature values, got a list"),
    ],
)
def test_wrong_types_are_feature_errors(inst, message):
    with pytest.raises(FeatureError, match=None) as e:
        serialize_features(inst, KINDS)
    assert message in str(e.value)


def test_features_to_examples_names_the_instance():
    assert len(features_to_examples([{}, {"fare": 1}], KINDS)) == 2
    with pytest.raises(FeatureError, match="instance 1: "):
        features_to_examples([{}, {"fare": "x"}], KINDS)


def test_read_metadata(tmp_path):
    with pytest.raises(MetadataError, match="missing"):
        read_metadata(str(tmp_path))
    extra = tmp_path / "assets.extra"
    extra.mkdir()
    (extra / "scarfx_metadata.json").write_text('{"classes": ["0"], "raw_features": {"a": "double"}}')
    with pytest.raises(MetadataError, match="unknown feature kinds"):
        read_metadata(str(tmp_path))
    (extra / "scarfx_metadata.json").write_text('{"classes": ["0", "1"], "raw_features": {"a": "float"}}')
    assert read_metadata(str(tmp_path))["raw_features"] == {"a": "float"}
