"""The records on a worker's stdout: one JSON object per line."""

from __future__ import annotations

import base64
import json
import struct
from array import array

import pytest

from scaler import protocol
from scaler.protocol import (
    Counters,
    Progress,
    ProtocolError,
    Published,
    Ready,
    Summary,
)

RECORDS: list[protocol.Record] = [
    Ready(worker="queue-group.1", pid=1234, run="0123abcd", limit=5, host="vm"),
    Progress(
        worker="queue-group.2",
        run="0123abcd",
        counters=Counters(received=10, processed=8, foreign=2, slow_consumer=1),
        in_flight=2,
        pending=3,
        done=protocol.encode_done(array("I", [0, 150, 1, 200])),
        last_done_ns=1_700_000_000_000_000_000,
        host="vm",
    ),
    Summary(
        worker="combined.1",
        pid=99,
        run="0123abcd",
        counters=Counters(received=5, processed=5, duplicates=1, errors=1),
        limit=25,
        abandoned=1,
        done=protocol.encode_done(array("I", [4, 10])),
        first_done_ns=1,
        last_done_ns=2,
        service_s=0.25,
        latency_us="HISTFAAAA",
        wait_us="HISTFBBBB",
        cpu_s=0.5,
        max_rss_mb=41.9,
        host="vm",
        extra={"loop": "uvloop"},
    ),
    Published(
        run="0123abcd",
        count=400,
        started_ns=10,
        finished_ns=20,
        subject="greet.joe",
        work="sleep:20ms",
        workers=4,
    ),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.kind)
def test_every_record_kind_survives_encode_and_decode(
    record: protocol.Record,
) -> None:
    line = protocol.encode(record)

    assert "\n" not in line
    assert line.startswith(protocol.MARKER)
    assert protocol.decode(line) == record


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.kind)
def test_a_record_is_found_after_a_procfile_managers_prefix(
    record: protocol.Record,
) -> None:
    line = f"16:20:01 worker.1     | {protocol.encode(record)}\n"

    assert protocol.decode(line) == record


@pytest.mark.parametrize(
    "line",
    ["", "INFO scaler.worker: worker.1 ready", '{"other": 1}', "scaler: 1 kind"],
)
def test_a_line_that_is_not_a_record_decodes_to_none(line: str) -> None:
    assert protocol.decode(line) is None


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.kind)
def test_a_truncated_record_is_a_protocol_error(record: protocol.Record) -> None:
    line = protocol.encode(record)

    with pytest.raises(ProtocolError, match="unreadable record"):
        protocol.decode(line[: len(line) // 2])


def test_a_record_of_unknown_kind_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="unknown kind"):
        protocol.decode('{"scaler":1,"kind":"heartbeat","worker":"w"}')


def test_a_record_without_a_kind_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="unknown kind"):
        protocol.decode('{"scaler":1,"worker":"w","pid":1}')


@pytest.mark.parametrize("kind", ['["ready"]', '{"ready": 1}', "1", "null"])
def test_a_record_whose_kind_is_not_a_string_is_a_protocol_error(kind: str) -> None:
    with pytest.raises(ProtocolError, match="unknown kind"):
        protocol.decode(f'{{"scaler":1,"kind":{kind},"worker":"w","pid":1}}')


@pytest.mark.parametrize(
    "fields",
    [
        '"worker":"w","pid":"12"',
        '"worker":"w","pid":true',
        '"worker":"w","pid":1.5',
        '"worker":["w"],"pid":1',
        '"worker":"w","pid":-1',
        '"worker":"w","pid":1,"limit":null',
    ],
)
def test_a_field_of_the_wrong_type_or_sign_is_a_protocol_error(fields: str) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode(f'{{"scaler":1,"kind":"ready",{fields}}}')


@pytest.mark.parametrize(
    "counters",
    ['{"received":-1}', '{"processed":"3"}', '{"foreign":1.5}', '{"errors":false}'],
)
def test_counters_of_the_wrong_type_or_sign_are_a_protocol_error(
    counters: str,
) -> None:
    line = (
        f'{{"scaler":1,"kind":"progress","worker":"w","run":"r","counters":{counters}}}'
    )

    with pytest.raises(ProtocolError):
        protocol.decode(line)


def test_a_whole_number_is_accepted_where_a_float_is_declared() -> None:
    record = RECORDS[2]
    body = json.loads(protocol.encode(record))
    body["cpu_s"] = 2

    decoded = protocol.decode(json.dumps(body))

    assert isinstance(decoded, Summary)
    assert decoded.cpu_s == 2


def test_a_record_of_another_version_is_a_protocol_error() -> None:
    line = protocol.encode(RECORDS[0]).replace('{"scaler":1', '{"scaler":2', 1)

    with pytest.raises(ProtocolError, match="version 2"):
        protocol.decode(line)


@pytest.mark.parametrize(
    "line",
    [
        '{"scaler":1,"kind":"ready","pid":1}',  # no worker
        '{"scaler":1,"kind":"progress","worker":"w","run":"r","counters":5}',
        '{"scaler":1,"kind":"progress","worker":"w","run":"r",'
        '"counters":{"received":1,"bogus":2}}',
    ],
)
def test_a_record_missing_fields_or_with_bad_counters_is_a_protocol_error(
    line: str,
) -> None:
    with pytest.raises(ProtocolError, match="malformed"):
        protocol.decode(line)


def test_fields_a_newer_writer_adds_are_ignored() -> None:
    body = json.loads(protocol.encode(RECORDS[0]))
    body["numa_node"] = 1

    assert protocol.decode(json.dumps(body)) == RECORDS[0]


def test_a_done_batch_round_trips_as_pairs_of_seq_and_microseconds() -> None:
    pairs = array("I", [0, 150, 7, 0, 2**32 - 1, 2**32 - 1])

    assert protocol.decode_done(protocol.encode_done(pairs)) == pairs


def test_a_done_batch_is_base64_of_little_endian_u32() -> None:
    encoded = protocol.encode_done(array("I", [1, 258]))

    assert base64.b64decode(encoded) == struct.pack("<II", 1, 258)


def test_an_empty_done_batch_is_the_empty_string() -> None:
    assert protocol.encode_done(array("I")) == ""
    assert protocol.decode_done("") == array("I")


def test_a_done_batch_with_an_odd_number_of_values_is_a_protocol_error() -> None:
    odd = base64.b64encode(struct.pack("<III", 1, 2, 3)).decode()

    with pytest.raises(ProtocolError, match="odd number"):
        protocol.decode_done(odd)


@pytest.mark.parametrize(
    "text",
    [
        "not base64!",
        base64.b64encode(b"\1\2\3\4\5").decode(),  # not a whole number of u32
    ],
)
def test_an_unreadable_done_batch_is_a_protocol_error(text: str) -> None:
    with pytest.raises(ProtocolError, match="unreadable done batch"):
        protocol.decode_done(text)
