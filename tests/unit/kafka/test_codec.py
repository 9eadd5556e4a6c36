"""The Kafka codec's pure behaviour: request frames in (header + body, flexible or not), response
frames out, the ApiVersions fallback, and what bad bytes turn into. No sockets, no brokers.

Request frames here are the size-less payload the listener hands to `decode_request` (the
listener strips the 4-byte size prefix); response frames include it, as the codec returns them.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import os
import random
import resource
import struct
import uuid
from typing import Any

import pytest
from kio.index import load_response_schema
from kio.schema.errors import ErrorCode
from kio.schema.response_header.v0.header import ResponseHeader as ResponseHeaderV0
from kio.schema.response_header.v1.header import ResponseHeader as ResponseHeaderV1
from kio.serial import entity_reader, entity_writer
from kio.serial.errors import DecodeError

from raftka.broker.kafka import codec
from raftka.broker.kafka.api_table import SUPPORTED, api_versions
from raftka.broker.kafka.codec import MalformedRequestError, UnsupportedVersionError
from raftka.broker.kafka.listener import KafkaListener

PRODUCE, METADATA, API_VERSIONS = 0, 3, 18


def _boundary_versions() -> list[tuple[int, int]]:
    """For every served API: its lowest and highest served version, and the versions either
    side of its switch to flexible encodings (the request header goes from v1 to v2). Not
    every version: importing all ~120 kio schema modules alone takes over half a second."""
    chosen: set[tuple[int, int]] = set()
    for key, (low, high) in SUPPORTED.items():
        chosen |= {(key, low), (key, high)}
        for version in range(low + 1, high + 1):
            if codec.request_schema(key, version).__flexible__:
                chosen |= {(key, version - 1), (key, version)}
                break
    return sorted(chosen)


SERVED_BOUNDARIES = _boundary_versions()


# --------------------------------------------------------------------- wire helpers
def i16(n: int) -> bytes:
    return struct.pack(">h", n)


def i32(n: int) -> bytes:
    return struct.pack(">i", n)


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def legacy_string(s: str | None) -> bytes:
    if s is None:
        return i16(-1)
    data = s.encode()
    return i16(len(data)) + data


def compact_string(s: str) -> bytes:
    data = s.encode()
    return uvarint(len(data) + 1) + data


NO_TAGS = b"\x00"


def header_v1(api_key: int, version: int, correlation_id: int, client_id: str | None) -> bytes:
    """Request header v1 (non-flexible APIs): int16 key, int16 version, int32 correlation id,
    nullable int16-length client id."""
    return i16(api_key) + i16(version) + i32(correlation_id) + legacy_string(client_id)


def header_v2(api_key: int, version: int, correlation_id: int, client_id: str | None,
              tags: bytes = NO_TAGS) -> bytes:
    """Request header v2 (flexible APIs): as v1 (the client id stays an int16-length string,
    Kafka special-cases it), then tagged fields."""
    return header_v1(api_key, version, correlation_id, client_id) + tags


def kio_request_frame(api_key: int, version: int, correlation_id: int, client_id: str | None,
                      body: Any) -> bytes:
    """The same frame written by kio's own writers (header schema chosen by the body's)."""
    schema = type(body)
    header = schema.__header_schema__(request_api_key=api_key, request_api_version=version,
                                      correlation_id=correlation_id, client_id=client_id)
    buffer = io.BytesIO()
    entity_writer(schema.__header_schema__)(buffer, header)
    entity_writer(schema)(buffer, body)
    return buffer.getvalue()


def read_response(frame: bytes, api_key: int, version: int) -> tuple[int, Any]:
    """(correlation id, body) of a response frame, read back with kio; every byte accounted
    for. ApiVersions answers with response header v0 at every version (as Kafka does)."""
    (size,) = struct.unpack_from(">i", frame)
    assert size == len(frame) - 4
    schema = load_response_schema(api_key, version)
    header_schema: Any = ResponseHeaderV1 if schema.__flexible__ and api_key != API_VERSIONS \
        else ResponseHeaderV0
    header, header_size = entity_reader(header_schema)(frame, 4)
    body, body_size = entity_reader(schema)(frame, 4 + header_size)
    assert 4 + header_size + body_size == len(frame)
    return header.correlation_id, body


def metadata_v1_frame() -> bytes:
    return header_v1(METADATA, 1, 42, "cli") + i32(2) + legacy_string("orders") \
        + legacy_string("pay")


def metadata_v9_frame(header_tags: bytes = NO_TAGS, topic_tags: bytes = NO_TAGS,
                      body_tags: bytes = NO_TAGS) -> bytes:
    # topics (compact array of {name, tags}), allow_auto_topic_creation,
    # include_cluster_authorized_operations, include_topic_authorized_operations, tags
    return header_v2(METADATA, 9, 43, "cli", header_tags) + uvarint(2 + 1) \
        + compact_string("orders") + topic_tags + compact_string("pay") + NO_TAGS \
        + b"\x00" + b"\x01" + b"\x00" + body_tags


def fallback_answer(frame: bytes) -> Any:
    """KafkaListener._answer on a frame whose answer needs neither a broker nor a handler (the
    ApiVersions fallback, unsupported APIs): those paths read nothing from the instance."""
    listener = object.__new__(KafkaListener)
    return asyncio.run(listener._answer(frame, ("127.0.0.1", 0)))


# ------------------------------------------------------------------ request headers
def test_peek_header_reads_key_version_and_correlation_id_only() -> None:
    assert codec.peek_header(i16(3) + i16(12) + i32(-7)) == (3, 12, -7)
    assert codec.peek_header(metadata_v1_frame()) == (METADATA, 1, 42)


@pytest.mark.parametrize("size", [0, 1, 7])
def test_peek_header_rejects_a_frame_shorter_than_the_header(size: int) -> None:
    with pytest.raises(MalformedRequestError, match="has no header"):
        codec.peek_header(metadata_v1_frame()[:size])


def test_non_flexible_metadata_v1_request_decodes() -> None:
    frame = metadata_v1_frame()

    request = codec.decode_request(frame)

    assert (request.api_key, request.api_version, request.correlation_id,
            request.client_id) == (METADATA, 1, 42, "cli")
    assert [t.name for t in request.body.topics] == ["orders", "pay"]
    # v1 has no allow_auto_topic_creation: handlers read it through field() with a default.
    assert codec.field(request.body, "allow_auto_topic_creation", True) is True
    assert not request.body.__flexible__
    # kio writes exactly these bytes for the decoded request: nothing was misread.
    assert kio_request_frame(METADATA, 1, 42, "cli", request.body) == frame


def test_flexible_metadata_v9_request_decodes() -> None:
    frame = metadata_v9_frame()

    request = codec.decode_request(frame)

    assert (request.api_key, request.api_version, request.correlation_id,
            request.client_id) == (METADATA, 9, 43, "cli")
    assert [t.name for t in request.body.topics] == ["orders", "pay"]
    assert request.body.allow_auto_topic_creation is False
    assert request.body.include_cluster_authorized_operations is True
    assert request.body.include_topic_authorized_operations is False
    assert request.body.__flexible__
    # kio writes exactly these bytes for the decoded request: nothing was misread.
    assert kio_request_frame(METADATA, 9, 43, "cli", request.body) == frame


@pytest.mark.parametrize(("version", "frame", "software"), [
    # v0-v2: header v1 and an empty body.
    (0, header_v1(API_VERSIONS, 0, 1, "rdkafka"), None),
    (2, header_v1(API_VERSIONS, 2, 1, "rdkafka"), None),
    # v3: header v2 (tagged fields), compact strings, body tagged fields.
    (3, header_v2(API_VERSIONS, 3, 1, "rdkafka") + compact_string("librdkafka")
     + compact_string("2.3.0") + NO_TAGS, ("librdkafka", "2.3.0")),
])
def test_api_versions_request_in_both_header_formats(version: int, frame: bytes,
                                                     software: tuple[str, str] | None) -> None:
    request = codec.decode_request(frame)

    assert (request.api_key, request.api_version, request.correlation_id,
            request.client_id) == (API_VERSIONS, version, 1, "rdkafka")
    if software is None:
        assert codec.field(request.body, "client_software_name") is None
    else:
        assert (request.body.client_software_name,
                request.body.client_software_version) == software


@pytest.mark.parametrize("frame", [
    header_v1(METADATA, 1, 5, None) + i32(0),
    header_v2(METADATA, 9, 5, None) + uvarint(1) + b"\x01\x00\x00" + NO_TAGS,
], ids=["header-v1", "header-v2"])
def test_a_null_client_id_decodes_as_none(frame: bytes) -> None:
    request = codec.decode_request(frame)

    assert request.client_id is None
    assert request.correlation_id == 5
    assert request.body.topics == ()


def test_metadata_v1_null_topics_means_all_topics() -> None:
    request = codec.decode_request(header_v1(METADATA, 1, 5, "c") + i32(-1))

    assert request.body.topics is None


def test_served_request_versions_round_trip_through_kio() -> None:
    # A request of every field's zero value, written by kio with the header version each API
    # version uses, reads back identically (and the codec knows those served versions).
    wrong = []
    for api_key, version in SERVED_BOUNDARIES:
        body = codec.build(codec.request_schema(api_key, version), {})
        frame = kio_request_frame(api_key, version, 2**31 - 1, "client-\u00e9", body)
        request = codec.decode_request(frame)
        if (request.api_key, request.api_version, request.correlation_id, request.client_id,
                request.body) != (api_key, version, 2**31 - 1, "client-\u00e9", body):
            wrong.append((api_key, version, request))
    assert wrong == []


def test_a_produce_request_keeps_its_records_bytes() -> None:
    schema = codec.request_schema(PRODUCE, 9)
    body = codec.build(schema, {"acks": -1, "timeout": 1500, "topic_data": [
        {"name": "orders", "partition_data": [{"index": 2, "records": b"\x00batch\xff"}]}]})

    request = codec.decode_request(kio_request_frame(PRODUCE, 9, 8, "p", body))

    assert request.body.acks == -1
    assert request.body.timeout == datetime.timedelta(milliseconds=1500)
    (topic,) = request.body.topic_data
    (partition,) = topic.partition_data
    assert (topic.name, partition.index, bytes(partition.records)) == \
        ("orders", 2, b"\x00batch\xff")


# ------------------------------------------------------------- unknown and bad input
@pytest.mark.parametrize("api_key", [-1, 99, 9999, 32767])
def test_an_unknown_api_key_is_an_unsupported_version_error(api_key: int) -> None:
    with pytest.raises(UnsupportedVersionError, match=f"unknown api key {api_key}"):
        codec.decode_request(header_v1(api_key, 0, 1, "c") + b"\x00" * 8)


@pytest.mark.parametrize(("api_key", "version"), [(METADATA, 99), (METADATA, -1),
                                                  (API_VERSIONS, 42)])
def test_an_unknown_version_is_an_unsupported_version_error(api_key: int, version: int) -> None:
    with pytest.raises(UnsupportedVersionError, match=f"api {api_key} has no version {version}"):
        codec.decode_request(header_v1(api_key, version, 1, "c"))


@pytest.mark.parametrize("make_frame", [metadata_v1_frame, metadata_v9_frame],
                         ids=["metadata-v1", "metadata-v9"])
def test_every_truncation_is_a_malformed_request(make_frame: Any) -> None:
    frame = make_frame()
    for size in range(len(frame)):
        with pytest.raises(MalformedRequestError):
            codec.decode_request(frame[:size])


@pytest.mark.parametrize("make_frame", [metadata_v1_frame, metadata_v9_frame],
                         ids=["metadata-v1", "metadata-v9"])
def test_bytes_past_the_schema_are_ignored(make_frame: Any) -> None:
    # As Kafka's own parser does (librdkafka 2.x's AdminClient sends Metadata v12 with three).
    plain = codec.decode_request(make_frame())

    padded = codec.decode_request(make_frame() + b"\x00\x00\x00")

    assert (padded.api_key, padded.api_version, padded.correlation_id, padded.client_id,
            padded.body) == (plain.api_key, plain.api_version, plain.correlation_id,
                             plain.client_id, plain.body)


@pytest.mark.parametrize(("frame", "cause"), [
    # lengths are checked by broker/kafka/frame_guard.py before kio reads anything
    (header_v1(METADATA, 1, 1, "c") + i32(1_000_000), "topics: 1000000 elements announced"),
    (header_v1(METADATA, 1, 1, "c") + i32(-2), "negative array length"),
    (header_v1(METADATA, 1, 1, None)[:-2] + i16(300) + b"c", "client_id: 300 bytes announced"),
    (header_v2(METADATA, 9, 1, "c") + b"\xff" * 6, "varint longer than 5 bytes"),
    (header_v2(API_VERSIONS, 3, 1, "c") + b"\x01", "truncated varint"),
    # what fits but is still wrong is kio's to say
    (header_v1(METADATA, 1, 1, "c") + i32(1) + i16(2) + b"\xff\xfe", "UTF-8"),
    (header_v2(API_VERSIONS, 3, 1, "c") + b"\x00\x01\x00", "compact string"),
], ids=["array-overruns", "negative-array", "client-id-overruns", "varint-too-long",
        "truncated", "bad-utf8", "null-compact-string"])
def test_bad_body_bytes_are_a_malformed_request_naming_the_cause(frame: bytes,
                                                                cause: str) -> None:
    with pytest.raises(MalformedRequestError, match=r"^(cannot parse )?api \d+ v\d+: ") as caught:
        codec.decode_request(frame)

    assert cause in str(caught.value)
    assert caught.value.__cause__ is not None  # the guard's or kio's own error, chained


def test_kio_decode_errors_are_chained_as_is() -> None:
    frame = header_v1(METADATA, 1, 1, "c") + i32(1) + i16(2) + b"\xff\xfe"
    with pytest.raises(MalformedRequestError) as caught:
        codec.decode_request(frame)

    assert isinstance(caught.value.__cause__, DecodeError)
    assert isinstance(caught.value, ValueError)


def test_random_garbage_after_a_valid_header_never_escapes_as_another_error() -> None:
    rng = random.Random(20240613)
    heads = [header_v1(METADATA, 1, 1, "c"), header_v2(METADATA, 12, 1, "c"),
             header_v2(PRODUCE, 9, 1, "c"), header_v1(API_VERSIONS, 0, 1, "c"),
             header_v2(1, 12, 1, "c")]
    outcomes = {"decoded": 0, "malformed": 0}
    for _ in range(300):
        # Any bytes: long varint lengths once aborted the process (see the test below).
        garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        try:
            codec.decode_request(rng.choice(heads) + garbage)
        except MalformedRequestError:
            outcomes["malformed"] += 1
        else:
            outcomes["decoded"] += 1
    assert outcomes["malformed"] > 0


def test_a_huge_compact_array_length_is_a_malformed_request_not_a_process_abort() -> None:
    """Regression (kio 0.6.5's native reader; guarded by broker/kafka/frame_guard.py): a
    compact array length was trusted as the capacity to allocate, so a Metadata v9 request
    of 17 bytes (21 on the wire) claiming 2**35 - 2 topics
    makes Rust's allocator fail (275 GB) and abort() the whole process, which no `except`
    can catch: any client can kill the broker. Run in a forked child, its address space
    capped so that the outcome does not depend on the machine's overcommit policy."""
    frame = header_v2(METADATA, 9, 1, "c") + uvarint(2**35 - 1)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report through the exit status, never return into pytest
        code = 3
        try:
            os.close(read_end)
            os.dup2(write_end, 2)
            os.environ["RUST_BACKTRACE"] = "0"
            with open("/proc/self/statm") as statm:
                used = int(statm.read().split()[0]) * resource.getpagesize()
            limit = used + 4 * 2**30
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            try:
                codec.decode_request(frame)
                code = 1
            except MalformedRequestError:
                code = 0
            except BaseException as exc:  # reported to the parent
                os.write(2, f"{type(exc).__name__}: {exc}".encode())
                code = 2
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as child_stderr:
        stderr = child_stderr.read().decode(errors="replace").strip()
    _, status = os.waitpid(pid, 0)

    assert not os.WIFSIGNALED(status), (
        f"decoding a {len(frame)}-byte request killed the process with signal "
        f"{os.WTERMSIG(status)}: {stderr.splitlines()[:1]}")
    assert os.WEXITSTATUS(status) == 0, f"expected MalformedRequestError; {stderr!r}"


def test_unknown_tagged_fields_are_skipped_as_kafka_requires() -> None:
    """Regression (kio 0.6.5; broker/kafka/frame_guard.py drops them first): KIP-482 says a
    receiver skips tagged fields it does not know (that is how fields get added without a
    version bump; Kafka's own parsers keep them as unknown tagged fields). kio raises
    KeyError('Unknown tagged field tag: N'), so the listener closes
    the connection on a request that Kafka would serve."""
    plain = codec.decode_request(metadata_v9_frame())
    unknown = b"\x01" + uvarint(7) + uvarint(2) + b"hi"  # one field, tag 7, 2 bytes

    for frame in (metadata_v9_frame(header_tags=unknown), metadata_v9_frame(topic_tags=unknown),
                  metadata_v9_frame(body_tags=unknown)):
        request = codec.decode_request(frame)
        assert (request.correlation_id, request.client_id, request.body) == \
            (plain.correlation_id, plain.client_id, plain.body)


# ------------------------------------------------------------------------ responses
def test_metadata_response_round_trips_through_kio() -> None:
    topic_id = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
    values = {
        "throttle_time": 0, "cluster_id": "raftka-1", "controller_id": 2,
        "brokers": [{"node_id": 1, "host": "10.0.0.1", "port": 9092, "rack": None},
                    {"node_id": 2, "host": "10.0.0.2", "port": 9093, "rack": "r2"}],
        "topics": [
            {"error_code": 0, "name": "orders", "topic_id": topic_id, "is_internal": False,
             "partitions": [{"error_code": 0, "partition_index": 0, "leader_id": 1,
                             "leader_epoch": 4, "replica_nodes": [1, 2], "isr_nodes": [1],
                             "offline_replicas": []}]},
            {"error_code": ErrorCode.unknown_topic_or_partition.value, "name": "nope",
             "topic_id": uuid.UUID(int=0), "is_internal": False, "partitions": []}],
    }

    correlation_id, body = read_response(codec.encode_response(METADATA, 12, -5, values),
                                         METADATA, 12)

    assert correlation_id == -5
    assert body.throttle_time == datetime.timedelta(0)
    assert (body.cluster_id, body.controller_id) == ("raftka-1", 2)
    assert [(b.node_id, b.host, b.port, b.rack) for b in body.brokers] == \
        [(1, "10.0.0.1", 9092, None), (2, "10.0.0.2", 9093, "r2")]
    orders, nope = body.topics
    assert (orders.name, orders.topic_id, orders.error_code) == \
        ("orders", topic_id, ErrorCode.none)
    (partition,) = orders.partitions
    assert (partition.partition_index, partition.leader_id, partition.leader_epoch,
            partition.replica_nodes, partition.isr_nodes, partition.offline_replicas) == \
        (0, 1, 4, (1, 2), (1,), ())
    assert nope.error_code == ErrorCode.unknown_topic_or_partition
    assert nope.partitions == ()
    # Fields the dict left out get the schema default.
    assert orders.topic_authorized_operations == -(2**31)


def test_a_response_keeps_only_the_fields_of_the_negotiated_version() -> None:
    # Handlers return the superset; Metadata v1 has no cluster id, throttle or topic ids.
    values = {"throttle_time": 250, "cluster_id": "raftka-1", "controller_id": 2,
              "brokers": [{"node_id": 1, "host": "h", "port": 1, "rack": "r"}],
              "topics": [{"error_code": 0, "name": "t", "topic_id": uuid.UUID(int=7),
                          "is_internal": True, "partitions": []}]}

    correlation_id, body = read_response(codec.encode_response(METADATA, 1, 9, values),
                                         METADATA, 1)

    assert correlation_id == 9
    assert not hasattr(body, "cluster_id") and not hasattr(body, "throttle_time")
    assert body.controller_id == 2
    assert [(t.name, t.is_internal) for t in body.topics] == [("t", True)]


def test_served_response_versions_encode_from_an_empty_dict() -> None:
    # Every field of these served responses has a zero the codec can fill in, and the frame
    # (size prefix, header v0/v1, body) reads back with kio to exactly that.
    wrong = []
    for api_key, version in SERVED_BOUNDARIES:
        frame = codec.encode_response(api_key, version, 31, {})
        correlation_id, body = read_response(frame, api_key, version)
        if (correlation_id, body) != (31, codec.build(load_response_schema(api_key, version),
                                                      {})):
            wrong.append((api_key, version, correlation_id, body))
    assert wrong == []


@pytest.mark.parametrize(("api_key", "version", "flexible"), [
    (METADATA, 8, False), (METADATA, 9, True), (API_VERSIONS, 2, False),
    (API_VERSIONS, 3, True), (1, 11, False), (1, 12, True)])
def test_response_header_carries_tagged_fields_except_for_api_versions(
        api_key: int, version: int, flexible: bool) -> None:
    frame = codec.encode_response(api_key, version, 0x01020304, {})

    assert codec.response_is_flexible(api_key, version) is flexible
    assert frame[4:8] == b"\x01\x02\x03\x04"
    body_start = 9 if flexible and api_key != API_VERSIONS else 8
    body = codec.build(load_response_schema(api_key, version), {})
    buffer = io.BytesIO()
    entity_writer(type(body))(buffer, body)
    assert frame[body_start:] == buffer.getvalue()
    if body_start == 9:
        assert frame[8:9] == NO_TAGS


# -------------------------------------------------------------- ApiVersions fallback
def expected_fallback(correlation_id: int) -> bytes:
    """Kafka's answer to an ApiVersions version it does not serve, byte by byte: response
    header v0, ApiVersionsResponse v0 with UNSUPPORTED_VERSION and every served range."""
    body = i16(35) + i32(len(SUPPORTED)) + b"".join(
        i16(key) + i16(low) + i16(high) for key, (low, high) in sorted(SUPPORTED.items()))
    payload = i32(correlation_id) + body
    return i32(len(payload)) + payload


def test_the_fallback_response_is_api_versions_v0_with_unsupported_version() -> None:
    frame = codec.encode_response(API_VERSIONS, 0, 77, {"error_code": 35,
                                                        "api_keys": api_versions()})

    assert frame == expected_fallback(77)
    correlation_id, body = read_response(frame, API_VERSIONS, 0)
    assert correlation_id == 77
    assert body.error_code == ErrorCode.unsupported_version
    assert {a.api_key: (a.min_version, a.max_version) for a in body.api_keys} == SUPPORTED


@pytest.mark.parametrize("version", [4, 5, 127, -1])
def test_an_unserved_api_versions_version_gets_the_v0_fallback(version: int) -> None:
    # The body of an unknown version cannot be parsed, and need not be: any bytes will do.
    frame = header_v2(API_VERSIONS, version, 1234, "newer-client") + b"\xde\xad\xbe\xef"

    assert fallback_answer(frame) == expected_fallback(1234)


def test_an_unserved_version_of_another_api_closes_the_connection() -> None:
    # Kafka closes the connection for those (only ApiVersions answers at any version).
    with pytest.raises(MalformedRequestError, match="not supported"):
        fallback_answer(header_v2(METADATA, 13, 1, "c"))
    with pytest.raises(MalformedRequestError, match="api 9999 v0 is not supported"):
        fallback_answer(header_v1(9999, 0, 1, "c"))
    with pytest.raises(MalformedRequestError, match="has no header"):
        fallback_answer(b"\x00\x12")


def test_api_versions_v3_advertises_a_finalized_metadata_version() -> None:
    """Kafka tools (kafka-ui, describeFeatures) read the cluster's version from it."""
    from raftka.broker.kafka.admin_handlers import METADATA_VERSION_LEVEL, api_versions_body

    _, body = read_response(codec.encode_response(API_VERSIONS, 3, 5, api_versions_body()),
                            API_VERSIONS, 3)
    finalized = {f.name: (f.min_version_level, f.max_version_level)
                 for f in body.finalized_features}
    assert finalized == {"metadata.version": (METADATA_VERSION_LEVEL, METADATA_VERSION_LEVEL)}
    assert body.finalized_features_epoch >= 0
    assert [f.name for f in body.supported_features] == ["metadata.version"]
    # older versions have no such fields: the same values still encode
    _, old = read_response(codec.encode_response(API_VERSIONS, 2, 5, api_versions_body()),
                           API_VERSIONS, 2)
    assert old.error_code == ErrorCode.none
