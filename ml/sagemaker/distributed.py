"""Several training hosts, one model: XGBoost's collective, as AWS's XGBoost container does it.

The alphabetically first host of resourceconfig.json runs ``RabitTracker``; every host joins
with ``xgboost.collective`` using its index in the sorted host list as task id, so ranks are
deterministic (rank 0 = first host = the one that writes the model and the checkpoints).

Environment:

``ML_HOST_ADDRESSES``  JSON object host name -> address, used instead of DNS (tests run the
                       hosts as processes on 127.0.0.1). In SageMaker the names resolve via
                       DNS, which may take a while as the cluster boots, hence the retries.
``ML_TRACKER_PORT``    tracker port on the first host (9099, as in AWS's container).
``ML_TRACKER_TIMEOUT`` seconds to wait for every host to join (900).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import numpy as np

from ml.sagemaker.environment import ResourceConfig, int_from_env

__all__ = [
    "HOST_ADDRESSES_ENV",
    "TRACKER_PORT_ENV",
    "TRACKER_TIMEOUT_ENV",
    "ClusterError",
    "Worker",
    "broadcast_bytes",
    "cluster",
    "resolve_host",
    "shard_rows",
]

HOST_ADDRESSES_ENV: Final[str] = "ML_HOST_ADDRESSES"
TRACKER_PORT_ENV: Final[str] = "ML_TRACKER_PORT"
TRACKER_TIMEOUT_ENV: Final[str] = "ML_TRACKER_TIMEOUT"
DEFAULT_TRACKER_PORT: Final[int] = 9099
DEFAULT_TRACKER_TIMEOUT: Final[int] = 900


class ClusterError(RuntimeError):
    """The hosts could not form a training cluster; the message says which host and why."""


@dataclass(frozen=True)
class Worker:
    """This process's place in the training cluster."""

    rank: int
    world_size: int

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_master(self) -> bool:
        return self.rank == 0


def _host_addresses(env: Mapping[str, str]) -> dict[str, str]:
    raw = env.get(HOST_ADDRESSES_ENV, "").strip()
    if not raw:
        return {}
    try:
        mapping = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ClusterError(f"{HOST_ADDRESSES_ENV} is not valid JSON ({error.msg})") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise ClusterError(f'{HOST_ADDRESSES_ENV} must be a JSON object like {{"algo-1": "10.0.0.1"}}')
    return {str(k): v for k, v in mapping.items()}


def resolve_host(host: str, *, env: Mapping[str, str] | None = None, timeout: float = 600.0) -> str:
    """The IP address of ``host``: from ML_HOST_ADDRESSES, else DNS, retried until ``timeout``."""
    env = os.environ if env is None else env
    addresses = _host_addresses(env)
    if host in addresses:
        return addresses[host]
    deadline = time.monotonic() + timeout
    delay = 0.5
    while True:
        try:
            return socket.gethostbyname(host)
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"cannot resolve training host {host!r} after {timeout:.0f} s ({error}); outside "
                    f"SageMaker set {HOST_ADDRESSES_ENV} to map host names to addresses"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    return int_from_env(env, name, default, 1, 2**31 - 1, error=ClusterError)


@contextmanager
def cluster(resources: ResourceConfig, *, env: Mapping[str, str] | None = None) -> Iterator[Worker]:
    """Join the training cluster for the duration of the block (a no-op on one host)."""
    if not resources.is_distributed:
        yield Worker(rank=0, world_size=1)
        return
    from xgboost import collective
    from xgboost.tracker import RabitTracker

    env = os.environ if env is None else env
    port = _int_env(env, TRACKER_PORT_ENV, DEFAULT_TRACKER_PORT)
    timeout = _int_env(env, TRACKER_TIMEOUT_ENV, DEFAULT_TRACKER_TIMEOUT)
    hosts = resources.sorted_hosts
    master_address = resolve_host(hosts[0], env=env, timeout=timeout)
    tracker = None
    if resources.is_master:
        tracker = RabitTracker(
            n_workers=len(hosts), host_ip=master_address, port=port, sortby="task", timeout=timeout
        )
        tracker.start()
    joined = completed = False
    try:
        _wait_for_tracker(resources.current_host, hosts[0], master_address, port, timeout)
        try:
            collective.init(
                dmlc_tracker_uri=master_address,
                dmlc_tracker_port=port,
                # Zero-padded: the tracker sorts task ids as strings.
                dmlc_task_id=f"{resources.rank:05d}",
                dmlc_retry=5,
                dmlc_timeout=timeout,
            )
        except Exception as error:
            raise ClusterError(
                f"host {resources.current_host} could not join the training cluster through the tracker "
                f"at {hosts[0]} ({master_address}:{port}): {error}"
            ) from error
        joined = True
        worker = Worker(rank=collective.get_rank(), world_size=collective.get_world_size())
        if worker.rank != resources.rank or worker.world_size != len(hosts):
            raise ClusterError(
                f"host {resources.current_host} got rank {worker.rank}/{worker.world_size}, expected "
                f"{resources.rank}/{len(hosts)}: is another training cluster using port {port}?"
            )
        yield worker
        completed = True
    finally:
        if joined:
            collective.finalize()
        if tracker is not None:
            if completed:
                # Every worker has finalized or is about to; the tracker then shuts down. After
                # a failure the others may never finish, so the tracker is dropped at once.
                tracker.wait_for(timeout)
            tracker.free()


def _wait_for_tracker(current_host: str, master: str, address: str, port: int, timeout: int) -> None:
    """Poll the tracker port (hosts boot at different times) so that a tracker that never comes
    up ends in a clear error after ``timeout`` instead of XGBoost's long retry backoff. The
    tracker logs and ignores these probe connections (AWS's XGBoost container does the same)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=5):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"host {current_host} could not join the training cluster through the tracker at {master} "
                    f"({address}:{port}): not reachable after {timeout} s ({error}); check that {master} "
                    f"started and that {TRACKER_PORT_ENV} is the same on every host"
                ) from None
            time.sleep(1.0)


def shard_rows(n_rows: int, worker: Worker) -> slice:
    """This worker's contiguous 1/N of ``n_rows`` (FullyReplicated data: every host has all of it)."""
    bounds = np.linspace(0, n_rows, worker.world_size + 1).round().astype(int)
    return slice(int(bounds[worker.rank]), int(bounds[worker.rank + 1]))


def broadcast_bytes(data: bytes | None, worker: Worker) -> bytes:
    """Rank 0's ``data`` on every worker, through allreduce so that nothing is pickled."""
    if not worker.is_distributed:
        return data or b""
    from xgboost import collective

    own = data if worker.is_master and data is not None else b""
    length = int(collective.allreduce(np.array([len(own)], dtype=np.int64), collective.Op.MAX)[0])
    if length == 0:
        return b""
    buffer = np.zeros(length, dtype=np.uint8)
    if worker.is_master:
        buffer[:] = np.frombuffer(own, dtype=np.uint8)
    return collective.allreduce(buffer, collective.Op.BITWISE_OR).tobytes()
