"""Deciding when a run is over, from the records its workers send.

Used by the supervisor of ``scaler run``, which reads records from its
workers' pipes, and by ``scaler load``, which reads copies of the same
records over NATS.  Either way, a run is over when every published
message is done, or when it is clear that the missing ones never will
be: every worker still alive is idle and nothing has changed for
``QUIESCE_S``.  Idle must be fresh news: a worker whose loop is held by
work that never awaits sends no records at all, and its silence is not
taken for quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection
from enum import StrEnum

from scaler.stats import Ledger, WorkerOutcome

QUIESCE_S = 1.0  # all idle and nothing new for this long: the rest is lost
FRESH_REPORTS = 2  # records from every live worker since the last change


class Outcome(StrEnum):
    """Why waiting for a run's messages ended."""

    COMPLETE = "complete"
    QUIESCENT = "quiescent"  # everyone idle, messages still missing
    NO_WORKERS = "no-workers"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"


async def wait_changed(changed: asyncio.Event, timeout_s: float) -> None:
    """Wait until ``changed`` is set, or ``timeout_s`` passes; then clear it."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(changed.wait(), max(timeout_s, 0.0))
    changed.clear()


async def wait_until_done(
    ledger: Ledger,
    workers: Collection[WorkerOutcome],
    alive: Callable[[WorkerOutcome], bool],
    changed: asyncio.Event,
    timeout_s: float,
    interrupted: Callable[[], bool] = lambda: False,
    on_change: Callable[[int], None] = lambda processed: None,
) -> Outcome:
    """Wait until every message is done, or it is clear some never will be.

    ``changed`` must be set whenever a record arrives, a worker exits or
    a signal comes; ``on_change`` is told the processed count each time.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last_change = loop.time()
    last_seen: tuple[int, ...] = ()
    reports_then: dict[int, int] = {}  # id(worker) -> its reports at last_change
    while True:
        now = loop.time()
        on_change(ledger.processed)
        if interrupted():
            return Outcome.INTERRUPTED
        if ledger.processed >= ledger.published:
            return Outcome.COMPLETE
        live = [w for w in workers if alive(w)]
        if not live:
            return Outcome.NO_WORKERS
        seen = (ledger.processed, *(w.counters.received for w in live))
        if seen != last_seen or any(w.busy for w in live):
            last_seen, last_change = seen, now
            reports_then = {id(w): w.reports for w in workers}
        elif now - last_change >= QUIESCE_S and all(
            w.reports - reports_then.get(id(w), 0) >= FRESH_REPORTS for w in live
        ):
            return Outcome.QUIESCENT
        if now >= deadline:
            return Outcome.TIMEOUT
        await wait_changed(changed, min(deadline - now, QUIESCE_S))
