"""ReplicaManager: the partitions this broker hosts, kept in line with committed metadata,
and the produce / fetch / offset paths over them.

How it works:
- Metadata: every new image is diffed against the previous one (local_changes); a single task
  applies the changes in order — open (and recover) the logs of newly hosted partitions, take
  each registration (become leader / follower at epoch E), delete the logs of removed ones.
- Writes: all log mutations (append, roll, retention, delete) run on one writer thread per
  log directory, so appends stay in arrival order and the event loop never waits on the disk.
- Reads: come straight from the segment files (the OS page cache), as stored bytes.
- Waiting: acks=all produce and long-poll fetch park in the purgatory and wake on progress.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from broker.errors import (
    BrokerError,
    InvalidRequestError,
    LeaderNotAvailableError,
    NotLeaderError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
    UnsupportedCompressionError,
    to_error,
)
from broker.log.config import LogConfig
from broker.log.log import AppendResult, PartitionLog
from broker.partition import NO_EPOCH, Partition, TopicPartition
from broker.purgatory import Purgatory
from client.records import (
    COMPRESSION_NAMES,
    BatchHeader,
    CorruptBatchError,
    decode_batches,
    encode_batch,
    split_batches,
    validate_records,
)
from cluster import topic_config
from cluster.image import NO_LEADER, MetadataImage
from cluster.local_changes import HostedPartition, LocalChanges, local_changes
from proto.raftka.v1 import broker_pb2, common_pb2

log = logging.getLogger("raftka.broker")

Code = common_pb2.ErrorCode
PARTITION_METADATA_FILE = "partition.metadata"
DEFAULT_PARTITION_FETCH_BYTES = 1024 * 1024
DEFAULT_PRODUCE_TIMEOUT_MS = 30_000
LIST_OFFSETS_EARLIEST = -2
LIST_OFFSETS_LATEST = -1
Clock = Callable[[], int]
AutoCreate = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ReplicaManagerSettings:
    broker_id: int
    log_dir: str
    topic_config_defaults: dict[str, str]
    fetch_max_bytes: int
    fetch_wait_max_ms: int
    produce_timeout_max_ms: int
    auto_create_topics_enable: bool


class ReplicaManager:
    def __init__(
        self,
        settings: ReplicaManagerSettings,
        clock_ms: Clock,
        auto_create: AutoCreate | None = None,
    ) -> None:
        self.settings = settings
        self.broker_id = settings.broker_id
        self._clock_ms = clock_ms
        self._auto_create = auto_create
        self.partitions: dict[TopicPartition, Partition] = {}
        self.purgatory = Purgatory()
        self.image = MetadataImage()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raftka-log-writer")
        self._changes: asyncio.Queue[tuple[MetadataImage, MetadataImage]] = asyncio.Queue()
        self._applied_offset = 0
        self._applied = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        os.makedirs(settings.log_dir, exist_ok=True)

    # ------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._worker = asyncio.create_task(self._apply_changes_forever())

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        loop = asyncio.get_running_loop()
        now_ms = self._clock_ms()
        for partition in list(self.partitions.values()):
            await loop.run_in_executor(self._writer, partition.log.close, now_ms)
        self._writer.shutdown(wait=True)

    async def _on_writer(self, function: Callable[..., object], *args: object) -> object:
        return await asyncio.get_running_loop().run_in_executor(self._writer, function, *args)

    # -------------------------------------------------------------------------- metadata
    def on_metadata(self, old: MetadataImage, new: MetadataImage) -> None:
        """MetadataLog listener (event loop): queue the change for the apply task."""
        self._changes.put_nowait((old, new))

    async def _apply_changes_forever(self) -> None:
        while True:
            old, new = await self._changes.get()
            try:
                await self._apply(local_changes(old, new, self.broker_id), new)
            except Exception:
                log.exception("applying metadata offset %d failed", new.offset)
            self.image = new
            self._applied_offset = new.offset
            self._applied.set()
            self._applied = asyncio.Event()

    @property
    def applied_offset(self) -> int:
        """Offset of the last metadata image whose local changes are in effect."""
        return self._applied_offset

    async def wait_for_metadata(
        self, condition: Callable[[MetadataImage], bool], timeout_s: float
    ) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not condition(self.image):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._applied.wait(), remaining)
            except TimeoutError:
                return condition(self.image)
        return True

    async def _apply(self, changes: LocalChanges, image: MetadataImage) -> None:
        now_ms = self._clock_ms()
        for removed in changes.removed:
            tp = TopicPartition(removed.topic, removed.partition)
            partition = self.partitions.pop(tp, None)
            if partition is not None:
                await self._on_writer(partition.log.delete)
                log.info("deleted partition %s (topic id %s)", tp, removed.topic_id)
            self.purgatory.notify(tp)
        for hosted in changes.changed:
            tp = TopicPartition(hosted.topic, hosted.partition)
            partition = self.partitions.get(tp)
            if partition is None or partition.topic_id != hosted.topic_id:
                partition = await self._open_partition(tp, hosted)
                self.partitions[tp] = partition
            effective = topic_config.resolve(hosted.configs, self.settings.topic_config_defaults)
            partition.log.config = LogConfig.from_topic_configs(effective)
            partition.min_insync_replicas = topic_config.as_int(effective, "min.insync.replicas")
            if partition.apply_registration(hosted.registration, now_ms):
                log.info(
                    "%s: leader at epoch %d (ISR %s)",
                    tp,
                    partition.leader_epoch,
                    list(partition.isr),
                )
            self.purgatory.notify(tp)

    async def _open_partition(self, tp: TopicPartition, hosted: HostedPartition) -> Partition:
        directory = os.path.join(self.settings.log_dir, str(tp))
        effective = topic_config.resolve(hosted.configs, self.settings.topic_config_defaults)
        config = LogConfig.from_topic_configs(effective)

        def open_log() -> PartitionLog:
            stored = _read_partition_metadata(directory)
            if stored is not None and stored != hosted.topic_id:
                log.warning(
                    "%s holds topic id %s, not %s: removing the stale log",
                    directory,
                    stored,
                    hosted.topic_id,
                )
                shutil.rmtree(directory)
            partition_log = PartitionLog.open(directory, config, self._clock_ms())
            _write_partition_metadata(directory, hosted.topic_id)
            return partition_log

        partition_log = await self._on_writer(open_log)
        assert isinstance(partition_log, PartitionLog)
        return Partition(
            tp,
            hosted.topic_id,
            partition_log,
            self.broker_id,
            topic_config.as_int(effective, "min.insync.replicas"),
        )

    async def remove_stray_logs(self) -> list[str]:
        """Delete partition directories that the (caught-up) metadata no longer assigns here:
        topics deleted while this broker was down."""
        hosted = {str(tp) for tp in self.partitions}

        def remove() -> list[str]:
            removed = []
            for name in os.listdir(self.settings.log_dir):
                path = os.path.join(self.settings.log_dir, name)
                if os.path.isdir(path) and name not in hosted:
                    shutil.rmtree(path)
                    removed.append(name)
            return removed

        removed = await self._on_writer(remove)
        assert isinstance(removed, list)
        for name in removed:
            log.info("removed stray partition directory %s", name)
        return removed

    # ------------------------------------------------------------------------- lookups
    def _leader_partition(self, tp: TopicPartition, epoch: int = NO_EPOCH) -> Partition:
        partition = self.partitions.get(tp)
        if partition is None:
            registration = self.image.partition(tp.topic, tp.partition)
            if registration is None:
                raise UnknownTopicOrPartitionError(f"unknown topic or partition {tp}")
            if registration.leader == NO_LEADER:
                raise LeaderNotAvailableError(f"{tp} has no leader right now")
            raise NotLeaderError(
                f"broker {self.broker_id} does not host {tp}; the leader is {registration.leader}",
                registration.leader,
                registration.leader_epoch,
            )
        partition.check_leader(epoch)
        return partition

    async def _ensure_topic(self, topic: str) -> None:
        if topic in self.image.topics:
            return
        if not self.settings.auto_create_topics_enable or self._auto_create is None:
            raise UnknownTopicOrPartitionError(
                f"topic '{topic}' does not exist and auto.create.topics.enable is false"
            )
        await self._auto_create(topic)

    # --------------------------------------------------------------------------- produce
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
        timeout_ms = request.timeout_ms or DEFAULT_PRODUCE_TIMEOUT_MS
        timeout_ms = min(timeout_ms, self.settings.produce_timeout_max_ms)
        results = await asyncio.gather(
            *(self._produce_one(item, request.acks, timeout_ms) for item in request.partitions)
        )
        response.partitions.extend(results)
        return response

    async def _produce_one(
        self, item: broker_pb2.PartitionProduceData, acks: int, timeout_ms: int
    ) -> broker_pb2.PartitionProduceResponse:
        reply = broker_pb2.PartitionProduceResponse(
            topic=item.topic, partition=item.partition, base_offset=-1, leader_id=-1
        )
        tp = TopicPartition(item.topic, item.partition)
        try:
            data, batches = _parse_produce_data(item)
            await self._ensure_topic(item.topic)
            partition = self._leader_partition(tp)
            if acks == 0:
                task = asyncio.create_task(self._append_quietly(partition, data, batches))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                return reply
            result = await self._append(partition, data, batches, acks)
            reply.base_offset = result.base_offset
            reply.log_start_offset = partition.log_start_offset
            if acks == -1:
                await self._await_replication(partition, result.last_offset, timeout_ms)
        except Exception as exc:  # every failure becomes this partition's error code
            self._fill_error(reply, exc)
        return reply

    async def _append(
        self,
        partition: Partition,
        data: bytearray,
        batches: list[tuple[int, BatchHeader]],
        acks: int,
    ) -> AppendResult:
        result = await asyncio.get_running_loop().run_in_executor(
            self._writer, partition.append_as_leader, data, batches, acks, self._clock_ms()
        )
        self.purgatory.notify(partition.tp)
        if partition.log.flush_due_by_count():
            asyncio.get_running_loop().run_in_executor(
                self._writer, partition.log.flush, self._clock_ms()
            )
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
        def done() -> bool:
            return partition.high_watermark > last_offset or not partition.is_leader

        await self.purgatory.wait_until([partition.tp], done, timeout_ms / 1000)
        if partition.high_watermark > last_offset:
            return
        if not partition.is_leader:
            raise NotLeaderError(
                f"{partition.tp} lost leadership before the write was replicated",
                partition.leader_id,
                partition.leader_epoch,
            )
        raise RequestTimedOutError(
            f"{partition.tp}: offset {last_offset} not replicated to the ISR "
            f"{list(partition.isr)} within {timeout_ms} ms"
        )

    def _fill_error(
        self,
        reply: broker_pb2.PartitionProduceResponse
        | broker_pb2.FetchPartitionResponse
        | broker_pb2.ListOffsetsPartitionResponse
        | broker_pb2.OffsetForLeaderEpochPartitionResponse,
        exc: BaseException,
    ) -> None:
        code, message = to_error(exc)
        if not isinstance(exc, BrokerError | CorruptBatchError | OSError):
            log.exception(
                "unexpected error serving %s-%d", reply.topic, reply.partition, exc_info=exc
            )
        reply.error_code = code
        reply.error_message = message
        if isinstance(exc, NotLeaderError) and hasattr(reply, "leader_id"):
            reply.leader_id = exc.leader_id
            if hasattr(reply, "leader_epoch"):
                reply.leader_epoch = exc.leader_epoch

    # ----------------------------------------------------------------------------- fetch
    async def fetch(self, request: broker_pb2.FetchRequest) -> broker_pb2.FetchResponse:
        loop = asyncio.get_running_loop()
        wait_ms = min(max(request.max_wait_ms, 0), self.settings.fetch_wait_max_ms)
        deadline = loop.time() + wait_ms / 1000
        max_bytes = request.max_bytes if request.max_bytes > 0 else self.settings.fetch_max_bytes
        max_bytes = min(max_bytes, self.settings.fetch_max_bytes)
        keys = [TopicPartition(p.topic, p.partition) for p in request.partitions]
        while True:
            response, total_bytes, ends = self._read_all(request, max_bytes)
            has_error = any(p.error_code for p in response.partitions)
            remaining = deadline - loop.time()
            if total_bytes >= max(request.min_bytes, 1) or has_error or remaining <= 0:
                break

            def moved(ends: dict[TopicPartition, int] = ends) -> bool:
                return any(
                    self._visible_end(tp, request.replica_id) != end for tp, end in ends.items()
                )

            await self.purgatory.wait_until(keys, moved, remaining)
            if loop.time() >= deadline and not moved():
                break
        if request.decode_records:
            for item, asked in zip(response.partitions, request.partitions, strict=True):
                if item.record_batches:
                    item.records.extend(_to_proto_records(item.record_batches, asked.fetch_offset))
        return response

    def _visible_end(self, tp: TopicPartition, replica_id: int) -> int:
        partition = self.partitions.get(tp)
        if partition is None:
            return -1
        return partition.log_end_offset if replica_id >= 0 else partition.high_watermark

    def _read_all(
        self, request: broker_pb2.FetchRequest, max_bytes: int
    ) -> tuple[broker_pb2.FetchResponse, int, dict[TopicPartition, int]]:
        response = broker_pb2.FetchResponse()
        total = 0
        ends: dict[TopicPartition, int] = {}
        now_ms = self._clock_ms()
        for asked in request.partitions:
            tp = TopicPartition(asked.topic, asked.partition)
            reply = response.partitions.add(
                topic=asked.topic,
                partition=asked.partition,
                high_watermark=-1,
                log_start_offset=-1,
                leader_id=-1,
                diverging_epoch=-1,
                diverging_end_offset=-1,
            )
            try:
                partition = self._leader_partition(tp, asked.current_leader_epoch)
                if request.replica_id >= 0 and partition.record_follower_fetch(
                    request.replica_id, asked.fetch_offset, now_ms
                ):
                    self.purgatory.notify(tp)
                upper = None if request.replica_id >= 0 else partition.high_watermark
                budget = max(0, max_bytes - total)
                limit = min(asked.partition_max_bytes or DEFAULT_PARTITION_FETCH_BYTES, budget)
                data = partition.log.read(
                    asked.fetch_offset, limit, upper, min_one_batch=total == 0
                )
                reply.record_batches = data
                total += len(data)
                reply.high_watermark = partition.high_watermark
                reply.log_start_offset = partition.log_start_offset
                reply.log_end_offset = partition.log_end_offset
                reply.leader_id = partition.leader_id
                reply.leader_epoch = partition.leader_epoch
                ends[tp] = self._visible_end(tp, request.replica_id)
            except Exception as exc:
                self._fill_error(reply, exc)
        return response, total, ends

    # ----------------------------------------------------------------------------- offsets
    def list_offsets(
        self, request: broker_pb2.ListOffsetsRequest
    ) -> broker_pb2.ListOffsetsResponse:
        response = broker_pb2.ListOffsetsResponse()
        for asked in request.partitions:
            reply = response.partitions.add(
                topic=asked.topic,
                partition=asked.partition,
                offset=-1,
                timestamp_ms=-1,
                leader_id=-1,
            )
            try:
                partition = self._leader_partition(TopicPartition(asked.topic, asked.partition))
                reply.leader_id = partition.leader_id
                if asked.timestamp_ms == LIST_OFFSETS_EARLIEST:
                    reply.offset = partition.log_start_offset
                elif asked.timestamp_ms == LIST_OFFSETS_LATEST:
                    reply.offset = partition.high_watermark
                elif asked.timestamp_ms < 0:
                    raise InvalidRequestError(
                        f"timestamp_ms {asked.timestamp_ms}: use -2 (earliest), -1 (latest) "
                        "or a time in ms"
                    )
                else:
                    found = partition.log.offset_for_timestamp(asked.timestamp_ms)
                    if found is not None:
                        reply.offset, reply.timestamp_ms = found
            except Exception as exc:
                self._fill_error(reply, exc)
        return response

    def offset_for_leader_epoch(
        self, request: broker_pb2.OffsetForLeaderEpochRequest
    ) -> broker_pb2.OffsetForLeaderEpochResponse:
        response = broker_pb2.OffsetForLeaderEpochResponse()
        for asked in request.partitions:
            reply = response.partitions.add(
                topic=asked.topic, partition=asked.partition, leader_epoch=-1, end_offset=-1
            )
            try:
                partition = self._leader_partition(
                    TopicPartition(asked.topic, asked.partition), asked.current_leader_epoch
                )
                epoch, end = partition.log.epochs.end_offset_for(
                    asked.leader_epoch, partition.log_end_offset
                )
                reply.leader_epoch, reply.end_offset = epoch, end
            except Exception as exc:
                self._fill_error(reply, exc)
        return response

    # ------------------------------------------------------------------------ maintenance
    async def run_maintenance(self, retention: bool) -> None:
        """Periodic: fsync rolled segments, roll idle ones (segment.ms), apply retention."""
        now_ms = self._clock_ms()
        partitions = list(self.partitions.values())

        def work() -> None:
            for partition in partitions:
                try:
                    partition.log.flush_if_due(now_ms)
                    partition.log.roll_if_due(now_ms)
                    if retention:
                        partition.log.enforce_retention(now_ms)
                except OSError as exc:
                    log.error("maintenance of %s failed: %s", partition.tp, exc)

        await self._on_writer(work)


def _parse_produce_data(
    item: broker_pb2.PartitionProduceData,
) -> tuple[bytearray, list[tuple[int, BatchHeader]]]:
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
                ]
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


def _to_proto_records(data: bytes, from_offset: int) -> list[common_pb2.Record]:
    out = []
    for record in decode_batches(data, from_offset=from_offset):
        proto = common_pb2.Record(timestamp_ms=record.timestamp_ms, offset=record.offset)
        if record.key is not None:
            proto.key = record.key
        if record.value is not None:
            proto.value = record.value
        for key, value in record.headers:
            header = proto.headers.add(key=key)
            if value is not None:
                header.value = value
        out.append(proto)
    return out


def _read_partition_metadata(directory: str) -> str | None:
    try:
        with open(os.path.join(directory, PARTITION_METADATA_FILE)) as handle:
            return str(json.load(handle)["topic_id"])
    except (FileNotFoundError, ValueError, KeyError):
        return None


def _write_partition_metadata(directory: str, topic_id: str) -> None:
    from broker.log.checkpoint import write_json

    if _read_partition_metadata(directory) != topic_id:
        write_json(os.path.join(directory, PARTITION_METADATA_FILE), {"topic_id": topic_id})
