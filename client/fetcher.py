"""Fetcher: the network side of consuming, an I/O shell around SubscriptionState.

Split out of the Consumer, as Kafka's Java client keeps its Fetcher apart from its
SubscriptionState, so that talking to brokers is one module and the bookkeeping it feeds is
another (client/subscription.py, pure and unit-tested). The Fetcher asks the state what to
fetch and from which offset, sends one Fetch per leader broker for the partitions it leads
(long-polling up to the wait it is given), checks each returned batch's CRC here — the broker
sent the stored bytes untouched — and hands the state one LazyBatch per batch: its records
are decoded by aiokafka's compiled reader only when poll() hands them out, and turned into
ConsumerRecords by C-level loops (map/zip over the reader's records), so a fetch of a million
records costs a CRC pass until they are wanted and no Python bytecode per record after.
NOT_LEADER answers that name a newer leader and its address (KIP-951) move the partition
there for the next round without a Metadata call; other NOT_LEADER answers, unknown
partitions and unreachable brokers refresh the metadata, and the next round retries after a
short jittered backoff (client/backoff.py); OFFSET_OUT_OF_RANGE resets the position per
auto_offset_reset. It also lists offsets (ListOffsets), for resets and for the Consumer's
seek_to_*() and *_offsets().

One slow or dead broker does not stall the others: each broker has at most one Fetch in
flight, and a round waits for replies only until the long-poll wait plus
FETCH_REPLY_GRACE_MS. A reply that is later than that stays in flight (its partitions are
not fetched elsewhere meanwhile, so records are never read twice) and is taken in by a
later round; if the metadata moved all of its partitions to other leaders, it is cancelled.
"""

from __future__ import annotations

import gc
import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter
from typing import Any, NamedTuple, overload

import grpc
from aiokafka.record.default_records import DefaultRecordBatch

from raftka.client import backoff
from raftka.client.errors import RaftkaError, UnknownTopicOrPartitionError, error_for
from raftka.client.metadata import ClusterMetadata
from raftka.client.serialization import DESERIALIZERS, Deserializer
from raftka.client.subscription import SubscriptionState
from raftka.client.transport import Connections, translate_rpc_error
from raftka.client.types import TopicPartition
from raftka.proto.raftka.v1 import broker_pb2, common_pb2
from raftka.records import BatchHeader, CorruptBatchError, check_crc, iter_headers

log = logging.getLogger("raftka.client")
Code = common_pb2.ErrorCode
# How long past its long-poll wait a round waits for a broker's Fetch reply (ms) before it
# returns what the other brokers sent and leaves that one in flight.
FETCH_REPLY_GRACE_MS = 500


@dataclass(slots=True)
class _InFlight:
    """One Fetch sent to a broker and not yet taken in: the offsets it asked for."""

    future: Any
    offsets: dict[TopicPartition, int]
    late_at: float  # monotonic s: past its long-poll wait plus FETCH_REPLY_GRACE_MS


