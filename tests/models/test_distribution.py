"""tf.distribute: strategies from the config, the chief rule, and a real 2-worker run.

The 2-worker test starts two processes with TF_CONFIG on loopback ports, as Vertex AI
Training or a Kubeflow TFJob would start workers, and compares their training with a
single-process run on the same rows: the global batch is split across the two workers'
replicas and InfoNCE still sees the global batch's negatives, so the loss curves agree
within the noise of the corruption (whose keys differ per replica).
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from scarfx.models.distribution import is_chief, make_strategy

WORKER_TIMEOUT_S = 300
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_chief_is_the_chief_task_or_worker_zero_without_one():
    worker = lambda kind, index, cluster: json.dumps(  # noqa: E731
        {"cluster": {k: ["localhost:1"] for k in cluster}, "task": {"type": kind, "index": index}})
    assert is_chief("")
    assert is_chief(worker("worker", 0, ["worker"]))
    assert not is_chief(worker("worker", 1, ["worker"]))
    assert is_chief(worker("chief", 0, ["chief", "worker"]))
    assert not is_chief(worker("worker", 0, ["chief", "worker"]))


def test_multi_worker_without_tf_config_and_unknown_distributions_are_refused(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        make_strategy("multi_worker")
    with pytest.raises(ValueError, match="distribution must be one of"):
        make_strategy("parameter_server")


# ---- the worker process (python -m tests.models.test_distribution OUT DISTRIBUTION)


def _table(n=384, seed=0):
    from scarfx.models.tabular_data import FeatureLayout, TabularData

    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, 3)).astype(np.float32)
    categorical = rng.integers(0, 4, size=(n, 1)).astype(np.int64)
    labels = ((numeric[:, 0] + 0.5 * categorical[:, 0] + 0.3 * rng.normal(size=n)) > 0.7).astype(np.int64)
    return TabularData(numeric, categorical, labels), FeatureLayout(("a", "b", "c"), ("d",), (4,))


def _train(out: str, distribution: str) -> None:
    from scarfx.models.scarf import train_scarf_classifier
    from scarfx.models.scarf_config import ScarfConfig

    data, layout = _table()
    config = ScarfConfig(encoder_depth=2, encoder_width=32, head_depth=1, head_width=32, batch_size=64,
                         pretrain_epochs=3, finetune_epochs=3, patience=10, min_steps_per_epoch=1, ensemble_size=1,
                         distribution=distribution)
    result = train_scarf_classifier(data, layout, 2, config)
    probabilities = result.classifier.predict(data.inputs(), verbose=0)
    if is_chief():
        with open(out, "w") as f:
            json.dump({"pretrain": result.pretrain_history, "finetune": result.finetune_history,
                       "replicas": result.summary["replicas"], "probabilities": probabilities[:, 1].tolist()}, f)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _worker(out, distribution, tf_config=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, "-m", "tests.models.test_distribution", str(out), distribution], env=env,
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(process):
    output, _ = process.communicate(timeout=WORKER_TIMEOUT_S)
    assert process.returncode == 0, output[-4000:]


@pytest.mark.e2e
def test_two_workers_train_like_one(tmp_path):
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    workers = [_worker(tmp_path / "multi.json", "multi_worker", {"cluster": cluster, "task": {"type": "worker",
                                                                                              "index": i}})
               for i in range(2)]
    try:
        for process in workers:
            _wait(process)
    finally:
        for process in workers:
            process.kill()
    _wait(_worker(tmp_path / "single.json", "none"))
    multi, single = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("multi", "single"))
    assert (multi["replicas"], single["replicas"]) == (2, 1)
    for stage, key in (("pretrain", "loss"), ("pretrain", "val_loss"), ("finetune", "loss"), ("finetune", "val_loss")):
        a, b = np.array(multi[stage][key]), np.array(single[stage][key])
        assert len(a) == len(b) == 3, (stage, key)
        np.testing.assert_allclose(a, b, rtol=0.05, err_msg=f"{stage} {key}")
    assert single["pretrain"]["val_loss"][-1] < single["pretrain"]["val_loss"][0]  # the curves compared do move
    assert np.mean(np.abs(np.array(multi["probabilities"]) - np.array(single["probabilities"]))) < 0.05


if __name__ == "__main__":
    _train(sys.argv[1], sys.argv[2])
