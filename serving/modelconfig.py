"""TF Serving's model config file (text-format `ModelServerConfig`), read and written.

The same file drives this server and a real TF Serving started with
`--model_config_file=<serving-dir>/models.config --model_config_file_poll_wait_seconds=N`:

    model_config_list {
      config {
        name: "scarfx"
        base_path: "/abs/serving_model"
        model_platform: "tensorflow"
        model_version_policy { specific { versions: 1700000000 } }
        version_labels { key: "stable" value: 1700000000 }
      }
    }

No policy means TF Serving's default, `latest { num_versions: 1 }`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import tempfile

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

CONFIG_FILE = "models.config"


class ConfigError(ValueError):
    """The model config file cannot be parsed or does not fit this model."""


@dataclasses.dataclass(frozen=True)
class Policy:
    """Which on-disk versions to serve, and the version labels."""

    kind: str = "latest"  # "latest" | "specific" | "all"
    num_versions: int = 1  # for "latest"
    versions: tuple[int, ...] = ()  # for "specific"
    labels: tuple[tuple[str, int], ...] = ()
    source: str = "default"  # where it came from, for status pages

    @property
    def label_map(self) -> dict[str, int]:
        return dict(self.labels)

    @property
    def pinned(self) -> tuple[int, ...]:
        return self.versions if self.kind == "specific" else ()

    def wanted(self, candidates: list[int]) -> list[int]:
        """The versions to serve among `candidates` (ready, not refused), highest first."""
        ordered = sorted(set(candidates), reverse=True)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[: max(1, self.num_versions)]

    def describe(self) -> str:
        if self.kind == "specific":
            return "specific " + ",".join(str(v) for v in self.versions)
        if self.kind == "all":
            return "all"
        return f"latest {self.num_versions}"


def config_path(serving_dir: str, config_file: str | None = None) -> str:
    return config_file or os.path.join(serving_dir, CONFIG_FILE)


def parse_config(text: str) -> model_server_config_pb2.ModelServerConfig:
    try:
        return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as e:
        raise ConfigError(f"not a text-format ModelServerConfig: {e}") from None


def read_config(path: str) -> model_server_config_pb2.ModelServerConfig | None:
    """The parsed file, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    return parse_config(text)


def find_model(config, model_name: str):
    if config is None or config.WhichOneof("config") != "model_config_list":
        return None
    for mc in config.model_config_list.config:
        if mc.name == model_name:
            return mc
    return None


def policy_from_model_config(mc, source: str = "") -> Policy:
    labels = tuple(sorted((str(k), int(v)) for k, v in mc.version_labels.items()))
    which = mc.model_version_policy.WhichOneof("policy_choice")
    if which == "specific":
        versions = tuple(sorted({int(v) for v in mc.model_version_policy.specific.versions}, reverse=True))
        if not versions:
            raise ConfigError(f"model '{mc.name}': specific policy lists no versions")
        return Policy("specific", versions=versions, labels=labels, source=source)
    if which == "all":
        return Policy("all", labels=labels, source=source)
    n = int(mc.model_version_policy.latest.num_versions) if which == "latest" else 1
    return Policy("latest", num_versions=max(1, n), labels=labels, source=source)


def read_policy(path: str, model_name: str) -> Policy:
    """The policy for `model_name` in the config file at `path` (default policy if absent)."""
    config = read_config(path)
    if config is None:
        return Policy(source="default (no config file)")
    mc = find_model(config, model_name)
    if mc is None:
        raise ConfigError(f"{path} has no config for model '{model_name}'")
    return policy_from_model_config(mc, source=path)


def set_policy(config, model_name: str, base_path: str, versions: tuple[int, ...] | None,
               labels: dict[str, int]) -> model_server_config_pb2.ModelServerConfig:
    """A copy of `config` with `model_name` pinned to `versions` (None: latest) and `labels`."""
    new = model_server_config_pb2.ModelServerConfig()
    if config is not None:
        new.CopyFrom(config)
    if new.WhichOneof("config") == "custom_model_config":
        raise ConfigError("the config file uses custom_model_config; scarfx only edits model_config_list")
    mc = find_model(new, model_name)
    if mc is None:
        mc = new.model_config_list.config.add()
        mc.name = model_name
        mc.base_path = base_path
        mc.model_platform = "tensorflow"
    mc.ClearField("model_version_policy")
    if versions:
        mc.model_version_policy.specific.versions.extend(sorted(set(versions)))
    else:
        mc.model_version_policy.latest.num_versions = 1
    mc.ClearField("version_labels")
    for k, v in labels.items():
        mc.version_labels[k] = int(v)
    return new


def write_config_atomic(path: str, config) -> None:
    """Writes the file via a temporary file in the same directory + fsync + rename."""
    text = text_format.MessageToString(config)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".models.config.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def config_lock(path: str):
    """Serializes read-modify-write of the config file between processes."""
    lock_path = os.path.join(os.path.dirname(os.path.abspath(path)), ".models.config.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
