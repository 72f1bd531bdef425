"""Checkpoints for managed spot training, and the SIGTERM handling that makes them useful.

SageMaker syncs ``$SAGEMAKER_BASE_DIR/checkpoints`` (CheckpointConfig.LocalPath's default) to
S3 while the job runs and restores it when an interrupted spot job restarts. Files:

``xgboost-checkpoint.<rounds>``       the model after ``<rounds>`` boosting rounds (XGBoost JSON)
``xgboost-checkpoint.<rounds>.json``  what it was trained for: a hash of the hyperparameters that
                                      shape the model and the feature count (:func:`fingerprint`)

A restarted job resumes only from a checkpoint whose fingerprint equals its own, so a checkpoint
location reused with other hyperparameters or other data is ignored (with a log line) instead of
being continued as if it were the same model.

A checkpoint is written to a temporary ``*.sagemaker-ignore`` file (SageMaker does not upload
those), flushed to disk and renamed over its final name, so a kill mid-write never leaves a
truncated "latest" checkpoint; on resume unreadable checkpoints are skipped anyway. Only the
newest ``keep`` are kept, and a file SageMaker is still uploading (``<name>.sagemaker-uploading``
without ``<name>.sagemaker-uploaded``) is not deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, Final

import numpy as np
import xgboost as xgb

__all__ = [
    "CHECKPOINT_PREFIX",
    "CheckpointCallback",
    "CheckpointStore",
    "StopFlag",
    "fingerprint",
]

CHECKPOINT_PREFIX: Final[str] = "xgboost-checkpoint"
_TEMP_SUFFIX: Final[str] = ".sagemaker-ignore"
_UPLOADING: Final[str] = ".sagemaker-uploading"
_UPLOADED: Final[str] = ".sagemaker-uploaded"
_NAME: Final[re.Pattern[str]] = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}\.(\d+)$")

Log = Callable[[str], None]

# Parsed hyperparameters that do not change what a round computes: how many rounds to run,
# when to stop, how much XGBoost logs and how many threads it uses.
_NOT_MODEL_SHAPING: Final[frozenset[str]] = frozenset(
    {"num_round", "early_stopping_rounds", "verbosity", "nthread"}
)
_META_SUFFIX: Final[str] = ".json"


def fingerprint(params: Mapping[str, Any], n_features: int) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: a SHA-256 of the parsed hyperparameters
    (``ml.hyperparameters.parse_hyperparameters``) except those that only steer the loop, and
    the number of features."""
    shaping = {name: value for name, value in params.items() if name not in _NOT_MODEL_SHAPING}
    canonical = json.dumps(shaping, sort_keys=True, separators=(",", ":"), default=str)
    return {
        "hyperparameters_sha256": hashlib.sha256(canonical.encode()).hexdigest(),
        "n_features": int(n_features),
    }


