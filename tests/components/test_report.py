"""The run report: written by the pipeline, found by `scarfx report`, and rendered by a real browser."""
import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import run_cli

# Injected at the top of the page under test: counts script errors and console.error
# calls, then, once everything has loaded, writes what the page shows into #probe.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
const __consoleError = console.error;
console.error = (...a) => { window.__errors.push(a.join(' ')); __consoleError(...a); };
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({
    errors: window.__errors,
    images: imgs.length,
    broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).length,
    external: [...document.querySelectorAll('[src],link[href]')].map(e => e.src || e.href)
      .filter(u => !u.startsWith('data:')),
    headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
  });
  document.body.appendChild(probe);
});
</script>"""


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium, installed with apt-get when missing (the test needs a real browser)."""
    path = shutil.which("chromium")
    if path is None:
        install = subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, text=True, timeout=900)
        path = shutil.which("chromium")
        if install.returncode != 0 or path is None:
            pytest.fail(f"chromium is missing and `apt-get install -y chromium` failed:\n{install.stderr[-2000:]}")
    return path


def _chromium(binary, *args, timeout=180):
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--virtual-time-budget=10000", *args],
        capture_output=True, text=True, timeout=timeout,
    )


def test_report_command_rejects_a_root_without_runs(tmp_path):
    code, output = run_cli(["report", "--pipeline-root", str(tmp_path)])
    assert code == 2
    assert output.strip() == f"scarfx: error: no pipeline metadata at {tmp_path}/metadata.sqlite; " \
                             "run `scarfx run` first or pass --pipeline-root"


