"""Serving Produce: validate the batches, append them on the leader, wait for acks.

How it works: each partition's data is checked as a whole (framing, CRC32C, per-record
offsets for uncompressed batches) and refused as a whole. The leader stamps offsets and its
leader epoch and appends on the writer thread. acks=1 replies after the append; acks=all
waits in the purgatory until the high watermark passes the batch (followers fetched it), within
the request's timeout. A broker that has lost its lease with the controller refuses writes,
so a leader cut off from the cluster stops accepting them at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from raftka.broker.errors import (
    BrokerFencedError,
    DuplicateSequenceError,
    InvalidRequestError,
    InvalidTopicError,
    NotEnoughReplicasAfterAppendError,
    NotLeaderError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
    UnsupportedCompressionError,
    fill_error,
)
from raftka.broker.log.log import AppendResult
from raftka.broker.metrics import BrokerMetrics
from raftka.broker.partition import Partition, TopicPartition
from raftka.broker.replica_manager import ReplicaManager
from raftka.cluster.naming import InvalidTopicNameError, validate_topic_name
from raftka.proto.raftka.v1 import broker_pb2, common_pb2
from raftka.records import (
    COMPRESSION_NAMES,
    BatchHeader,
    CorruptBatchError,
    encode_batch,
    split_batches,
    validate_records,
)

log = logging.getLogger("raftka.broker")
Code = common_pb2.ErrorCode
DEFAULT_PRODUCE_TIMEOUT_MS = 30_000
# How long a produce to a topic just auto-created elsewhere waits for this broker to apply
# the creation (s).
AUTO_CREATE_METADATA_WAIT_S = 5.0
AutoCreate = Callable[[str], Awaitable[None]]
LeaseCheck = Callable[[], str | None]


class ProducePath:
    def __init__(
        self,
        replicas: ReplicaManager,
        *,
        produce_timeout_max_ms: int,
        auto_create: AutoCreate | None,
        lease_problem: LeaseCheck,
        metrics: BrokerMetrics | None = None,
    ) -> None:
        self._replicas = replicas
        self._metrics = metrics
        self._timeout_max_ms = produce_timeout_max_ms
        self._auto_create = auto_create
        self._lease_problem = lease_problem
        self._background: set[asyncio.Task[None]] = set()
        # Topics a produce stream asked for that are being auto-created, by name.
        self._creating: dict[str, asyncio.Task[None]] = {}

    async def produce(self, request: broker_pb2.ProduceRequest) -> broker_pb2.ProduceResponse:
        response = broker_pb2.ProduceResponse()
        if request.acks not in (-1, 0, 1):
            for item in request.partitions:
                response.partitions.add(
                    topic=item.topic,
                    partition=item.partition,
                    base_offset=-1,
                    leader_id=-1,
                    error_code=Code.INVALID_REQUIRED_ACKS,
                    error_message=f"acks must be -1 (all), 0 or 1, got {request.acks}",
                )
            return response
        timeout_ms = min(request.timeout_ms or DEFAULT_PRODUCE_TIMEOUT_MS, self._timeout_max_ms)
        response.partitions.extend(
            await self._produce_items(list(request.partitions), request.acks, timeout_ms))
        return response

    async def produce_in_order(
        self, request: broker_pb2.ProduceRequest,
        refused: list[broker_pb2.PartitionProduceResponse] | None = None,
    ) -> Awaitable[broker_pb2.ProduceResponse]:
        """One request of a ProduceStream, in two steps as append_many: this call returns
        once the request's data is appended (or refused), so the stream's next request is
        appended after it; what it returns completes with the response once every
        partition has its acks. `refused`: replies already decided by the caller (an ACL
        refusal), sent with the others.

        A partition of a topic this broker does not have is not waited for: its topic's
        auto-creation starts in the background and it is answered at once with the
        retriable UNKNOWN_TOPIC_OR_PARTITION, as a Kafka broker answers a produce to a
        topic it lacks. Waiting (a Raft commit, then the metadata) would hold up every
        later request on the stream, for every other topic, behind it."""
        refused = list(refused or [])
        items: list[broker_pb2.PartitionProduceData] = []
        for item in request.partitions:
            missing = self._missing_topic(item.topic)
            if missing is None:
                items.append(item)
                continue
            reply = broker_pb2.PartitionProduceResponse(
                topic=item.topic, partition=item.partition, base_offset=-1, leader_id=-1)
            self._refuse(reply, missing, item.topic, internal=False)
            refused.append(reply)
        waiting = await self.append_many(items, request.acks, request.timeout_ms)
        return _response(request.correlation_id, waiting, refused)

    def _missing_topic(self, topic: str) -> Exception | None:
        """None if `topic` is in this broker's image; otherwise the error its partitions
        are answered with, having started its auto-creation if the broker may create it."""
        if topic in self._replicas.image.topics:
            return None
        if not self._replicas.caught_up or self._auto_create is None:
            return None  # _admit's checks answer these, without waiting
        try:
            validate_topic_name(topic)
        except InvalidTopicNameError as exc:
            return InvalidTopicError(str(exc))
        if topic not in self._creating:
            task = asyncio.create_task(self._create_quietly(topic))
            self._creating[topic] = task
            task.add_done_callback(lambda _: self._creating.pop(topic, None))
        return UnknownTopicOrPartitionError(
            f"topic '{topic}' is being created (auto.create.topics.enable); retry")

    async def _create_quietly(self, topic: str) -> None:
        assert self._auto_create is not None
        try:
            await self._auto_create(topic)
        except Exception as exc:  # an invalid name, say: the retry is answered with it
            log.info("auto-creating %s for a produce stream failed: %s", topic, exc)

    async def append_many(
        self, items: list[broker_pb2.PartitionProduceData], acks: int, timeout_ms: int
    ) -> Awaitable[list[broker_pb2.PartitionProduceResponse]]:
        """A request's partitions, for the Kafka listener, in two steps: this call returns
        once every partition's data is appended (or refused); what it returns completes
        with the replies once each has its acks. So the listener can take the
        connection's next request meanwhile (its appends come after these) and still
        answer in order — a Kafka producer pipelines requests on one connection, and
        waiting for the acks of one before reading the next made each connection one
        replication round trip per request."""
        if acks not in (-1, 0, 1):
            return _ready([await self.produce_one(item, acks, timeout_ms) for item in items])
        timeout_ms = min(timeout_ms or DEFAULT_PRODUCE_TIMEOUT_MS, self._timeout_max_ms)
        if acks == 0:  # nothing to wait for: the appends go on in the background
            return _ready(list(await asyncio.gather(
                *(self._produce_one(item, acks, timeout_ms) for item in items))))
        replies, appended = await self._append_items(items, acks)
        return self._wait_items(replies, appended, acks, timeout_ms)

    async def _produce_items(
        self, items: list[broker_pb2.PartitionProduceData], acks: int, timeout_ms: int
    ) -> list[broker_pb2.PartitionProduceResponse]:
        """Every partition's data of one gRPC request (acks checked by the caller): one
        partition on its own, several as the Kafka listener's append_many does them."""
        if len(items) < 2:
            return [await self._produce_one(item, acks, timeout_ms) for item in items]
        return await (await self.append_many(items, acks, timeout_ms))

    async def _append_items(
        self, items: list[broker_pb2.PartitionProduceData], acks: int
    ) -> tuple[list[broker_pb2.PartitionProduceResponse],
               list[tuple[broker_pb2.PartitionProduceResponse, Partition, int]]]:
        """Validate each partition's data on its own, append them all in ONE job on the
        writer thread, sync those flush.messages says to in one more, and wake waiters:
        the replies (errors filled in), and the appended ones with their last offsets.

        One job, not one writer round trip per partition: a Kafka producer's request to a
        broker leading 3,333 of 10,000 partitions carries data for all of them, and 3,333
        thread hand-offs (each a future, a wake-up of the event loop) held the loop for
        the whole request. The steps per partition and their order are as _produce_one's."""
        replicas = self._replicas
        replies: list[broker_pb2.PartitionProduceResponse] = []
        ready: list[tuple[broker_pb2.PartitionProduceResponse, Partition, bytearray,
                          list[tuple[int, BatchHeader]]]] = []
        for item in items:
            reply = broker_pb2.PartitionProduceResponse(
                topic=item.topic, partition=item.partition, base_offset=-1, leader_id=-1)
            replies.append(reply)
            try:
                ready.append((reply, *await self._admit(item)))
            except Exception as exc:
                self._refuse(reply, exc, item.topic, internal=False)
        if not ready:
            return replies, []
        jobs = [(partition, data, batches) for _, partition, data, batches in ready]
        if all(partition.appends_keep_the_epoch() for partition, _, _ in jobs):
            outcomes = await replicas.on_writer_small(
                sum(len(data) for _, data, _ in jobs), _append_each, jobs, acks,
                replicas.clock_ms())
        else:
            outcomes = await replicas.on_writer(_append_each, jobs, acks, replicas.clock_ms())
        appended: list[tuple[broker_pb2.PartitionProduceResponse, Partition, int]] = []
        for (reply, partition, data, batches), outcome in zip(ready, outcomes, strict=True):
            if isinstance(outcome, DuplicateSequenceError):
                first, last = outcome.stored.first_offset, outcome.stored.last_offset
            elif isinstance(outcome, BaseException):
                self._refuse(reply, outcome, partition.tp.topic, internal=False)
                continue
            else:
                first, last = outcome.base_offset, outcome.last_offset
                if self._metrics is not None:
                    records = sum(header.records_count for _, header in batches)
                    self._metrics.appended(partition.tp.topic, records, len(data))
            reply.base_offset = first
            reply.log_start_offset = partition.log_start_offset
            appended.append((reply, partition, last))
        due = [partition for _, partition, _ in appended if partition.log.flush_due_by_count()]
        flush_failures = (await replicas.on_writer(_flush_each, due, replicas.clock_ms())
                          if due else {})
        synced = []
        for reply, partition, last in appended:
            failure = flush_failures.get(partition.tp)
            if failure is not None:
                self._refuse(reply, failure, partition.tp.topic, internal=False)
                continue
            replicas.purgatory.notify(partition.tp)
            synced.append((reply, partition, last))
        return replies, synced

    async def _wait_items(
        self, replies: list[broker_pb2.PartitionProduceResponse],
        appended: list[tuple[broker_pb2.PartitionProduceResponse, Partition, int]],
        acks: int, timeout_ms: int,
    ) -> list[broker_pb2.PartitionProduceResponse]:
        """The acks=all waits of the appended partitions; then every reply."""
        if acks == -1:
            await asyncio.gather(*(self._replicated_or_refused(reply, partition, last,
                                                               timeout_ms)
                                   for reply, partition, last in appended))
        return replies

    async def _admit(
        self, item: broker_pb2.PartitionProduceData, internal: bool = False
    ) -> tuple[Partition, bytearray, list[tuple[int, BatchHeader]]]:
        """The checks before an append: the data's framing and CRCs, the topic (created
        when auto.create allows), this broker leading the partition and holding its lease."""
        data, batches = parse_produce_data(item, self._replicas.clock_ms())
        topic = self._replicas.image.topics.get(item.topic)
        if topic is not None and topic.internal and not internal:
            raise InvalidTopicError(f"'{item.topic}' is internal; clients cannot write it")
        await self._ensure_topic(item.topic, item.partition)
        partition = self._replicas.leader_partition(TopicPartition(item.topic, item.partition))
        problem = self._lease_problem()
        if problem is not None:
            raise BrokerFencedError(problem)
        return partition, data, batches

    def _refuse(self, reply: broker_pb2.PartitionProduceResponse, exc: BaseException,
                topic: str, internal: bool) -> None:
        fill_error(reply, exc)
        reply.base_offset = -1
        if self._metrics is not None and not internal:
            self._metrics.failed_produce.labels(topic).inc()

    async def _replicated_or_refused(self, reply: broker_pb2.PartitionProduceResponse,
                                     partition: Partition, last_offset: int,
                                     timeout_ms: int) -> None:
        try:
            await self._await_replication(partition, last_offset, timeout_ms)
        except Exception as exc:
            self._refuse(reply, exc, partition.tp.topic, internal=False)

    async def produce_one(self, item: broker_pb2.PartitionProduceData, acks: int,
                          timeout_ms: int) -> broker_pb2.PartitionProduceResponse:
        """One partition's data on its own (append_many takes a request's partitions)."""
        if acks not in (-1, 0, 1):
            return broker_pb2.PartitionProduceResponse(
                topic=item.topic, partition=item.partition, base_offset=-1, leader_id=-1,
                error_code=Code.INVALID_REQUIRED_ACKS,
                error_message=f"acks must be -1 (all), 0 or 1, got {acks}")
        return await self._produce_one(item, acks, min(timeout_ms or DEFAULT_PRODUCE_TIMEOUT_MS,
                                                       self._timeout_max_ms))

    async def append_internal(
        self, topic: str, partition: int, batch: bytes, timeout_ms: int
    ) -> broker_pb2.PartitionProduceResponse:
        """The broker's own writes to internal topics (the group coordinator's), acks=all."""
        item = broker_pb2.PartitionProduceData(
            topic=topic, partition=partition, record_batches=batch
        )
        return await self._produce_one(item, -1, timeout_ms, internal=True)

    async def _produce_one(
        self,
        item: broker_pb2.PartitionProduceData,
        acks: int,
        timeout_ms: int,
        internal: bool = False,
    ) -> broker_pb2.PartitionProduceResponse:
        reply = broker_pb2.PartitionProduceResponse(
            topic=item.topic, partition=item.partition, base_offset=-1, leader_id=-1
        )
        try:
            partition, data, batches = await self._admit(item, internal)
            if acks == 0:
                task = asyncio.create_task(self._append_quietly(partition, data, batches))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                return reply
            try:
                result = await self._append(partition, data, batches, acks)
                first, last = result.base_offset, result.last_offset
            except DuplicateSequenceError as duplicate:
                first, last = duplicate.stored.first_offset, duplicate.stored.last_offset
            reply.base_offset = first
            reply.log_start_offset = partition.log_start_offset
            if acks == -1:
                await self._await_replication(partition, last, timeout_ms)
        except Exception as exc:  # every failure becomes this partition's error code
            self._refuse(reply, exc, item.topic, internal)
        return reply

    async def _ensure_topic(self, topic: str, partition: int) -> None:
        if topic in self._replicas.image.topics:
            return
        if not self._replicas.caught_up:
            raise self._replicas.catching_up_error(TopicPartition(topic, partition))
        if self._auto_create is None:
            raise UnknownTopicOrPartitionError(
                f"topic '{topic}' does not exist and auto.create.topics.enable is false"
            )
        await self._auto_create(topic)
        # Another broker may have created it a moment ago (our create then finds it exists):
        # the client was told we lead it, so wait until we have applied that here, or it
        # gets UNKNOWN_TOPIC_OR_PARTITION, which a producer without retries (kafka-python's
        # default) reports as a failed write.
        await self._replicas.wait_for_metadata(
            lambda image: topic in image.topics, AUTO_CREATE_METADATA_WAIT_S
        )

    async def _append(
        self,
        partition: Partition,
        data: bytearray,
        batches: list[tuple[int, BatchHeader]],
        acks: int,
    ) -> AppendResult:
        replicas = self._replicas
        if partition.appends_keep_the_epoch():
            result = await replicas.on_writer_small(
                len(data), partition.append_as_leader, data, batches, acks, replicas.clock_ms())
        else:
            result = await replicas.on_writer(
                partition.append_as_leader, data, batches, acks, replicas.clock_ms())
        if self._metrics is not None:
            records = sum(header.records_count for _, header in batches)
            self._metrics.appended(partition.tp.topic, records, len(data))
        if partition.log.flush_due_by_count():
            # flush.messages reached (flush.messages=1: fsync before acknowledging, as in
            # Kafka). Flushes run on the writer after the appends queued before them, and one
            # with nothing new to sync returns at once: concurrent producers share an fsync.
            flushing = replicas.on_writer(partition.log.flush, replicas.clock_ms())
            if acks == 0:
                task = asyncio.create_task(flushing)
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            else:
                await flushing
        replicas.purgatory.notify(partition.tp)
        return result

    async def _append_quietly(
        self, partition: Partition, data: bytearray, batches: list[tuple[int, BatchHeader]]
    ) -> None:
        try:
            await self._append(partition, data, batches, 0)
        except Exception as exc:
            log.warning("acks=0 append to %s failed: %s", partition.tp, exc)

    async def _await_replication(
        self, partition: Partition, last_offset: int, timeout_ms: int
    ) -> None:
        epoch = partition.leader_epoch

        def settled() -> bool:
            moved_on = not partition.is_leader or partition.leader_epoch != epoch
            return partition.high_watermark > last_offset or moved_on

        await self._replicas.purgatory.wait_until([partition.tp], settled, timeout_ms / 1000)
        if partition.high_watermark > last_offset and partition.leader_epoch == epoch:
            # The high watermark is the smallest end offset over the ISR, so it also passes
            # the records when the ISR has shrunk to fewer than min.insync.replicas: then
            # they are not on enough copies to acknowledge (Kafka's check).
            isr = partition.isr
            if len(isr) < partition.min_insync_replicas:
                raise NotEnoughReplicasAfterAppendError(
                    f"{partition.tp}: offset {last_offset} is on the ISR {sorted(isr)} only; "
                    f"min.insync.replicas is {partition.min_insync_replicas}"
                )
            return
        if not partition.is_leader or partition.leader_epoch != epoch:
            raise NotLeaderError(
                f"{partition.tp} lost leadership before offset {last_offset} was replicated",
                partition.leader_id,
                partition.leader_epoch,
            )
        raise RequestTimedOutError(
            f"{partition.tp}: offset {last_offset} not replicated to the ISR "
            f"{list(partition.isr)} within {timeout_ms} ms"
        )


