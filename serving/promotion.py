"""Promotion and rollback: rewrite TF Serving's model config file, append to an audit log.

- `promote(V)` pins V (`model_version_policy { specific { versions: V } }`) and points
  the `stable` label at it;
- `rollback()` pins the previous good version, without retraining: the version that was
  stable before the current one (from the audit log), else the newest ready version
  older than the one served now;
- `unpin()` goes back to TF Serving's default policy (serve the latest version).

Each writes `<serving-dir>/models.config` atomically (temp file + rename, under a lock)
and appends one JSON line to `<serving-dir>/promotions.jsonl`: who, when, action, from
version, to version. A running server (this one, or TF Serving with
`--model_config_file_poll_wait_seconds`) picks the change up by itself.
"""
from __future__ import annotations

import datetime
import getpass
import json
import os
import socket

from scarfx.serving import layout
from scarfx.serving.modelconfig import (
    ConfigError,
    config_lock,
    config_path,
    find_model,
    policy_from_model_config,
    read_config,
    set_policy,
    write_config_atomic,
)

AUDIT_FILE = "promotions.jsonl"
STABLE = "stable"


class PromotionError(ValueError):
    """A promotion or rollback that cannot be done (nothing is changed)."""


def audit_path(serving_dir: str) -> str:
    return os.path.join(serving_dir, AUDIT_FILE)


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def read_audit(serving_dir: str, model_name: str | None = None) -> list[dict]:
    """The audit log's records, oldest first (unparsable lines are skipped)."""
    out = []
    try:
        with open(audit_path(serving_dir), encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and (model_name is None or rec.get("model") == model_name):
                    out.append(rec)
    except FileNotFoundError:
        pass
    return out


def append_audit(serving_dir: str, record: dict) -> None:
    line = json.dumps(record, sort_keys=False) + "\n"
    fd = os.open(audit_path(serving_dir), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _current_policy(path: str, model_name: str):
    config = read_config(path)
    mc = find_model(config, model_name)
    policy = policy_from_model_config(mc, path) if mc is not None else None
    return config, policy


def _served_version(policy, ready: list[int]) -> int | None:
    """What a server honouring `policy` serves by default (highest wanted version)."""
    if policy is not None and policy.kind == "specific":
        return max(policy.versions)
    return ready[0] if ready else None


def _stable_history(records: list[dict]) -> list[int]:
    """Versions that were stable, in order, with rolled-back ones removed (a stack)."""
    stack: list[int] = []
    for rec in records:
        action, frm, to = rec.get("action"), rec.get("from_version"), rec.get("to_version")
        if action == "promote" and isinstance(to, int):
            if isinstance(frm, int) and (not stack or stack[-1] != frm):
                stack.append(frm)
            stack.append(to)
        elif action == "rollback" and isinstance(to, int):
            if to in stack:
                del stack[len(stack) - stack[::-1].index(to):]
            else:
                stack = [to]
    return stack


def wait_until_available(server_url: str, model_name: str, version: int, timeout: float = 300.0,
                         interval: float = 0.5) -> None:
    """Polls TF Serving's REST status API (this server's or a real TF Serving's) until
    `version` is AVAILABLE; raises PromotionError if it ends (refused) or times out."""
    import time
    import urllib.error
    import urllib.request

    url = f"{server_url.rstrip('/')}/v1/models/{model_name}/versions/{version}"
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                states = json.load(r).get("model_version_status", [])
            for st in states:
                if str(st.get("version")) == str(version):
                    last = st.get("state", "?")
                    if last == "AVAILABLE":
                        return
                    err = st.get("status", {})
                    if last == "END" and err.get("error_code", "OK") != "OK":
                        raise PromotionError(f"version {version} was refused by {server_url}: "
                                             f"{err.get('error_message', '')}")
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (OSError, ValueError) as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            raise PromotionError(f"version {version} not AVAILABLE on {server_url} after {timeout:.0f}s ({last})")
        time.sleep(interval)


def served_by(server_url: str, model_name: str) -> int | None:
    """The highest AVAILABLE version on a running server (TF Serving's status API), or None."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{server_url.rstrip('/')}/v1/models/{model_name}", timeout=10) as r:
            states = json.load(r).get("model_version_status", [])
    except (OSError, ValueError):
        return None
    versions = [int(s["version"]) for s in states if s.get("state") == "AVAILABLE" and str(s.get("version")).isdigit()]
    return max(versions) if versions else None


def _wait_or_restore(path, config, server_url, model_name, version, timeout) -> None:
    try:
        wait_until_available(server_url, model_name, version, timeout)
    except PromotionError:
        if config is not None:
            write_config_atomic(path, config)  # back to where we were
        else:
            os.unlink(path)
        raise


def _apply(serving_dir, model_name, action, to_version, actor, config_file, base_path, reason,
           server_url=None, wait_timeout=300.0):
    path = config_path(serving_dir, config_file)
    with config_lock(path):
        config, policy = _current_policy(path, model_name)
        ready = layout.ready_versions(serving_dir)
        from_version = _served_version(policy, ready)
        if server_url:  # what really answers (a refused latest version does not)
            from_version = served_by(server_url, model_name) or from_version
        if action == "rollback":
            to_version = _rollback_target(serving_dir, model_name, policy, ready, from_version)
        if to_version is not None and to_version not in ready:
            on_disk = layout.version_dirs(serving_dir)
            why = "is incomplete (no saved_model.pb)" if to_version in on_disk else "does not exist"
            raise PromotionError(f"version {to_version} {why} in {serving_dir}")
        base = os.path.abspath(base_path or serving_dir)
        labels = dict(policy.label_map) if policy else {}
        phases = 1
        if to_version is None:
            labels = {}
            versions = None
        else:
            if server_url and from_version is not None and from_version != to_version and from_version in ready:
                # Two phases, as real TF Serving requires (a label may only point at a
                # version that is already AVAILABLE): first serve both, labels unchanged...
                keep = {k: v for k, v in labels.items() if v in (from_version, to_version)}
                phase1 = set_policy(config, model_name, base, (from_version, to_version), keep)
                write_config_atomic(path, phase1)
                phases = 2
            labels = {k: v for k, v in labels.items() if v == to_version}
            labels[STABLE] = to_version
            versions = (to_version,)
        wait = bool(server_url) and to_version is not None
        if wait and phases == 2:
            _wait_or_restore(path, config, server_url, model_name, to_version, wait_timeout)
        # ... then move the labels and drop the old version.
        write_config_atomic(path, set_policy(config, model_name, base, versions, labels))
        if wait and phases == 1:
            _wait_or_restore(path, config, server_url, model_name, to_version, wait_timeout)
        record = {
            "time": _now(),
            "actor": actor or default_actor(),
            "action": action,
            "model": model_name,
            "from_version": from_version,
            "to_version": to_version,
            "config_file": path,
        }
        if phases == 2:
            record["phases"] = 2
        if reason:
            record["reason"] = reason
        append_audit(serving_dir, record)
    return record


def _rollback_target(serving_dir, model_name, policy, ready, current) -> int:
    if current is None:
        raise PromotionError("nothing is served, so there is nothing to roll back from")
    if policy is not None and policy.kind == "specific":
        stack = [v for v in _stable_history(read_audit(serving_dir, model_name)) if v != current]
        while stack:
            candidate = stack.pop()
            if candidate in ready:
                return candidate
    older = [v for v in ready if v < current]
    if not older:
        raise PromotionError(f"no ready version older than {current} to roll back to")
    return older[0]


def promote(serving_dir: str, model_name: str, version: int, actor: str | None = None,
            config_file: str | None = None, base_path: str | None = None, reason: str | None = None,
            server_url: str | None = None, wait_timeout: float = 300.0) -> dict:
    """Pins `version` and labels it stable; returns the audit record.

    With `server_url` (a running server's REST address, this one or TF Serving), the
    change is made in two phases: serve old and new, wait until the new version is
    AVAILABLE there, then move `stable` and drop the old one. If the new version is
    refused or times out, the config file is restored and PromotionError raised.
    """
    if not isinstance(version, int) or isinstance(version, bool) or version <= 0:
        raise PromotionError(f"version must be a positive integer, got {version!r}")
    return _apply(serving_dir, model_name, "promote", version, actor, config_file, base_path, reason,
                  server_url, wait_timeout)


def rollback(serving_dir: str, model_name: str, actor: str | None = None,
             config_file: str | None = None, base_path: str | None = None, reason: str | None = None,
             server_url: str | None = None, wait_timeout: float = 300.0) -> dict:
    """Pins the previous good version (see module doc); returns the audit record.
    `server_url`: as for `promote`."""
    return _apply(serving_dir, model_name, "rollback", None, actor, config_file, base_path, reason,
                  server_url, wait_timeout)


def unpin(serving_dir: str, model_name: str, actor: str | None = None,
          config_file: str | None = None, base_path: str | None = None, reason: str | None = None) -> dict:
    """Back to serving the latest version (TF Serving's default policy)."""
    return _apply(serving_dir, model_name, "unpin", None, actor, config_file, base_path, reason)


def reload_config(serving_dir: str, model_name: str, config, actor: str | None = None,
                  config_file: str | None = None, from_version: int | None = None,
                  reason: str | None = None) -> dict:
    """Writes a whole ModelServerConfig as the config file (TF Serving's
    HandleReloadConfigRequest); returns the audit record.

    The config must be a model_config_list with an entry for `model_name` whose policy is
    valid; ConfigError otherwise, and nothing is written. Other models' entries are kept
    as given (the server then serves them too).
    """
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError("the config must be a model_config_list")
    mc = find_model(config, model_name)
    if mc is None:
        names = [c.name for c in config.model_config_list.config]
        raise ConfigError(f"the config has no entry for model '{model_name}' (it lists {names}); "
                          "this server serves that model only")
    policy = policy_from_model_config(mc, source="reload request")
    path = config_path(serving_dir, config_file)
    with config_lock(path):
        write_config_atomic(path, config)
        record = {
            "time": _now(),
            "actor": actor or default_actor(),
            "action": "reload_config",
            "model": model_name,
            "from_version": from_version,
            "to_version": policy.versions[0] if policy.kind == "specific" else None,
            "config_file": path,
        }
        if reason:
            record["reason"] = reason
        append_audit(serving_dir, record)
    return record


def served_version(serving_dir: str, model_name: str, config_file: str | None = None) -> int | None:
    """The version a server honouring the pin/label config serves (newest ready, unless pinned); None if none."""
    return next((row["version"] for row in list_versions(serving_dir, model_name, config_file)
                 if row["served_by_policy"]), None)


def list_versions(serving_dir: str, model_name: str, config_file: str | None = None) -> list[dict]:
    """Plain rows, newest first: version, on_disk ("ready"|"incomplete"), pinned, labels, latest.

    `policy_error` is set on every row when the config file cannot be read.
    """
    path = config_path(serving_dir, config_file)
    policy_error = None
    try:
        _, policy = _current_policy(path, model_name)
    except ConfigError as e:
        policy, policy_error = None, str(e)
    dirs = layout.version_dirs(serving_dir)
    ready = [v for v in sorted(dirs, reverse=True) if layout.is_ready(dirs[v])]
    pinned = set(policy.pinned) if policy else set()
    labels = policy.label_map if policy else {}
    served = _served_version(policy, ready)
    rows = []
    for v in sorted(set(dirs) | pinned, reverse=True):
        row = {
            "version": v,
            "on_disk": "ready" if v in ready else ("incomplete" if v in dirs else "missing"),
            "pinned": v in pinned,
            "labels": sorted(k for k, lv in labels.items() if lv == v),
            "latest": bool(ready) and v == ready[0],
            "served_by_policy": v == served,
        }
        if policy_error:
            row["policy_error"] = policy_error
        rows.append(row)
    return rows
