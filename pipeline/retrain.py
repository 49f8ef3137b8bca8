"""`scarfx retrain`: run the pipeline on the newest data and say what happened.

Retraining is the ordinary pipeline with caching on: unchanged steps are reused from
ML Metadata, the Evaluator compares the new model with the latest blessed one (the
Resolver's baseline), and the Pusher runs only when the gate blesses. What this module
adds is the account of a run, read back from ML Metadata: the span ingested, which
components ran and which were cache hits, the verdict with metrics against the
baseline, and the version pushed or the reason for refusing.
"""
from __future__ import annotations

import dataclasses

from ml_metadata.proto import metadata_store_pb2

from pipeline.outcome import _custom, connect, latest_run_context

_STATE_NAMES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}


@dataclasses.dataclass
class RunRecord:
    run_id: str
    states: dict[str, str]  # component id -> COMPLETE | CACHED | FAILED | ... (resolvers excluded)
    seconds: dict[str, float]  # component id -> wall seconds (MLMD create -> last update)
    span: int | None  # span ExampleGen ingested (None: not a span input)
    pushed_version: int | None  # the version this run's Pusher wrote, or re-listed when cached
    resolvers: tuple[str, ...] = ()  # resolver nodes: they query ML Metadata every run, never cached

    @property
    def cached(self) -> list[str]:
        return sorted(n for n, s in self.states.items() if s == "CACHED")

    @property
    def executed(self) -> list[str]:
        return sorted(n for n, s in self.states.items() if s == "COMPLETE")


def latest_run_record(metadata_path: str) -> RunRecord:
    """States, timings, span and pushed version of the newest pipeline run in ML Metadata."""
    store = connect(metadata_path)
    run = latest_run_context(store, metadata_path)
    states, seconds, node_of, resolvers = {}, {}, {}, []
    resolver_types = {t.id for t in store.get_execution_types() if t.name.endswith(".Resolver")}
    span = pushed_version = None
    executions = store.get_executions_by_context(run.id)
    for execution in executions:
        node = next(
            (c.name.split(".", 1)[-1] for c in store.get_contexts_by_execution(execution.id) if c.type == "node"),
            None,
        )
        if node is None:
            continue
        node_of[execution.id] = node
        if execution.type_id in resolver_types:
            resolvers.append(node)
            continue
        states[node] = _STATE_NAMES.get(execution.last_known_state, str(execution.last_known_state))
        seconds[node] = max(0.0, (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000)
    outputs = [
        e for e in store.get_events_by_execution_ids([e.id for e in executions])
        if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
    ]
    artifacts = {a.id: a for a in store.get_artifacts_by_id(sorted({e.artifact_id for e in outputs}))}
    for event in outputs:
        artifact, node = artifacts[event.artifact_id], node_of.get(event.execution_id, "")
        # ExampleGen records the span on its Examples (a cached run re-lists the same artifact).
        if node.endswith("ExampleGen") and "span" in artifact.custom_properties:
            span = _custom(artifact, "span")
        if "pushed_version" in artifact.custom_properties and _custom(artifact, "pushed") == 1:
            pushed_version = int(_custom(artifact, "pushed_version"))
    return RunRecord(run.name, states, seconds, span, pushed_version, tuple(sorted(resolvers)))


def refusal_reason(outcome) -> str:
    """One line: why nothing was pushed."""
    if outcome.blessed is None:
        return "the Evaluator did not run"
    if outcome.failures:
        return "; ".join(outcome.failures)
    return "the gate did not bless the model"
