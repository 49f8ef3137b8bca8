"""What a pipeline run decided, read back from ML Metadata (the record TFX keeps)."""
from __future__ import annotations

import dataclasses

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components.evaluation import read_evaluation


@dataclasses.dataclass
class RunOutcome:
    run_id: str
    blessed: bool | None  # None: the Evaluator did not run
    metrics: dict[str, float]  # overall slice, new model
    baseline_metrics: dict[str, float]
    failures: list[str]  # why the gate refused, one line per failed threshold
    pushed_to: str | None
    model_uri: str | None
    evaluation_uri: str | None
    model_run_uri: str | None
    report_path: str | None = None  # RunReport's report.html; None when the report did not run


def connect(metadata_path: str) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def _custom(artifact, key):
    if key not in artifact.custom_properties:
        return None
    v = artifact.custom_properties[key]
    return v.int_value if v.HasField("int_value") else v.string_value


def _outputs_by_node(store, context_id):
    """{component id: {output key: [artifacts]}} for one pipeline run."""
    executions = store.get_executions_by_context(context_id)
    result: dict[str, dict[str, list]] = {}
    node_of = {}
    for e in executions:
        for ctx in store.get_contexts_by_execution(e.id):
            if ctx.type == "node":  # named '<pipeline>.<component id>'
                node_of[e.id] = ctx.name.split(".", 1)[-1]
    events = store.get_events_by_execution_ids([e.id for e in executions])
    outputs = [ev for ev in events if ev.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)]
    artifacts = {a.id: a for a in store.get_artifacts_by_id(list({ev.artifact_id for ev in outputs}))}
    for ev in outputs:
        key = ev.path.steps[0].key if ev.path.steps else ""
        node = node_of.get(ev.execution_id, "?")
        result.setdefault(node, {}).setdefault(key, []).append(artifacts[ev.artifact_id])
    return result


def latest_run_context(store, metadata_path: str):
    """The newest `pipeline_run` context; LookupError when nothing ran yet."""
    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        raise LookupError(f"no pipeline run recorded in {metadata_path}")
    return max(runs, key=lambda c: (c.create_time_since_epoch, c.id))


def latest_run_outcome(metadata_path: str) -> RunOutcome:
    store = connect(metadata_path)
    run = latest_run_context(store, metadata_path)
    outputs = _outputs_by_node(store, run.id)

    blessing = (outputs.get("Evaluator", {}).get("blessing") or [None])[-1]
    evaluation = (outputs.get("Evaluator", {}).get("evaluation") or [None])[-1]
    pushed = (outputs.get("Pusher", {}).get("pushed_model") or [None])[-1]
    model = (outputs.get("Trainer", {}).get("model") or [None])[-1]
    model_run = (outputs.get("Trainer", {}).get("model_run") or [None])[-1]
    report = (outputs.get("RunReport", {}).get("report") or [None])[-1]

    metrics, baseline, failures = {}, {}, []
    if evaluation is not None:
        metrics, baseline, failures = read_evaluation(evaluation.uri)
    pushed_to = None
    if pushed is not None and _custom(pushed, "pushed") == 1:
        pushed_to = _custom(pushed, "pushed_destination")
    return RunOutcome(
        run_id=run.name,
        blessed=None if blessing is None else _custom(blessing, "blessed") == 1,
        metrics=metrics,
        baseline_metrics=baseline,
        failures=failures,
        pushed_to=pushed_to,
        model_uri=model.uri if model else None,
        evaluation_uri=evaluation.uri if evaluation else None,
        model_run_uri=model_run.uri if model_run else None,
        report_path=report_file(report.uri) if report else None,
    )


def run_report_path(metadata_path: str, run_id: str | None = None) -> tuple[str, str]:
    """(run id, report.html path) of pipeline run `run_id`, or of the latest run that wrote a report.

    Raises LookupError with a reader-facing reason when there is no such run or report.
    """
    store = connect(metadata_path)
    runs = sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: (c.create_time_since_epoch, c.id),
                  reverse=True)
    if run_id is not None:
        runs = [c for c in runs if c.name == run_id]
        if not runs:
            raise LookupError(f"no pipeline run {run_id!r} recorded in {metadata_path}")
    for run in runs:
        report = (_outputs_by_node(store, run.id).get("RunReport", {}).get("report") or [None])[-1]
        if report is not None:
            return run.name, report_file(report.uri)
    raise LookupError(
        f"pipeline run {run_id!r} wrote no report" if run_id else f"no pipeline run with a report in {metadata_path}"
    )


def report_file(report_uri: str) -> str:
    """report.html inside a Report artifact dir (components/report.py writes it; no TFX import here)."""
    import os

    return os.path.join(report_uri, "report.html")


@dataclasses.dataclass
class PushedVersion:
    """What ML Metadata knows about one pushed version directory."""

    version: int
    run_id: str
    pushed_at_ms: int
    blessed: bool | None
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    model_uri: str | None


def pushed_versions(metadata_path: str, serving_dir: str | None = None) -> dict[int, PushedVersion]:
    """{version: PushedVersion} for every model the Pusher pushed (into `serving_dir`, if given).

    Walks PushedModel artifacts (the Pusher's `pushed_version` / `pushed_destination`
    properties) to the pipeline run that produced them, then reads that run's
    blessing and evaluation.
    """
    import os

    store = connect(metadata_path)
    base = os.path.realpath(serving_dir) if serving_dir else None
    found: dict[int, PushedVersion] = {}
    for artifact in store.get_artifacts_by_type("PushedModel"):
        if _custom(artifact, "pushed") != 1:
            continue
        destination, version = _custom(artifact, "pushed_destination"), _custom(artifact, "pushed_version")
        try:
            version = int(version)
        except (TypeError, ValueError):
            continue
        if base and destination and os.path.realpath(os.path.dirname(destination.rstrip("/"))) != base:
            continue
        runs = [c for c in store.get_contexts_by_artifact(artifact.id) if c.type == "pipeline_run"]
        if not runs:
            continue
        run = runs[0]
        outputs = _outputs_by_node(store, run.id)
        blessing = (outputs.get("Evaluator", {}).get("blessing") or [None])[-1]
        evaluation = (outputs.get("Evaluator", {}).get("evaluation") or [None])[-1]
        model = (outputs.get("Trainer", {}).get("model") or [None])[-1]
        metrics, baseline = {}, {}
        if evaluation is not None:
            try:
                metrics, baseline, _ = read_evaluation(evaluation.uri)
            except Exception:  # noqa: BLE001 - an evaluation deleted from disk leaves the row without metrics
                pass
        found[version] = PushedVersion(
            version=version,
            run_id=run.name,
            pushed_at_ms=artifact.create_time_since_epoch,
            blessed=None if blessing is None else _custom(blessing, "blessed") == 1,
            metrics=metrics,
            baseline_metrics=baseline,
            model_uri=model.uri if model else None,
        )
    return found
