"""Turn every way an entry point can end into what SageMaker expects.

* success: exit 0;
* failure (bad input, bad config, a bug): ``output/failure`` whose first line is a one-line,
  human-readable reason (SageMaker shows the file as the job's FailureReason, cut at 1 KB),
  followed by the traceback when the error was unexpected; exit 1. Processing jobs also get
  ``output/message``, which SageMaker Processing shows as ExitMessage;
* interruption (SIGTERM: spot reclaim, StopTrainingJob, MaxRuntime): no failure file, because
  nothing failed and SageMaker decides the job status itself (Interrupted then restarted for
  managed spot, Stopped otherwise); exit 143 (128 + SIGTERM), the code of a process ended by
  SIGTERM, so a runner that only sees the exit code never mistakes it for a finished job.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Final, NoReturn

from ml.sagemaker.environment import SageMakerPaths

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "JobInterruptedError",
    "UsageError",
    "UserArgumentParser",
    "clear_failure",
    "failure_reason",
    "run_entry_point",
    "write_failure",
]

EXIT_FAILURE: Final[int] = 1
EXIT_INTERRUPTED: Final[int] = 143
# SageMaker keeps the first 1024 bytes of the failure file as FailureReason.
_REASON_LIMIT: Final[int] = 1000


class JobInterruptedError(Exception):
    """SIGTERM arrived; the job stopped cleanly (checkpoint written) and should exit 143."""


class UsageError(ValueError):
    """Bad command-line arguments (ContainerArguments of a processing job)."""


class UserArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing and exiting, so a bad argument ends
    up in the failure file like every other error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (usage: {self.format_usage().strip()})")


def failure_reason(error: BaseException) -> str:
    """One line: the error's own message, which in this project names the problem and the fix."""
    message = " ".join(str(error).split()) or type(error).__name__
    if not _is_expected(error):
        message = f"unexpected error ({type(error).__name__}): {message}"
    if len(message) > _REASON_LIMIT:
        message = message[: _REASON_LIMIT - 3] + "..."
    return message


def write_failure(
    paths: SageMakerPaths, reason: str, *, detail: str = "", exit_message: bool = False
) -> Path:
    """Write ``output/failure`` (and ``output/message`` for processing jobs)."""
    paths.output_dir.mkdir(parents=True, exist_ok=True)
    text = reason.rstrip("\n") + "\n" + (detail if detail.endswith("\n") or not detail else detail + "\n")
    paths.failure_file.write_text(text, encoding="utf-8")
    if exit_message:
        (paths.output_dir / "message").write_text(reason + "\n", encoding="utf-8")
    return paths.failure_file


def clear_failure(paths: SageMakerPaths) -> None:
    """Remove ``output/failure`` and ``output/message`` left by an earlier run in the same base
    directory (a local retry), so that a run which succeeds leaves no stale reason behind.
    SageMaker gives every job a fresh ``/opt/ml/output``, so there this finds nothing."""
    for stale in (paths.failure_file, paths.output_dir / "message"):
        stale.unlink(missing_ok=True)


def run_entry_point(
    job: Callable[[SageMakerPaths], None], *, name: str, processing: bool = False
) -> NoReturn:
    """Run ``job`` with the paths of this container and exit the way SageMaker expects."""
    paths = SageMakerPaths.from_env()
    clear_failure(paths)
    if processing:
        # As PID 1 of the container a process ignores SIGTERM unless it handles it; a stopped
        # processing job has nothing to save, so it just ends as interrupted.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        job(paths)
    except JobInterruptedError as interruption:
        print(f"{name}: interrupted: {interruption}", file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        print(f"{name}: interrupted by SIGINT", file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
    except BaseException as error:  # every failure must reach the failure file
        if isinstance(error, SystemExit) and error.code in (0, None):
            sys.exit(0)
        reason = failure_reason(error)
        detail = "" if _is_expected(error) else traceback.format_exc()
        try:
            where = write_failure(paths, reason, detail=detail, exit_message=processing)
            print(f"{name} failed: {reason}\n(reason written to {where})", file=sys.stderr, flush=True)
        except OSError as write_error:
            print(
                f"{name} failed: {reason}\n(and could not write the failure file: {write_error})",
                file=sys.stderr,
            )
        if detail:
            print(detail, file=sys.stderr, flush=True)
        sys.exit(EXIT_FAILURE)
    sys.exit(0)


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise JobInterruptedError("stopped by SIGTERM")


def _is_expected(error: BaseException) -> bool:
    """Errors whose message is written for the user: the project's own exception classes
    (they name the file, row or parameter and the fix) and OS errors (they name the path).
    Anything else is a bug and gets a traceback in the failure file."""
    module = type(error).__module__
    return module == "ml" or module.startswith("ml.") or isinstance(error, OSError)
