"""RunReport: one self-contained HTML page that explains a run's model to its owners.

A model that is promoted automatically must be explainable to the people who own it,
and they would rather look at one page than read logs. The page shows the gate's
verdict, the eval metrics against the baseline with the thresholds, which features
drive predictions (SHAP, models/attributions.py), how pretraining and fine-tuning went
(with the numeric encoding, ensembling and self-training used), the data summary with
TFDV anomalies, and each distance DriftGate compared with its threshold. Charts are
inline base64 PNGs (matplotlib Agg): the file opens offline, from an e-mail attachment
or an artifact store, with no network assets.

Artifact: `Report` (TYPE_NAME `scarfx.Report`), a directory holding `report.html` and
`verdict.json`: the run's verdict, computed here once and printed by the command line.
No `from __future__ import annotations` here: TFX parses the component's annotations.
"""

import base64
import html
import io
import json
import os
from typing import Optional

import numpy as np
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import artifact_utils
from tfx.types.artifact import Artifact
from tfx.types.standard_artifacts import (
    ExampleAnomalies,
    Examples,
    ExampleStatistics,
    Model,
    ModelBlessing,
    ModelEvaluation,
    ModelRun,
    TransformGraph,
)

from scarfx.components.anomalies_gate import describe_anomalies
from scarfx.components.drift_gate import read_drift_measures
from scarfx.components.evaluation import evaluate_verdict, read_slices, read_thresholds, write_verdict
from scarfx.components.metadata import REPORT_FILE, custom_property
from scarfx.models.features import SUMMARY_FILE, TRANSFORM_SIGNATURE

InputArtifact = tfx.dsl.components.InputArtifact
OutputArtifact = tfx.dsl.components.OutputArtifact
Parameter = tfx.dsl.components.Parameter

# Eval rows read for attributions: the first 64 are explained against 32 background rows
# drawn from all of them (2 permutations each: models/attributions.py says why).
ATTRIBUTION_SAMPLE_ROWS = 128
EXPLAINED_ROWS = 64
BACKGROUND_ROWS = 32
EXAMPLES_SHOWN = 5


class Report(Artifact):
    """A directory with one self-contained `report.html`."""

    TYPE_NAME = "scarfx.Report"


# --------------------------------------------------------------------------- inputs


def read_statistics(statistics_artifact, split: str = "train"):
    """The split's DatasetFeatureStatistics (first dataset), or None if the split has none."""
    import tensorflow_data_validation as tfdv

    path = os.path.join(artifact_utils.get_split_uri([statistics_artifact], split), "FeatureStats.pb")
    if not tf.io.gfile.exists(path):
        return None
    return tfdv.load_stats_binary(path).datasets[0]


# How the report names each column role of pipeline/data_checks.py (ColumnRole.role).
ROLE_TEXT = {
    "label": "label",
    "numeric": "input (numeric)",
    "categorical": "input (categorical)",
    "datetime": "input (date/time: year, month, day of week, hour)",
    "id": "dropped: ID",
    "constant": "dropped: constant",
    "empty": "dropped: empty",
    "datetime_dropped": "dropped: date/time",
    "dropped": "dropped by the user",
}


