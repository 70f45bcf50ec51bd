"""An I/O-bound handler: append each message body to a spool file on disk.

This is what a durable queue or an audit log does: write the message,
``fsync`` it, and only then acknowledge it.  Each worker process appends
to its own file, ``spool-<pid>.log``, in ``$SCALER_SPOOL_DIR`` (default:
``scaler-spool`` in the system's temporary directory).  A record is the
body's length as 4 big-endian bytes, then the body.  When the message
asks for a reply, the answer ``ok`` comes after the write is on disk.

Run it from the repository root, so that ``examples`` is importable::

    scaler run --handler examples.spool:handle

Writing and syncing block, so they run in asyncio's default thread pool:
at most ``min(32, cores + 4)`` messages are written at once in one
process, whatever ``--limit`` says.  Delete the spool directory when you
are done.
"""

from __future__ import annotations

import asyncio
import os
import struct
import tempfile
from pathlib import Path

from nats.aio.msg import Msg

SPOOL_DIR_ENV = "SCALER_SPOOL_DIR"
_LENGTH = struct.Struct("!I")


def spool_path() -> Path:
    """This process's spool file."""
    default = Path(tempfile.gettempdir()) / "scaler-spool"
    directory = Path(os.environ.get(SPOOL_DIR_ENV) or default)
    return directory / f"spool-{os.getpid()}.log"


def append(path: Path, body: bytes) -> None:
    """Append one record to ``path`` and wait until it is on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = _LENGTH.pack(len(body)) + body
    # O_APPEND: records written by several threads at once do not overlap.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, record)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path: Path) -> list[bytes]:
    """The bodies spooled in ``path``, in the order they were written."""
    data = path.read_bytes()
    bodies = []
    offset = 0
    while offset < len(data):
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        bodies.append(data[offset : offset + length])
        offset += length
    return bodies


async def handle(msg: Msg) -> None:
    """Spool the body durably; reply ``ok`` when asked."""
    await asyncio.to_thread(append, spool_path(), msg.data)
    if msg.reply:
        await msg.respond(b"ok")
