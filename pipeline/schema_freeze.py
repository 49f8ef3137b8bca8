"""`scarfx schema freeze`: turn the last inferred schema into a reviewed, versioned file.

SchemaGen re-infers the schema from every run's data, so it accepts whatever arrives.
A frozen schema is what the team signed off: its domains and presence are checked by
ExampleValidator on every later run (ImportSchemaGen replaces SchemaGen when the config
sets `schema_path`), and its drift comparators are applied by DriftGate against the
previous span. Edit the thresholds in the file; git versions it.
"""
from __future__ import annotations

import datetime
import os
import re

from scarfx.components.metadata import latest_schema
from scarfx.pipeline.configs import ConfigError, PipelineConfig

SCHEMA_FILE = "schema.pbtxt"
_VERSIONED = re.compile(r"^schema_v(\d+)\.pbtxt$")


def latest_schema_artifact(metadata_path: str):
    """The newest Schema artifact recorded in ML Metadata (SchemaGen or ImportSchemaGen output)."""
    if not os.path.exists(metadata_path):
        raise ConfigError(f"no pipeline metadata at {metadata_path}; run `scarfx run` first or pass --pipeline-root")
    try:
        return latest_schema(metadata_path)
    except LookupError as e:
        raise ConfigError(str(e)) from None


def next_versioned_path(directory: str) -> str:
    """`<directory>/schema_v<N>.pbtxt` with N one past the highest there; never an existing file."""
    taken = [int(m.group(1)) for m in map(_VERSIONED.match, os.listdir(directory) if os.path.isdir(directory) else [])
             if m]
    return os.path.join(directory, f"schema_v{max(taken, default=0) + 1}.pbtxt")


def frozen_schema(schema, cfg: PipelineConfig):
    """A copy of `schema` with drift/skew comparators and a categorical domain-mass floor from `cfg.validation`."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    from scarfx.components.drift_gate import add_drift_comparators

    # Only features with a value domain (TFDV infers one for low-cardinality strings) get a
    # domain-mass floor: TFDV flags the constraint on a feature without a domain as an anomaly.

    frozen = schema_pb2.Schema()
    frozen.CopyFrom(schema)
    v = cfg.validation
    add_drift_comparators(frozen, v.categorical_linf, v.numeric_jsd, skip=set(cfg.drop_columns))
    for feature in frozen.feature:
        has_domain = feature.HasField("domain") or feature.HasField("string_domain")
        if has_domain and feature.name != cfg.label and feature.name not in cfg.drop_columns:
            feature.distribution_constraints.min_domain_mass = v.min_domain_mass
    return frozen


def freeze(cfg: PipelineConfig, out: str, force: bool = False) -> tuple[str, str]:
    """Writes the frozen schema to `out` (a .pbtxt file, or a directory for the next schema_v<N>.pbtxt).

    Returns (written path, source artifact uri).
    """
    import tensorflow_data_validation as tfdv
    from google.protobuf import text_format

    artifact = latest_schema_artifact(cfg.metadata_path)
    source = os.path.join(artifact.uri, SCHEMA_FILE)
    if not os.path.exists(source):
        raise ConfigError(f"the latest schema is recorded at {source}, but the file is gone")
    path = out if out.endswith(".pbtxt") else next_versioned_path(out)
    if os.path.exists(path) and not force:
        raise ConfigError(f"{path} exists; pass --force to overwrite it, or give a directory to write the next version")
    schema = frozen_schema(tfdv.load_schema_text(source), cfg)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    header = (
        f"# scarfx frozen schema, from {source} (artifact {artifact.id}) on {when}.\n"
        "# Review it: feature types, domains (distribution_constraints.min_domain_mass), presence\n"
        "# and drift_comparator thresholds (infinity_norm: categorical, jensen_shannon_divergence:\n"
        "# numeric). A feature without a drift_comparator is not checked for drift.\n"
        "# Use it with `schema_path: <this file>` in the pipeline config.\n"
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(header + text_format.MessageToString(schema))
    os.replace(tmp, path)  # never a half-written schema
    return path, source
