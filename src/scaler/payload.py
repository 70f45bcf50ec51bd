"""The messages scaler publishes, as they travel through NATS.

Every message starts with a fixed 28-byte header, then the body
(``hello {i}``, as in the NATS by Example demo scaler grew from)::

    magic  b"SCL1"     4 bytes
    run    run id      8 ASCII characters
    seq    0, 1, ...   unsigned 64-bit, big-endian
    sent   time_ns()   unsigned 64-bit, big-endian: when it was published

A fixed binary header costs one ``struct`` call to read, where text or
NATS headers would cost several times more on the worker's hot path.
Anything that does not start with the magic, carries another run id, or
a sequence number past ``MAX_MESSAGES``, is *foreign*: counted, never
processed, never an error.
"""

from __future__ import annotations

import secrets
import struct
from typing import NamedTuple

MAX_MESSAGES = 1 << 28  # one run at most: what a worker's and a reader's books allow
MAGIC = b"SCL1"
RUN_ID_LEN = 8  # ASCII characters
_HEADER = struct.Struct("!4s8sQQ")
HEADER_SIZE = _HEADER.size


def new_run_id() -> str:
    """A fresh run id: 8 hex characters, unique enough for concurrent runs."""
    return secrets.token_hex(RUN_ID_LEN // 2)


class Stamped(NamedTuple):
    """What a worker reads from a message's header."""

    run: bytes
    seq: int
    sent_ns: int


def encode(run: bytes, seq: int, sent_ns: int, body: bytes) -> bytes:
    return _HEADER.pack(MAGIC, run, seq, sent_ns) + body


def decode(data: bytes) -> Stamped | None:
    """The header of ``data``, or None when it is not one of ours."""
    if len(data) < HEADER_SIZE:
        return None
    magic, run, seq, sent_ns = _HEADER.unpack_from(data)
    if magic != MAGIC:
        return None
    return Stamped(run, seq, sent_ns)


def body(data: bytes) -> bytes:
    return data[HEADER_SIZE:]
