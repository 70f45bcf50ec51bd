"""Exit codes and the errors that end a command with one of them."""

from __future__ import annotations

import signal
from enum import IntEnum


class ExitCode(IntEnum):
    """What ``scaler`` exits with; documented in the README."""

    OK = 0  # every published message was processed
    LOST = 1  # the run finished, but a message was lost or a worker died
    USAGE = 2  # bad command-line input; nothing was started
    SERVER = 3  # the NATS server could not be started or reached
    WORKER = 4  # a worker failed before it was ready
    INPUT = 5  # `scaler report` found no worker records to report on
    SIGINT = 128 + signal.SIGINT  # 130: interrupted; a partial report was printed
    SIGTERM = 128 + signal.SIGTERM  # 143: terminated; a partial report was printed


class ScalerError(Exception):
    """An error that ends the command with a one-line message and ``code``."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code


class ServerError(ScalerError):
    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.SERVER)


class WorkerStartError(ScalerError):
    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.WORKER)