def serving_input_names(model_uri: str) -> dict[str, str]:
    """{raw feature: its predict_raw input name} where the two differ (models/export.py
    raw_input_names: characters TensorFlow refuses in a tensor name become `_`)."""
    from tfx.utils import path_utils

    from scarfx.models.features import ASSETS_EXTRA, METADATA_FILE

    path = os.path.join(path_utils.serving_model_path(model_uri), ASSETS_EXTRA, METADATA_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        names = json.load(f).get("raw_inputs") or {}
    return {k: v for k, v in names.items() if k != v}


def columns_table(roles: list[dict], input_names: Optional[dict] = None) -> str:
    """Every column of the CSV: its role, why, and its predict_raw input name where that differs."""
    input_names = input_names or {}
    rows = [[html.escape(r["column"]), html.escape(ROLE_TEXT.get(r["role"], r["role"])), html.escape(r.get("why", "")),
             html.escape(input_names.get(r["column"], ""))] for r in roles]
    return _table(["column", "role", "why", "predict_raw input name (if not the column's)"], rows)


def _feature_name(feature) -> str:
    return ".".join(feature.path.step) or feature.name


def data_summary(stats) -> list[dict]:
    """One row per feature: kind, missing share, and mean/std or distinct/top values."""
    rows = []
    total = max(int(stats.num_examples), 1)
    for f in sorted(stats.features, key=_feature_name):
        if f.HasField("num_stats"):
            common = f.num_stats.common_stats
            rows.append({
                "feature": _feature_name(f), "kind": "numeric",
                "missing": common.num_missing / total,
                "detail": f"mean {f.num_stats.mean:.4g}, std {f.num_stats.std_dev:.4g}, "
                          f"min {f.num_stats.min:.4g}, max {f.num_stats.max:.4g}",
            })
        elif f.HasField("string_stats"):
            common = f.string_stats.common_stats
            top = ", ".join(f"{v.value} ({int(v.frequency)})" for v in f.string_stats.top_values[:3])
            rows.append({
                "feature": _feature_name(f), "kind": "categorical",
                "missing": common.num_missing / total,
                "detail": f"{f.string_stats.unique} distinct; top: {top}",
            })
    return rows


def read_training_summary(model_run_uri: str) -> dict:
    path = os.path.join(model_run_uri, SUMMARY_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def read_eval_examples(examples_artifact, split: str = "eval", limit: int = ATTRIBUTION_SAMPLE_ROWS) -> list[bytes]:
    """`limit` serialized raw tf.Examples of the split (ExampleGen writes GZIP TFRecords): those
    with the smallest fingerprints, so a uniform sample of the whole split, whatever order the
    file holds its rows in (ExampleGen keeps the CSV's: a CSV sorted by date must not be
    explained on its oldest rows). One pass; memory: `limit` records and one batch."""
    files = sorted(tf.io.gfile.glob(os.path.join(artifact_utils.get_split_uri([examples_artifact], split), "*")))
    keys, records = np.zeros(0, np.int64), np.zeros(0, object)
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096):
        keys = np.concatenate([keys, tf.bitcast(tf.fingerprint(batch), tf.int64).numpy()])
        records = np.concatenate([records, batch.numpy().astype(object)])
        keep = np.argsort(keys, kind="stable")[:limit]
        keys, records = keys[keep], records[keep]
    return list(records)


def model_attributions(model_uri: str, transform_graph_uri: str, records: list[bytes]):
    """SHAP attributions of the exported model on raw eval records, per raw feature."""
    import tensorflow_transform as tft

    from scarfx.models import attributions, export
    from tfx.utils import path_utils

    loaded = tf.saved_model.load(path_utils.serving_model_path(model_uri))
    if not hasattr(loaded, "classify_transformed"):
        raise ValueError(f"{model_uri} was exported before models/export.py saved classify_transformed")
    layout = export.layout_from_transform(tft.TFTransformOutput(transform_graph_uri))
    transformed = loaded.signatures[TRANSFORM_SIGNATURE](examples=tf.constant(records))
    inputs = {k: v.numpy() for k, v in export.model_inputs(transformed, layout).items()}
    matrix, names = attributions.feature_matrix(inputs, layout)

    def classifier(batch, training=False):
        return loaded.classify_transformed(batch["numeric"], batch["categorical"])

    try:
        return attributions.explain(attributions.classifier_predict_fn(classifier, layout), matrix, names,
                                    background_rows=BACKGROUND_ROWS, explain_rows=EXPLAINED_ROWS)
    finally:
        # Release the restored functions now, not at interpreter exit, where TF's
        # AtomicFunction.__del__ prints "NoneType is not subscriptable" tracebacks.
        del loaded, classifier
        import gc

        gc.collect()


def model_settings(training: dict, numeric_encoding: str = "") -> list[tuple[str, str]]:
    """(setting, value) rows: how the model read its inputs and how it was fine-tuned.

    `numeric_encoding` is the Transform's setting (the Trainer never sees it); the rest
    comes from the training summary, else from the run's SCARF config (where a config
    file left a key out, ScarfConfig's default applies).
    """
    import dataclasses

    from scarfx.models.scarf_config import ScarfConfig

    config = {f.name: f.default for f in dataclasses.fields(ScarfConfig)}
    config.update(training.get("config") or {})
    s = training.get("summary") or {}
    bins = int(config["numeric_bins"])
    members = int(s.get("ensemble_size", config["ensemble_size"]))
    rounds = int(config["self_training_rounds"])
    pseudo = ", ".join(str(n) for n in s.get("pseudo_labelled_rows") or []) or "none"
    monitor = s.get("finetune_monitor", config["finetune_monitor"])
    return [
        ("numeric encoding (Transform)", numeric_encoding or "not recorded"),
        ("numeric bins (piecewise-linear)", f"{bins} per feature" if bins else "0 (the encoded value itself)"),
        ("missing indicators", "yes" if config["missing_indicators"] else "no"),
        ("ensemble size", f"{members} (K-fold members, probabilities averaged)" if members > 1 else "1 (one model)"),
        ("self-training rounds", f"{rounds} (pseudo-labelled rows per round: {pseudo})" if rounds else "0 (off)"),
        ("fine-tuning monitor", f"{monitor} (validation {'log-loss' if monitor == 'loss' else monitor})"),
        ("fine-tuning augmentation", _augmentation(config)),
        ("calibration", _calibration(config, s)),
        ("linear skip (wide-and-deep)", "yes" if config["linear_skip"] else "no"),
    ]


def _calibration(config: dict, summary: dict) -> str:
    if config.get("calibration", "none") != "temperature":
        return "none"
    temperature = summary.get("temperature")
    fitted = f"T = {temperature:.2f}" if temperature is not None else "T not recorded"
    return f"temperature scaling on the members' out-of-fold predictions ({fitted})"


def _augmentation(config: dict) -> str:
    rate, rows = float(config["finetune_corruption_rate"]), float(config["finetune_corrupted_rows"])
    if rate <= 0:
        return "off"
    source = "all rows" if config["finetune_corruption_source"] == "all_rows" else "the row's own class (labelled rows)"
    return f"SCARF corruption c={rate:g} on {rows:.0%} of each batch's rows (labels kept), values from {source}"


# --------------------------------------------------------------------------- rendering


def _png(fig) -> str:
    """Inline <img> of a matplotlib figure (closed afterwards)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="chart" alt="chart" src="data:image/png;base64,{data}">'


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def importance_chart(ranking: list[tuple[str, float]], max_features: int = 15) -> str:
    plt = _pyplot()
    shown = ranking[:max_features][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(shown) + 1.2))
    ax.barh([name for name, _ in shown], [value for _, value in shown], color="#3b6ea8")
    ax.set_xlabel("mean |SHAP value| (effect on the predicted class's probability)")
    ax.set_title("Global feature importance")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def training_chart(summary: dict) -> str:
    """InfoNCE (pretraining) next to fine-tuning loss and accuracy, per epoch."""
    plt = _pyplot()
    pre, fine = summary.get("pretrain_history") or {}, summary.get("finetune_history") or {}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, history, keys, title in (
        (axes[0], pre, ("loss", "val_loss"), "Pretraining InfoNCE loss"),
        (axes[1], fine, ("loss", "val_loss"), "Fine-tuning loss"),
        (axes[2], fine, ("accuracy", "val_accuracy"), "Fine-tuning accuracy"),
    ):
        plotted = False
        for key in keys:
            if history.get(key):
                epochs = np.arange(1, len(history[key]) + 1)
                ax.plot(epochs, history[key], marker="o", ms=3, label="validation" if key.startswith("val_") else "train")
                plotted = True
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if plotted:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "stage did not run", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return _png(fig)


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 10:
        return f"{int(value)}"
    return f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value))


def _table(header: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;
 color:#1d2330;padding:0 16px;line-height:1.45}
h1{font-size:1.6em;margin-bottom:4px}h2{border-bottom:1px solid #d5dae3;padding-bottom:4px;margin-top:32px}
.meta{color:#5b6475;font-size:.9em}
.verdict{padding:12px 16px;border-radius:6px;font-weight:600;margin:16px 0}
.blessed{background:#e3f4e6;border:1px solid #7cc08a}.refused{background:#fbe7e7;border:1px solid #d88}
.unknown{background:#eef0f4;border:1px solid #bbb}
table{border-collapse:collapse;margin:8px 0;font-size:.92em}th,td{border:1px solid #d5dae3;padding:4px 8px;
 text-align:left;vertical-align:top}th{background:#f2f4f8}td.num{text-align:right}
.chart{max-width:100%;display:block;margin:8px 0}.note{color:#5b6475;font-size:.88em}
.pos{color:#a33}.neg{color:#2a5db0}ul.anomalies li{color:#a33}
"""


def render_html(
    *,
    title: str,
    blessed: Optional[bool],
    failures: list[str],
    slices: list[dict],
    thresholds: list[dict],
    attributions=None,
    class_names: Optional[list[str]] = None,
    training: Optional[dict] = None,
    summary_rows: Optional[list[dict]] = None,
    anomalies: Optional[list[str]] = None,
    drift_rows: Optional[list[dict]] = None,
    examples_in_stats: Optional[int] = None,
    numeric_encoding: str = "",
    column_roles: Optional[list[dict]] = None,
    input_names: Optional[dict] = None,
) -> str:
    """The report page from already-loaded parts; every part may be missing and says so."""
    parts = [f"<h1>{html.escape(title)}</h1>"]

    if blessed is None:
        parts.append('<div class="verdict unknown">Gate verdict: not evaluated</div>')
    elif blessed:
        parts.append('<div class="verdict blessed">Gate verdict: BLESSED (every threshold met; '
                     "the model is pushed to serving)</div>")
    else:
        reasons = "".join(f"<li>{html.escape(f)}</li>" for f in failures) or "<li>no failure recorded</li>"
        parts.append(f'<div class="verdict refused">Gate verdict: NOT BLESSED (not pushed)<ul>{reasons}</ul></div>')

    parts.append("<h2>Evaluation against the baseline</h2>")
    if slices:
        for s in slices:
            rows = []
            for name, (candidate, baseline) in sorted(s["metrics"].items()):
                delta = None if candidate is None or baseline is None else candidate - baseline
                rows.append([html.escape(name), f'<span class="num">{_fmt(candidate)}</span>',
                             _fmt(baseline), _fmt(delta) if delta is None else f"{delta:+.4f}"])
            parts.append(f"<h3>Slice: {html.escape(s['slice'])}</h3>")
            parts.append(_table(["metric", "this model", "baseline (latest blessed)", "change"], rows))
        if not any(b is not None for s in slices for _, b in s["metrics"].values()):
            parts.append('<p class="note">No blessed baseline yet: only the absolute floors apply.</p>')
    else:
        parts.append('<p class="note">The Evaluator produced no metrics.</p>')
    if thresholds:
        parts.append("<h3>Thresholds</h3>")
        parts.append(_table(
            ["metric", "must be at least", "may drop vs baseline by at most"],
            [[html.escape(t["metric"]), _fmt(t["floor"]),
              # TFMA drops change thresholds when there is no baseline to compare with.
              "not applied (no baseline)" if t["max_drop"] is None else f"{max(-t['max_drop'], 0.0):.4f}"]
             for t in thresholds],
        ))

    parts.append("<h2>What drives the predictions</h2>")
    if attributions is not None:
        ranking = attributions.global_importance()
        parts.append(importance_chart(ranking))
        parts.append(
            f'<p class="note">SHAP values (permutation explainer) on {len(attributions.values)} eval rows, '
            "per raw feature; a categorical feature counts once, however many embedding columns it has. "
            "Bars show how much a feature moves the probability of the predicted class, on average.</p>"
        )
        rows = []
        for i in range(min(EXAMPLES_SHOWN, len(attributions.values))):
            klass = int(attributions.predicted_class[i])
            label = class_names[klass] if class_names and klass < len(class_names) else str(klass)
            drivers = ", ".join(
                f'<span class="{"pos" if v > 0 else "neg"}">{html.escape(n)} {v:+.3f}</span>'
                for n, v in attributions.top_features(i, k=3)
            )
            rows.append([str(i + 1), html.escape(label), f"{attributions.probabilities[i]:.3f}",
                         f"{attributions.base_values[i]:.3f}", drivers])
        parts.append("<h3>Example explanations</h3>")
        parts.append(_table(["eval row", "predicted class", "probability", "average probability", "top drivers"],
                            rows))
        parts.append('<p class="note">Red raises the predicted class\'s probability, blue lowers it; '
                     "average probability + all contributions = probability.</p>")
    else:
        parts.append('<p class="note">No attributions: the model or eval examples were not available.</p>')

    parts.append("<h2>Training</h2>")
    if training:
        s = training.get("summary", {})
        facts = []
        if s.get("pretrained"):
            facts.append(f"pretraining: {s.get('pretrain_rows')} rows, {s.get('pretrain_epochs_run')} epochs")
        else:
            facts.append("no pretraining")
        if "finetune_labelled_rows" in s:
            fine = f"fine-tuning: {s['finetune_labelled_rows']} labelled rows"
            if s.get("finetune_best_val_loss") is not None:
                fine += f", best validation log-loss {s['finetune_best_val_loss']:.4f}"
            facts.append(fine)
        if training.get("warm_start_from") or s.get("warm_start_from"):
            carried = s.get("warm_start") or {}
            detail = ""
            if carried:
                detail = (f" ({len(carried.get('numeric_carried', []))} numeric and "
                          f"{len(carried.get('categorical_carried', []))} categorical features carried over, "
                          f"{carried.get('terms_new', 0)} new terms, fresh: "
                          f"{', '.join(carried.get('fresh', [])) or 'none'})")
            facts.append(f"warm start from {s.get('warm_start_from')}{detail}")
        parts.append(f'<p>{html.escape("; ".join(facts))}</p>')
        parts.append(_table(["model setting", "value"],
                            [[html.escape(k), html.escape(v)] for k, v in model_settings(training, numeric_encoding)]))
        parts.append(training_chart(training))
    else:
        parts.append('<p class="note">No training summary found.</p>')

    parts.append("<h2>Data</h2>")
    if examples_in_stats is not None:
        parts.append(f"<p>{examples_in_stats} training examples.</p>")
    if anomalies:
        items = "".join(f"<li>{html.escape(a)}</li>" for a in anomalies)
        parts.append(f'<h3>Anomalies (TFDV)</h3><ul class="anomalies">{items}</ul>')
    else:
        parts.append("<p>TFDV found no anomalies against the schema.</p>")
    if column_roles:
        parts.append("<h3>Columns</h3>")
        parts.append(columns_table(column_roles, input_names))
    if summary_rows:
        training = training or {}
        used = {*training.get("numeric_features", []), *training.get("categorical_features", [])}
        decided = {r["column"]: ROLE_TEXT.get(r["role"], r["role"]) for r in column_roles or []}

        def role(name: str) -> str:
            if name in decided:
                return decided[name]
            if name == training.get("label"):
                return "label"
            return "input" if name in used or not used else "not used"

        parts.append(_table(
            ["feature", "role", "kind", "missing", "summary"],
            [[html.escape(r["feature"]), role(r["feature"]), r["kind"], f"{100 * r['missing']:.1f}%",
              html.escape(r["detail"])] for r in summary_rows],
        ))

    parts.append("<h3>Drift against the last span that passed the drift gate</h3>")
    if drift_rows:
        # What DriftGate computed and decided on (components/drift_gate.py), nearest its threshold first.
        parts.append(_table(
            ["feature", "measure", "value", "threshold"],
            [[html.escape(r["feature"]), html.escape(r["measure"]), _fmt(r["value"], 3), _fmt(r["threshold"], 3)]
             for r in sorted(drift_rows, key=lambda r: -r["value"] / r["threshold"] if r["threshold"] else 0.0)],
        ))
        parts.append('<p class="note">A value above its threshold stops the run before Transform.</p>')
    elif drift_rows is None:
        parts.append('<p class="note">Nothing to compare with: no earlier span passed the drift gate '
                     "(first span or first run), or the gate is off.</p>")
    else:
        parts.append('<p class="note">The drift gate compared no feature (no drift comparator applies).</p>')

    body = "\n".join(parts)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>"
    )