class CheckpointStore:
    """The checkpoint directory: atomic saves, newest-first loading, pruning.

    With ``expected`` (a :func:`fingerprint`), every save writes it next to the checkpoint and
    :meth:`latest` skips checkpoints whose stored fingerprint is missing or different."""

    def __init__(
        self,
        directory: Path,
        *,
        keep: int = 3,
        log: Log = print,
        expected: Mapping[str, Any] | None = None,
    ) -> None:
        self.directory = directory
        self.keep = keep
        self._log = log
        self._expected = dict(expected) if expected is not None else None

    def path_for(self, rounds: int) -> Path:
        return self.directory / f"{CHECKPOINT_PREFIX}.{rounds}"

    @staticmethod
    def meta_path(checkpoint: Path) -> Path:
        return checkpoint.with_name(checkpoint.name + _META_SUFFIX)

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(rounds, path) of every checkpoint file, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _NAME.match(path.name)
            if match and path.is_file():
                found.append((int(match.group(1)), path))
        return sorted(found)

    def save(self, booster: xgb.Booster, rounds: int) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.path_for(rounds)
        if self._expected is not None:
            # The fingerprint first: a checkpoint never exists without the file that vouches for it.
            self._write_atomically(self.meta_path(final), json.dumps(self._expected).encode(), rounds)
        self._write_atomically(final, bytes(booster.save_raw(raw_format="json")), rounds)
        self._sync_directory()
        self._prune()
        return final

    def _write_atomically(self, final: Path, data: bytes, rounds: int) -> None:
        descriptor, temp_name = tempfile.mkstemp(
            dir=self.directory, prefix=f".{CHECKPOINT_PREFIX}.{rounds}.", suffix=_TEMP_SUFFIX
        )
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            Path(temp_name).replace(final)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise

    def _stored_fingerprint(self, path: Path) -> Any:
        try:
            return json.loads(self.meta_path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _matches(self, path: Path) -> bool:
        if self._expected is None:
            return True
        meta = self.meta_path(path)
        stored = self._stored_fingerprint(path)
        if stored is None:
            self._log(
                f"ignoring checkpoint {path.name}: no readable {meta.name} says which hyperparameters and "
                "features it was trained with"
            )
            return False
        if stored != self._expected:
            self._log(
                f"ignoring checkpoint {path.name}: it was trained with other hyperparameters or features "
                f"({stored} != {self._expected}); training starts over"
            )
            return False
        return True

    def latest(self) -> tuple[int, xgb.Booster, Path] | None:
        """The newest checkpoint that loads, as (rounds, booster, path); None when there is none."""
        self._remove_stale_temporaries()
        for rounds, path in reversed(self.checkpoints()):
            if not self._matches(path):
                continue
            try:
                raw = path.read_bytes()
                booster = xgb.Booster()
                booster.load_model(bytearray(raw))
            except (OSError, xgb.core.XGBoostError) as error:
                self._log(f"skipping unreadable checkpoint {path.name}: {error}")
                continue
            if booster.num_boosted_rounds() != rounds:
                self._log(
                    f"skipping checkpoint {path.name}: it holds {booster.num_boosted_rounds()} rounds, "
                    f"not {rounds}"
                )
                continue
            return rounds, booster, path
        return None

    def _prune(self) -> None:
        # Only this run's own kind: checkpoints of other hyperparameters are never resumed, but a
        # higher round number must not make this run delete its own fresh checkpoints.
        own = [
            (rounds, path)
            for rounds, path in self.checkpoints()
            if self._expected is None or self._stored_fingerprint(path) == self._expected
        ]
        for _, path in own[: -self.keep]:
            uploading = path.with_name(path.name + _UPLOADING).exists()
            uploaded = path.with_name(path.name + _UPLOADED).exists()
            if uploading and not uploaded:
                continue  # SageMaker is copying it to S3; try again after the next save
            path.unlink(missing_ok=True)
            self.meta_path(path).unlink(missing_ok=True)

    def _remove_stale_temporaries(self) -> None:
        # Left by a process killed mid-write; never complete, never uploaded.
        if self.directory.is_dir():
            for path in self.directory.glob(f".{CHECKPOINT_PREFIX}.*{_TEMP_SUFFIX}"):
                path.unlink(missing_ok=True)

    def _sync_directory(self) -> None:
        # Make the rename itself durable; not every platform can open a directory.
        try:
            descriptor = os.open(self.directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(descriptor)
        except OSError:
            pass
        finally:
            os.close(descriptor)


class StopFlag:
    """Set by SIGTERM (SageMaker: spot reclaim, StopTrainingJob, MaxRuntime). The handler only
    sets the flag; the training loop notices it after the current round."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._event.set()
        # os.write: print() is not safe to re-enter if the signal interrupted a print.
        os.write(2, b"SIGTERM received: stopping after the current round and saving a checkpoint\n")


class CheckpointCallback(xgb.callback.TrainingCallback):
    """Saves a checkpoint every ``every`` rounds, at the end, and when a stop is requested,
    then stops training cleanly. ``store`` is None on hosts that do not write checkpoints
    (every host but the first in distributed training). With ``distributed``, the hosts agree
    each round on whether any of them was asked to stop, so they all stop after the same
    round instead of one waiting forever for the others."""

    def __init__(
        self,
        store: CheckpointStore | None,
        *,
        every: int,
        stop: StopFlag,
        distributed: bool = False,
        log: Log = print,
    ) -> None:
        super().__init__()
        self._store = store
        self._every = every
        self._stop = stop
        self._distributed = distributed
        self._log = log
        self.last_saved: tuple[int, Path] | None = None
        self.stopped_after: int | None = None

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        rounds = int(model.num_boosted_rounds())
        stop = self._stop.is_set()
        if self._distributed:
            from xgboost import collective

            flags = collective.allreduce(np.array([int(stop)], dtype=np.int32), collective.Op.MAX)
            stop = bool(flags[0])
        if stop or (self._every > 0 and rounds % self._every == 0):
            self._save(model, rounds)
        if stop:
            self.stopped_after = rounds
        return stop

    def after_training(self, model: Any) -> Any:
        rounds = int(model.num_boosted_rounds())
        # Early stopping may hand back a model cut to its best round: never save that under
        # a smaller round number than a checkpoint already written.
        if self.stopped_after is None and (self.last_saved is None or rounds > self.last_saved[0]):
            self._save(model, rounds)
        return model

    def _save(self, model: xgb.Booster, rounds: int) -> None:
        if self._store is None:
            return
        path = self._store.save(model, rounds)
        self.last_saved = (rounds, path)
        self._log(f"checkpoint saved: {path} ({rounds} rounds)")
