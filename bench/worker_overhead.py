"""What a ``scaler worker`` costs over the bare client, in messages per second.

Usage (from the repository root)::

    python bench/worker_overhead.py [--messages 200000] [--rounds 7]
                                    [--limit 1000] [--server URL]

The defaults take about a minute on two cores.

Against one nats-server (an embedded one on a free port unless
``--server`` names one; its token comes from ``$NATS_TOKEN``), each round
measures two consumers, one after the other, each in a fresh interpreter
on uvloop and in a queue group of its own:

bare
    ``bench/bare_subscriber.py``: a nats-py callback subscription that
    only counts.  This is the ceiling of the client on this machine.
worker
    ``python -m scaler worker --work none --limit L --run RUN``: the real
    worker, doing no work, so that what it costs is its own bookkeeping.

Each consumer gets the same stream: ``--messages`` messages published by
:func:`scaler.publisher.publish` (scaler's own payload, stamped with the
round's run id) as fast as the publisher can.  The publisher is meant to
be faster than either consumer, so that a backlog builds up and the
consumer runs flat out until it has drained it; a consumer that finishes
within moments of the publisher was held back by it, and its line says
so, because its rate is then only a lower bound.

Rate, the same for both: messages counted, minus one, over the time from
the first message to the last one, both read on the consumer's own wall
clock (the worker's ``first_done_ns`` and ``last_done_ns``; the bare
subscriber's time of the first and the last message received).  Process
start-up, connecting and publishing before the first arrival are left
out of both.

Every message is accounted for: the consumer's count is compared with
what was published, and a round that loses messages says so, with the
client's slow-consumer drops and the disconnects the consumer logged.
The whole stream can end up waiting for the consumer, in nats-server and
in the client: the server disconnects a client with more than 64 MiB
pending (at under 70 bytes a message on the wire, some 950,000 of these
messages), and nats-py drops what arrives past 524,288 pending messages
on one subscription, so keep ``--messages`` well below both.  The order
of the two consumers alternates from round to round, and the figures
reported are medians, since a 2-core machine is noisy.

The last line reads, for example::

    worker/bare = 0.83 (median of 7; bare 118k msg/s, worker 98k msg/s,
    200000 messages)

Exit codes: 0 measured, no message lost; 1 measured, but a consumer lost
messages; 2 bad arguments; 3 the server or a consumer did not start.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client

from scaler import payload, protocol, server
from scaler.errors import ServerError
from scaler.loop import LoopKind
from scaler.loop import run as run_on_loop
from scaler.protocol import Progress, ProtocolError, Ready, Summary
from scaler.publisher import publish

BENCH_DIR = Path(__file__).resolve().parent
MESSAGES = 200_000
ROUNDS = 7
LIMIT = 1000  # the worker's --limit: large, so that the bound never binds
SUBJECT = "bench.overhead"
READY_TIMEOUT_S = 20.0  # from spawn to the consumer's ready record
STALL_S = 3.0  # no new message for this long after publishing: the rest is lost
STOP_WAIT_S = 10.0  # SIGTERM -> SIGKILL; past the worker's own 4 s grace
LINE_LIMIT = 256 * 1024 * 1024  # bytes: a worker's summary line can be large
STDERR_TAIL = 10  # lines of a consumer's stderr kept for error messages
KEPT_PACE = 0.05  # of the span: finishing this close behind the publisher

EXIT_OK = 0
EXIT_LOST = 1
EXIT_USAGE = 2  # argparse's own
EXIT_FAILED = 3


class BenchError(Exception):
    """A failure that ends the benchmark with a one-line message."""


@dataclass(frozen=True)
class Measurement:
    """One consumer's pass over one published stream."""

    consumer: str  # "bare" or "worker"
    published: int
    publish_s: float  # first publish to the server's acknowledgement
    behind_s: float  # from the publisher's last acknowledgement to the last message
    counted: int  # messages the consumer counted as this stream's
    span_s: float  # the consumer's first message to its last
    slow_consumer: int  # messages the client said it dropped
    disconnects: int  # times the consumer lost its connection
    cpu_s: float  # the consumer's CPU time, start-up included

    @property
    def rate(self) -> float:
        """Messages per second; 0 when too few arrived to time."""
        if self.counted < 2 or self.span_s <= 0:
            return 0.0
        return (self.counted - 1) / self.span_s

    @property
    def lost(self) -> int:
        return self.published - self.counted

    @property
    def kept_pace(self) -> bool:
        """Finished with the publisher: the rate is then the publisher's."""
        return self.behind_s < KEPT_PACE * self.span_s