async def _response(
    correlation_id: int, waiting: Awaitable[list[broker_pb2.PartitionProduceResponse]],
    refused: list[broker_pb2.PartitionProduceResponse],
) -> broker_pb2.ProduceResponse:
    response = broker_pb2.ProduceResponse(correlation_id=correlation_id)
    response.partitions.extend(refused)
    response.partitions.extend(await waiting)
    return response


async def _ready(
    replies: list[broker_pb2.PartitionProduceResponse],
) -> list[broker_pb2.PartitionProduceResponse]:
    return replies


def _append_each(
    appends: list[tuple[Partition, bytearray, list[tuple[int, BatchHeader]]]], acks: int,
    now_ms: int,
) -> list[AppendResult | BaseException]:
    """Writer thread (or the event loop while it is idle: log_writer.py): each partition's
    append_as_leader result, or what it raised (a duplicate's DuplicateSequenceError
    included), in order."""
    outcomes: list[AppendResult | BaseException] = []
    for partition, data, batches in appends:
        try:
            outcomes.append(partition.append_as_leader(data, batches, acks, now_ms))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def _flush_each(partitions: list[Partition], now_ms: int) -> dict[TopicPartition, BaseException]:
    """Writer thread: flush each partition's log (flush.messages reached); the failures."""
    failures: dict[TopicPartition, BaseException] = {}
    for partition in partitions:
        try:
            partition.log.flush(now_ms)
        except Exception as exc:
            failures[partition.tp] = exc
    return failures


