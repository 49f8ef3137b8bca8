"""Which data span and which pipeline run produced the model now serving, from ML Metadata.

The walk: the served version dir → the PushedModel artifact the Pusher recorded for
it (`pushed_version`, `pushed_destination`) → the Pusher execution → its input Model
→ the Trainer execution that produced it → upstream through Transform (and the
span-window Resolver) → the Examples ExampleGen wrote, whose `span` / `version`
properties name the data. A cached Trainer means the Model comes from an earlier
run than the push: both runs are reported.
"""
from __future__ import annotations

import dataclasses
import os

from ml_metadata.proto import metadata_store_pb2

from pipeline.outcome import _custom, connect

_OUTPUTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
_INPUTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)


class LineageError(LookupError):
    """ML Metadata has no record connecting the serving dir to a pipeline run."""


@dataclasses.dataclass
class ExamplesRecord:
    span: int | None
    version: int | None
    uri: str
    input_base: str | None  # the data directory ExampleGen read
    run_id: str | None  # the pipeline run whose ExampleGen ingested it


@dataclasses.dataclass
class Lineage:
    version: int  # the served version dir
    version_dir: str
    push_run_id: str  # the run whose Pusher wrote the version
    train_run_id: str | None  # the run whose Trainer produced the model (differs if cached)
    model_uri: str
    blessed: bool | None
    examples: list[ExamplesRecord]  # oldest span first

    @property
    def spans(self) -> list[int]:
        return sorted({e.span for e in self.examples if e.span is not None})


def _node_and_run(store, execution_id: int) -> tuple[str | None, str | None]:
    node = run = None
    for ctx in store.get_contexts_by_execution(execution_id):
        if ctx.type == "node":
            node = ctx.name.split(".", 1)[-1]
        elif ctx.type == "pipeline_run":
            run = ctx.name
    return node, run


def _producer(store, artifact_id: int):
    """The execution that first output `artifact_id` (a cached execution re-lists it; skip those)."""
    events = [e for e in store.get_events_by_artifact_ids([artifact_id]) if e.type in _OUTPUTS]
    if not events:
        return None
    executions = store.get_executions_by_id([e.execution_id for e in events])
    return min(executions, key=lambda e: (e.create_time_since_epoch, e.id))


def _inputs(store, execution_id: int) -> list:
    ids = [e.artifact_id for e in store.get_events_by_execution_ids([execution_id]) if e.type in _INPUTS]
    return store.get_artifacts_by_id(sorted(set(ids))) if ids else []


def _input_by_key(store, execution_id: int, key: str):
    """The artifact an execution consumed under input key `key` (e.g. the Pusher's "model")."""
    for event in store.get_events_by_execution_ids([execution_id]):
        if event.type in _INPUTS and event.path.steps and event.path.steps[0].key == key:
            return store.get_artifacts_by_id([event.artifact_id])[0]
    return None


def _upstream_examples(store, model_artifact, max_depth: int = 8) -> list[ExamplesRecord]:
    """ExampleGen's Examples upstream of the model, walking producer executions breadth-first."""
    types = {t.id: t.name for t in store.get_artifact_types()}
    found: dict[int, ExamplesRecord] = {}
    frontier, seen = [model_artifact], {model_artifact.id}
    for _ in range(max_depth):
        next_frontier = []
        for artifact in frontier:
            execution = _producer(store, artifact.id)
            if execution is None:
                continue
            node, run = _node_and_run(store, execution.id)
            if types.get(artifact.type_id) == "Examples" and node and node.endswith("ExampleGen"):
                span = artifact.properties["span"].int_value if "span" in artifact.properties else _custom(artifact, "span")
                version = artifact.properties["version"].int_value if "version" in artifact.properties else None
                # TFX stores exec properties as custom properties of the execution.
                input_base = _custom(execution, "input_base")
                found[artifact.id] = ExamplesRecord(span, version, artifact.uri, input_base, run)
                continue
            for parent in _inputs(store, execution.id):
                if parent.id not in seen:
                    seen.add(parent.id)
                    next_frontier.append(parent)
        frontier = next_frontier
        if not frontier:
            break
    return sorted(found.values(), key=lambda e: (e.span if e.span is not None else -1, e.uri))


def model_lineage(metadata_path: str, serving_dir: str, version: int) -> Lineage:
    """Lineage of `<serving_dir>/<version>`; raises LineageError when MLMD has no such push."""
    if not os.path.exists(metadata_path):
        raise LineageError(f"no ML Metadata store at {metadata_path}")
    store = connect(metadata_path)
    base = os.path.realpath(serving_dir)
    pushed = None
    for artifact in store.get_artifacts_by_type("PushedModel"):
        if _custom(artifact, "pushed") != 1:
            continue
        destination = _custom(artifact, "pushed_destination") or ""
        try:
            pushed_version = int(_custom(artifact, "pushed_version"))
        except (TypeError, ValueError):
            continue
        if pushed_version == version and os.path.realpath(os.path.dirname(destination.rstrip("/"))) == base:
            pushed = artifact
            break
    if pushed is None:
        raise LineageError(f"ML Metadata in {metadata_path} has no push of version {version} to {serving_dir}")
    pusher = _producer(store, pushed.id)
    _, push_run = _node_and_run(store, pusher.id)
    model = _input_by_key(store, pusher.id, "model")
    if model is None:
        raise LineageError(f"the Pusher execution {pusher.id} has no input Model in ML Metadata")
    trainer = _producer(store, model.id)
    train_run = _node_and_run(store, trainer.id)[1] if trainer else None
    blessing = _input_by_key(store, pusher.id, "model_blessing")
    blessed = None if blessing is None else _custom(blessing, "blessed") == 1
    return Lineage(
        version=version,
        version_dir=_custom(pushed, "pushed_destination"),
        push_run_id=push_run or "?",
        train_run_id=train_run,
        model_uri=model.uri,
        blessed=blessed,
        examples=_upstream_examples(store, model),
    )


def format_lineage(lineage: Lineage) -> list[str]:
    """Human-readable lines for `scarfx lineage`."""
    lines = [f"serving version {lineage.version} ({lineage.version_dir})"]
    lines.append(f"pushed by run {lineage.push_run_id}")
    if lineage.train_run_id and lineage.train_run_id != lineage.push_run_id:
        lines.append(f"trained by run {lineage.train_run_id} (the push run reused it from cache)")
    else:
        lines.append(f"trained by run {lineage.train_run_id or '?'}")
    lines.append(f"model {lineage.model_uri}")
    for e in lineage.examples:
        what = f"span {e.span}" if e.span is not None else "examples"
        if e.version is not None:
            what += f" version {e.version}"
        lines.append(f"data {what} from {e.input_base or '?'} (ingested by run {e.run_id or '?'})")
    if not lineage.examples:
        lines.append("data: no ExampleGen output found upstream of the model")
    return lines
