"""AnomaliesGate: stops the run when ExampleValidator found anomalies.

ExampleValidator only records a per-split `blessed` flag on its output; nothing
downstream reads it. Transform depends on this gate, so a data anomaly ends the
run before anything is transformed, trained or pushed, with a readable list.
"""

import os

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils
from tfx.types.standard_artifacts import ExampleAnomalies

InputArtifact = tfx.dsl.components.InputArtifact


class DataAnomaliesError(RuntimeError):
    """Raised with one line per anomaly; the CLI prints it."""


def describe_anomalies(anomalies_artifact) -> list[str]:
    """One human-readable line per anomaly, per split."""
    lines = []
    for split in artifact_utils.decode_split_names(anomalies_artifact.split_names):
        path = os.path.join(artifact_utils.get_split_uri([anomalies_artifact], split), "SchemaDiff.pb")
        if not os.path.exists(path):
            continue
        anomalies = anomalies_pb2.Anomalies()
        with open(path, "rb") as f:
            anomalies.ParseFromString(f.read())
        for feature, info in sorted(anomalies.anomaly_info.items()):
            lines.append(f"[{split}] feature {feature!r}: {info.short_description} - {info.description}")
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            lines.append(f"[{split}] dataset: {info.short_description} - {info.description}")
    return lines


@tfx.dsl.components.component
def AnomaliesGate(anomalies: InputArtifact[ExampleAnomalies]) -> None:
    problems = describe_anomalies(anomalies)
    if problems:
        raise DataAnomaliesError("data anomalies found; nothing was trained or pushed:\n  " + "\n  ".join(problems))
