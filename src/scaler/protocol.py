"""The records a worker writes to its stdout, one JSON object per line.

stdout is a protocol channel, not a log: a worker writes nothing else
there, and sends its logging to stderr.  Every record starts with
``{"scaler": 1, "kind": ...`` so that a reader can pick the records out
of a stream that also carries other lines, such as the combined output
of a Procfile manager.

``ready``
    The worker's subscription is registered with the server.
``progress``
    Periodic counters, plus the messages completed since the previous
    record (``done``: see :func:`encode_done`).  A worker that is killed
    has still reported everything up to its last progress record.
``summary``
    The final counters, the last ``done`` batch, latency and wait
    histograms, CPU time and peak memory.  Written once, on the way out.

One more kind comes from the publisher rather than a worker:

``published``
    How many messages a run published, and when; written by
    ``scaler load`` so that a reader of the combined output of all the
    processes can tell what was lost.
"""

from __future__ import annotations

import base64
import json
import reprlib
import sys
import typing
from array import array
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

VERSION = 1
MARKER = '{"scaler":'  # every record line starts with this


class ProtocolError(ValueError):
    """A line that claims to be a record but cannot be read as one."""


@dataclass
class Ready:
    kind: ClassVar[str] = "ready"
    worker: str
    pid: int
    run: str = ""
    limit: int = 1
    host: str = ""
    work: str = ""


@dataclass
class Counters:
    """What a worker has seen of the messages on its subscription."""

    received: int = 0  # this run's messages taken off the subscription
    processed: int = 0  # this run's messages whose work has finished
    duplicates: int = 0  # this run's messages seen again by this worker
    foreign: int = 0  # messages this run did not publish
    errors: int = 0  # messages whose work raised
    slow_consumer: int = 0  # messages the client dropped (SlowConsumerError)


@dataclass
class Progress:
    kind: ClassVar[str] = "progress"
    worker: str
    run: str
    counters: Counters
    in_flight: int = 0
    pending: int = 0  # messages buffered in the client, not yet taken
    done: str = ""  # see encode_done
    last_done_ns: int = 0  # wall clock when the latest message finished
    host: str = ""


@dataclass
class Summary:
    kind: ClassVar[str] = "summary"
    worker: str
    pid: int
    run: str
    counters: Counters
    limit: int = 1
    abandoned: int = 0  # taken but unfinished when the grace period ran out
    done: str = ""
    first_done_ns: int = 0
    last_done_ns: int = 0
    service_s: float = 0.0  # total time spent in work, summed over messages
    latency_us: str = ""  # HdrHistogram, encoded: published -> finished
    wait_us: str = ""  # HdrHistogram, encoded: published -> work started
    cpu_s: float = 0.0
    max_rss_mb: float = 0.0
    host: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Published:
    kind: ClassVar[str] = "published"
    run: str
    count: int
    started_ns: int  # wall clock at the first publish
    finished_ns: int  # wall clock once the server had them all
    subject: str = ""
    work: str = ""
    workers: int = 0  # workers that were ready when publishing began
    rate: float = 0.0  # messages a second it was paced at; 0: all at once


Record = Ready | Progress | Summary | Published
_KINDS: dict[str, type[Record]] = {
    cls.kind: cls for cls in (Ready, Progress, Summary, Published)
}


def encode(record: Record) -> str:
    """One line of JSON, without the newline."""
    body = {"scaler": VERSION, "kind": record.kind, **asdict(record)}
    return json.dumps(body, separators=(",", ":"))


def decode(line: str) -> Record | None:
    """The record on ``line``, or None when the line is not a record.

    Raises ProtocolError for a line that starts like a record but is
    damaged, such as the last line of a truncated file.
    """
    start = line.find(MARKER)
    if start < 0:
        return None
    try:
        raw = json.loads(line[start:])
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"unreadable record: {exc}") from None
    if not isinstance(raw, dict) or raw.get("scaler") != VERSION:
        version = raw.get("scaler") if isinstance(raw, dict) else None
        raise ProtocolError(f"unsupported record version {version!r}")
    kind = raw.pop("kind", None)
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError("record of unknown kind")
    raw.pop("scaler")
    known = {f.name for f in fields(cls)}
    values = {k: v for k, v in raw.items() if k in known}
    try:
        if "counters" in values:
            values["counters"] = Counters(**values["counters"])
        record = cls(**values)
    except TypeError as exc:
        raise ProtocolError(f"malformed {cls.kind} record: {exc}") from None
    _check_types(record)
    return record


def _check_types(record: Record | Counters) -> None:
    """Raise ProtocolError unless every field has its declared type.

    Numbers must not be negative: they are counts, sizes and times.
    """
    hints = _type_hints(type(record))
    for item in fields(record):
        value = getattr(record, item.name)
        expected = hints[item.name]
        if expected is Counters:
            if not isinstance(value, Counters):
                raise ProtocolError(f"{item.name} of the wrong type")
            _check_types(value)
            continue
        kind = typing.get_origin(expected) or expected
        if kind is float:
            kind = (int, float)
        wrong = not isinstance(value, kind) or isinstance(value, bool) != (kind is bool)
        if wrong or (isinstance(value, int | float) and value < 0):
            raise ProtocolError(f"{item.name} is {reprlib.repr(value)}")


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _type_hints(cls: type[Any]) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def encode_done(pairs: array[int]) -> str:
    """Pack (seq, service time in µs) pairs as base64 of little-endian u32."""
    if not pairs:
        return ""
    if sys.byteorder == "big":
        pairs = array("I", pairs)
        pairs.byteswap()
    return base64.b64encode(pairs.tobytes()).decode("ascii")


def decode_done(text: str) -> array[int]:
    """The inverse of encode_done: a flat array seq0, us0, seq1, us1, ..."""
    pairs = array("I")
    if not text:
        return pairs
    try:
        pairs.frombytes(base64.b64decode(text, validate=True))
    except ValueError as exc:
        raise ProtocolError(f"unreadable done batch: {exc}") from None
    if len(pairs) % 2:
        raise ProtocolError("done batch has an odd number of values")
    if sys.byteorder == "big":
        pairs.byteswap()
    return pairs


assert array("I").itemsize == 4, "scaler needs a 4-byte unsigned int array"
