"""The one reader of ML Metadata: what a pipeline run produced, decided and pushed.

The command line (`run`, `retrain`, `report`, `lineage`, `models list`), the benchmarks
and the tests all ask ML Metadata the same few questions; the walks answering them live
here once. A run is always named by its id, the `pipeline_run` context the runner
started (pipeline/runner.py chooses it), never "the newest context": two pipelines
sharing one store, or a run read back after another one started, must not read each
other's verdicts.

It lives in components/ because that is the lowest layer every reader may import:
pipeline/ and the command line import it; models/ knows nothing of TFX; serving/
imports only itself, so `models list` is handed `pushed_versions` by the command line.
"""
from __future__ import annotations

import dataclasses
import os

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from scarfx.components.evaluation import Verdict, load_verdict, read_evaluation

RUN_CONTEXT = "pipeline_run"  # named by the run id
NODE_CONTEXT = "node"  # named '<pipeline name>.<component id>'
REPORT_FILE = "report.html"  # in RunReport's artifact dir
OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
INPUT_EVENTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
_STATE_NAMES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}


def connect(metadata_path: str) -> metadata_store.MetadataStore:
    """A read-only connection; LookupError when there is no store at `metadata_path`."""
    if not os.path.exists(metadata_path):
        raise LookupError(f"no ML Metadata store at {metadata_path}")
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def custom_property(node, key):
    """An int or string custom property of an MLMD artifact or execution, else None."""
    if key not in node.custom_properties:
        return None
    v = node.custom_properties[key]
    return v.int_value if v.HasField("int_value") else v.string_value


def artifact_span(artifact) -> int | None:
    """An MLMD artifact's span. CsvExampleGen in tfx 1.16 records it as a custom property
    (StatisticsGen's copy of the `span` property then reads 0), so that is read first."""
    if "span" in artifact.custom_properties:
        return custom_property(artifact, "span")
    if "span" in artifact.properties:
        return artifact.properties["span"].int_value
    return None


def node_and_run(store, execution_id: int) -> tuple[str | None, str | None]:
    """(component id, run id) of one execution."""
    node = run = None
    for ctx in store.get_contexts_by_execution(execution_id):
        if ctx.type == NODE_CONTEXT:
            node = ctx.name.split(".", 1)[-1]
        elif ctx.type == RUN_CONTEXT:
            run = ctx.name
    return node, run


def run_context(store, run_id: str, metadata_path: str = "the store"):
    """The `pipeline_run` context of run `run_id`; LookupError when none was recorded."""
    context = store.get_context_by_type_and_name(RUN_CONTEXT, run_id)
    if context is None:
        raise LookupError(f"no pipeline run {run_id!r} recorded in {metadata_path}")
    return context


def run_ids(store) -> list[str]:
    """Every recorded run id, oldest first (for listing; a run is read by its id)."""
    runs = store.get_contexts_by_type(RUN_CONTEXT)
    return [c.name for c in sorted(runs, key=lambda c: (c.create_time_since_epoch, c.id))]


@dataclasses.dataclass
class _RunWalk:
    executions: list  # every execution of the run
    node_of: dict[int, str]  # execution id -> component id
    outputs: dict[str, dict[str, list]]  # component id -> output key -> artifacts


def _walk(store, context_id: int) -> _RunWalk:
    executions = store.get_executions_by_context(context_id)
    node_of = {e.id: node for e in executions if (node := node_and_run(store, e.id)[0]) is not None}
    events = [ev for ev in store.get_events_by_execution_ids([e.id for e in executions]) if ev.type in OUTPUT_EVENTS]
    artifacts = {a.id: a for a in store.get_artifacts_by_id(sorted({ev.artifact_id for ev in events}))}
    outputs: dict[str, dict[str, list]] = {}
    for ev in events:
        key = ev.path.steps[0].key if ev.path.steps else ""
        # A cached execution re-lists the artifacts of the run it reused.
        outputs.setdefault(node_of.get(ev.execution_id, "?"), {}).setdefault(key, []).append(artifacts[ev.artifact_id])
    return _RunWalk(executions, node_of, outputs)


