"""Valid inputs the fuzzers start from: Kafka request frames of every served API version,
RecordBatch v2 batches, and the gRPC request messages. Mutating valid inputs reaches far
deeper into a decoder than random bytes do (random bytes rarely get past the first check).

Kafka frames are written by kio's own writers (as tests/unit/kafka/test_codec.py does), from
bodies whose every field holds a non-trivial value (arrays of two elements, strings,
record batches in `records` fields, consumer-protocol bytes in JoinGroup and SyncGroup), so
every array count, string length and tagged section of the schema is in the bytes to be
corrupted.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import struct
import types
import typing
import uuid
from enum import Enum
from functools import cache
from typing import Any

from kio.serial import entity_writer
from kio.static.primitive import Records

from raftka.broker.kafka import codec
from raftka.broker.kafka.api_table import SUPPORTED
from raftka.records import encode_batch

NOW_MS = 1_700_000_000_000

# ------------------------------------------------------------------- record batches


def batch_seeds() -> list[bytes]:
    """Valid batches: one record, several, keys/headers/nulls, idempotent, and two
    concatenated (a produce request may carry several)."""
    one = encode_batch([(None, b"v", [], NOW_MS)])
    several = encode_batch(
        [(b"k%d" % i, b"value-%d" % i * (i + 1), [("h", b"x"), ("n", None)], NOW_MS + i)
         for i in range(5)])
    nulls = encode_batch([(None, None, [], 0), (b"", b"", [], 0)], now_ms=NOW_MS)
    idempotent = encode_batch([(b"a", b"b", [], NOW_MS)] * 3, producer_id=7, producer_epoch=0,
                              base_sequence=0)
    unicode_headers = encode_batch([(b"\xff" * 3, b"\x00" * 40, [("\u00e9t\u00e9", b"\x80")],
                                     NOW_MS)])
    return [one, several, nulls, idempotent, unicode_headers, one + several]


def consumer_subscription(topics: list[str]) -> bytes:
    """ConsumerProtocolSubscription v0: version, topics, user data (JoinGroup metadata)."""
    out = struct.pack(">hi", 0, len(topics))
    for topic in topics:
        out += struct.pack(">h", len(topic)) + topic.encode()
    return out + struct.pack(">i", -1)


def consumer_assignment(partitions: dict[str, list[int]]) -> bytes:
    """ConsumerProtocolAssignment v0 (SyncGroup assignment bytes)."""
    out = struct.pack(">hi", 0, len(partitions))
    for topic, indexes in partitions.items():
        out += struct.pack(">h", len(topic)) + topic.encode() + struct.pack(">i", len(indexes))
        out += b"".join(struct.pack(">i", i) for i in indexes)
    return out + struct.pack(">i", -1)


# ------------------------------------------------------------------------- Kafka


def _value(kind: Any, name: str, depth: int) -> Any:
    """A non-trivial value of a kio field type, as codec.build accepts it."""
    origin = typing.get_origin(kind)
    if origin is typing.Union or origin is types.UnionType:
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        return _value(options[0], name, depth)
    if origin is tuple:
        inner = typing.get_args(kind)[0]
        return [_value(inner, name, depth + 1) for _ in range(2 if depth < 3 else 1)]
    if dataclasses.is_dataclass(kind):
        return populated(kind, depth + 1)  # type: ignore[arg-type]
    if isinstance(kind, type):
        if issubclass(kind, Enum):
            return 0
        if issubclass(kind, datetime.timedelta):
            return 1500
        if issubclass(kind, Records):
            return batch_seeds()[1]
        if issubclass(kind, bool):
            return True
        if issubclass(kind, int):
            return 1 if "index" in name or "partition" in name else 3
        if issubclass(kind, float):
            return 0.5
        if issubclass(kind, str):
            return "orders" if "topic" in name or name == "name" else "v-\u00e9"
        if issubclass(kind, bytes):
            if "assignment" in name:
                return consumer_assignment({"orders": [0, 1], "pay": [2]})
            return consumer_subscription(["orders", "pay"])
        if issubclass(kind, uuid.UUID):
            return uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
    raise TypeError(f"no sample value for {kind!r} ({name})")


def populated(schema: type, depth: int = 0) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    return {f.name: _value(hints[f.name], f.name, depth) for f in dataclasses.fields(schema)}


def request_frame(api_key: int, version: int, body: Any, correlation_id: int = 7,
                  client_id: str | None = "fuzz") -> bytes:
    """The size-less frame the listener hands to decode_request, written by kio."""
    schema = type(body)
    header = schema.__header_schema__(request_api_key=api_key, request_api_version=version,
                                      correlation_id=correlation_id, client_id=client_id)
    buffer = io.BytesIO()
    entity_writer(schema.__header_schema__)(buffer, header)
    entity_writer(schema)(buffer, body)
    return buffer.getvalue()


@cache
def kafka_seeds() -> tuple[bytes, ...]:
    """For every served API and version: a populated request and an all-zero one."""
    frames: list[bytes] = []
    for api_key, (low, high) in sorted(SUPPORTED.items()):
        for version in range(low, high + 1):
            schema = codec.request_schema(api_key, version)
            frames.append(request_frame(api_key, version, codec.build(schema, populated(schema))))
            frames.append(request_frame(api_key, version, codec.build(schema, {}),
                                        client_id=None))
    return tuple(frames)


# API keys whose requests the fuzzers weight up: the ones the brief names first.
FOCUS_APIS = (0, 1, 3, 8, 11, 14, 19)