class ConsumerProcess:
    """One consumer child, the records it writes, and the tail of its stderr."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()  # set on every record and on exit
        self.progress: Progress | None = None
        self.summary: Summary | None = None
        self.disconnects = 0  # before it was told to stop; closing logs one too
        self._stopping = False
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self._process: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    @property
    def exited(self) -> bool:
        return self._process is not None and self._process.returncode is not None

    @property
    def counted(self) -> int:
        latest = self.summary or self.progress
        return latest.counters.processed if latest else 0

    async def start(self, argv: list[str], env: dict[str, str]) -> None:
        self._process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            limit=LINE_LIMIT,
            start_new_session=True,
        )
        self._readers = [
            asyncio.create_task(self._read_records()),
            asyncio.create_task(self._read_stderr()),
        ]

    async def _read_records(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        async for raw in self._process.stdout:
            try:
                record = protocol.decode(raw.decode("utf-8", errors="replace"))
            except ProtocolError as exc:
                self.stderr_tail.append(f"unreadable record: {exc}")
                continue
            if isinstance(record, Ready):
                self.ready.set()
            elif isinstance(record, Progress):
                self.progress = record
            elif isinstance(record, Summary):
                self.summary = record
            self.changed.set()
        await self._process.wait()
        self.changed.set()

    async def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        async for raw in self._process.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if "disconnected" in line and not self._stopping:
                self.disconnects += 1
            self.stderr_tail.append(line)

    async def wait_ready(self) -> None:
        """Return once subscribed; raise BenchError if it exits or is late."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.ready.is_set():
            if self.exited:
                raise BenchError(f"{self.name} exited before it was ready{self._why()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.name} not ready within {READY_TIMEOUT_S:g} s")
            await self._wait_changed(remaining)

    async def wait_counted(self, count: int) -> None:
        """Return once ``count`` messages are counted, or none came for STALL_S."""
        last, last_change = self.counted, time.monotonic()
        while self.counted < count and not self.exited:
            now = time.monotonic()
            if self.counted != last:
                last, last_change = self.counted, now
            elif now - last_change >= STALL_S:
                return
            await self._wait_changed(STALL_S)

    async def _wait_changed(self, timeout_s: float) -> None:
        self.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout_s)

    async def stop(self) -> Summary:
        """SIGTERM, then SIGKILL after STOP_WAIT_S; return the final summary."""
        self._stopping = True
        if self._process is not None:
            await server.stop_process(self._process, self.name, STOP_WAIT_S)
        await asyncio.gather(*self._readers, return_exceptions=True)
        if self.summary is None:
            raise BenchError(f"{self.name} exited without a summary{self._why()}")
        return self.summary

    def _why(self) -> str:
        last = " | ".join(line for line in list(self.stderr_tail)[-3:] if line)
        return f": {last}" if last else ""


@dataclass(frozen=True)
class Settings:
    messages: int
    limit: int
    url: str
    token: str | None


def consumer_argv(consumer: str, settings: Settings, run: str) -> list[str]:
    common = ["--server", settings.url, "--subject", SUBJECT, "--queue", f"b-{run}"]
    if consumer == "bare":
        return [sys.executable, str(BENCH_DIR / "bare_subscriber.py"), *common]
    return [
        sys.executable,
        "-m",
        "scaler",
        "worker",
        "--name",
        "worker",
        *common,
        "--limit",
        str(settings.limit),
        "--work",
        "none",
        "--run",
        run,
        "--loop",
        LoopKind.UVLOOP.value,
    ]


async def measure(consumer: str, settings: Settings, nc: Client) -> Measurement:
    """Start ``consumer``, publish one stream to it, and time its pass."""
    run = payload.new_run_id()
    env = {**os.environ}
    env.pop(server.TOKEN_ENV, None)
    if settings.token:
        env[server.TOKEN_ENV] = settings.token
    child = ConsumerProcess(consumer)
    try:
        await child.start(consumer_argv(consumer, settings, run), env)
        await child.wait_ready()
        published = await publish(nc, SUBJECT, run, settings.messages)
        await child.wait_counted(published.count)
    except BaseException:
        with contextlib.suppress(BenchError):
            await child.stop()
        raise
    summary = await child.stop()
    counters = summary.counters
    return Measurement(
        consumer=consumer,
        published=published.count,
        publish_s=(published.finished_ns - published.started_ns) / 1e9,
        behind_s=(summary.last_done_ns - published.finished_ns) / 1e9,
        counted=counters.processed,
        span_s=(summary.last_done_ns - summary.first_done_ns) / 1e9,
        slow_consumer=counters.slow_consumer,
        disconnects=child.disconnects,
        cpu_s=summary.cpu_s,
    )


