"""The message format: a fixed header a worker can read, or a foreign message."""

from __future__ import annotations

import struct

import pytest

from scaler import payload


def test_a_message_carries_run_seq_and_send_time_before_its_body() -> None:
    data = payload.encode(b"0123abcd", 42, 1_700_000_000_123_456_789, b"hello 42")

    assert payload.decode(data) == payload.Stamped(
        b"0123abcd", 42, 1_700_000_000_123_456_789
    )
    assert payload.body(data) == b"hello 42"


def test_the_header_is_28_bytes_magic_run_and_two_big_endian_u64() -> None:
    data = payload.encode(b"runid001", 1, 2, b"")

    assert payload.HEADER_SIZE == 28
    assert data == b"SCL1" + b"runid001" + struct.pack(">QQ", 1, 2)


def test_the_largest_sequence_number_and_an_empty_body_round_trip() -> None:
    data = payload.encode(b"ffffffff", 2**64 - 1, 0, b"")

    assert payload.decode(data) == (b"ffffffff", 2**64 - 1, 0)
    assert payload.body(data) == b""


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello 1",
        b"SCL1",
        payload.encode(b"0123abcd", 1, 2, b"")[:-1],  # one byte short of a header
    ],
)
def test_a_message_shorter_than_the_header_is_foreign(data: bytes) -> None:
    assert payload.decode(data) is None


@pytest.mark.parametrize("magic", [b"SCL2", b"scl1", b"\0\0\0\0", b"XXXX"])
def test_a_message_with_another_magic_is_foreign(magic: bytes) -> None:
    ours = payload.encode(b"0123abcd", 7, 8, b"hello 7")

    assert payload.decode(magic + ours[4:]) is None


def test_run_ids_are_eight_hex_characters_and_differ_between_runs() -> None:
    ids = {payload.new_run_id() for _ in range(50)}

    assert len(ids) == 50
    for run_id in ids:
        assert len(run_id) == payload.RUN_ID_LEN
        int(run_id, 16)
