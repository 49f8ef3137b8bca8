"""promote / rollback / unpin through TF Serving's model config file, the audit log, the CLI."""
import argparse
import json
import logging
import os
import time

import pytest

from scarfx.serving import promotion
from scarfx.serving.modelconfig import parse_config, read_policy
from tests.serving.helpers import MODEL, push, push_corrupt

pytestmark = pytest.mark.timeout(120)

PREDICT = f"/v1/models/{MODEL}:predict"


def fake_versions(serving_dir, *versions, incomplete=()):
    """Version dirs with a placeholder saved_model.pb: enough for offline promotion logic."""
    for v in versions:
        d = os.path.join(serving_dir, str(v))
        os.makedirs(d)
        if v not in incomplete:
            open(os.path.join(d, "saved_model.pb"), "wb").close()


def config_text(serving_dir):
    with open(os.path.join(serving_dir, "models.config")) as f:
        return f.read()


def served(client):
    r = client.post(PREDICT, json={"instances": [{}]})
    assert r.status_code == 200, r.text
    return int(r.headers["X-Model-Version"])


def test_promote_writes_tf_serving_config_and_audit(serving_dir):
    fake_versions(serving_dir, 100, 200, 300)
    rec = promotion.promote(serving_dir, MODEL, 200, actor="alice", reason="best AUC")
    assert (rec["action"], rec["from_version"], rec["to_version"], rec["actor"]) == ("promote", 300, 200, "alice")

    cfg = parse_config(config_text(serving_dir))  # TF Serving's own proto parses it
    (mc,) = cfg.model_config_list.config
    assert mc.name == MODEL and mc.base_path == os.path.abspath(serving_dir) and mc.model_platform == "tensorflow"
    assert list(mc.model_version_policy.specific.versions) == [200]
    assert dict(mc.version_labels) == {"stable": 200}
    assert read_policy(os.path.join(serving_dir, "models.config"), MODEL).pinned == (200,)

    (audit,) = promotion.read_audit(serving_dir)
    assert audit == rec and audit["reason"] == "best AUC"
    assert time.time() - time.mktime(time.strptime(audit["time"][:19], "%Y-%m-%dT%H:%M:%S")) < 86400 * 2
    assert not [f for f in os.listdir(serving_dir) if f.startswith(".models.config.") and not f.endswith(".lock")]

    rows = {r["version"]: r for r in promotion.list_versions(serving_dir, MODEL)}
    assert rows[200]["pinned"] and rows[200]["labels"] == ["stable"] and rows[200]["served_by_policy"]
    assert rows[300]["latest"] and not rows[300]["pinned"] and rows[300]["on_disk"] == "ready"


def test_promote_refuses_missing_or_incomplete_versions(serving_dir):
    fake_versions(serving_dir, 1, 2, incomplete=(2,))
    with pytest.raises(promotion.PromotionError, match="does not exist"):
        promotion.promote(serving_dir, MODEL, 9)
    with pytest.raises(promotion.PromotionError, match="incomplete"):
        promotion.promote(serving_dir, MODEL, 2)
    assert not os.path.exists(os.path.join(serving_dir, "models.config"))
    assert promotion.read_audit(serving_dir) == []


def test_rollback_history(serving_dir):
    fake_versions(serving_dir, 1, 2, 3)
    # Unpinned (latest = 3): rollback pins the newest older version.
    assert promotion.rollback(serving_dir, MODEL, actor="bob")["to_version"] == 2
    assert promotion.rollback(serving_dir, MODEL)["to_version"] == 1
    with pytest.raises(promotion.PromotionError, match="no ready version older than 1"):
        promotion.rollback(serving_dir, MODEL)
    promotion.promote(serving_dir, MODEL, 3)
    rec = promotion.rollback(serving_dir, MODEL)
    assert (rec["from_version"], rec["to_version"]) == (3, 1)  # back to what was stable before 3
    # promote 2, promote 3, rollback -> 2 (the audit log is the history, not version order)
    promotion.promote(serving_dir, MODEL, 2)
    promotion.promote(serving_dir, MODEL, 3)
    assert promotion.rollback(serving_dir, MODEL)["to_version"] == 2
    assert promotion.rollback(serving_dir, MODEL)["to_version"] == 1
    rec = promotion.unpin(serving_dir, MODEL)
    assert (rec["from_version"], rec["to_version"]) == (1, None)
    assert read_policy(os.path.join(serving_dir, "models.config"), MODEL).kind == "latest"
    actions = [r["action"] for r in promotion.read_audit(serving_dir)]
    assert actions == ["rollback", "rollback", "promote", "rollback", "promote", "promote", "rollback",
                       "rollback", "unpin"]
    assert all(r["actor"] for r in promotion.read_audit(serving_dir))


def test_promotion_keeps_other_models_in_the_config(serving_dir):
    fake_versions(serving_dir, 1)
    with open(os.path.join(serving_dir, "models.config"), "w") as f:
        f.write('model_config_list { config { name: "other" base_path: "/m/other" model_platform: "tensorflow" } }')
    promotion.promote(serving_dir, MODEL, 1)
    names = [c.name for c in parse_config(config_text(serving_dir)).model_config_list.config]
    assert names == ["other", MODEL]


