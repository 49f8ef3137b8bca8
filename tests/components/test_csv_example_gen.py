"""The streaming CsvExampleGen executor against TFX's own: the same examples in the same
splits, written in file order; and the run report's eval sample, which must not depend on
that order."""
import glob
import os

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tfx.components.example_gen.csv_example_gen.executor import Executor as TfxCsvExecutor
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx_bsl.coders import csv_decoder

from scarfx.components.csv_example_gen import StreamingCsvExampleGen, StreamingCsvExecutor, infer_column_types
from scarfx.components.report import read_eval_examples

CSV = (
    "id,count,price,colour,note\n"
    + "".join(f"{i},{i % 7},{'' if i % 5 == 0 else i * 0.5},{'red' if i % 3 else 'blue'},{'x' if i % 4 else ''}\n"
              for i in range(400))
    + '400,12,1.5,"green, dark","two\nlines"\n'
)


def _run(executor, csv_dir, out):
    examples = standard_artifacts.Examples()
    examples.uri = str(out)
    split_config = example_gen_pb2.SplitConfig(splits=[
        example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=4),
        example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1)])
    executor.Do({}, {"examples": [examples]}, {
        "input_base": str(csv_dir),
        "input_config": json_format.MessageToJson(example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name="single_split", pattern="*.csv")])),
        "output_config": json_format.MessageToJson(example_gen_pb2.Output(split_config=split_config)),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
    })
    return examples, {split: [r.numpy() for path in sorted(glob.glob(f"{out}/Split-{split}/*"))
                              for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]
                      for split in ("train", "eval")}


def test_streaming_executor_writes_tfxs_examples_in_the_same_splits_in_file_order(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "data.csv").write_text(CSV)
    artifact, ours = _run(StreamingCsvExecutor(), tmp_path / "csv", tmp_path / "ours")
    _, tfx_own = _run(TfxCsvExecutor(), tmp_path / "csv", tmp_path / "tfx")
    assert len(ours["train"]) + len(ours["eval"]) == 401 and len(ours["eval"]) > 40
    for split in ("train", "eval"):
        assert sorted(ours[split]) == sorted(tfx_own[split])  # TFX's own examples, TFX's hash split
    for split in ("train", "eval"):  # each split keeps the file's order (TFX's own shuffles it)
        ids = [tf.train.Example.FromString(r).features.feature["id"].int64_list.value[0] for r in ours[split]]
        assert ids == sorted(ids)
    assert artifact.split_names == '["train", "eval"]'
    assert artifact.get_string_custom_property("payload_format") == "FORMAT_TF_EXAMPLE"


def test_column_types_are_tfx_bsls_inferred_from_every_row(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(CSV)
    types = {info.name: info.type for info in infer_column_types([str(path)], ["id", "count", "price", "colour", "note"])}
    assert types == {"id": csv_decoder.ColumnType.INT, "count": csv_decoder.ColumnType.INT, "price": csv_decoder.ColumnType.FLOAT,
                     "colour": csv_decoder.ColumnType.STRING, "note": csv_decoder.ColumnType.STRING}


def test_the_component_keeps_csvexamplegens_node_id_and_uses_the_streaming_executor(tmp_path):
    component = StreamingCsvExampleGen(input_base=str(tmp_path))
    assert component.id == "CsvExampleGen"
    assert component.executor_spec.executor_class is StreamingCsvExecutor


def test_report_sample_is_the_same_rows_whatever_order_the_split_file_holds(tmp_path):
    records = [tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(int64_list=tf.train.Int64List(value=[i]))})).SerializeToString() for i in range(1000)]
    samples = []
    for name, order in (("sorted", np.arange(1000)), ("shuffled", np.random.default_rng(0).permutation(1000))):
        examples = standard_artifacts.Examples()
        examples.uri = str(tmp_path / name)
        examples.split_names = '["train", "eval"]'
        os.makedirs(tmp_path / name / "Split-eval")
        with tf.io.TFRecordWriter(str(tmp_path / name / "Split-eval" / "data.gz"), "GZIP") as writer:
            for i in order:
                writer.write(records[i])
        samples.append(read_eval_examples(examples, limit=50))
    assert samples[0] == samples[1] and len(set(samples[0])) == 50
    values = [tf.train.Example.FromString(r).features.feature["x"].int64_list.value[0] for r in samples[0]]
    assert max(values) > 500 and min(values) < 500  # spread over the file, not its first 50 rows
