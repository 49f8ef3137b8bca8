"""The whole pipeline with its data components on Beam's portable runner (`--beam portable`):
PortableRunner → Beam's job service → SDK workers from a worker pool, each its own process.

It runs on the shared e2e sample and must end like the local run of the `pipeline_run`
fixture: the same rows per split, the same inferred schema, blessed and pushed. Only the
Trainer's settings differ (one member, a few epochs): the Trainer does not run on Beam, and
the session run already trains the default ensemble. The services' logs must show one finished job per Beam component and the SDK
workers the pool started, so a run that fell back to the in-process DirectRunner fails.
A second, compile-only test checks that the run's ports do not reach the cache keys.
"""
import glob
import os
import re

import pytest

from tests.conftest import run_cli

# The first test of a session to ask for `pipeline_run` also pays for it; the portable run
# adds one SDK-worker start (a TensorFlow import) per Beam component: ~10 min on 2 busy cores.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

# What the Beam components see (data, drop_columns) is the session run's; one member and a
# few epochs beat the majority-class rate on this sample (as one member does on 1,500-row
# spans in test_retrain.py), so the Evaluator still blesses and the Pusher still pushes.
CONFIG = """\
drop_columns: [tips]
scarf:
  pretrain_epochs: 2
  finetune_epochs: 6
  ensemble_size: 1
"""

# CsvExampleGen, StatisticsGen, Transform, Evaluator (SchemaGen and ExampleValidator
# run in the orchestrator's process, without Beam).
BEAM_COMPONENTS = 4


def _one(pattern):
    (path,) = glob.glob(pattern)
    return path


def _examples_per_split(root):
    import tensorflow_data_validation as tfdv

    counts = {}
    for split in ("train", "eval"):
        stats = tfdv.load_stats_binary(_one(os.path.join(root, "StatisticsGen", "statistics", "*",
                                                         f"Split-{split}", "FeatureStats.pb")))
        counts[split] = stats.datasets[0].num_examples
    return counts


def _schema_text(root):
    with open(_one(os.path.join(root, "SchemaGen", "schema", "*", "schema.pbtxt"))) as f:
        return f.read()


def test_portable_engine_run_matches_the_local_run(pipeline_run, tmp_path):
    root, serving = str(tmp_path / "root"), str(tmp_path / "serving")
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    assert "drop_columns: [tips]\n" in open(pipeline_run.config).read()  # what the data components see
    code, output = run_cli(["run", "--beam", "portable", "--data", pipeline_run.data, "--label", "big_tipper",
                            "--config", str(config), "--pipeline-root", root, "--serving-dir", serving])
    assert code == 0, output
    assert pipeline_run.exit_code == 0, pipeline_run.output
    assert "verdict BLESSED" in output and "verdict BLESSED" in pipeline_run.output
    assert len(os.listdir(serving)) == 1

    assert _examples_per_split(root) == _examples_per_split(pipeline_run.pipeline_root)
    assert _schema_text(root) == _schema_text(pipeline_run.pipeline_root)

    logs = os.path.join(root, "beam_services")
    with open(os.path.join(logs, "beam_job_service.log")) as f:
        job_log = f.read()
    with open(os.path.join(logs, "beam_worker_pool.log")) as f:
        pool_log = f.read()
    assert len(re.findall(r"Completed job in [\d.]+ seconds with state DONE", job_log)) == BEAM_COMPONENTS, job_log
    assert len(re.findall(r"Starting worker with command", pool_log)) == BEAM_COMPONENTS, pool_log


def test_portable_args_are_environment_placeholders_so_cache_keys_ignore_the_ports(tmp_path, monkeypatch):
    """TFX's cache key hashes each executor spec, Beam args included: compiled with two
    different pairs of endpoints in the environment, the specs must be byte-identical, and
    resolving them must give the endpoints of the run."""
    from tfx.dsl.compiler import compiler, placeholder_utils
    from tfx.orchestration.portable import beam_executor_operator, data_types
    from tfx.proto.orchestration import executable_spec_pb2, pipeline_pb2

    from scarfx.pipeline.beam_services import JOB_ENDPOINT_ENV, WORKER_POOL_ENV
    from scarfx.pipeline.configs import config_from_dict
    from scarfx.pipeline.pipeline import create_pipeline

    cfg = config_from_dict({"data": str(tmp_path / "x.csv"), "label": "y", "beam_engine": "portable",
                            "pipeline_root": str(tmp_path / "root")}).resolved()

    def transform_spec(job, pool):
        monkeypatch.setenv(JOB_ENDPOINT_ENV, job)
        monkeypatch.setenv(WORKER_POOL_ENV, pool)
        ir = compiler.Compiler().compile(create_pipeline(cfg, binary=True))
        deployment = pipeline_pb2.IntermediateDeploymentConfig()
        ir.deployment_config.Unpack(deployment)
        spec = executable_spec_pb2.BeamExecutableSpec()
        deployment.executor_specs["Transform"].Unpack(spec)
        return spec

    first, second = transform_spec("localhost:1", "localhost:2"), transform_spec("localhost:3", "localhost:4")
    assert first.SerializeToString(deterministic=True) == second.SerializeToString(deterministic=True)
    # What the executor operator does with them when a component starts.
    context = placeholder_utils.ResolutionContext(exec_info=data_types.ExecutionInfo())
    resolved = [placeholder_utils.resolve_placeholder_expression(arg, context)
                for arg in beam_executor_operator.BeamExecutorOperator(second).beam_pipeline_args]
    assert resolved == ["--runner=PortableRunner", "--job_endpoint=localhost:3",
                        "--environment_type=EXTERNAL", "--environment_config=localhost:4"]
