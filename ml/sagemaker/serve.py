"""``serve``: SageMaker's ``docker run <image> serve``: gunicorn in front of ``ModelServer``.

This module is the gunicorn configuration: ``ServeSettings.from_env`` reads the environment
(the CreateModel ``Environment`` in SageMaker) and ``gunicorn_options`` turns it into
gunicorn settings; ``main`` runs gunicorn in this process, which becomes the master that
SageMaker signals (SIGTERM: graceful stop within ``graceful_timeout``).

Environment (all optional):

``SAGEMAKER_BIND_TO_PORT``          port (8080)
``ML_BIND_HOST``                    address to bind (0.0.0.0; tests and the local runner use 127.0.0.1)
``SAGEMAKER_MODEL_SERVER_WORKERS``  worker processes (one per usable CPU)
``ML_SERVER_THREADS``               request threads per worker (2, so /ping is answered while a
                                    long invocation runs)
``SAGEMAKER_MODEL_SERVER_TIMEOUT``  seconds before a silent worker is restarted (120)
``PREDICTION_THRESHOLD``            probability at or above which predicted_label is 1 (0.5)
``ML_PREDICT_THREADS``              XGBoost threads per worker (CPUs / workers, at least 1)
``ML_SERVE_USER``                   user the workers switch to when the master runs as root
                                    (unset: no switch); the image sets it to ``model``
``ML_ACCESS_LOG``                   1 to log every request (0)
"""

from __future__ import annotations

import logging
import os
import pwd
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gunicorn.app.base import BaseApplication

from ml.sagemaker.environment import SageMakerPaths, int_from_env
from ml.sagemaker.server import ModelServer

__all__ = ["ServeSettings", "SettingsError", "gunicorn_options", "main"]

DEFAULT_PORT: Final[int] = 8080
# SageMaker sends SIGKILL 30 s after SIGTERM when it stops a serving container.
GRACEFUL_TIMEOUT: Final[int] = 25
# Longer than the 60 s idle timeout of the load balancers in front of real-time endpoints, so
# the server never closes a connection the client is about to reuse.
KEEPALIVE: Final[int] = 75


class SettingsError(ValueError):
    """An environment variable of the serving container has an unusable value."""


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _int_env(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    return int_from_env(env, name, default, minimum, maximum, error=SettingsError)


@dataclass(frozen=True)
class ServeSettings:
    model_dir: Path
    host: str
    port: int
    workers: int
    threads: int
    timeout: int
    threshold: float
    predict_threads: int
    user: str | None
    access_log: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServeSettings:
        env = os.environ if env is None else env
        cpus = _usable_cpus()
        workers = _int_env(env, "SAGEMAKER_MODEL_SERVER_WORKERS", cpus, 1, 256)
        raw_threshold = env.get("PREDICTION_THRESHOLD", "").strip() or "0.5"
        try:
            threshold = float(raw_threshold)
        except ValueError:
            raise SettingsError(f"PREDICTION_THRESHOLD={raw_threshold!r} is not a number in [0, 1]") from None
        if not 0.0 <= threshold <= 1.0:
            raise SettingsError(f"PREDICTION_THRESHOLD={threshold} is outside [0, 1]")
        return cls(
            model_dir=SageMakerPaths.from_env(dict(env)).model_dir,
            host=env.get("ML_BIND_HOST", "").strip()
            or "0.0.0.0",  # SageMaker connects through the container interface
            port=_int_env(env, "SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT, 1, 65535),
            workers=workers,
            threads=_int_env(env, "ML_SERVER_THREADS", 2, 1, 64),
            timeout=_int_env(env, "SAGEMAKER_MODEL_SERVER_TIMEOUT", 120, 1, 3600),
            threshold=threshold,
            predict_threads=_int_env(env, "ML_PREDICT_THREADS", max(1, cpus // workers), 1, 1024),
            user=env.get("ML_SERVE_USER", "").strip() or None,
            access_log=env.get("ML_ACCESS_LOG", "0").strip().lower() in ("1", "true", "yes"),
        )


def _post_worker_init(worker: Any) -> None:
    # Runs in each worker after fork (and after the switch to ML_SERVE_USER): build the
    # booster here so no XGBoost/OpenMP state crosses a fork.
    app = worker.wsgi
    if isinstance(app, ModelServer):
        app.load()


def gunicorn_options(settings: ServeSettings) -> dict[str, Any]:
    """The gunicorn configuration for these settings."""
    options: dict[str, Any] = {
        "bind": [f"{settings.host}:{settings.port}"],
        "workers": settings.workers,
        # gthread: keep-alive support and a spare thread for /ping during a long request.
        "worker_class": "gthread",
        "threads": settings.threads,
        "timeout": settings.timeout,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "keepalive": KEEPALIVE,
        "preload_app": True,
        "post_worker_init": _post_worker_init,
        "proc_name": "model-server",
        "errorlog": "-",
        "loglevel": "info",
        "accesslog": "-" if settings.access_log else None,
        "capture_output": False,
    }
    # The heartbeat file is touched constantly; tmpfs avoids stalls on a container overlay fs.
    if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):
        options["worker_tmp_dir"] = "/dev/shm"
    if settings.user is not None and os.geteuid() == 0:
        try:
            account = pwd.getpwnam(settings.user)
        except KeyError:
            raise SettingsError(f"ML_SERVE_USER={settings.user!r} is not a user of this system") from None
        options["user"] = account.pw_uid
        options["group"] = account.pw_gid
    return options


class _Gunicorn(BaseApplication):
    def __init__(self, app: ModelServer, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self) -> ModelServer:
        return self._app


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = ServeSettings.from_env()
    except SettingsError as error:
        print(f"serve: {error}", file=sys.stderr)
        sys.exit(1)
    try:
        options = gunicorn_options(settings)
    except SettingsError as error:
        print(f"serve: {error}", file=sys.stderr)
        sys.exit(1)
    app = ModelServer(settings.model_dir, threshold=settings.threshold, nthread=settings.predict_threads)
    # Read the file here, in the master (root in SageMaker), so that workers running as an
    # unprivileged user never need to open it. A missing model keeps the server up: /ping
    # answers 503 with the reason, and workers retry reading the file on each ping.
    app.read_model()
    logging.getLogger("ml.sagemaker.serve").info(
        "serving %s on %s with %d worker(s) x %d thread(s), threshold %.3f",
        settings.model_dir,
        options["bind"][0],
        settings.workers,
        settings.threads,
        settings.threshold,
    )
    _Gunicorn(app, options).run()


if __name__ == "__main__":
    main()
