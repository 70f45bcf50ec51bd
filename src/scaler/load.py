"""``scaler load``: the publisher of a run whose workers someone else started.

Under a Procfile manager, or across hosts, the workers are not our
children: we find them over NATS, publish the workload, follow the
copies of their records on the records subject until every message is
accounted for, tell them the run is over, and wait for their summaries.

Our own stdout carries one ``published`` record, written as soon as the
workload is out, so that ``scaler report`` can tell from the combined
output what was lost even when the experiment is cut short.  Everything
else goes to stderr.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg

from scaler import control, payload, protocol
from scaler.errors import ExitCode, WorkerStartError
from scaler.loop import on_stop_signals
from scaler.protocol import Progress, ProtocolError, Published, Ready, Summary
from scaler.publisher import publish
from scaler.server import close_quietly, connect
from scaler.stats import Ledger, WorkerOutcome
from scaler.tracking import Outcome, wait_changed, wait_until_done
from scaler.worker import GRACE_S

log = logging.getLogger(__name__)

SETTLE_S = 2.0  # no new worker for this long after the first: all are here
STALE_S = 3.0  # a worker silent for this long is taken for dead
SUMMARY_WAIT_S = GRACE_S + 2.0  # after "finish", for every summary


@dataclass(frozen=True)
class LoadConfig:
    server: str
    token: str | None
    publish_subject: str
    messages: int
    workers: int | None  # None: whoever has shown up once SETTLE_S passes
    ready_timeout_s: float
    timeout_s: float
    rate: float = 0.0  # messages a second; 0: all at once


class Load:
    """One run published to workers found over NATS."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.run = payload.new_run_id()
        self.workers: dict[tuple[str, str], WorkerOutcome] = {}
        self.index: dict[tuple[str, str], int] = {}  # the worker's number in the ledger
        self.heard: dict[tuple[str, str], float] = {}  # monotonic time, per worker
        self.ledger = Ledger(config.messages)
        self.changed = asyncio.Event()
        self.signal: int | None = None
        self.work = ""

    def _on_signal(self, signum: int) -> None:
        self.signal = signum
        self.changed.set()

    async def main(self) -> ExitCode:
        config = self.config
        on_stop_signals(self._on_signal)
        nc = await connect(
            config.server, config.token, name="scaler-load", patient=True
        )
        try:
            return await self._run(nc)
        finally:
            await close_quietly(nc)

    async def _run(self, nc: Client) -> ExitCode:
        await nc.subscribe(control.RECORDS, cb=self._on_record)
        inbox = nc.new_inbox()
        await nc.subscribe(inbox, cb=self._on_record)
        await nc.publish(control.PING, b"", reply=inbox)
        await nc.flush()
        if not await self._discover():
            return self._interrupted()

        await nc.publish(control.START, control.run_message(self.run))
        published = await publish(
            nc,
            self.config.publish_subject,
            self.run,
            self.config.messages,
            should_stop=lambda: self.signal is not None,
            rate=self.config.rate,
        )
        self.ledger.published = published.count
        _print_record(
            Published(
                run=self.run,
                count=published.count,
                started_ns=published.started_ns,
                finished_ns=published.finished_ns,
                subject=self.config.publish_subject,
                work=self.work,
                workers=len(self.workers),
                rate=self.config.rate,
            )
        )
        log.info("published %d messages as run %s", published.count, self.run)

        outcome = await wait_until_done(
            self.ledger,
            self.workers.values(),  # a live view: late workers count too
            alive=self._alive,
            changed=self.changed,
            timeout_s=self.config.timeout_s,
            interrupted=lambda: self.signal is not None,
        )
        if outcome is Outcome.INTERRUPTED:
            return self._interrupted()
        await nc.publish(control.FINISH, control.run_message(self.run))
        await nc.flush()
        await self._wait_summaries()
        return self._verdict(outcome)

    async def _on_record(self, msg: Msg) -> None:
        try:
            record = protocol.decode(msg.data.decode("utf-8", errors="replace"))
        except ProtocolError as exc:
            log.warning("unreadable record on %s: %s", msg.subject, exc)
            return
        if not isinstance(record, Ready | Progress | Summary):
            return
        if isinstance(record, Ready):
            if record.run in ("", self.run):
                self._worker(record.host, record.worker, record.limit, record.pid)
                self.work = self.work or record.work
        elif record.run == self.run:
            outcome = self._worker(record.host, record.worker, 1, None)
            index = self.index[(record.host, record.worker)]
            outcome.accept(record, self.ledger, index)
        self.changed.set()

    def _worker(
        self, host: str, name: str, limit: int, pid: int | None
    ) -> WorkerOutcome:
        key = (host, name)
        self.heard[key] = time.monotonic()
        outcome = self.workers.get(key)
        if outcome is None:
            outcome = self.workers[key] = WorkerOutcome(name, limit, pid=pid, host=host)
            self.index[key] = len(self.index)
            log.info("found %s on %s (pid=%s, limit=%d)", name, host, pid, limit)
        return outcome

    def _alive(self, outcome: WorkerOutcome) -> bool:
        if outcome.summary is not None:
            return False
        heard = self.heard.get((outcome.host, outcome.name), 0.0)
        return time.monotonic() - heard < STALE_S

    async def _discover(self) -> bool:
        """Wait for the workers; False on a signal.

        Raises WorkerStartError when not enough of them show up in time.
        """
        loop = asyncio.get_running_loop()
        expected = self.config.workers
        deadline = loop.time() + self.config.ready_timeout_s
        last_count, settled_at = 0, loop.time()
        while True:
            now = loop.time()
            if self.signal is not None:
                return False
            count = len(self.workers)
            if count != last_count:
                last_count, settled_at = count, now
            if expected is not None and count >= expected:
                return True
            if expected is None and count and now - settled_at >= SETTLE_S:
                return True
            if now >= deadline:
                wanted = expected if expected is not None else 1
                raise WorkerStartError(
                    f"{count} of {wanted} workers ready within "
                    f"{self.config.ready_timeout_s:g} s"
                )
            wait = deadline - now if not count else SETTLE_S - (now - settled_at)
            await wait_changed(self.changed, min(wait, deadline - now))

    async def _wait_summaries(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SUMMARY_WAIT_S
        while any(w.summary is None for w in self.workers.values()):
            remaining = deadline - loop.time()
            if remaining <= 0 or self.signal is not None:
                missing = [w.name for w in self.workers.values() if w.summary is None]
                log.warning("no summary from %s", ", ".join(missing))
                return
            await wait_changed(self.changed, remaining)

    def _verdict(self, outcome: Outcome) -> ExitCode:
        ledger = self.ledger
        dead = any(w.summary is None for w in self.workers.values())
        log.log(
            logging.WARNING if ledger.lost or dead else logging.INFO,
            "run %s: published %d, processed %d, lost %d, duplicates %d (%s)",
            self.run,
            ledger.published,
            ledger.processed,
            ledger.lost,
            ledger.duplicates,
            outcome.value,
        )
        return ExitCode.LOST if ledger.lost or dead else ExitCode.OK

    def _interrupted(self) -> ExitCode:
        assert self.signal is not None
        log.warning("interrupted; run %s ends here", self.run)
        return ExitCode(128 + self.signal)


def _print_record(record: protocol.Record) -> None:
    sys.stdout.write(protocol.encode(record) + "\n")
    sys.stdout.flush()


async def run(config: LoadConfig) -> int:
    """The load process's main coroutine; returns its exit code."""
    return int(await Load(config).main())
