"""CsvExampleGen whose memory does not grow with the rows.

TFX's CsvExampleGen (tfx 1.16) holds the table in memory twice on Beam's in-process
runner: 1.26 GB at 150k taxi rows, 5.3 GB at 1.5M (docs/BENCHMARKS.md).
- The column types are a CombineGlobally over the parsed lines, handed to the tf.Example
  conversion as a side input: every parsed line waits in memory until the types are known.
- WriteSplit reshuffles each split before writing it: every serialized example waits in
  memory until the shuffle ends.

This executor infers the types first, in a streaming pass of the same tfx_bsl
`ColumnTypeInferrer` (one line in memory at a time), then runs TFX's own read -> parse ->
convert chain with the types as a constant, and writes each split as it comes: one fused
stage that streams. The examples are TFX's, in file order; the price is one more parse of
the files. Nothing downstream needs them shuffled: the Trainer sorts its rows by
fingerprint (models/row_order.py) and the run report samples by fingerprint.
"""
from __future__ import annotations

import os
from typing import Any

import apache_beam as beam
from tfx import v1 as tfx
from tfx.components.example_gen import utils, write_split
from tfx.components.example_gen.csv_example_gen import executor as csv_executor
from tfx.components.util import examples_utils
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils
from tfx_bsl.coders import csv_decoder

DELIMITER = ","


def infer_column_types(csv_files: list[str], column_names: list[str]) -> list[csv_decoder.ColumnInfo]:
    """tfx_bsl's column types for the files' records, read one record at a time."""
    read_records = csv_executor._ReadCsvRecordsFromTextFile()
    parse = csv_decoder.ParseCSVLine(delimiter=DELIMITER)
    parse.setup()
    inferrer = csv_decoder.ColumnTypeInferrer(column_names, skip_blank_lines=True)
    accumulator = inferrer.create_accumulator()
    for path in csv_files:
        for record in read_records.process(path):
            for cells, _ in parse.process(record):
                accumulator = inferrer.add_input(accumulator, cells)
    return inferrer.extract_output(accumulator)


@beam.typehints.with_input_types(beam.Pipeline)
class _StreamingCsvToExample(beam.PTransform):
    """TFX's `_CsvToExample` with the column types computed before the pipeline runs."""

    def __init__(self, exec_properties: dict[str, Any], split_pattern: str):
        self._csv_pattern = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY], split_pattern)

    def expand(self, pipeline: beam.Pipeline):
        csv_files = fileio.glob(self._csv_pattern)
        if not csv_files:
            raise RuntimeError(f"Split pattern {self._csv_pattern} does not match any files.")
        column_names = io_utils.load_csv_column_names(csv_files[0])
        for csv_file in csv_files[1:]:
            if io_utils.load_csv_column_names(csv_file) != column_names:
                raise RuntimeError(f"Files in same split {self._csv_pattern} have different header.")
        column_infos = infer_column_types(csv_files, column_names)
        return (
            pipeline
            | "CreateFilenames" >> beam.Create(csv_files)
            | "ReadFromText" >> beam.ParDo(csv_executor._ReadCsvRecordsFromTextFile())
            | "ParseCSVLine" >> beam.ParDo(csv_decoder.ParseCSVLine(delimiter=DELIMITER))
            | "ExtractParsedCSVLines" >> beam.Keys()
            | "ToTFExample" >> beam.ParDo(csv_executor._ParsedCsvToTfExample(), column_infos)
        )


class StreamingCsvExecutor(csv_executor.Executor):
    """CsvExampleGen's executor, streaming (see the module docstring)."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _StreamingCsvToExample

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        """BaseExampleGenExecutor.Do, with each split written as it comes (no Reshuffle)."""
        self._log_startup(input_dict, output_dict, exec_properties)
        input_config, output_config = example_gen_pb2.Input(), example_gen_pb2.Output()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config)
        examples = output_dict[standard_component_specs.EXAMPLES_KEY]
        artifact_utils.get_single_instance(examples).split_names = artifact_utils.encode_split_names(
            utils.generate_output_split_names(input_config, output_config))
        file_format = exec_properties.get(standard_component_specs.OUTPUT_FILE_FORMAT_KEY,
                                          example_gen_pb2.FILE_FORMAT_UNSPECIFIED)
        payload_format = exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
        if payload_format == example_gen_pb2.FORMAT_PARQUET:
            raise ValueError("StreamingCsvExecutor writes TFRecords; Parquet output is not supported")
        with self._make_beam_pipeline() as pipeline:
            for split_name, split in self.GenerateExamplesByBeam(pipeline, exec_properties).items():
                path = os.path.join(artifact_utils.get_split_uri(examples, split_name), write_split.DEFAULT_FILE_NAME)
                (split
                 | f"MaybeSerialize[{split_name}]" >> beam.ParDo(write_split.MaybeSerialize())
                 | f"Write[{split_name}]" >> beam.io.WriteToTFRecord(path, file_name_suffix=".gz"))
        for artifact in examples:
            if payload_format:
                examples_utils.set_payload_format(artifact, payload_format)
            if file_format:
                examples_utils.set_file_format(artifact, write_split.to_file_format_str(file_format))


class StreamingCsvExampleGen(tfx.components.CsvExampleGen):
    """tfx.components.CsvExampleGen with StreamingCsvExecutor; its node id stays `CsvExampleGen`."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(StreamingCsvExecutor)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.with_id("CsvExampleGen")
