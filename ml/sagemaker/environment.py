"""Where SageMaker puts things inside the container, and the JSON files it writes there.

Every path derives from ``SAGEMAKER_BASE_DIR`` (default ``/opt/ml``), as in AWS's training
toolkit, so the same entry points run in SageMaker, in the local runner (a temp dir) and in
tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = [
    "BASE_DIR_ENV",
    "DEFAULT_BASE_DIR",
    "Channel",
    "ConfigError",
    "ResourceConfig",
    "SageMakerPaths",
    "int_from_env",
    "read_hyperparameters",
    "read_input_data_config",
    "read_resource_config",
]

BASE_DIR_ENV: Final[str] = "SAGEMAKER_BASE_DIR"
DEFAULT_BASE_DIR: Final[str] = "/opt/ml"


class ConfigError(ValueError):
    """A file SageMaker should have written is missing or malformed, or the job asks for
    something this container does not do. The message names the file and the fix."""


@dataclass(frozen=True)
class SageMakerPaths:
    """The container's directory layout under one base directory."""

    base: Path

    @classmethod
    def from_env(cls, environ: os._Environ[str] | dict[str, str] | None = None) -> SageMakerPaths:
        env = os.environ if environ is None else environ
        return cls(Path(env.get(BASE_DIR_ENV) or DEFAULT_BASE_DIR))

    @property
    def input_config_dir(self) -> Path:
        return self.base / "input" / "config"

    @property
    def hyperparameters_file(self) -> Path:
        return self.input_config_dir / "hyperparameters.json"

    @property
    def input_data_config_file(self) -> Path:
        return self.input_config_dir / "inputdataconfig.json"

    @property
    def resource_config_file(self) -> Path:
        return self.input_config_dir / "resourceconfig.json"

    @property
    def input_data_dir(self) -> Path:
        return self.base / "input" / "data"

    def channel_dir(self, channel: str) -> Path:
        return self.input_data_dir / channel

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    @property
    def checkpoint_dir(self) -> Path:
        # CheckpointConfig.LocalPath's default: SageMaker syncs this directory with S3.
        return self.base / "checkpoints"

    def processing_dir(self, name: str) -> Path:
        return self.base / "processing" / name


@dataclass(frozen=True)
class Channel:
    """One entry of inputdataconfig.json."""

    name: str
    content_type: str | None
    distribution: str  # "FullyReplicated" or "ShardedByS3Key"
    input_mode: str


@dataclass(frozen=True)
class ResourceConfig:
    """resourceconfig.json: which host this is and who the others are."""

    current_host: str
    hosts: tuple[str, ...]

    @property
    def sorted_hosts(self) -> tuple[str, ...]:
        return tuple(sorted(self.hosts))

    @property
    def rank(self) -> int:
        return self.sorted_hosts.index(self.current_host)

    @property
    def is_master(self) -> bool:
        # Like AWS's XGBoost container: the alphabetically first host runs the tracker and
        # writes the model, so every host agrees without talking.
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return len(self.hosts) > 1


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {what} {path}: {error.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{what} {path} is not valid JSON (line {error.lineno} column {error.colno}: {error.msg})"
        ) from None


def read_hyperparameters(paths: SageMakerPaths) -> dict[str, Any]:
    """hyperparameters.json as written by SageMaker (string values); absent means none given."""
    if not paths.hyperparameters_file.exists():
        return {}
    document = _read_json(paths.hyperparameters_file, "hyperparameters file")
    if not isinstance(document, dict):
        raise ConfigError(
            f"hyperparameters file {paths.hyperparameters_file} must hold a JSON object of name -> value, "
            f"not a {type(document).__name__}"
        )
    return document


def read_input_data_config(paths: SageMakerPaths) -> dict[str, Channel]:
    """inputdataconfig.json; when it is absent (a hand-made base dir), every directory under
    input/data is a channel with no declared content type."""
    file = paths.input_data_config_file
    if not file.exists():
        if not paths.input_data_dir.is_dir():
            return {}
        return {
            d.name: Channel(d.name, None, "FullyReplicated", "File")
            for d in sorted(paths.input_data_dir.iterdir())
            if d.is_dir()
        }
    document = _read_json(file, "input data config")
    if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
        raise ConfigError(
            f"input data config {file} must be a JSON object of channel name -> "
            '{"ContentType": ..., "S3DistributionType": ...}'
        )
    channels: dict[str, Channel] = {}
    for name, entry in document.items():
        distribution = entry.get("S3DistributionType", "FullyReplicated")
        if distribution not in ("FullyReplicated", "ShardedByS3Key"):
            raise ConfigError(
                f"channel {name!r} in {file} has S3DistributionType={distribution!r}; "
                "expected FullyReplicated or ShardedByS3Key"
            )
        input_mode = entry.get("TrainingInputMode", "File")
        if input_mode not in ("File", "FastFile"):
            raise ConfigError(
                f"channel {name!r} uses TrainingInputMode={input_mode!r}; this container reads files, "
                "so set the channel's InputMode to File (or FastFile)"
            )
        content_type = entry.get("ContentType")
        channels[name] = Channel(
            name=name,
            content_type=str(content_type) if content_type is not None else None,
            distribution=str(distribution),
            input_mode=str(input_mode),
        )
    return channels


def read_resource_config(paths: SageMakerPaths) -> ResourceConfig:
    """resourceconfig.json; absent means one host (``algo-1``), as for a local run."""
    file = paths.resource_config_file
    if not file.exists():
        return ResourceConfig(current_host="algo-1", hosts=("algo-1",))
    document = _read_json(file, "resource config")
    if not isinstance(document, dict):
        raise ConfigError(f"resource config {file} must be a JSON object with current_host and hosts")
    current = document.get("current_host")
    hosts = document.get("hosts")
    if not isinstance(current, str) or not current:
        raise ConfigError(f'resource config {file} has no "current_host" string')
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise ConfigError(f'resource config {file} needs "hosts": a non-empty list of host names')
    if len(set(hosts)) != len(hosts):
        raise ConfigError(f"resource config {file} lists a host twice: {hosts}")
    if current not in hosts:
        raise ConfigError(f"resource config {file}: current_host {current!r} is not among hosts {hosts}")
    return ResourceConfig(current_host=current, hosts=tuple(hosts))


def int_from_env(
    env: Mapping[str, str],
    name: str,
    default: int,
    minimum: int,
    maximum: int,
    *,
    error: type[Exception] = ValueError,
) -> int:
    """An integer setting from the environment, `default` when unset; `error` names the variable,
    the bad value and the allowed range."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise error(f"{name}={raw!r} is not an integer (allowed: {minimum}..{maximum})") from None
    if not minimum <= value <= maximum:
        raise error(f"{name}={value} is out of range (allowed: {minimum}..{maximum})")
    return value
