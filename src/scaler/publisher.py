"""Publishing a workload: numbered, time-stamped messages, then a flush."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client

from scaler import payload

YIELD_EVERY = 1000  # messages between yields to the loop while publishing
FLUSH_TIMEOUT_S = 30


@dataclass(frozen=True)
class Published:
    count: int
    started_ns: int  # wall clock at the first publish
    finished_ns: int  # wall clock once the server has acknowledged all of them


async def publish(
    nc: Client,
    subject: str,
    run: str,
    count: int,
    should_stop: Callable[[], bool] = lambda: False,
    rate: float = 0.0,
) -> Published:
    """Publish ``count`` messages of run ``run`` to ``subject``, then flush.

    With a ``rate`` (messages a second), message ``seq`` goes out no
    sooner than ``seq / rate`` seconds after the first; without one, all
    go out as fast as the client can send them.  The flush matters:
    without it, a publisher that exits at once loses what is still in its
    buffer.  ``should_stop`` is asked between batches; when it says yes,
    publishing ends early and the count says how many went out.
    """
    loop = asyncio.get_running_loop()
    run_bytes = run.encode("ascii")
    started_ns = time.time_ns()
    start = loop.time()
    sent = 0
    for seq in range(count):
        if rate and (ahead := start + seq / rate - loop.time()) > 0:
            await asyncio.sleep(ahead)  # pacing: the schedule is the point
            if should_stop():
                break
        body = b"hello %d" % seq
        await nc.publish(subject, payload.encode(run_bytes, seq, time.time_ns(), body))
        sent += 1
        if sent % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # let pipe readers and timers run
            if should_stop():
                break
    await nc.flush(timeout=FLUSH_TIMEOUT_S)
    return Published(sent, started_ns, time.time_ns())
