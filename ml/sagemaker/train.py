"""``train``: SageMaker's ``docker run <image> train``.

Reads ``input/config/{hyperparameters,inputdataconfig,resourceconfig}.json`` and the channels
``input/data/train`` (required) and ``input/data/validation`` (optional): headerless CSV, label
first, ContentType ``text/csv`` (``text/csv; label_size=1`` and no ContentType too). Writes
``model/xgboost-model`` (first host only). Every failure ends in ``output/failure`` and exit 1
(``ml.sagemaker.failure``); SIGTERM ends with a checkpoint and exit 143.

Checkpoints (``ml.sagemaker.checkpoints``) go to ``checkpoints/`` every
``ML_CHECKPOINT_FREQUENCY`` rounds (default 10; 0 = only on SIGTERM and at the end) and a
restarted job resumes from the newest one written for the same model-shaping hyperparameters and
feature count (others are ignored with a log line); a matching checkpoint with more rounds than
``num_round`` fails the job, since continuing it cannot give the requested model. Several hosts in resourceconfig.json train one model
together (``ml.sagemaker.distributed``): with ``ShardedByS3Key`` each host trains on the files
it received, with ``FullyReplicated`` each uses its 1/N slice of the rows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import xgboost as xgb

from ml.hyperparameters import parse_hyperparameters
from ml.sagemaker.checkpoints import CheckpointCallback, CheckpointStore, StopFlag, fingerprint
from ml.sagemaker.distributed import Worker, broadcast_bytes, cluster, shard_rows
from ml.sagemaker.environment import (
    Channel,
    ConfigError,
    ResourceConfig,
    SageMakerPaths,
    read_hyperparameters,
    read_input_data_config,
    read_resource_config,
)
from ml.sagemaker.failure import JobInterruptedError, run_entry_point
from ml.training import DataError, read_labelled_csv, save_model, train_booster

__all__ = ["CHECKPOINT_FREQUENCY_ENV", "check_content_type", "main", "run_training"]

CHECKPOINT_FREQUENCY_ENV: Final[str] = "ML_CHECKPOINT_FREQUENCY"
DEFAULT_CHECKPOINT_FREQUENCY: Final[int] = 10
TRAIN_CHANNEL: Final[str] = "train"
VALIDATION_CHANNEL: Final[str] = "validation"

Dataset = tuple[np.ndarray, np.ndarray]


def log(message: str) -> None:
    print(message, flush=True)


def check_content_type(channel: Channel) -> None:
    """Only headerless CSV with one label column is read; say so for anything else."""
    if channel.content_type is None:
        return
    media, *params = (part.strip() for part in channel.content_type.split(";"))
    parameters = dict(param.partition("=")[::2] for param in params if param)
    label_size = parameters.get("label_size", "1").strip()
    if media.lower() in ("text/csv", "csv") and label_size == "1":
        return
    raise ConfigError(
        f"channel {channel.name!r} has ContentType {channel.content_type!r}; this algorithm reads headerless "
        "CSV with the label in the first column: set the channel's ContentType to text/csv "
        "(text/csv; label_size=1 is accepted too)"
    )


def _checkpoint_frequency(env: Mapping[str, str]) -> int:
    raw = env.get(CHECKPOINT_FREQUENCY_ENV, "").strip()
    if not raw:
        return DEFAULT_CHECKPOINT_FREQUENCY
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{CHECKPOINT_FREQUENCY_ENV}={raw!r} must be a whole number of rounds >= 0")
    return value


def _read_channel(paths: SageMakerPaths, channel: Channel, worker: Worker, host: str) -> Dataset:
    directory = paths.channel_dir(channel.name)
    if not directory.is_dir():
        raise ConfigError(
            f"channel {channel.name!r} is in inputdataconfig.json but {directory} does not exist: "
            "SageMaker did not download it (check the channel's S3 URI)"
        )
    try:
        features, labels = read_labelled_csv(directory)
    except DataError as error:
        if worker.is_distributed and channel.distribution == "ShardedByS3Key":
            raise DataError(
                f"{error} (host {host}, channel {channel.name!r} is ShardedByS3Key: each host needs at "
                "least one non-empty file, so the S3 prefix needs at least as many files as hosts)"
            ) from error
        raise
    if worker.is_distributed and channel.distribution == "FullyReplicated":
        rows = shard_rows(features.shape[0], worker)
        features, labels = features[rows], labels[rows]
        if features.shape[0] == 0:
            raise DataError(
                f"channel {channel.name!r} has fewer rows than there are training hosts ({worker.world_size})"
            )
    return features, labels


def _resume_point(
    store: CheckpointStore | None, worker: Worker, num_round: int, paths: SageMakerPaths
) -> xgb.Booster | None:
    """The newest matching checkpoint on the first host, shared with every host so they all
    resume from the same model even when only the first one has the files. Every host checks
    the round count itself, so they all fail together instead of some waiting for the others."""
    raw = b""
    if store is not None:
        found = store.latest()
        if found is not None:
            rounds, booster, path = found
            log(f"resuming from checkpoint {path} ({rounds} rounds)")
            raw = bytes(booster.save_raw(raw_format="json"))
    raw = broadcast_bytes(raw, worker)
    if not raw:
        return None
    booster = xgb.Booster()
    booster.load_model(bytearray(raw))
    rounds = booster.num_boosted_rounds()
    if rounds > num_round:
        raise ConfigError(
            f"the checkpoint in {paths.checkpoint_dir} has {rounds} rounds but num_round is {num_round}: "
            "a checkpoint cannot be shortened. Clear the checkpoint location (CheckpointConfig.S3Uri, "
            f"locally {paths.checkpoint_dir}) to train from scratch, or set num_round >= {rounds}"
        )
    return booster


def run_training(paths: SageMakerPaths, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    stop = StopFlag()
    stop.install()
    # Everything a typo can break is checked before any data is read or any host waits.
    resources: ResourceConfig = read_resource_config(paths)
    params: dict[str, Any] = parse_hyperparameters(read_hyperparameters(paths))
    frequency = _checkpoint_frequency(env)
    channels = read_input_data_config(paths)
    if TRAIN_CHANNEL not in channels:
        declared = ", ".join(sorted(channels)) or "none"
        raise ConfigError(
            f"the training job has no {TRAIN_CHANNEL!r} channel (channels: {declared}); add an input "
            f"channel named {TRAIN_CHANNEL!r} with the headerless training CSV (label first)"
        )
    unknown = sorted(set(channels) - {TRAIN_CHANNEL, VALIDATION_CHANNEL})
    if unknown:
        log(f"ignoring channel(s) {', '.join(unknown)}: only 'train' and 'validation' are read")
    for name in (TRAIN_CHANNEL, VALIDATION_CHANNEL):
        if name in channels:
            check_content_type(channels[name])

    log(
        f"host {resources.current_host} ({resources.rank + 1} of {len(resources.hosts)}), "
        f"hyperparameters: {params}"
    )
    with cluster(resources, env=env) as worker:
        train = _read_channel(paths, channels[TRAIN_CHANNEL], worker, resources.current_host)
        validation = (
            _read_channel(paths, channels[VALIDATION_CHANNEL], worker, resources.current_host)
            if VALIDATION_CHANNEL in channels
            else None
        )
        if stop.is_set() and not worker.is_distributed:
            raise JobInterruptedError("stopped by SIGTERM before training started; nothing to checkpoint")
        expected = fingerprint(params, train[0].shape[1])
        store = (
            CheckpointStore(paths.checkpoint_dir, log=log, expected=expected) if worker.is_master else None
        )
        initial = _resume_point(store, worker, int(params["num_round"]), paths)
        checkpoints = CheckpointCallback(
            store, every=frequency, stop=stop, distributed=worker.is_distributed, log=log
        )
        booster = train_booster(
            train, validation, params, callbacks=[checkpoints], initial_model=initial, log=log
        )
    if checkpoints.stopped_after is not None:
        saved = checkpoints.last_saved[1] if checkpoints.last_saved else "on the first host"
        raise JobInterruptedError(
            f"stopped by SIGTERM after {checkpoints.stopped_after} of {params['num_round']} rounds; "
            f"checkpoint {saved} saved, a restarted job resumes from it"
        )
    if worker.is_master:
        path = save_model(booster, paths.model_dir)
        log(f"model saved: {path} ({booster.num_boosted_rounds()} rounds)")
    else:
        log(f"host {resources.current_host} done; the first host writes the model")


def main() -> None:
    run_entry_point(run_training, name="train")
