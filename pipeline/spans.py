"""Span directories: `data/span-1/*.csv`, `data/span-2/*.csv`, ... for scheduled retraining.

New data arrives as a new `span-N/` directory. Every run, ExampleGen ingests the
newest span through its `{SPAN}` input pattern and a one-span RollingRange (TFX's
ExampleGen reads one span per run), and records the span on its Examples artifact,
which is what `scarfx lineage` reports. With `span_policy: window` and
`span_window: N`, a Resolver (SpanRangeStrategy) then hands Transform and the Trainer
the Examples of the newest N spans *ingested so far*: a span that no run ingested
(several dropped in at once) is not in the window. Statistics, validation and the
Evaluator look at the newest span: that is the data the new model must handle.
The same selection is made here, before TFX starts, so the up-front CSV checks look
at exactly the files ExampleGen will read.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re

from scarfx.pipeline.configs import ConfigError

SPAN_DIR_PREFIX = "span-"
# ExampleGen substitutes `{SPAN}` with a digits regex and keeps the largest match.
SPAN_PATTERN = SPAN_DIR_PREFIX + "{SPAN}/*.csv"
SPAN_POLICIES = ("latest", "window")
_SPAN_DIR = re.compile(re.escape(SPAN_DIR_PREFIX) + r"(\d+)$")


@dataclasses.dataclass(frozen=True)
class SpanSelection:
    """Which spans of a span directory one pipeline run reads."""

    root: str
    latest: int  # the span ExampleGen ingests in this run
    files: tuple[str, ...]  # its CSV files
    available: tuple[int, ...]  # every span on disk, oldest first


def span_numbers(root: str) -> list[int]:
    """Span numbers of the `span-N/` subdirectories of `root`, ascending."""
    found = []
    for name in os.listdir(root):
        m = _SPAN_DIR.match(name)
        if m and os.path.isdir(os.path.join(root, name)):
            found.append(int(m.group(1)))
    return sorted(found)


def is_span_directory(path: str) -> bool:
    """True when `path` is a directory holding at least one `span-N/` subdirectory."""
    return os.path.isdir(path) and bool(span_numbers(path))


def select_spans(root: str, policy: str, window: int) -> SpanSelection:
    """The spans ExampleGen will read under `policy`; raises ConfigError when there are none."""
    if policy not in SPAN_POLICIES:
        raise ConfigError(f"span_policy must be one of {', '.join(SPAN_POLICIES)}, got {policy!r}")
    if window < 1:
        raise ConfigError(f"span_window must be >= 1, got {window}")
    if not os.path.isdir(root):
        raise ConfigError(f"span directory does not exist: {root}")
    numbers = span_numbers(root)
    if not numbers:
        raise ConfigError(f"data directory {root} has no {SPAN_DIR_PREFIX}N/ subdirectories")
    latest = numbers[-1]
    span_dir = os.path.join(root, f"{SPAN_DIR_PREFIX}{latest}")
    files = sorted(glob.glob(os.path.join(span_dir, "*.csv")))
    if not files:
        # ExampleGen would resolve this span and fail inside Beam; say it up front.
        raise ConfigError(f"newest span directory {span_dir} has no *.csv files")
    return SpanSelection(root=root, latest=latest, files=tuple(files), available=tuple(numbers))


def example_gen_inputs():
    """(input_config, range_config) for CsvExampleGen: the newest `span-N/` directory."""
    from tfx import v1 as tfx
    from tfx.proto import range_config_pb2

    input_config = tfx.proto.Input(splits=[tfx.proto.Input.Split(name="single_split", pattern=SPAN_PATTERN)])
    range_config = range_config_pb2.RangeConfig(rolling_range=range_config_pb2.RollingRange(num_spans=1))
    return input_config, range_config


def span_window_resolver(examples_channel, window: int):
    """A Resolver giving the Examples of the newest `window` spans ingested so far."""
    from tfx import v1 as tfx
    from tfx.proto import range_config_pb2

    return tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.SpanRangeStrategy,
        config={"range_config": range_config_pb2.RangeConfig(
            rolling_range=range_config_pb2.RollingRange(num_spans=window))},
        examples=examples_channel,
    ).with_id("span_window_resolver")