def describe(round_no: int, m: Measurement) -> str:
    publish_rate = m.published / m.publish_s if m.publish_s > 0 else 0.0
    line = (
        f"round {round_no} {m.consumer:<6} {m.rate:>9,.0f} msg/s:"
        f" {m.counted}/{m.published} in {m.span_s:.2f} s,"
        f" done {m.behind_s:.2f} s after the publisher"
        f" ({publish_rate / 1000:,.0f}k msg/s); cpu {m.cpu_s:.2f} s"
    )
    if m.kept_pace:
        line += "  kept pace with the publisher: a lower bound"
    if m.lost or m.slow_consumer or m.disconnects:
        line += (
            f"  LOST {m.lost}, slow-consumer drops {m.slow_consumer},"
            f" disconnects {m.disconnects}"
        )
    return line


@dataclass(frozen=True)
class Target:
    """The server the benchmark runs against."""

    url: str
    token: str | None
    log_tail: Sequence[str] = ()  # the embedded server's latest log lines

    def warnings(self) -> list[str]:
        """The server's warnings and errors still in its log tail."""
        return [line for line in self.log_tail if "[WRN]" in line or "[ERR]" in line]


@contextlib.asynccontextmanager
async def nats_server(url: str | None) -> AsyncIterator[Target]:
    """The named server and ``$NATS_TOKEN``, or an embedded one."""
    if url:
        yield Target(url, os.environ.get(server.TOKEN_ENV))
        return
    async with server.embedded_server() as embedded:
        yield Target(embedded.url, embedded.token, embedded.log_tail)


class PublisherEvents:
    """Says when the publisher's own connection drops, which can lose messages."""

    def __init__(self) -> None:
        self.closing = False  # closing the connection reports a disconnect too

    async def on_disconnect(self) -> None:
        if not self.closing:
            print("publisher: disconnected from NATS", flush=True)

    async def on_error(self, exc: Exception) -> None:
        print(f"publisher: NATS error: {exc}", flush=True)


async def run_rounds(
    rounds: int, settings: Settings, target: Target
) -> dict[str, list[Measurement]]:
    """Measure both consumers ``rounds`` times, alternating who goes first."""
    results: dict[str, list[Measurement]] = {"bare": [], "worker": []}
    events = PublisherEvents()
    nc = await server.connect(
        target.url,
        target.token,
        name="bench-publisher",
        disconnected_cb=events.on_disconnect,
        error_cb=events.on_error,
    )
    try:
        for round_no in range(1, rounds + 1):
            # Alternate, so that drift in the machine's load does not always
            # favour the same consumer.
            order = ("bare", "worker") if round_no % 2 else ("worker", "bare")
            for consumer in order:
                measurement = await measure(consumer, settings, nc)
                results[consumer].append(measurement)
                print(describe(round_no, measurement), flush=True)
    finally:
        events.closing = True
        with contextlib.suppress(Exception):
            await nc.close()
    return results


def conclude(results: dict[str, list[Measurement]], messages: int) -> int:
    """Print the per-round ratios and the verdict line; return the exit code."""
    bare = statistics.median(m.rate for m in results["bare"])
    worker = statistics.median(m.rate for m in results["worker"])
    ratio = worker / bare if bare else 0.0
    per_round = ", ".join(
        f"{w.rate / b.rate:.2f}" if b.rate else "-"
        for b, w in zip(results["bare"], results["worker"], strict=True)
    )
    print(f"per-round worker/bare: {per_round}")
    lossy = [m for ms in results.values() for m in ms if m.lost]
    loss = ""
    if lossy:
        lost = sum(m.lost for m in lossy)
        where = "1 measurement" if len(lossy) == 1 else f"{len(lossy)} measurements"
        loss = f"; LOST {lost} messages in {where}"
    print(
        f"worker/bare = {ratio:.2f} (median of {len(results['bare'])};"
        f" bare {bare / 1000:.0f}k msg/s, worker {worker / 1000:.0f}k msg/s,"
        f" {messages} messages{loss})"
    )
    return EXIT_LOST if lossy else EXIT_OK


async def bench(messages: int, rounds: int, limit: int, url: str | None) -> int:
    async with nats_server(url) as target:
        settings = Settings(messages, limit, target.url, target.token)
        results = await run_rounds(rounds, settings, target)
        for line in target.warnings():
            print(f"nats-server: {line}")
    return conclude(results, messages)


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Messages per second of `scaler worker --work none` "
        "against a bare nats-py subscriber, on one nats-server."
    )
    parser.add_argument("--messages", type=positive, default=MESSAGES)
    parser.add_argument("--rounds", type=positive, default=ROUNDS)
    parser.add_argument("--limit", type=positive, default=LIMIT, help="worker --limit")
    parser.add_argument(
        "--server", help="NATS server URL (token from $NATS_TOKEN); default embedded"
    )
    args = parser.parse_args()
    try:
        return run_on_loop(
            bench(args.messages, args.rounds, args.limit, args.server),
            LoopKind.UVLOOP,
        )
    except (BenchError, ServerError) as exc:
        print(f"worker_overhead: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
