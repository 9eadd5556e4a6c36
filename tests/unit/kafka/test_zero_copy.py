"""Fetch responses spliced around FileSlices must be byte-for-byte the responses kio would
encode with the bytes inline, and must reach the socket through sendfile."""

from __future__ import annotations

import asyncio
import os

import pytest

from raftka.broker.kafka import codec, zero_copy
from raftka.broker.kafka.zero_copy import SliceChangedError, SplicedResponse
from raftka.broker.log.file_slice import FileSlice

FETCH = 1


def fetch_values(records: list[bytes]) -> dict:
    return {"throttle_time": 0, "error_code": 0, "session_id": 0, "responses": [
        {"topic": "t", "partitions": [
            {"partition_index": i, "error_code": 0, "high_watermark": 10 + i,
             "last_stable_offset": 10 + i, "log_start_offset": 0, "aborted_transactions": [],
             "preferred_read_replica": -1,
             "current_leader": {"leader_id": 1, "leader_epoch": 3}, "records": data}
            for i, data in enumerate(records)]}]}


def slice_of(tmp_path, name: str, data: bytes) -> FileSlice:
    path = tmp_path / name
    path.write_bytes(b"head" + data + b"tail")
    return FileSlice(os.open(path, os.O_RDONLY), 4, len(data))


def joined(pieces: list[bytes | FileSlice]) -> bytes:
    return b"".join(p if isinstance(p, bytes) else p.read() for p in pieces)


@pytest.mark.parametrize("version", [4, 11, 12])
def test_a_spliced_fetch_response_equals_the_inline_encoding(tmp_path, version):
    # Sizes around the int32 and varint length boundaries, inline and sliced mixed.
    payloads = [os.urandom(n) for n in (126, 127, 128, 16383, 16384, 40_000, 0, 300_000)]
    spliced = SplicedResponse({})
    records = []
    for i, data in enumerate(payloads):
        if len(data) >= 16383:
            records.append(spliced.place(slice_of(tmp_path, f"s{i}", data)))
        else:
            records.append(data)
    spliced.values.update(fetch_values(records))

    frame = codec.encode_response(FETCH, version, 77, spliced.values)
    pieces = zero_copy.splice(frame, codec.response_is_flexible(FETCH, version),
                              spliced.slices)

    assert sum(isinstance(p, FileSlice) for p in pieces) == 4
    assert joined(pieces) == codec.encode_response(FETCH, version, 77, fetch_values(payloads))
    spliced.close()


def test_small_slices_go_inline_and_are_closed(tmp_path):
    spliced = SplicedResponse({})
    small = slice_of(tmp_path, "small", b"x" * 100)
    assert zero_copy.records_value(spliced, small) == b"x" * 100
    assert not spliced.slices
    with pytest.raises(OSError):
        os.fstat(small.fd)  # closed
    assert zero_copy.records_value(spliced, None) == b""  # never null: old clients choke


async def receive_all(pieces: list[bytes | FileSlice]) -> bytes:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await zero_copy.send(writer, pieces)
            done.set_result(None)
        except Exception as exc:
            done.set_exception(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = await reader.read()
    writer.close()
    server.close()
    await done
    return received


def test_slices_are_sent_with_sendfile(tmp_path, monkeypatch):
    calls = []
    real_sendfile = os.sendfile

    def counting_sendfile(*args):
        calls.append(args)
        return real_sendfile(*args)

    monkeypatch.setattr(os, "sendfile", counting_sendfile)
    big = os.urandom(3 * 1024 * 1024)
    pieces: list[bytes | FileSlice] = [b"before", slice_of(tmp_path, "big", big), b"after"]
    assert asyncio.run(receive_all(pieces)) == b"before" + big + b"after"
    assert calls, "the slice was copied, not sent with sendfile"


def test_a_slice_whose_file_shrank_breaks_the_connection(tmp_path):
    found = slice_of(tmp_path, "shrinking", os.urandom(100_000))
    os.truncate(tmp_path / "shrinking", 50_000)
    with pytest.raises(SliceChangedError):
        asyncio.run(receive_all([found]))