def parse_produce_data(
    item: broker_pb2.PartitionProduceData, now_ms: int
) -> tuple[bytearray, list[tuple[int, BatchHeader]]]:
    """The request's batches, validated, as one mutable buffer (offsets get patched in).
    Plain `records` without a timestamp are stamped `now_ms`."""
    if item.record_batches and item.records:
        raise InvalidRequestError("set either record_batches or records, not both")
    if item.records:
        data = bytearray(
            encode_batch(
                [
                    (
                        record.key if record.HasField("key") else None,
                        record.value if record.HasField("value") else None,
                        [(h.key, h.value if h.HasField("value") else None) for h in record.headers],
                        record.timestamp_ms,
                    )
                    for record in item.records
                ],
                now_ms=now_ms,
            )
        )
    elif item.record_batches:
        data = bytearray(item.record_batches)
    else:
        raise InvalidRequestError(f"no records for {item.topic}-{item.partition}")
    batches = split_batches(data)
    for position, header in batches:
        if header.compression not in COMPRESSION_NAMES:
            raise UnsupportedCompressionError(f"unknown compression codec {header.compression}")
        if header.records_count == 0:
            raise CorruptBatchError("a produced batch must hold at least one record")
        validate_records(bytes(data[position : position + header.size_bytes]))
    return data, batches
