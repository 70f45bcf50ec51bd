"""A CPU-bound handler: derive a salted key from each message body.

This is the work a login or signing service does for every request:
PBKDF2-HMAC-SHA256 over the body, ``ITERATIONS`` rounds (about 3.5 ms on
one core of a current machine).  When the message asks for a reply, the
answer is the key in hex.

Run it from the repository root, so that ``examples`` is importable::

    scaler run --handler examples.digest:handle
    scaler run --handler examples.digest:handle_in_thread

``handle`` computes on the event loop and holds it while it does: one
process computes one message at a time, and only more processes
(``--procs``) add throughput.  ``handle_in_thread`` hands the same work to
a thread; hashlib releases the GIL while it hashes, so one process can use
more than one core, up to the size of asyncio's default thread pool
(``min(32, cores + 4)`` threads), whatever ``--limit`` says.
"""

from __future__ import annotations

import asyncio
import hashlib

from nats.aio.msg import Msg

ITERATIONS = 10_000  # PBKDF2 rounds: about 3.5 ms of one core each message
SALT = b"scaler example salt"  # fixed, so that an answer can be checked


def derive_key(body: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", body, SALT, ITERATIONS)


async def handle(msg: Msg) -> None:
    """Derive the key on the event loop; reply with it when asked."""
    key = derive_key(msg.data)
    if msg.reply:
        await msg.respond(key.hex().encode())


async def handle_in_thread(msg: Msg) -> None:
    """Derive the key in a worker thread; reply with it when asked."""
    key = await asyncio.to_thread(derive_key, msg.data)
    if msg.reply:
        await msg.respond(key.hex().encode())