def test_server_follows_promote_rollback_unpin(models, serving_dir, start_server, client_for):
    for v in (1, 2, 3):
        push(models, serving_dir, v, variant=v)
    server = start_server(serving_dir)
    client = client_for(server)
    assert served(client) == 3

    promotion.promote(serving_dir, MODEL, 2, actor="ci")
    assert server.wait_for_version(2, 20), server.status_dict()
    assert served(client) == 2
    r = client.post(f"/v1/models/{MODEL}/labels/stable:predict", json={"instances": [{}]})
    assert r.headers["X-Model-Version"] == "2"
    st = client.get(f"/v1/models/{MODEL}/labels/stable").json()["model_version_status"]
    assert st == [{"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]

    push(models, serving_dir, 4, variant=4)  # pinned: a new push is not served
    ticks = server.manager.ticks
    assert server.manager.wait_for(lambda: server.manager.ticks >= ticks + 5, 10)
    assert served(client) == 2

    promotion.rollback(serving_dir, MODEL)  # stable before 2 was 3 (served by the latest policy)
    assert server.wait_for_version(3, 20)
    promotion.unpin(serving_dir, MODEL)
    assert server.wait_for_version(4, 20)
    assert [r["action"] for r in promotion.read_audit(serving_dir)] == ["promote", "rollback", "unpin"]


def test_two_phase_promotion_against_a_server(models, serving_dir, start_server, client_for):
    """With --server, the config never labels a version that is not AVAILABLE yet (TF Serving's rule)."""
    push(models, serving_dir, 1, variant=1)
    push(models, serving_dir, 2, variant=2)
    push_corrupt(serving_dir, 3, models.get(1), "garbage")
    server = start_server(serving_dir)
    client = client_for(server)
    assert served(client) == 2
    rec = promotion.promote(serving_dir, MODEL, 1, actor="ops", server_url=server.url, wait_timeout=30)
    assert rec["phases"] == 2 and (rec["from_version"], rec["to_version"]) == (2, 1)
    (mc,) = parse_config(config_text(serving_dir)).model_config_list.config
    assert list(mc.model_version_policy.specific.versions) == [1] and dict(mc.version_labels) == {"stable": 1}
    assert server.wait_for_version(1, 10)

    before = config_text(serving_dir)
    with pytest.raises(promotion.PromotionError, match="refused"):
        promotion.promote(serving_dir, MODEL, 3, server_url=server.url, wait_timeout=30)
    assert config_text(serving_dir) == before  # restored
    assert [r["to_version"] for r in promotion.read_audit(serving_dir)] == [1]
    assert server.manager.wait_for(lambda: set(server.manager.routing.handles) == {1}, 10)
    assert served(client) == 1


def test_pin_to_a_refused_version_keeps_serving(models, serving_dir, start_server, client_for):
    push(models, serving_dir, 1, variant=1)
    push_corrupt(serving_dir, 2, models.get(1), "garbage")
    server = start_server(serving_dir)
    client = client_for(server)
    promotion.promote(serving_dir, MODEL, 2)
    assert server.manager.wait_for(lambda: "2 refused" in server.manager.policy_warning, 10)
    assert served(client) == 1
    status = client.get("/scarfx/status").json()
    assert status["policy"] == "specific 2" and "could not load" in status["policy_warning"]


def test_bad_config_file_keeps_the_previous_policy(models, serving_dir, start_server, client_for):
    push(models, serving_dir, 1, variant=1)
    push(models, serving_dir, 2, variant=2)
    server = start_server(serving_dir)
    client = client_for(server)
    path = os.path.join(serving_dir, "models.config")
    with open(path, "w") as f:
        f.write("model_config_list { config { name: ")  # truncated
    assert server.manager.wait_for(lambda: server.manager.config_error != "", 10)
    assert served(client) == 2
    assert "not a text-format ModelServerConfig" in client.get("/scarfx/status").json()["config_error"]
    promotion_path_ok = False
    with pytest.raises(Exception):
        promotion.promote(serving_dir, MODEL, 1)  # refuses to overwrite a file it cannot read
        promotion_path_ok = True
    assert not promotion_path_ok
    with open(path, "w") as f:
        f.write(f'model_config_list {{ config {{ name: "{MODEL}" base_path: "{serving_dir}" '
                'model_platform: "tensorflow" model_version_policy { specific { versions: 1 versions: 2 } } '
                'version_labels { key: "canary" value: 2 } version_labels { key: "stable" value: 1 } } }')
    assert server.manager.wait_for(lambda: len(server.manager.routing.handles) == 2, 20), server.status_dict()
    assert server.manager.config_error == ""
    assert served(client) == 2  # like TF Serving: unversioned requests go to the highest version
    for label, v in (("stable", 1), ("canary", 2)):
        r = client.post(f"/v1/models/{MODEL}/labels/{label}:predict", json={"instances": [{}]})
        assert r.headers["X-Model-Version"] == str(v)
    r = client.post(f"/v1/models/{MODEL}/versions/1:predict", json={"instances": [{}]})
    assert r.headers["X-Model-Version"] == "1"


def test_admin_endpoints_with_token(models, serving_dir, start_server, client_for, caplog):
    token = "s3cret-token-value"
    push(models, serving_dir, 1, variant=1)
    push(models, serving_dir, 2, variant=2)
    caplog.set_level(logging.DEBUG)
    server = start_server(serving_dir, admin_token=token, access_log=True)
    client = client_for(server)
    base = f"/admin/v1/models/{MODEL}"
    assert client.get(f"{base}/versions").status_code == 401
    assert client.post(f"{base}:promote", json={"version": 1},
                       headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": f"Bearer {token}"}
    rows = client.get(f"{base}/versions", headers=auth).json()["versions"]
    assert [r["version"] for r in rows] == [2, 1]
    r = client.post(f"{base}:promote", json={"version": 1, "actor": "carol"}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["to_version"] == 1 and r.json()["actor"].startswith("carol")
    assert server.wait_for_version(1, 10)
    assert client.post(f"{base}:promote", json={"version": 77}, headers=auth).status_code == 409
    assert client.post(f"{base}:promote", json={"version": "../1"}, headers=auth).status_code == 400
    assert client.post(f"{base}:unpin", headers=auth).status_code == 200
    assert server.wait_for_version(2, 10)
    assert token not in caplog.text
    assert token not in repr(server) and token not in json.dumps(server.status_dict())


def test_admin_disabled_off_loopback_without_token(serving_dir):
    from starlette.testclient import TestClient

    from scarfx.serving.server import ModelServer

    server = ModelServer(serving_dir, MODEL, host="0.0.0.0", port=0)  # never started: nothing is bound
    with TestClient(server.app) as c:
        r = c.get(f"/admin/v1/models/{MODEL}/versions")
    assert r.status_code == 403 and "no admin token" in r.json()["error"]


def _run_models(argv, pushed_versions=None):
    from scarfx.serving.cli import add_models_arguments, run_models

    parser = argparse.ArgumentParser()
    add_models_arguments(parser)
    return run_models(parser.parse_args(argv), pushed_versions)


def test_cli_list_reads_only_a_store_that_pushed_into_the_serving_dir(serving_dir, tmp_path, capsys):
    from types import SimpleNamespace

    fake_versions(serving_dir, 10, 20)
    root = tmp_path / "root"
    root.mkdir()
    (root / "metadata.sqlite").write_bytes(b"")
    store = str(root / "metadata.sqlite")
    read = []

    def pushed_elsewhere(path, serving):  # a store whose pipeline pushes into another dir
        read.append((path, serving))
        return {}

    argv = ["--serving-dir", serving_dir, "list", "--pipeline-root", str(root)]
    assert _run_models([*argv, "--json"], pushed_elsewhere) == 0
    captured = capsys.readouterr()
    assert read == [(store, serving_dir)]
    assert all("blessed" not in row for row in json.loads(captured.out))
    assert f"ML Metadata at {store} records no push into {serving_dir}" in captured.err

    record = SimpleNamespace(run_id="run-1", blessed=True, metrics={"sparse_categorical_accuracy": 0.75},
                             baseline_metrics={})
    assert _run_models(argv, lambda path, serving: {20: record}) == 0
    captured = capsys.readouterr()
    assert "acc=0.7500" in captured.out and captured.err == ""
    assert f"scarfx: run, blessing and eval metrics from ML Metadata at {store}" in captured.out

    # No store under the default ./tfx_root (tests run in an empty directory): nothing read, nothing said.
    read.clear()
    assert _run_models(["--serving-dir", serving_dir, "list"], pushed_elsewhere) == 0
    assert read == [] and capsys.readouterr().err == ""


def test_cli(serving_dir, capsys):
    fake_versions(serving_dir, 10, 20)
    common = ["--serving-dir", serving_dir]
    assert _run_models([*common, "list"]) == 0
    out = capsys.readouterr().out
    assert "VERSION" in out and "20" in out
    assert _run_models([*common, "promote", "10", "--actor", "dave"]) == 0
    assert "promote scarfx: 20 -> 10 (by dave" in capsys.readouterr().out
    assert _run_models([*common, "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[1] == {"version": 10, "on_disk": "ready", "pinned": True, "labels": ["stable"], "latest": False,
                       "served_by_policy": True}
    assert _run_models([*common, "rollback"]) == 0  # back to 20, stable before the promotion
    assert "rollback scarfx: 10 -> 20" in capsys.readouterr().out
    assert _run_models([*common, "promote", "99"]) == 2
    assert "version 99 does not exist" in capsys.readouterr().err
    assert _run_models([*common, "unpin"]) == 0
    assert _run_models(["--serving-dir", os.path.join(serving_dir, "nope"), "list"]) == 2
    with pytest.raises(SystemExit):
        _run_models([*common, "promote", "../1"])
    audit = promotion.read_audit(serving_dir)
    assert [(r["action"], r["actor"]) for r in audit][:1] == [("promote", "dave")]
    assert "@" in audit[-1]["actor"]  # default actor: user@host