@pytest.mark.e2e
def test_report_renders_in_headless_chromium(pipeline_run, chromium, tmp_path):
    assert pipeline_run.exit_code == 0, pipeline_run.output
    printed = [line for line in pipeline_run.output.splitlines() if line.startswith("scarfx: report ")]
    assert printed, pipeline_run.output
    path = printed[-1].split(" ", 2)[2]
    code, output = run_cli(["report", "--pipeline-root", pipeline_run.pipeline_root])
    # The newest run's report: the session run's, or a later one if a test sharing this
    # root (tests/pipeline/test_e2e.py) ran there first; report dirs are numbered in order.
    newest = output.strip()
    assert code == 0 and os.path.isfile(newest), output
    assert os.path.dirname(os.path.dirname(newest)) == os.path.dirname(os.path.dirname(path))
    assert int(os.path.basename(os.path.dirname(newest))) >= int(os.path.basename(os.path.dirname(path)))
    run_id = next(line for line in pipeline_run.output.splitlines() if line.startswith("scarfx: run ")).split()[2]
    code, output = run_cli(["report", run_id, "--pipeline-root", pipeline_run.pipeline_root])
    assert code == 0 and output.strip() == path
    code, output = run_cli(["report", "no-such-run", "--pipeline-root", pipeline_run.pipeline_root])
    assert code == 2 and output.startswith("scarfx: error: no pipeline run 'no-such-run' recorded in ")

    page = open(path, encoding="utf-8").read()
    for section in ("Gate verdict", "Evaluation against the baseline", "Thresholds", "What drives the predictions",
                    "Example explanations", "Training", "Data", "Drift"):
        assert section in page
    # The Transform's numeric encoding reaches the page through the pipeline; the rest from the Trainer.
    assert "<td>numeric encoding (Transform)</td><td>zscore</td>" in page  # pipeline/configs.py's default
    assert "<td>ensemble size</td><td>5 (K-fold members, probabilities averaged)</td>" in page  # ScarfConfig's
    probed = tmp_path / "report.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")

    dom = _chromium(chromium, "--dump-dom", probed.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    probe = json.loads(dom.stdout.split('<pre id="probe">', 1)[1].split("</pre>", 1)[0].replace("&quot;", '"')
                       .replace("&amp;", "&"))
    assert probe["errors"] == []
    assert probe["external"] == []  # self-contained: nothing fetched from the network
    assert probe["images"] >= 2 and probe["broken"] == 0  # attribution chart + training curves
    assert probe["headings"][:3] == ["Evaluation against the baseline", "What drives the predictions", "Training"]

    screenshot = tmp_path / "report.png"
    shot = _chromium(chromium, f"--screenshot={screenshot}", "--window-size=1280,4000", "--enable-logging=stderr",
                     "--v=0", probed.as_uri())
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert "Uncaught" not in shot.stderr
    assert os.path.getsize(screenshot) > 50_000  # a rendered page, not a blank one


def test_drift_section_shows_the_gates_numbers_and_thresholds():
    from scarfx.components import report

    rows = [{"feature": "payment_type", "measure": "L-infinity distance", "value": 0.02, "threshold": 0.15},
            {"feature": "fare", "measure": "Jensen-Shannon divergence", "value": 0.12, "threshold": 0.15}]
    page = report.render_html(title="t", blessed=False, failures=["AUC: below 0.5"], slices=[], thresholds=[],
                              drift_rows=rows)
    assert "NOT BLESSED" in page and "AUC: below 0.5" in page
    flat = page.replace("\n", "")
    assert "<td>fare</td><td>Jensen-Shannon divergence</td><td>0.120</td><td>0.150</td>" in flat
    assert "<td>payment_type</td><td>L-infinity distance</td><td>0.020</td><td>0.150</td>" in flat
    assert page.index(">fare<") < page.index(">payment_type<")  # nearest its threshold first
    assert "mean shift" not in page
    none = report.render_html(title="t", blessed=True, failures=[], slices=[], thresholds=[], drift_rows=None)
    assert "no earlier span passed the drift gate" in none


def test_training_section_shows_the_encodings_and_ensembling_used():
    from scarfx.components import report

    training = {
        "config": {"numeric_bins": 8, "missing_indicators": False, "ensemble_size": 5, "self_training_rounds": 2,
                   "finetune_corruption_rate": 0.3, "finetune_corrupted_rows": 1.0,
                   "finetune_corruption_source": "same_class", "calibration": "temperature"},
        "summary": {"pretrained": True, "pretrain_rows": 900, "pretrain_epochs_run": 4, "finetune_labelled_rows": 300,
                    "ensemble_size": 5, "finetune_monitor": "loss", "finetune_best_val_loss": 0.31234,
                    "pseudo_labelled_rows": [120, 135], "temperature": 1.234},
        "pretrain_history": {}, "finetune_history": {},
    }
    settings = dict(report.model_settings(training, "quantile_normal"))
    assert settings == {
        "numeric encoding (Transform)": "quantile_normal",
        "numeric bins (piecewise-linear)": "8 per feature",
        "missing indicators": "no",
        "ensemble size": "5 (K-fold members, probabilities averaged)",
        "self-training rounds": "2 (pseudo-labelled rows per round: 120, 135)",
        "fine-tuning monitor": "loss (validation log-loss)",
        "fine-tuning augmentation": ("SCARF corruption c=0.3 on 100% of each batch's rows (labels kept), "
                                     "values from the row's own class (labelled rows)"),
        "calibration": "temperature scaling on the members' out-of-fold predictions (T = 1.23)",
        "linear skip (wide-and-deep)": "no",
    }
    page = report.render_html(title="t", blessed=True, failures=[], slices=[], thresholds=[], training=training,
                              numeric_encoding="zscore")
    assert "<td>numeric encoding (Transform)</td><td>zscore</td>" in page
    assert "<td>ensemble size</td><td>5 (K-fold members" in page
    assert "best validation log-loss 0.3123" in page
    # A summary from a config file that set nothing: ScarfConfig's defaults, and no encoding recorded.
    defaults = dict(report.model_settings({"config": {}, "summary": {}}))
    assert defaults["numeric encoding (Transform)"] == "not recorded"
    assert defaults["numeric bins (piecewise-linear)"] == "0 (the encoded value itself)"
    assert defaults["missing indicators"] == "yes"
    assert defaults["ensemble size"] == "5 (K-fold members, probabilities averaged)"
    one = dict(report.model_settings({"config": {"ensemble_size": 1}, "summary": {}}))
    assert one["ensemble size"] == "1 (one model)"
    assert defaults["self-training rounds"] == "0 (off)"
    assert defaults["fine-tuning monitor"] == "loss (validation log-loss)"
    assert defaults["fine-tuning augmentation"] == ("SCARF corruption c=0.6 on 50% of each batch's rows "
                                                           "(labels kept), values from the row's own class "
                                                           "(labelled rows)")
    all_rows = dict(report.model_settings({"config": {"finetune_corruption_source": "all_rows"}}))
    assert all_rows["fine-tuning augmentation"].endswith("values from all rows")
    assert dict(report.model_settings({"config": {"finetune_corruption_rate": 0}}))["fine-tuning augmentation"] == "off"
    assert dict(report.model_settings({"config": {"calibration": "none"}}))["calibration"] == "none"


def test_columns_section_lists_every_columns_role_why_and_serving_name():
    from scarfx.components import report

    roles = [{"column": "y", "role": "label", "why": ""},
             {"column": "trip miles", "role": "numeric", "why": ""},
             {"column": "customer_id", "role": "id", "why": "a distinct value in each of the 300 rows (an ID)"},
             {"column": "started at", "role": "datetime", "why": "ISO-8601 date/time"},
             {"column": "empty", "role": "empty", "why": "every cell is missing"}]
    summary_rows = [{"feature": "customer_id", "kind": "string", "missing": 0.0, "detail": "300 distinct"}]
    page = report.render_html(title="t", blessed=True, failures=[], slices=[], thresholds=[], column_roles=roles,
                              input_names={"trip miles": "trip_miles"}, summary_rows=summary_rows)
    columns = page[page.index("<h3>Columns</h3>"):]
    for text in ["trip miles", "trip_miles", "dropped: ID", "a distinct value in each of the 300 rows",
                 "input (date/time", "dropped: empty", "label"]:
        assert text in columns, text
    # The data summary's role column says the same as the Columns table, not "not used".
    assert "<td>customer_id</td><td>dropped: ID</td>" in page.replace("\n", "")