def outputs_by_node(store, run_id: str) -> dict[str, dict[str, list]]:
    """{component id: {output key: [artifacts]}} for one pipeline run."""
    return _walk(store, run_context(store, run_id).id).outputs


def _last(outputs, node: str, key: str):
    return (outputs.get(node, {}).get(key) or [None])[-1]


def blessed_in(outputs) -> bool | None:
    """The Evaluator's blessing among a run's outputs (`outputs_by_node`); None when it did not run.

    The Pusher does not take the blessing as an input (its Cond reads it), so a push's
    blessing is read from the run that pushed."""
    blessing = _last(outputs, "Evaluator", "blessing")
    return None if blessing is None else custom_property(blessing, "blessed") == 1


def report_file(report_artifact) -> str:
    return os.path.join(report_artifact.uri, REPORT_FILE)


@dataclasses.dataclass
class RunOutcome:
    """What one pipeline run did, as ML Metadata recorded it, with the verdict RunReport wrote."""

    run_id: str
    verdict: Verdict | None  # None: the run's report (and so the Evaluator) did not finish
    states: dict[str, str]  # component id -> COMPLETE | CACHED | FAILED | ... (resolvers excluded)
    seconds: dict[str, float]  # component id -> wall seconds (MLMD create -> last update)
    span: int | None  # span ExampleGen ingested (None: not a span input)
    pushed_version: int | None  # the version this run's Pusher wrote, or re-listed when cached
    pushed_to: str | None
    model_uri: str | None
    evaluation_uri: str | None
    model_run_uri: str | None
    report_path: str | None  # RunReport's report.html; None when the report did not run
    resolvers: tuple[str, ...] = ()  # resolver nodes: they query ML Metadata every run, never cached

    @property
    def blessed(self) -> bool | None:
        return self.verdict.blessed if self.verdict else None

    @property
    def metrics(self) -> dict[str, float]:
        return self.verdict.metrics if self.verdict else {}

    @property
    def baseline_metrics(self) -> dict[str, float]:
        return self.verdict.baseline_metrics if self.verdict else {}

    @property
    def failures(self) -> list[str]:
        return self.verdict.failures if self.verdict else []

    @property
    def cached(self) -> list[str]:
        return sorted(n for n, s in self.states.items() if s == "CACHED")

    @property
    def executed(self) -> list[str]:
        return sorted(n for n, s in self.states.items() if s == "COMPLETE")

    def refusal_reason(self) -> str:
        return self.verdict.refusal_reason() if self.verdict else "the run recorded no verdict"


