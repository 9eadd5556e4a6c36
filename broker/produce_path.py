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
        results = await asyncio.gather(
            *(self._produce_one(item, request.acks, timeout_ms) for item in request.partitions)
        )
        response.partitions.extend(results)
        return response

    async def produce_one(self, item: broker_pb2.PartitionProduceData, acks: int,
                          timeout_ms: int) -> broker_pb2.PartitionProduceResponse:
        """One partition's data, for the Kafka listener (the gRPC path batches these)."""
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
            data, batches = parse_produce_data(item, self._replicas.clock_ms())
            topic = self._replicas.image.topics.get(item.topic)
            if topic is not None and topic.internal and not internal:
                raise InvalidTopicError(f"'{item.topic}' is internal; clients cannot write it")
            await self._ensure_topic(item.topic, item.partition)
            partition = self._replicas.leader_partition(TopicPartition(item.topic, item.partition))
            problem = self._lease_problem()
            if problem is not None:
                raise BrokerFencedError(problem)
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
            fill_error(reply, exc)
            reply.base_offset = -1
            if self._metrics is not None and not internal:
                self._metrics.failed_produce.labels(item.topic).inc()
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
        result = await replicas.on_writer(
            partition.append_as_leader, data, batches, acks, replicas.clock_ms()
        )
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