class ConsumerRecord(NamedTuple):
    """One record as poll() hands it out. A NamedTuple so that a batch of them is built by
    C loops (`tuple.__new__` over zipped columns) and its fields read by C getters."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: Any
    value: Any
    headers: tuple[tuple[str, bytes | None], ...]


_OFFSET = attrgetter("offset")
_TIMESTAMP = attrgetter("timestamp")
_KEY = attrgetter("key")
_VALUE = attrgetter("value")
_HEADERS = attrgetter("headers")
_new_tuple = tuple.__new__
_IDENTITY = DESERIALIZERS["bytes"]


class LazyBatch(Sequence[ConsumerRecord]):
    """The records of one fetched batch (CRC already checked), decoded on first use.

    Why lazy: a fetch brings up to fetch_max_bytes (tens of MB, hundreds of thousands of
    records); decoding it all at once would hold every record object alive until poll()
    hands it out — memory, and work for the garbage collector that grows with it. Decoding
    per batch when it is handed out keeps only max_poll_records alive.
    """

    __slots__ = ("_chunk", "_decoded", "_deserializers", "_from_offset", "_header", "_tp")

    def __init__(
        self,
        tp: TopicPartition,
        chunk: bytes | memoryview,
        header: BatchHeader,
        from_offset: int,
        deserializers: tuple[Deserializer, Deserializer],
    ) -> None:
        self._tp = tp
        self._chunk = chunk
        self._header = header
        self._from_offset = from_offset
        self._deserializers = deserializers
        self._decoded: list[ConsumerRecord] | None = None

    def _records(self) -> list[ConsumerRecord]:
        if self._decoded is None:
            # The garbage collector is held off while one batch decodes (~1 ms): the reader's
            # record objects live only until this returns, and the ConsumerRecords made of
            # ints, bytes and () are untracked by the next young collection. Collections
            # in between would promote thousands of short-lived objects per batch to the
            # old generation and trigger full collections of the whole heap: measured 3x
            # the cost of decoding itself (BENCHMARKS.md, "SDK per-record costs"). A
            # caller's own gc.disable() is respected: the collector is only re-enabled if
            # it was enabled before.
            enabled = gc.isenabled()
            gc.disable()
            try:
                self._decoded = decode_records(
                    self._tp, self._chunk, self._header, self._from_offset, *self._deserializers
                )
            finally:
                if enabled:
                    gc.enable()
            self._chunk = b""
        return self._decoded

    def __len__(self) -> int:
        """Without decoding while the header can tell: the count it declares (the CRC
        vouches for it), unless records before `from_offset` are to be skipped."""
        if self._decoded is None and self._header.base_offset >= self._from_offset:
            return int(self._header.records_count)
        return len(self._records())

    @overload
    def __getitem__(self, index: int) -> ConsumerRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[ConsumerRecord]: ...

    def __getitem__(self, index: int | slice) -> ConsumerRecord | list[ConsumerRecord]:
        return self._records()[index]

    def __iter__(self) -> Iterator[ConsumerRecord]:
        return iter(self._records())


def decode_records(
    tp: TopicPartition,
    chunk: bytes | memoryview,
    header: BatchHeader,
    from_offset: int,
    key_deserializer: Deserializer,
    value_deserializer: Deserializer,
) -> list[ConsumerRecord]:
    """The records of one batch from `from_offset` on, as ConsumerRecords. The compiled
    reader makes one object per record; the rest runs in C loops (no bytecode per record)
    unless a deserializer other than bytes has to be called per record."""
    try:
        raw = list(DefaultRecordBatch(chunk))
    except Exception as exc:  # the compiled decoder raises several types on bad bytes
        raise CorruptBatchError(
            f"cannot decode batch at {header.base_offset}: {str(exc) or type(exc).__name__}"
        ) from exc
    if header.base_offset < from_offset:
        raw = [record for record in raw if record.offset >= from_offset]
    keys = map(_KEY, raw)
    values = map(_VALUE, raw)
    if key_deserializer is not _IDENTITY:
        keys = map(key_deserializer, keys)
    if value_deserializer is not _IDENTITY:
        values = map(value_deserializer, values)
    return list(
        map(
            _new_tuple,
            repeat(ConsumerRecord),
            zip(
                repeat(tp.topic),
                repeat(tp.partition),
                map(_OFFSET, raw),
                map(_TIMESTAMP, raw),
                keys,
                values,
                map(tuple, map(_HEADERS, raw)),
            ),
        )
    )


class Fetcher:
    """Fetches the records of a SubscriptionState's partitions from their leaders."""

    def __init__(
        self,
        state: SubscriptionState[ConsumerRecord],
        connections: Connections,
        metadata: ClusterMetadata,
        *,
        key_deserializer: Deserializer,
        value_deserializer: Deserializer,
        fetch_min_bytes: int = 1,
        fetch_max_bytes: int = 52_428_800,
        max_partition_fetch_bytes: int = 1_048_576,
        request_timeout_s: float = 30.0,
    ) -> None:
        self.state = state
        self.metadata = metadata
        self._connections = connections
        self._key_deserializer = key_deserializer
        self._value_deserializer = value_deserializer
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_bytes = fetch_max_bytes
        self.max_partition_fetch_bytes = max_partition_fetch_bytes
        self.request_timeout_s = request_timeout_s
        self._in_flight: dict[str, _InFlight] = {}  # at most one Fetch per broker address
        self._arrived = threading.Event()  # set by gRPC when any in-flight Fetch completes
        self._failed_rounds = 0  # rounds in a row that needed a retry (for the backoff)
        self._random = random.Random()

    # --------------------------------------------------------------------- offsets
    def reset_positions(self, partitions: list[TopicPartition]) -> None:
        """Move `partitions` to their earliest or latest offset, per auto_offset_reset."""
        spec = self.state.reset_spec(partitions)
        for tp, offset in self.list_offsets(partitions, spec).items():
            self.state.seek(tp, offset)

    def list_offsets(
        self, partitions: list[TopicPartition], spec: int
    ) -> dict[TopicPartition, int]:
        """The offset at `spec` (EARLIEST, LATEST or a timestamp) of each partition, asking
        the leaders and retrying retriable failures until the request timeout."""
        result: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + self.request_timeout_s
        pending = list(partitions)
        attempts = 0
        while pending:
            by_leader = self._group_by_leader(pending)
            retry: list[TopicPartition] = []
            for address, group in by_leader.items():
                request = broker_pb2.ListOffsetsRequest(
                    partitions=[
                        broker_pb2.ListOffsetsPartition(
                            topic=tp.topic, partition=tp.partition, timestamp_ms=spec
                        )
                        for tp in group
                    ]
                )
                try:
                    response = self._connections.broker(address).ListOffsets(
                        request, timeout=self.request_timeout_s
                    )
                except grpc.RpcError as exc:
                    self._give_up_if_late(deadline, translate_rpc_error(exc, address))
                    retry.extend(group)
                    continue
                for reply in response.partitions:
                    tp = TopicPartition(reply.topic, reply.partition)
                    if reply.error_code:
                        error = error_for(reply.error_code, reply.error_message)
                        if not error.retriable:
                            raise error
                        self._give_up_if_late(deadline, error)
                        retry.append(tp)
                    else:
                        result[tp] = reply.offset
            grouped = {tp for group in by_leader.values() for tp in group}
            retry.extend(tp for tp in pending if tp not in grouped)
            pending = retry
            if pending:
                attempts += 1
                time.sleep(backoff.backoff_ms(attempts, self._random.random()) / 1000)
                self.metadata.refresh()
        return result

    @staticmethod
    def _give_up_if_late(deadline: float, error: Exception) -> None:
        if time.monotonic() > deadline:
            raise error

    def _group_by_leader(self, partitions: list[TopicPartition]) -> dict[str, list[TopicPartition]]:
        groups: dict[str, list[TopicPartition]] = {}
        for tp in partitions:
            address = self.metadata.leader_address(tp.topic, tp.partition)
            if address is None:
                self.metadata.ensure_topic(tp.topic, allow_auto_create=False)
                address = self.metadata.leader_address(tp.topic, tp.partition)
            if address is not None:
                groups.setdefault(address, []).append(tp)
        return groups

    # -------------------------------------------------------------------- fetching
    def fetch_once(self, wait_ms: int) -> None:
        """One round: reset partitions without a position, then one Fetch per leader of
        the fetchable partitions not already in flight (each waiting up to `wait_ms` for
        data); the records land in the state's buffer. Sleeps instead when there is nothing
        to fetch."""
        if not self.state.fetchable():
            time.sleep(wait_ms / 1000)
            return
        missing = self.state.needing_reset()
        if missing:
            self.reset_positions(missing)
        busy = {tp for sent in self._in_flight.values() for tp in sent.offsets}
        offsets = {tp: o for tp, o in self.state.fetch_offsets().items() if tp not in busy}
        by_leader = {
            address: group
            for address, group in self._group_by_leader(list(offsets)).items()
            if address not in self._in_flight  # its partitions go in the next round
        }
        if not by_leader and not self._in_flight:
            time.sleep(min(wait_ms, 100) / 1000)
            self.metadata.refresh()
            return
        for address, group in by_leader.items():
            self._in_flight[address] = self._send_fetch(address, group, offsets, wait_ms)
        refresh = self._take_replies(time.monotonic() + (wait_ms + FETCH_REPLY_GRACE_MS) / 1000)
        if refresh:
            try:
                self.metadata.refresh()
            except RaftkaError as exc:
                log.debug("metadata refresh failed: %s", exc)
            self._drop_moved_fetches()
            self._failed_rounds += 1
            time.sleep(backoff.backoff_ms(self._failed_rounds, self._random.random()) / 1000)
        else:
            self._failed_rounds = 0

    def send_ahead(self, wait_ms: int) -> None:
        """Send Fetches for the partitions with nothing buffered, without waiting for the
        replies (the next fetch_once takes them in): the brokers read and send the next
        records while the caller handles the ones poll() just returned, instead of the
        consumer fetching only once its buffer is empty (Kafka's consumer prefetches the
        same way). Partitions with buffered records are left alone, which bounds the buffer
        at about one fetch per partition."""
        if self.state.needing_reset():
            return  # the next fetch_once resets them first
        buffered = self.state.buffered_partitions()
        busy = {tp for sent in self._in_flight.values() for tp in sent.offsets}
        offsets = {
            tp: offset
            for tp, offset in self.state.fetch_offsets().items()
            if tp not in busy and tp not in buffered
        }
        if not offsets:
            return
        for address, group in self._group_by_leader(list(offsets)).items():
            if address not in self._in_flight:
                self._in_flight[address] = self._send_fetch(address, group, offsets, wait_ms)

    def _send_fetch(
        self, address: str, group: list[TopicPartition], offsets: dict[TopicPartition, int],
        wait_ms: int,
    ) -> _InFlight:
        request = broker_pb2.FetchRequest(
            replica_id=-1,
            max_wait_ms=wait_ms,
            min_bytes=self.fetch_min_bytes,
            max_bytes=self.fetch_max_bytes,
            partitions=[
                broker_pb2.FetchPartition(
                    topic=tp.topic,
                    partition=tp.partition,
                    fetch_offset=offsets[tp],
                    partition_max_bytes=self.max_partition_fetch_bytes,
                    current_leader_epoch=-1,
                    last_fetched_epoch=-1,
                )
                for tp in group
            ],
        )
        future = self._connections.broker(address).Fetch.future(
            request, timeout=wait_ms / 1000 + self.request_timeout_s
        )
        future.add_done_callback(lambda _: self._arrived.set())
        late_at = time.monotonic() + (wait_ms + FETCH_REPLY_GRACE_MS) / 1000
        return _InFlight(future, {tp: offsets[tp] for tp in group}, late_at)

    def _take_replies(self, deadline: float) -> bool:
        """Take in the in-flight replies as they arrive, until some records are buffered,
        nothing is in flight, or `deadline` (monotonic s); True when the metadata needs a
        refresh (an error, or a broker past its reply's `late_at`).

        Returns as soon as one reply brought records, leaving the other Fetches in flight
        (Kafka's consumer does the same): waiting for every broker made records from a
        busy partition wait out the long poll of the idle ones, up to fetch_max_wait_ms
        (the end-to-end latency in BENCHMARKS.md)."""
        refresh = False
        while self._in_flight:
            self._arrived.clear()  # before looking: a completion from here on sets it again
            for address, sent in list(self._in_flight.items()):
                if sent.future.done():
                    refresh |= self._take_one(address, sent)
            now = time.monotonic()
            for address, sent in self._in_flight.items():
                if now >= sent.late_at:
                    log.debug("fetch from %s is late; other brokers go on", address)
                    refresh = True
            if refresh or not self._in_flight or self.state.has_buffered() or now >= deadline:
                return refresh
            self._arrived.wait(min(deadline, *(s.late_at for s in self._in_flight.values())) - now)
        return refresh

    def _take_one(self, address: str, sent: _InFlight) -> bool:
        """Absorb one completed Fetch; True when the metadata needs a refresh."""
        del self._in_flight[address]
        try:
            response = sent.future.result(timeout=0)
        except grpc.FutureCancelledError:
            return False
        except grpc.RpcError as exc:
            log.debug("fetch from %s failed: %s", address, translate_rpc_error(exc, address))
            if getattr(exc, "code", lambda: None)() == grpc.StatusCode.UNAVAILABLE:
                self.metadata.note_unreachable(address)
            return True
        return self._absorb(response, sent.offsets)

    def _drop_moved_fetches(self) -> None:
        """Cancel late fetches whose partitions all have other leaders now, so they are
        fetched from those (a paused broker's reply would otherwise hold them until the
        request timeout)."""
        for address, sent in list(self._in_flight.items()):
            if all(
                self.metadata.leader_address(tp.topic, tp.partition) not in (None, address)
                for tp in sent.offsets
            ):
                sent.future.cancel()
                del self._in_flight[address]

    def _absorb(
        self, response: broker_pb2.FetchResponse, asked: dict[TopicPartition, int]
    ) -> bool:
        """Take one Fetch reply into the state; True when the metadata needs a refresh."""
        refresh = False
        for reply in response.partitions:
            tp = TopicPartition(reply.topic, reply.partition)
            position = self.state.next_fetch_offset(tp)
            if position is None or asked.get(tp) != position:
                continue  # unassigned, reset or sought since the request went out
            if reply.error_code == Code.OFFSET_OUT_OF_RANGE:
                log.warning(
                    "%s-%d: offset %d out of range; resetting (%s)",
                    tp.topic,
                    tp.partition,
                    position,
                    self.state.auto_offset_reset,
                )
                self.reset_positions([tp])
                continue
            if reply.error_code:
                error = error_for(reply.error_code, reply.error_message)
                if not error.retriable and not isinstance(error, UnknownTopicOrPartitionError):
                    raise error
                hinted = reply.error_code == Code.NOT_LEADER_OR_FOLLOWER and (
                    self.metadata.use_leader_hint(
                        tp.topic, tp.partition, reply.leader_id, reply.leader_epoch,
                        response.node_endpoints,
                    )
                )
                refresh |= not hinted
                continue
            if reply.record_batches:
                batches, next_position = self._decode(tp, reply.record_batches, position)
                for batch in batches:
                    self.state.add_fetched(tp, batch, next_position)
                if not batches:  # control batches or gaps only: the position moves on
                    self.state.add_fetched(tp, [], next_position)
        return refresh

    def _decode(
        self, tp: TopicPartition, data: bytes, position: int
    ) -> tuple[list[LazyBatch], int]:
        """The batches of `data` holding records from `position` on (CRC-checked here, so a
        corrupt fetch buffers nothing; decoded later, when handed out), and the offset to
        fetch next: past the last batch, control batches and gaps included."""
        batches: list[LazyBatch] = []
        next_position = position
        deserializers = (self._key_deserializer, self._value_deserializer)
        view = memoryview(data)  # batches are views into the reply: no copy per batch
        for start, header in iter_headers(data):  # stops at a partial batch at the end
            next_position = max(next_position, header.next_offset)
            if header.last_offset < position or header.is_control or not header.records_count:
                continue
            chunk = view[start : start + header.size_bytes]
            check_crc(chunk, 0, header)
            batches.append(LazyBatch(tp, chunk, header, position, deserializers))
        return batches, next_position
