"""The pre-check of request frames (broker/kafka/frame_guard.py): it must know every field type
of every request version the listener serves (or it would refuse valid requests), pass what
kio writes unchanged, keep known tagged fields and drop unknown ones."""

from __future__ import annotations

import dataclasses
import datetime
import io
import struct

import pytest
from kio.index import load_request_schema
from kio.serial import entity_writer

from raftka.broker.kafka import codec
from raftka.broker.kafka.frame_guard import KNOWN_TYPES, FrameError, checked_frame
from raftka.broker.kafka.listener import SUPPORTED


def field_types(entity_type: type, seen: set[type] | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    if entity_type in seen:
        return set()
    seen.add(entity_type)
    out: set[str] = set()
    for field in dataclasses.fields(entity_type):
        if "kafka_type" in field.metadata:
            out.add(field.metadata["kafka_type"])
        for candidate in _entity_types(field.type):
            out |= field_types(candidate, seen)
    return out


def _entity_types(annotation: object) -> list[type]:
    args = getattr(annotation, "__args__", ())
    found = [a for a in args if dataclasses.is_dataclass(a)]
    for arg in args:
        found += _entity_types(arg)
    if dataclasses.is_dataclass(annotation):
        found.append(annotation)  # type: ignore[arg-type]
    return found


def test_every_field_type_of_every_served_request_version_is_known() -> None:
    for api_key, (low, high) in SUPPORTED.items():
        for version in range(low, high + 1):
            schema = load_request_schema(api_key, version)
            unknown = (field_types(schema) | field_types(schema.__header_schema__)) - KNOWN_TYPES
            assert not unknown, f"api {api_key} v{version}: {unknown}"


def written(entity: object) -> bytes:
    buffer = io.BytesIO()
    entity_writer(type(entity))(buffer, entity)
    return buffer.getvalue()


def fetch_v12_frame(cluster_id: str | None) -> bytes:
    """Fetch v12, whose body ends with a tagged section holding cluster_id (tag 0)."""
    schema = load_request_schema(1, 12)
    header = schema.__header_schema__(request_api_key=1, request_api_version=12,
                                      correlation_id=7, client_id="guard")
    body = schema(cluster_id=cluster_id, replica_id=-1,
                  max_wait=datetime.timedelta(milliseconds=500), min_bytes=1, max_bytes=1024,
                  isolation_level=0, session_id=0, session_epoch=-1, topics=(),
                  forgotten_topics_data=(), rack_id="")
    return written(header) + written(body)


def with_tagged_fields(frame_without_tags: bytes, *entries: bytes) -> bytes:
    assert frame_without_tags.endswith(b"\x00")  # an empty tagged section, last
    return frame_without_tags[:-1] + bytes([len(entries)]) + b"".join(entries)


def tagged(tag: int, payload: bytes) -> bytes:
    return bytes([tag, len(payload)]) + payload


CLUSTER_A = tagged(0, bytes([len("cluster-a") + 1]) + b"cluster-a")  # a compact string


def test_what_kio_writes_passes_unchanged() -> None:
    frame = fetch_v12_frame("cluster-a")
    assert frame == with_tagged_fields(fetch_v12_frame(None), CLUSTER_A)
    schema = load_request_schema(1, 12)
    assert checked_frame(schema.__header_schema__, schema, frame) is frame


def test_known_tagged_fields_are_kept_and_unknown_ones_dropped() -> None:
    frame = with_tagged_fields(fetch_v12_frame(None), CLUSTER_A, tagged(9, b"xyz"))
    request = codec.decode_request(frame)
    assert request.body.cluster_id == "cluster-a"
    assert request.body.max_bytes == 1024
    schema = load_request_schema(1, 12)
    assert checked_frame(schema.__header_schema__, schema, frame) == fetch_v12_frame(
        "cluster-a")


def test_a_tagged_field_longer_than_the_frame_is_refused() -> None:
    frame = with_tagged_fields(fetch_v12_frame(None), bytes([9, 100]) + b"short")
    schema = load_request_schema(1, 12)
    with pytest.raises(FrameError, match="tag 9"):
        checked_frame(schema.__header_schema__, schema, frame)


def test_legacy_lengths_are_bounded_too() -> None:
    schema = load_request_schema(3, 1)  # Metadata v1: int16 client id, int32 topic count
    header = struct.pack(">hhih", 3, 1, 1, 1) + b"c"
    with pytest.raises(FrameError, match="topics: 2147483647 elements announced"):
        checked_frame(schema.__header_schema__, schema, header + struct.pack(">i", 2**31 - 1))
