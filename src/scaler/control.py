"""The control subjects: how ``scaler load`` and workers coordinate over NATS.

Processes started by a Procfile manager share no pipes, so everything
between the publisher and the workers travels through NATS:

``scaler.control.ping``
    A request from ``scaler load``; every worker answers with its
    ``ready`` record, so workers that started first are found too.
``scaler.control.start``
    ``{"run": ID}``: serve run ID's messages.
``scaler.control.finish``
    ``{"run": ID}``: run ID is over; finish what is held, write the
    summary, then wait to be stopped.
``scaler.control.records``
    A copy of every record a worker writes to its stdout, its ``ready``
    record first, so that the publisher finds the workers that start
    after it and can tell when every message is done.
"""

from __future__ import annotations

import json

PREFIX = "scaler.control"
PING = f"{PREFIX}.ping"
START = f"{PREFIX}.start"
FINISH = f"{PREFIX}.finish"
RECORDS = f"{PREFIX}.records"


def run_message(run: str) -> bytes:
    """The body of a start or finish message."""
    return json.dumps({"run": run}).encode()


def read_run(data: bytes) -> str | None:
    """The run named by a start or finish message, or None if unreadable."""
    try:
        run = json.loads(data).get("run")
    except (ValueError, AttributeError):
        return None
    return run if isinstance(run, str) else None