# --------------------------------------------------------------------------- component


@tfx.dsl.components.component
def RunReport(
    statistics: InputArtifact[ExampleStatistics],
    anomalies: InputArtifact[ExampleAnomalies],
    model_run: InputArtifact[ModelRun],
    model: InputArtifact[Model],
    transform_graph: InputArtifact[TransformGraph],
    examples: InputArtifact[Examples],
    evaluation: InputArtifact[ModelEvaluation],
    blessing: InputArtifact[ModelBlessing],
    report: OutputArtifact[Report],
    drift: InputArtifact[ExampleAnomalies] = None,
    title: Parameter[str] = "scarfx run report",
    numeric_encoding: Parameter[str] = "",
    column_roles: Parameter[str] = "",
) -> None:
    """`drift`: DriftGate's output (None when the gate is off); the page shows the numbers it decided on.

    The run's verdict is computed here, once, and written beside the page (VERDICT_FILE):
    the command line prints that same verdict (components/metadata.py reads it back).
    """
    from absl import logging

    blessed = custom_property(blessing.mlmd_artifact, "blessed")
    verdict = evaluate_verdict(evaluation.uri, None if blessed is None else blessed == 1)
    write_verdict(verdict, report.uri)
    stats = read_statistics(statistics)
    training = read_training_summary(model_run.uri)
    attributions = None
    try:
        attributions = model_attributions(model.uri, transform_graph.uri, read_eval_examples(examples))
    except (ValueError, tf.errors.OpError) as e:  # the page still explains the rest
        logging.warning("report: no attributions: %s", e)
    page = render_html(
        title=title,
        blessed=verdict.blessed,
        failures=verdict.failures,
        slices=read_slices(evaluation.uri),
        thresholds=read_thresholds(evaluation.uri),
        attributions=attributions,
        class_names=training.get("classes"),
        training=training,
        summary_rows=data_summary(stats) if stats is not None else None,
        anomalies=describe_anomalies(anomalies),
        drift_rows=read_drift_measures(drift.uri) if drift is not None else None,
        examples_in_stats=int(stats.num_examples) if stats is not None else None,
        numeric_encoding=numeric_encoding,
        # JSON list of pipeline/data_checks.py ColumnRole fields, as the up-front checks decided.
        column_roles=json.loads(column_roles) if column_roles else None,
        input_names=serving_input_names(model.uri),
    )
    tf.io.gfile.makedirs(report.uri)
    with tf.io.gfile.GFile(os.path.join(report.uri, REPORT_FILE), "w") as f:
        f.write(page)