def run_outcome(metadata_path: str, run_id: str) -> RunOutcome:
    """Everything the command line prints about run `run_id`, in one walk of its executions."""
    store = connect(metadata_path)
    walk = _walk(store, run_context(store, run_id, metadata_path).id)
    resolver_types = {t.id for t in store.get_execution_types() if t.name.endswith(".Resolver")}
    states, seconds, resolvers = {}, {}, []
    for execution in walk.executions:
        node = walk.node_of.get(execution.id)
        if node is None:
            continue
        if execution.type_id in resolver_types:
            resolvers.append(node)
            continue
        states[node] = _STATE_NAMES.get(execution.last_known_state, str(execution.last_known_state))
        seconds[node] = max(0.0, (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000)

    outputs = walk.outputs
    span = next((artifact_span(a) for node, keys in outputs.items() if node.endswith("ExampleGen")
                 for a in keys.get("examples", []) if artifact_span(a) is not None), None)
    pushed = _last(outputs, "Pusher", "pushed_model")
    pushed_version = pushed_to = None
    if pushed is not None and custom_property(pushed, "pushed") == 1:
        pushed_to = custom_property(pushed, "pushed_destination")
        pushed_version = int(custom_property(pushed, "pushed_version"))
    report = _last(outputs, "RunReport", "report")
    model, model_run = _last(outputs, "Trainer", "model"), _last(outputs, "Trainer", "model_run")
    evaluation = _last(outputs, "Evaluator", "evaluation")
    return RunOutcome(
        run_id=run_id,
        verdict=load_verdict(report.uri) if report else None,
        states=states,
        seconds=seconds,
        span=span,
        pushed_version=pushed_version,
        pushed_to=pushed_to,
        model_uri=model.uri if model else None,
        evaluation_uri=evaluation.uri if evaluation else None,
        model_run_uri=model_run.uri if model_run else None,
        report_path=report_file(report) if report else None,
        resolvers=tuple(sorted(resolvers)),
    )


def run_report_path(metadata_path: str, run_id: str | None = None) -> tuple[str, str]:
    """(run id, report.html path) of run `run_id`, or of the newest run that wrote a report
    (what `scarfx report` without a run id shows). LookupError with a reader-facing reason."""
    store = connect(metadata_path)
    if run_id is not None:
        candidates = [run_context(store, run_id, metadata_path).name]
    else:
        candidates = run_ids(store)[::-1]
    for candidate in candidates:
        report = _last(outputs_by_node(store, candidate), "RunReport", "report")
        if report is not None:
            return candidate, report_file(report)
    raise LookupError(
        f"pipeline run {run_id!r} wrote no report" if run_id else f"no pipeline run with a report in {metadata_path}"
    )


# --------------------------------------------------------------------------- pushes


def pushed_models(store, serving_dir: str | None = None) -> dict[int, object]:
    """{version: PushedModel artifact} for every push the Pusher made (into `serving_dir`, if given)."""
    base = os.path.realpath(serving_dir) if serving_dir else None
    found = {}
    for artifact in store.get_artifacts_by_type("PushedModel"):
        if custom_property(artifact, "pushed") != 1:
            continue
        destination = custom_property(artifact, "pushed_destination") or ""
        try:
            version = int(custom_property(artifact, "pushed_version"))
        except (TypeError, ValueError):
            continue
        if base and os.path.realpath(os.path.dirname(destination.rstrip("/"))) != base:
            continue
        found[version] = artifact
    return found


def producer(store, artifact_id: int):
    """The execution that first output `artifact_id` (a cached execution re-lists it; skip those)."""
    events = [e for e in store.get_events_by_artifact_ids([artifact_id]) if e.type in OUTPUT_EVENTS]
    if not events:
        return None
    executions = store.get_executions_by_id([e.execution_id for e in events])
    return min(executions, key=lambda e: (e.create_time_since_epoch, e.id))


def input_artifacts(store, execution_id: int, key: str | None = None) -> list:
    """The artifacts an execution consumed (under input key `key`, if given)."""
    ids = sorted({e.artifact_id for e in store.get_events_by_execution_ids([execution_id]) if e.type in INPUT_EVENTS
                  and (key is None or (e.path.steps and e.path.steps[0].key == key))})
    return store.get_artifacts_by_id(ids) if ids else []


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

    Each version is read in the run whose Pusher first wrote it (a cached Pusher of a later
    run re-lists the same artifact): that run's blessing and evaluation.
    """
    store = connect(metadata_path)
    found: dict[int, PushedVersion] = {}
    for version, artifact in pushed_models(store, serving_dir).items():
        pusher = producer(store, artifact.id)
        if pusher is None:
            continue
        _, run_id = node_and_run(store, pusher.id)
        outputs = outputs_by_node(store, run_id) if run_id else {}
        model = (input_artifacts(store, pusher.id, "model") or [None])[0]
        evaluation = _last(outputs, "Evaluator", "evaluation")
        metrics, baseline = {}, {}
        if evaluation is not None:
            try:
                metrics, baseline, _ = read_evaluation(evaluation.uri)
            except Exception:  # noqa: BLE001 - an evaluation deleted from disk leaves the row without metrics
                pass
        found[version] = PushedVersion(
            version=version,
            run_id=run_id or "?",
            pushed_at_ms=artifact.create_time_since_epoch,
            blessed=blessed_in(outputs),
            metrics=metrics,
            baseline_metrics=baseline,
            model_uri=model.uri if model else None,
        )
    return found


def latest_schema(metadata_path: str):
    """The newest live Schema artifact (SchemaGen or ImportSchemaGen output); LookupError when none."""
    store = connect(metadata_path)
    schemas = [a for a in store.get_artifacts_by_type("Schema") if a.state == a.LIVE]
    if not schemas:
        raise LookupError(f"no schema recorded in {metadata_path}; run `scarfx run` first")
    return max(schemas, key=lambda a: a.id)
