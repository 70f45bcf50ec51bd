"""The baseline consumer: a nats-py callback subscription that only counts.

Runs in its own interpreter on uvloop, started by ``worker_overhead.py``,
so that it pays for its own process exactly as a ``scaler worker`` does.
It joins the same kind of queue group a worker joins and writes the same
stdout records (see :mod:`scaler.protocol`): ``ready`` once subscribed,
``progress`` every ``PROGRESS_INTERVAL_S``, and a ``summary`` on SIGTERM,
whose ``first_done_ns`` and ``last_done_ns`` are the wall clock at the
first and the latest message received.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time

from nats.aio.msg import Msg
from nats.errors import SlowConsumerError

from scaler import protocol
from scaler.loop import LoopKind
from scaler.loop import run as run_on_loop
from scaler.protocol import Counters, Progress, Ready, Summary
from scaler.server import TOKEN_ENV, connect
from scaler.worker import PROGRESS_INTERVAL_S

NAME = "bare"


class Counter:
    """The callback's whole job: count, and remember when."""

    def __init__(self) -> None:
        self.received = 0
        self.slow_consumer = 0  # messages the client dropped
        self.first_ns = 0
        self.last_ns = 0

    async def on_message(self, msg: Msg) -> None:
        now_ns = time.time_ns()
        if not self.received:
            self.first_ns = now_ns
        self.received += 1
        self.last_ns = now_ns

    def counters(self) -> Counters:
        return Counters(
            received=self.received,
            processed=self.received,
            slow_consumer=self.slow_consumer,
        )

    async def on_error(self, exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):
            self.slow_consumer += 1
        else:
            print(f"{NAME}: NATS error: {exc}", file=sys.stderr)

    async def on_disconnect(self) -> None:
        print(f"{NAME}: disconnected from NATS", file=sys.stderr)


def send(record: protocol.Record) -> None:
    sys.stdout.write(protocol.encode(record) + "\n")
    sys.stdout.flush()


async def main(server: str, subject: str, queue: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    counter = Counter()
    nc = await connect(
        server,
        os.environ.get(TOKEN_ENV),
        name=NAME,
        error_cb=counter.on_error,
        disconnected_cb=counter.on_disconnect,
    )
    sub = await nc.subscribe(subject, queue=queue, cb=counter.on_message)
    await nc.flush()
    send(Ready(NAME, os.getpid()))

    async def report() -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            send(Progress(NAME, "", counter.counters(), pending=sub.pending_msgs))

    reporter = asyncio.create_task(report())
    await stop.wait()

    reporter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reporter
    send(
        Summary(
            worker=NAME,
            pid=os.getpid(),
            run="",
            counters=counter.counters(),
            first_done_ns=counter.first_ns,
            last_done_ns=counter.last_ns,
            cpu_s=time.process_time(),
        )
    )
    with contextlib.suppress(Exception):
        await nc.close()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="NATS server URL")
    parser.add_argument("--subject", required=True)
    parser.add_argument("--queue", required=True)
    args = parser.parse_args()
    sys.exit(run_on_loop(main(args.server, args.subject, args.queue), LoopKind.UVLOOP))
