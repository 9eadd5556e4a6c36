"""What each fuzzed input must lead to. One function (or object) per target takes one input
and returns a short outcome label, or raises `Unexpected` (carrying the input in hex) when
the code under test broke its contract: an exception type it does not document, a refusal
without a message, a stored byte that changed although the input was refused, a result that
contradicts itself. Shared by the short runs (tests/fuzz/test_*.py) and the long run
(bench/fuzz_long.py).

Contracts, from the code's own documentation:
- Kafka frames (broker/kafka/codec.py, frame_guard.py): a decoded Request, or
  MalformedRequestError / UnsupportedVersionError with a message (the listener closes the
  connection on the first, answers or closes on the second: listener.py `_answer`).
- RecordBatch v2 (raftka/records.py): results, or CorruptBatchError with a message.
  Produce-side parsing (broker/produce_path.py parse_produce_data): parsed batches, or a
  BrokerError / CorruptBatchError (both become the partition's error code in `fill_error`).
  Appending what parsed (broker/partition.py append_as_leader): an AppendResult, or a
  BrokerError / RecordTooLargeError / CorruptBatchError; after any refusal the log's files
  are byte-identical.
- gRPC requests: FromString parses or raises DecodeError; the pure handlers answer with an
  error code (the controller's raise nothing), the consumer group raises GroupError only,
  and whatever records a controller handler returns apply to the image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.message import DecodeError, Message
from kio.serial._introspect import is_optional

from raftka.broker.errors import BrokerError
from raftka.broker.groups import classic
from raftka.broker.groups.state import ConsumerGroup, GroupError
from raftka.broker.kafka import codec
from raftka.broker.kafka.codec import MalformedRequestError, UnsupportedVersionError
from raftka.broker.log.config import LogConfig
from raftka.broker.log.log import PartitionLog, RecordTooLargeError
from raftka.broker.metadata_view import (
    describe_cluster,
    describe_topics,
    list_topics,
    metadata_response,
)
from raftka.broker.partition import Partition, TopicPartition
from raftka.broker.produce_path import parse_produce_data
from raftka.cluster import controller
from raftka.cluster import records as metadata_records
from raftka.cluster.controller import ControllerSettings
from raftka.cluster.delta import apply_encoded_batch
from raftka.cluster.image import EMPTY_IMAGE, NO_LEADER, MetadataImage, PartitionRegistration
from raftka.proto.raftka.v1 import broker_pb2, common_pb2
from raftka.records import (
    COMPRESSION_NONE,
    HEADER_SIZE,
    CorruptBatchError,
    Record,
    decode_batches,
    iter_headers,
    read_header,
    split_batches,
    validate_batch,
    validate_records,
)
from tests.fuzz.seeds import NOW_MS, batch_seeds

ERROR_CODES = frozenset(common_pb2.ErrorCode.values())


class Unexpected(AssertionError):
    """The code under test broke its contract on `data`."""

    def __init__(self, target: str, data: bytes, problem: str,
                 cause: BaseException | None = None) -> None:
        self.target, self.data, self.problem = target, data, problem
        detail = ""
        if cause is not None:
            detail = "\n" + "".join(traceback.format_exception(cause)).rstrip()
        super().__init__(f"{target}: {problem}\ninput ({len(data)} bytes, hex): {data.hex()}"
                         f"{detail}")

    @property
    def signature(self) -> str:
        """What the failure is, without the input: failures that share it are one bug."""
        return f"{self.target}: {self.problem.splitlines()[0][:160]}"


def _clear(target: str, data: bytes, exc: BaseException, batch: bytes | None = None) -> None:
    """A refusal must say what is wrong, and not stand for running out of memory (codec.py
    and records.py wrap whatever their decoders raise, MemoryError included: under the long
    run's address-space cap a runaway allocation would otherwise pass for a clean refusal).
    The one MemoryError that is a clean refusal: the record decoder's for a length of 2**62
    or more, which overflows its bounds check into a request no machine grants (see
    tests/fuzz/test_fuzz_regressions.py); `batch` is the record bytes when `data` is not."""
    if not str(exc).strip():
        raise Unexpected(target, data, f"{type(exc).__name__} without a message", exc)
    cause = exc.__cause__
    if cause is not None and not str(cause) and type(cause).__name__ not in str(exc):
        # A wrapper that passes on its cause's message passed on nothing.
        raise Unexpected(target, data, f"{type(exc).__name__} without a reason: {exc!r} "
                         f"(caused by a bare {type(cause).__name__})", exc)
    if isinstance(exc.__cause__, MemoryError) and not absurd_record_length(
            data if batch is None else batch):
        raise Unexpected(target, data, f"refused because memory ran out: {exc}", exc)


ABSURD_LENGTH = 2**62


def absurd_record_length(data: bytes) -> bool:
    """Whether an uncompressed batch in `data` has a record whose length, key, value or
    header length (zigzag varints) is ABSURD_LENGTH or more, walking records the way the
    RecordBatch v2 layout lays them out and stopping where they stop making sense."""

    def zigzag(at: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = data[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return (value >> 1) ^ -(value & 1), at

    for position, header in iter_headers(data):
        if header.compression != COMPRESSION_NONE:
            continue
        at, end = position + HEADER_SIZE, position + header.size_bytes
        try:
            while at < end:
                length, at = zigzag(at)
                if abs(length) >= ABSURD_LENGTH:
                    return True
                record_end = at + length
                _, at = zigzag(at + 1)  # attributes, then timestamp delta
                _, at = zigzag(at)  # offset delta
                for _ in range(2):  # key, value
                    size, at = zigzag(at)
                    if abs(size) >= ABSURD_LENGTH:
                        return True
                    at += max(size, 0)
                count, at = zigzag(at)
                for _ in range(max(min(count, 1000), 0)):
                    for _ in range(2):
                        size, at = zigzag(at)
                        if abs(size) >= ABSURD_LENGTH:
                            return True
                        at += max(size, 0)
                at = max(record_end, at)
        except IndexError:
            continue
    return False


# ======================================================================= Kafka frames
def check_kafka_frame(frame: bytes) -> str:
    """decode_request as the listener calls it (after peek_header)."""
    try:
        api_key, api_version, correlation_id = codec.peek_header(frame)
    except MalformedRequestError as exc:
        _clear("kafka", frame, exc)
        return "no-header"
    except Exception as exc:
        raise Unexpected("kafka", frame, f"peek_header raised {type(exc).__name__}: {exc}",
                         exc) from exc
    try:
        request = codec.decode_request(frame)
    except MalformedRequestError as exc:
        _clear("kafka", frame, exc)
        if not re.match(rf"(cannot parse )?api {api_key} v{api_version}: ", str(exc)):
            raise Unexpected("kafka", frame, f"malformed, message names no api: {exc}",
                             exc) from exc
        return "malformed"
    except UnsupportedVersionError as exc:
        _clear("kafka", frame, exc)
        return "unsupported"
    except Exception as exc:
        raise Unexpected("kafka", frame, f"decode_request raised {type(exc).__name__}: {exc}",
                         exc) from exc
    if (request.api_key, request.api_version, request.correlation_id) != (
            api_key, api_version, correlation_id):
        raise Unexpected("kafka", frame, f"decoded header {request} differs from peek_header")
    if type(request.body) is not codec.request_schema(api_key, api_version):
        raise Unexpected("kafka", frame, f"body of type {type(request.body)}")
    null = _null_field(request.body)
    if null is not None:
        raise Unexpected("kafka", frame, f"decoded a null into non-nullable field {null}")
    _check_embedded(frame, request)
    return "decoded"


def _null_field(entity: Any, path: str = "") -> str | None:
    """The first field of a decoded entity that holds None although its schema does not
    allow null (handlers iterate such fields without a check), or None."""
    for field in dataclasses.fields(entity):
        value = getattr(entity, field.name)
        where = f"{path}{type(entity).__name__}.{field.name}"
        if value is None:
            if not is_optional(field):
                return where
            continue
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if dataclasses.is_dataclass(item):
                found = _null_field(item, where + "/")
                if found is not None:
                    return found
    return None


def _check_embedded(frame: bytes, request: codec.Request) -> None:
    """Bytes inside a decoded request that the broker parses itself: the consumer-protocol
    metadata of JoinGroup and the assignments of SyncGroup (broker/groups/classic.py), which
    document [] for bytes not of that format."""
    try:
        if request.api_key == 11:
            for protocol in request.body.protocols:
                assert isinstance(classic.subscribed_topics(bytes(protocol.metadata)), list)
        elif request.api_key == 14:
            for assignment in request.body.assignments:
                assert isinstance(classic.assigned_partitions(bytes(assignment.assignment)),
                                  list)
    except Exception as exc:
        raise Unexpected("kafka", frame, f"consumer-protocol bytes: {type(exc).__name__}: "
                         f"{exc}", exc) from exc


# ===================================================================== record batches
_RECORD_ERRORS = (CorruptBatchError,)
_PRODUCE_ERRORS = (BrokerError, CorruptBatchError)
_APPEND_ERRORS = (BrokerError, RecordTooLargeError, CorruptBatchError)


def _records_call(data: bytes, what: str, call: Callable[[], Any]) -> Any:
    """call(), or None when it refused with CorruptBatchError."""
    try:
        return call()
    except _RECORD_ERRORS as exc:
        _clear("records", data, exc)
        return None
    except Exception as exc:
        raise Unexpected("records", data, f"{what} raised {type(exc).__name__}: {exc}",
                         exc) from exc


def check_batch_bytes(data: bytes) -> str:
    """Every decoding function of raftka/records.py on `data`, then parse_produce_data."""
    header = _records_call(data, "read_header", lambda: read_header(data))
    validated = _records_call(data, "validate_batch", lambda: validate_batch(data))
    if validated is not None:
        if validated != header:
            raise Unexpected("records", data, "validate_batch and read_header disagree")
        # validate_records walks a batch that validate_batch passed, as the broker does.
        _records_call(data, "validate_records",
                      lambda: validate_records(data[:validated.size_bytes]))
    split = _records_call(data, "split_batches", lambda: split_batches(data))
    try:
        headers = list(iter_headers(data))  # documented to stop at a partial tail: no errors
    except Exception as exc:
        raise Unexpected("records", data, f"iter_headers raised {type(exc).__name__}: {exc}",
                         exc) from exc
    if split is not None and split != headers:
        raise Unexpected("records", data, "split_batches and iter_headers disagree")
    for verify in (True, False):
        found = _records_call(data, f"decode_batches(verify_crc={verify})",
                              functools.partial(decode_batches, data, verify_crc=verify))
        if found is not None and not all(isinstance(r, Record) for r in found):
            raise Unexpected("records", data, "decode_batches returned a non-record")
    return "split" if split is not None else "refused"


def parse_produced(data: bytes) -> tuple[bytearray, list[Any]] | None:
    """parse_produce_data on a PartitionProduceData carrying `data`: the parsed batches, or
    None when refused. What it accepts must be readable by consumers (uncompressed batches
    decode to the records their header counts)."""
    item = broker_pb2.PartitionProduceData(topic="orders", partition=0, record_batches=data)
    try:
        parsed, batches = parse_produce_data(item, NOW_MS)
    except _PRODUCE_ERRORS as exc:
        _clear("records", data, exc)
        return None
    except Exception as exc:
        raise Unexpected("records", data,
                         f"parse_produce_data raised {type(exc).__name__}: {exc}", exc) from exc
    if bytes(parsed) != data or not batches or batches != split_batches(data):
        raise Unexpected("records", data, "parse_produce_data returned other batches")
    for position, header in batches:
        if header.compression != COMPRESSION_NONE or header.is_control:
            continue  # checked by CRC only (the design: no decompression on the broker)
        chunk = data[position:position + header.size_bytes]
        try:  # from the batch's own base offset: the producer's may be anything
            decoded = decode_batches(chunk, from_offset=header.base_offset)
        except Exception as exc:
            raise Unexpected("records", data, f"accepted batch does not decode: {exc}",
                             exc) from exc
        if len(decoded) != header.records_count:
            raise Unexpected("records", data, f"accepted batch decodes to {len(decoded)} "
                             f"records, header says {header.records_count}")
    return parsed, batches


class RecordsTarget:
    """One input through every records.py decoder, parse_produce_data, and the store."""

    def __init__(self) -> None:
        self.store = StoreTarget()

    def close(self) -> None:
        self.store.close()

    def check(self, data: bytes, acks: int = 1) -> str:
        check_batch_bytes(data)
        parsed = parse_produced(data)
        try:
            return self.store.check(data, acks, parsed)
        except Unexpected:
            self.store.reset()  # a damaged log would fail every later input too
            raise


class StoreTarget:
    """A leader partition with a real log in a temporary directory. Each input goes through
    what the broker does with a produced partition's data: parse_produce_data, then
    Partition.append_as_leader. Whenever either refuses, every file of the log directory
    and the partition's offsets and producer state must be exactly as before."""

    SEGMENT_BYTES = 12 * 1024  # small enough that appends roll segments now and then
    RESET_AFTER_BYTES = 40 * 1024  # every refusal reads the whole directory: keep it small

    def __init__(self) -> None:
        self._root = tempfile.mkdtemp(prefix="raftka-fuzz-store-")
        self._generation = 0
        self.appended = 0
        self._now = NOW_MS
        self._open()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a log a bug damaged may not close cleanly
            self.log.close(self._now)
        shutil.rmtree(self._root, ignore_errors=True)

    def reset(self) -> None:
        with contextlib.suppress(Exception):
            self.log.close(self._now)
        shutil.rmtree(self.directory, ignore_errors=True)
        self._open()

    def _open(self) -> None:
        self._generation += 1
        self.directory = os.path.join(self._root, f"orders-0.{self._generation}")
        config = LogConfig(segment_bytes=self.SEGMENT_BYTES, index_interval_bytes=256,
                           retention_ms=-1, max_message_bytes=2048)
        self.log = PartitionLog.open(self.directory, config, self._now)
        # Replicas 1 and 2, ISR {1}, min.insync.replicas 2: acks=1 appends, acks=-1 is
        # refused with NOT_ENOUGH_REPLICAS (a refusal that comes after parsing).
        self.partition = Partition(TopicPartition("orders", 0), "topic-id", self.log, 1, 2)
        self.partition.apply_registration(
            PartitionRegistration(replicas=(1, 2), isr=(1,), leader=1, leader_epoch=3,
                                  partition_epoch=0), self._now)
        for batch in batch_seeds():
            parsed = parse_produce_data(broker_pb2.PartitionProduceData(
                topic="orders", partition=0, record_batches=batch), self._now)
            self.partition.append_as_leader(*parsed, 1, self._now)
        self._snapshot = self._state()

    def _state(self) -> tuple[Any, ...]:
        files = {}
        for entry in os.scandir(self.directory):
            with open(entry.path, "rb", buffering=0) as handle:
                files[entry.name] = handle.read()
        producers = {pid: (entry.epoch, tuple(entry.batches))
                     for pid, entry in self.partition.producers._producers.items()}
        log = self.log
        return (files, log.log_start_offset, log.high_watermark, log.log_end_offset,
                log.segment_base_offsets(), producers, self.partition.leader_epoch)

    def check(self, data: bytes, acks: int = 1, parsed: Any = ...) -> str:
        """`parsed`: what parse_produced(data) returned, when the caller has it already."""
        self._now += 1
        if parsed is ...:
            parsed = parse_produced(data)
        outcome = "refused-parse"
        if parsed is not None:
            buffer, batches = parsed
            try:
                self.partition.append_as_leader(buffer, batches, acks, self._now)
            except _APPEND_ERRORS as exc:
                _clear("store", data, exc)
                outcome = "refused-append"
            except Exception as exc:
                raise Unexpected("store", data, f"append_as_leader raised "
                                 f"{type(exc).__name__}: {exc}", exc) from exc
            else:
                self.appended += 1
                self._snapshot = self._state()
                if sum(len(f) for f in self._snapshot[0].values()) > self.RESET_AFTER_BYTES:
                    self.reset()
                return "appended"
        if self._state() != self._snapshot:
            raise Unexpected("store", data, f"log changed although the input was {outcome}")
        return outcome


# ====================================================================== gRPC requests
def parse_request(cls: type[Message], data: bytes) -> Message | None:
    """cls.FromString(data); None when it refuses with DecodeError (the clean refusal)."""
    name = cls.DESCRIPTOR.full_name
    try:
        message = cls.FromString(data)
    except DecodeError as exc:
        _clear("grpc", data, exc)
        return None
    except Exception as exc:
        raise Unexpected("grpc", data, f"{name}.FromString raised {type(exc).__name__}: {exc}",
                         exc) from exc
    try:
        again = cls.FromString(message.SerializeToString())
    except Exception as exc:
        raise Unexpected("grpc", data, f"{name}: a parsed message does not re-parse: {exc}",
                         exc) from exc
    if again != message:
        raise Unexpected("grpc", data, f"{name}: parse(serialize(parse(x))) != parse(x)")
    return message


def base_image() -> MetadataImage:
    """Three unfenced brokers, a fenced one, topics with one and three partitions (one
    leaderless), an internal topic, configs."""
    recs = [metadata_records.cluster_id("fuzz-cluster")]
    for broker_id in (1, 2, 3, 4):
        recs.append(metadata_records.register_broker(
            broker_id, f"inc-{broker_id}", "127.0.0.1", 9000 + broker_id, 9100 + broker_id,
            voter=broker_id < 4, pid=100 + broker_id,
            kafka_listeners=[("PLAINTEXT", "127.0.0.1", 9100 + broker_id)],
            grpc_listeners=[("INTERNAL", "10.0.0.1", 7000 + broker_id)]))
        if broker_id < 4:
            recs.append(metadata_records.unfence_broker(broker_id))
    recs += [
        metadata_records.topic("orders", "id-orders", {"retention.ms": "1000"}),
        metadata_records.partition("id-orders", 0, (1, 2, 3), (1, 2, 3), 1),
        metadata_records.partition("id-orders", 1, (2, 3, 1), (2, 3), 2),
        metadata_records.partition("id-orders", 2, (3, 4, 1), (4,), NO_LEADER),
        metadata_records.topic("pay", "id-pay", {"unclean.leader.election.enable": "true"}),
        metadata_records.partition("id-pay", 0, (1,), (1,), 1),
        metadata_records.topic("__consumer_offsets", "id-offsets", {}, internal=True),
        metadata_records.partition("id-offsets", 0, (1, 2), (1, 2), 1),
    ]
    return _apply(EMPTY_IMAGE, recs)


def _apply(image: MetadataImage, recs: Iterable[Any]) -> MetadataImage:
    return apply_encoded_batch(image, metadata_records.encode_batch(
        recs, timestamp_ms=NOW_MS, controller_id=1))


def check_image(image: MetadataImage) -> str | None:
    """What is wrong with the image's invariants (cluster/image.py), or None."""
    for topic, index, p in image.iter_partitions():
        where = f"{topic.name}-{index}"
        if len(set(p.replicas)) != len(p.replicas):
            return f"{where}: duplicate replicas {p.replicas}"
        if not set(p.isr) <= set(p.replicas):
            return f"{where}: ISR {p.isr} not within replicas {p.replicas}"
        if p.leader != NO_LEADER and p.leader not in p.isr:
            return f"{where}: leader {p.leader} not in ISR {p.isr}"
    for name, topic in image.topics.items():
        if image.topic_names_by_id.get(topic.topic_id) != name:
            return f"topic {name} missing from topic_names_by_id"
    return None


class GrpcTarget:
    """The pure handlers behind the gRPC services, on a metadata image that evolves with the
    records the controller handlers return (reset when it grows), and consumer groups that
    evolve with the heartbeats."""

    def __init__(self) -> None:
        self.settings = ControllerSettings(num_partitions=2, default_replication_factor=2,
                                           partitions_max=64, topics_per_request_max=8)
        self.base = base_image()
        self.image = self.base
        self.groups: dict[str, ConsumerGroup] = {}
        self.now_ms = NOW_MS
        self._ids = 0
        self.handled = 0
        self._handlers: dict[str, Callable[[Any, bytes], None]] = {
            "raftka.v1.CreateTopicsRequest": self._create_topics,
            "raftka.v1.DeleteTopicsRequest": lambda r, d: self._controller(
                d, controller.delete_topics(self.image, r)),
            "raftka.v1.RegisterBrokerRequest": lambda r, d: self._controller(
                d, controller.register_broker(self.image, r, self.settings)),
            "raftka.v1.BrokerHeartbeatRequest": lambda r, d: self._controller(
                d, controller.broker_heartbeat(self.image, r, self.settings)),
            "raftka.v1.AlterPartitionRequest": lambda r, d: self._controller(
                d, controller.alter_partition(self.image, r)),
            "raftka.v1.AllocateProducerIdsRequest": lambda r, d: self._controller(
                d, controller.allocate_producer_ids(self.image, r)),
            # Both listener names the image knows, one that only some brokers have (the
            # flag has nothing to do with listeners: it is just a fuzzed bit to pick by).
            "raftka.v1.MetadataRequest": lambda r, d: self._answer(d, metadata_response(
                self.image, list(r.topics), 1, "INTERNAL" if r.allow_auto_topic_creation
                else "PLAINTEXT")),
            "raftka.v1.ListTopicsRequest": lambda r, d: self._answer(
                d, list_topics(self.image, r.include_internal)),
            "raftka.v1.DescribeTopicsRequest": lambda r, d: self._answer(d, describe_topics(
                self.image, list(r.names), {"retention.ms": "5"}, lambda t, i: (0, i))),
            "raftka.v1.DescribeClusterRequest": lambda r, d: self._answer(
                d, describe_cluster(self.image, None)),
            "raftka.v1.ProduceRequest": self._produce,
            "raftka.v1.ConsumerGroupHeartbeatRequest": self._heartbeat,
            "raftka.v1.OffsetCommitRequest": self._commit,
        }

    def has_handler(self, name: str) -> bool:
        return name in self._handlers

    def pool_values(self) -> tuple[list[str], list[int]]:
        """Strings and ints of the current state, for the message generator."""
        image = self.image
        strings = list(image.topics) + [m for g in self.groups.values() for m in g.members]
        strings += list(self.groups)
        ints = [b.epoch for b in image.brokers.values()] + list(image.brokers)
        ints += [image.offset, image.offset + 1]
        for _, _, p in image.iter_partitions():
            ints += [p.leader_epoch, p.partition_epoch]
        ints += [m.epoch for g in self.groups.values() for m in g.members.values()]
        return strings, ints

    def check(self, cls: type[Message], data: bytes) -> str:
        message = parse_request(cls, data)
        if message is None:
            return "refused"
        handler = self._handlers.get(cls.DESCRIPTOR.full_name)
        if handler is None:
            return "parsed"
        self.now_ms += 97
        try:
            handler(message, data)
        except Unexpected:
            raise
        except Exception as exc:
            raise Unexpected("grpc", data, f"the {cls.DESCRIPTOR.name} handler raised "
                             f"{type(exc).__name__}: {exc}", exc) from exc
        self.handled += 1
        return "handled"

    # -- controller
    def _new_id(self) -> str:
        self._ids += 1
        return f"fuzz-id-{self._ids}"

    def _create_topics(self, request: Any, data: bytes) -> None:
        result = controller.create_topics(self.image, request, self.settings, self._new_id,
                                          allow_internal=len(data) % 2 == 0)
        if len(result.response.topics) != len(request.topics):
            raise Unexpected("grpc", data, "CreateTopics answered for "
                             f"{len(result.response.topics)} of {len(request.topics)} topics")
        self._controller(data, result)

    def _controller(self, data: bytes, result: Any) -> None:
        self._answer(data, result.response)
        if not result.records:
            return
        try:
            image = _apply(self.image, result.records)
        except Exception as exc:
            raise Unexpected("grpc", data, f"the handler's records do not apply: "
                             f"{type(exc).__name__}: {exc}", exc) from exc
        problem = check_image(image)
        if problem is not None:
            raise Unexpected("grpc", data, f"image invariant broken: {problem}")
        grown = sum(len(t.partitions) for t in image.topics.values()) > 200
        self.image = self.base if grown or len(image.brokers) > 40 else image

    def _answer(self, data: bytes, response: Message) -> None:
        """Every error code in a response is one the clients know."""
        stack: list[Message] = [response]
        while stack:
            message = stack.pop()
            for field, value in message.ListFields():
                if field.name == "error_code" and value not in ERROR_CODES:
                    raise Unexpected("grpc", data, f"error code {value} is not an ErrorCode")
                if field.message_type is not None and not field.message_type.GetOptions(
                        ).map_entry:
                    stack.extend(value if field.is_repeated else [value])

    # -- produce
    def _produce(self, request: Any, data: bytes) -> None:
        for item in request.partitions:
            try:
                parse_produce_data(item, self.now_ms)
            except _PRODUCE_ERRORS as exc:
                _clear("grpc", data, exc, batch=item.record_batches)
            except Exception as exc:
                raise Unexpected("grpc", data, f"parse_produce_data raised "
                                 f"{type(exc).__name__}: {exc}", exc) from exc

    # -- consumer groups
    def _group(self, group_id: str) -> ConsumerGroup:
        if group_id not in self.groups and len(self.groups) >= 8:
            self.groups.clear()
        return self.groups.setdefault(group_id, ConsumerGroup(group_id))

    def partition_counts(self) -> dict[str, int]:
        return {name: len(t.partitions) for name, t in self.image.topics.items()}

    def _heartbeat(self, request: Any, data: bytes) -> None:
        """ConsumerGroup.heartbeat called as GroupCoordinator.heartbeat calls it (the
        coordinator's session-timeout bounds aside: the pure state gets any value)."""
        group = self._group(request.group_id)
        counts = self.partition_counts()
        self._ids += 1
        try:
            group.heartbeat(
                member_id=request.member_id,
                member_epoch=request.member_epoch,
                client_id=request.client_id,
                subscribed_topics=(list(request.subscribed_topic_names)
                                   if request.has_subscription else None),
                subscribed_regex=request.subscribed_topic_regex,
                assignor=request.server_assignor,
                owned=[(t.topic, p) for t in request.owned_partitions for p in t.partitions],
                session_timeout_ms=request.session_timeout_ms or 45_000,
                partition_counts=counts,
                now_ms=self.now_ms,
                new_member_id=f"member-{self._ids}",
                hold_until_ms=NOW_MS + 3000,
            )
        except GroupError as exc:
            _clear("grpc", data, exc)
        except Exception as exc:
            raise Unexpected("grpc", data, f"ConsumerGroup.heartbeat raised "
                             f"{type(exc).__name__}: {exc}", exc) from exc
        self._check_groups(data, counts)

    def _check_groups(self, data: bytes, counts: dict[str, int]) -> None:
        """Expire members now and then (also a caller of the group's code), then check that
        no partition has two owners: the safety promise of broker/groups/state.py."""
        for group in list(self.groups.values()):
            try:
                if self.now_ms % 7 == 0:
                    group.expire(self.now_ms, counts)
            except Exception as exc:
                raise Unexpected("grpc", data, f"ConsumerGroup.expire raised "
                                 f"{type(exc).__name__}: {exc}", exc) from exc
            owners: dict[tuple[str, int], str] = {}
            for member in group.members.values():
                if member.epoch > group.group_epoch:
                    raise Unexpected("grpc", data, f"member epoch {member.epoch} > group "
                                     f"epoch {group.group_epoch}")
                for tp in member.assigned:
                    if tp in owners:
                        raise Unexpected("grpc", data, f"{tp} assigned to {owners[tp]} and "
                                         f"{member.member_id}")
                    owners[tp] = member.member_id

    def _commit(self, request: Any, data: bytes) -> None:
        group = self._group(request.group_id)
        try:
            group.check_commit(request.member_id, request.member_epoch)
        except GroupError as exc:
            _clear("grpc", data, exc)
        except Exception as exc:
            raise Unexpected("grpc", data, f"check_commit raised {type(exc).__name__}: {exc}",
                             exc) from exc
