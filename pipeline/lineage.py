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

from scarfx.components.metadata import (
    artifact_span,
    blessed_in,
    connect,
    custom_property,
    input_artifacts,
    node_and_run,
    outputs_by_node,
    producer,
    pushed_models,
)


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


def _upstream_examples(store, model_artifact, max_depth: int = 8) -> list[ExamplesRecord]:
    """ExampleGen's Examples upstream of the model, walking producer executions breadth-first."""
    types = {t.id: t.name for t in store.get_artifact_types()}
    found: dict[int, ExamplesRecord] = {}
    frontier, seen = [model_artifact], {model_artifact.id}
    for _ in range(max_depth):
        next_frontier = []
        for artifact in frontier:
            execution = producer(store, artifact.id)
            if execution is None:
                continue
            node, run = node_and_run(store, execution.id)
            if types.get(artifact.type_id) == "Examples" and node and node.endswith("ExampleGen"):
                span = artifact_span(artifact)
                version = artifact.properties["version"].int_value if "version" in artifact.properties else None
                # TFX stores exec properties as custom properties of the execution.
                input_base = custom_property(execution, "input_base")
                found[artifact.id] = ExamplesRecord(span, version, artifact.uri, input_base, run)
                continue
            for parent in input_artifacts(store, execution.id):
                if parent.id not in seen:
                    seen.add(parent.id)
                    next_frontier.append(parent)
        frontier = next_frontier
        if not frontier:
            break
    return sorted(found.values(), key=lambda e: (e.span if e.span is not None else -1, e.uri))


def model_lineage(metadata_path: str, serving_dir: str, version: int) -> Lineage:
    """Lineage of `<serving_dir>/<version>`; raises LineageError when MLMD has no such push."""
    try:
        store = connect(metadata_path)
    except LookupError as e:
        raise LineageError(str(e)) from None
    pushed = pushed_models(store, serving_dir).get(version)
    if pushed is None:
        raise LineageError(f"ML Metadata in {metadata_path} has no push of version {version} to {serving_dir}")
    pusher = producer(store, pushed.id)
    _, push_run = node_and_run(store, pusher.id)
    model = (input_artifacts(store, pusher.id, "model") or [None])[0]
    if model is None:
        raise LineageError(f"the Pusher execution {pusher.id} has no input Model in ML Metadata")
    trainer = producer(store, model.id)
    train_run = node_and_run(store, trainer.id)[1] if trainer else None
    blessed = blessed_in(outputs_by_node(store, push_run)) if push_run else None
    return Lineage(
        version=version,
        version_dir=custom_property(pushed, "pushed_destination"),
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
