"""Producer: batches records per partition and sends them to partition leaders.

How it works: `send()` serializes the record, picks its partition (explicit; else Kafka's
murmur2 of the key, so a key lands where Kafka would put it; else the sticky partition for
keyless records) and queues it in the accumulator. A sender thread drains ready batches,
encodes each as one RecordBatch v2 (the CRC is computed here; the broker stores the bytes as
they are), groups them by leader and sends one Produce request per broker, on that broker's
ProduceStream (client/produce_stream.py; a unary Produce call where a broker has none). One
batch per partition in flight keeps order.

The sender never waits on a broker: requests go out on streams (or as gRPC futures) whose
answers wake it, so a broker that is slow, paused or dead holds up only the partitions it
leads while the sender keeps draining batches for the others; metadata refreshes run on
their own thread for the same reason. Retriable errors (NOT_LEADER, unreachable broker,
timeouts) retry the batch until `delivery_timeout_ms`: at once when a NOT_LEADER answer
named a newer leader and its address (KIP-951, see client/metadata.py), else after a
jittered exponential backoff from `retry_backoff_ms` to `retry_backoff_max_ms`
(client/backoff.py) while the metadata is refreshed.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from raftka.client import backoff
from raftka.client.accumulator import (
    NO_HEADERS,
    BatchResult,
    ProducerBatch,
    RecordAccumulator,
    RecordFuture,
    RecordMetadata,
    record_size,
)
from raftka.client.credentials import resolve as resolve_credentials
from raftka.client.errors import (
    BrokerNotAvailableError,
    InvalidRequestError,
    MessageTooLargeError,
    RaftkaError,
    RequestTimedOutError,
    error_for,
)
from raftka.client.idempotence import ProducerIdentity
from raftka.client.metadata import ClusterMetadata, PartitionInfo
from raftka.client.partitioner import StickyPartitioner, murmur2, partition_for_key, to_positive
from raftka.client.produce_stream import ProduceStreams
from raftka.client.serialization import Serializer, resolve_serializer
from raftka.client.tls_options import TlsOptions
from raftka.client.transport import Connections, bootstrap_list, translate_rpc_error
from raftka.proto.raftka.v1 import broker_pb2, common_pb2

log = logging.getLogger("raftka.client")
Code = common_pb2.ErrorCode
_wall_clock = time.time  # one global read per record instead of a module attribute too

ACKS = {"all": -1, "-1": -1, -1: -1, "1": 1, 1: 1, "0": 0, 0: 0}
# Longest the sender sleeps with nothing to do (s); it wakes sooner for any new work.
SENDER_IDLE_POLL_S = 0.1
# Bytes a record costs in the accumulator beyond its key and value (see accumulator.py).
RECORD_OVERHEAD_BYTES = 24
# How long a Produce may run past request_timeout_ms before the SDK gives up on it (s): the
# broker answers REQUEST_TIMED_OUT itself at request_timeout_ms.
PRODUCE_DEADLINE_GRACE_S = 5.0


def parse_acks(acks: str | int) -> int:
    try:
        return ACKS[acks]
    except KeyError:
        raise ValueError(f"acks must be 'all', -1, 0 or 1, got {acks!r}") from None


class Producer:
    def __init__(
        self,
        bootstrap_servers: str | list[str] | None = None,
        *,
        client_id: str = "raftka-python",
        acks: str | int = "all",
        linger_ms: int = 5,
        batch_size: int = 16_384,
        buffer_memory: int = 32 * 1024 * 1024,
        max_request_size: int = 1_048_576,
        max_block_ms: int = 60_000,
        request_timeout_ms: int = 30_000,
        delivery_timeout_ms: int = 120_000,
        retry_backoff_ms: int = backoff.RETRY_BACKOFF_MS,
        retry_backoff_max_ms: int = backoff.RETRY_BACKOFF_MAX_MS,
        key_serializer: str | Serializer | None = None,
        value_serializer: str | Serializer | None = None,
        allow_auto_create_topics: bool = True,
        enable_idempotence: bool | None = None,
        seed: int | None = None,
        tls: TlsOptions | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.client_id = client_id
        self.acks = parse_acks(acks)
        if enable_idempotence and self.acks != -1:
            raise ValueError("enable_idempotence requires acks='all'")
        # As in Kafka 3: on by default, unless acks says the caller does not want to wait.
        self.idempotent = self.acks == -1 if enable_idempotence is None else enable_idempotence
        self._identity = ProducerIdentity()
        # Retries by error name, for callers that report what the producer rode through.
        self.retries: Counter[str] = Counter()
        self.on_retry: Callable[[str, int, BaseException], None] | None = None
        if linger_ms < 0 or batch_size <= 0 or max_request_size <= 0:
            raise ValueError("linger_ms must be >= 0; batch_size, max_request_size > 0")
        self.max_request_size = max_request_size
        self.max_block_s = max_block_ms / 1000
        self.request_timeout_s = request_timeout_ms / 1000
        self.delivery_timeout_ms = delivery_timeout_ms
        backoff.validate(retry_backoff_ms, retry_backoff_max_ms)
        self.retry_backoff_ms = retry_backoff_ms
        self.retry_backoff_max_ms = retry_backoff_max_ms
        self._random = random.Random(seed)
        # Produce replies (address, batches, future), put by gRPC's threads, handled by the
        # sender. Bounded by the partitions in flight (one batch each).
        self._replies: queue.SimpleQueue[tuple[str, list[ProducerBatch], Any]] = (
            queue.SimpleQueue()
        )
        self.allow_auto_create_topics = allow_auto_create_topics
        self._plain_keys = key_serializer in (None, "bytes")
        self._plain_values = value_serializer in (None, "bytes")
        self._key_serializer = resolve_serializer(key_serializer)
        self._value_serializer = resolve_serializer(value_serializer)
        self._connections = Connections(tls, resolve_credentials(username, password))
        self._streams = ProduceStreams(self._connections,
                                       self.request_timeout_s + PRODUCE_DEADLINE_GRACE_S)
        self.metadata = ClusterMetadata(
            bootstrap_list(bootstrap_servers), self._connections, self.request_timeout_s
        )
        self._accumulator = RecordAccumulator(batch_size, linger_ms, buffer_memory)
        self._sticky = StickyPartitioner(random.Random(seed))
        self._sticky_lock = threading.Lock()
        self._partition_cache: dict[str, tuple[list[PartitionInfo], list[int]]] = {}
        self._closed = False
        self._sender = threading.Thread(
            target=self._run_sender, name="raftka-producer-sender", daemon=True
        )
        self._sender.start()

    # ----------------------------------------------------------------------- public API
    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        *,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordFuture:
        """Queue one record; the future completes with its RecordMetadata when acknowledged
        (with acks=0: when sent, offset -1)."""
        if self._closed:
            raise RuntimeError("the producer is closed")
        # bytes pass through the default serializers as they are: skip the call
        key_bytes = (
            key
            if (key is None or key.__class__ is bytes) and self._plain_keys
            else self._key_serializer(key)
        )
        value_bytes = (
            value
            if value.__class__ is bytes and self._plain_values
            else self._value_serializer(value)
        )
        if headers:
            header_list = [(str(k), v) for k, v in headers]
            size = record_size(key_bytes, value_bytes, header_list)
        else:
            header_list = NO_HEADERS  # read by the batch builder, never changed
            size = RECORD_OVERHEAD_BYTES + len(key_bytes or b"") + len(value_bytes or b"")
        if size + 61 > self.max_request_size:
            raise MessageTooLargeError(
                f"record of about {size} bytes exceeds max_request_size ({self.max_request_size})"
            )
        if key_bytes is None and partition is None:
            # the common keyless case inline (the cached partition list, then the sticky
            # partition's one dict read): two method calls less per record
            infos = self.metadata.topics.get(topic)
            cached = self._partition_cache.get(topic)
            current = (
                self._sticky.current(topic, len(infos))
                if infos is not None and cached is not None and cached[0] is infos
                else None
            )
            chosen = current if current is not None else self._choose_partition(
                topic, None, None)
        else:
            chosen = self._choose_partition(topic, key_bytes, partition)
        now_ms = int(_wall_clock() * 1000)
        future, batch_full = self._accumulator.append_record(
            topic,
            chosen,
            key_bytes,
            value_bytes,
            header_list,
            timestamp_ms if timestamp_ms else now_ms,
            size,
            now_ms,
            self.max_block_s,
        )
        if batch_full and key_bytes is None and partition is None:
            self._next_sticky(topic, chosen)
        return future

    def send_many(
        self,
        topic: str,
        values: Sequence[Any],
        keys: Sequence[Any] | None = None,
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> BulkSendResult:
        """Queue many records (without headers) at once, for callers that already hold
        them: one serializer pass, one partition choice per key (or per batch for keyless
        records, sticky as in send()), and the records written into their batches under one
        lock per partition. The records of one partition keep their order. Returns one
        result for all of them rather than a future per record."""
        if self._closed:
            raise RuntimeError("the producer is closed")
        if keys is not None and len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys for {len(values)} values: give one per value")
        serialize_value = self._value_serializer
        value_bytes = [serialize_value(v) for v in values]
        key_bytes = None if keys is None else [self._key_serializer(k) for k in keys]
        largest = max((len(v or b"") for v in value_bytes), default=0) + (
            max((len(k or b"") for k in key_bytes), default=0) if key_bytes else 0
        )
        if RECORD_OVERHEAD_BYTES + largest + 61 > self.max_request_size:
            raise MessageTooLargeError(
                f"a record of about {RECORD_OVERHEAD_BYTES + largest} bytes exceeds "
                f"max_request_size ({self.max_request_size})"
            )
        now_ms = int(time.time() * 1000)
        stamp = timestamp_ms if timestamp_ms else now_ms
        segments: list[tuple[BatchResult, int, int]] = []
        order: list[tuple[int, list[int]]] = []  # (partition, indexes) for keyed records
        if partition is None and key_bytes is not None and any(k is None for k in key_bytes):
            raise ValueError("send_many: give a key for every record, or none")
        if partition is not None:
            self._choose_partition(topic, None, partition)
            added, _ = self._accumulator.append_many(
                topic, partition, value_bytes, key_bytes, stamp, now_ms, self.max_block_s
            )
            segments.extend(added)
        elif key_bytes is None:
            segments.extend(self._send_many_sticky(topic, value_bytes, stamp, now_ms))
        else:
            count = len(self._partition_infos(topic)[0])
            by_partition: dict[int, list[int]] = {}
            for index, key in enumerate(key_bytes):
                chosen = to_positive(murmur2(key or b"")) % count  # no None: checked above
                by_partition.setdefault(chosen, []).append(index)
            for chosen, indexes in by_partition.items():
                order.append((chosen, indexes))
                added, _ = self._accumulator.append_many(
                    topic,
                    chosen,
                    [value_bytes[i] for i in indexes],
                    [key_bytes[i] for i in indexes],
                    stamp,
                    now_ms,
                    self.max_block_s,
                )
                segments.extend(added)
        return BulkSendResult(segments, stamp, order or None, len(values))

    def _send_many_sticky(
        self, topic: str, values: list[bytes | None], stamp: int, now_ms: int
    ) -> list[tuple[BatchResult, int, int]]:
        """Keyless records: fill the sticky partition's batch, move on when it is full."""
        segments: list[tuple[BatchResult, int, int]] = []
        position = 0
        while position < len(values):
            chosen = self._choose_partition(topic, None, None)
            # about one batch's worth per step, so a full batch moves the sticky partition
            size = RECORD_OVERHEAD_BYTES + len(values[position] or b"")
            step = max(1, self._accumulator.batch_size_bytes // size)
            chunk = values[position : position + step]
            added, full = self._accumulator.append_many(
                topic, chosen, chunk, None, stamp, now_ms, self.max_block_s
            )
            segments.extend(added)
            position += len(chunk)
            if full or position < len(values):
                self._next_sticky(topic, chosen)
        return segments

    def _next_sticky(self, topic: str, previous: int) -> None:
        count = len(self.metadata.partitions_for(topic) or ())
        with self._sticky_lock:
            self._sticky.on_new_batch(topic, count, previous)

    def partitions_for(self, topic: str) -> list[int]:
        infos = self.metadata.ensure_topic(topic, self.allow_auto_create_topics)
        return [info.partition for info in infos]

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now and wait until it is acknowledged or failed."""
        self._accumulator.begin_flush()
        try:
            if not self._accumulator.wait_until_empty(timeout):
                raise RequestTimedOutError(f"flush did not finish within {timeout}s")
        finally:
            self._accumulator.end_flush()

    def close(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            with self._accumulator.condition:
                self._accumulator.condition.notify_all()
            self._sender.join(timeout=5)
            self._accumulator.abort_all(RaftkaError("the producer was closed"))
            self._streams.close()
            self._connections.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -------------------------------------------------------------------- partitioning
    def _partition_infos(self, topic: str) -> tuple[list[PartitionInfo], list[int]]:
        """The topic's partitions and those with a known leader. Cached per topic until
        the metadata replaces its list (it never changes one in place), so send() does not
        take the metadata lock or rebuild the list for every record."""
        infos = self.metadata.topics.get(topic)
        cached = self._partition_cache.get(topic)
        if infos is not None and cached is not None and cached[0] is infos:
            return cached
        infos = self.metadata.ensure_topic(topic, self.allow_auto_create_topics)
        entry = (infos, [i.partition for i in infos if i.leader_id >= 0])
        self._partition_cache[topic] = entry
        return entry

    def _choose_partition(self, topic: str, key: bytes | None, partition: int | None) -> int:
        infos, available = self._partition_infos(topic)
        count = len(infos)
        if partition is not None:
            if not 0 <= partition < count:
                raise InvalidRequestError(
                    f"partition {partition} does not exist: '{topic}' has {count}"
                )
            return partition
        if key is not None:
            return partition_for_key(key, count)
        # The common case without the lock: a lock per record was ~8% of the send()
        # thread's samples (py-spy --native, BENCHMARKS.md 2026-12-04).
        current = self._sticky.current(topic, count)
        if current is not None:
            return current
        with self._sticky_lock:
            return self._sticky.partition(topic, count, available)

    # -------------------------------------------------------------------------- sender
    def _run_sender(self) -> None:
        while True:
            now_ms = int(time.time() * 1000)
            batches, next_ms = self._accumulator.drain(now_ms, force=self._closed)
            if batches:
                try:
                    self._send_batches(batches)
                except Exception as exc:  # never let the sender thread die
                    log.exception("sender failed")
                    for batch in batches:
                        self._fail(batch, RaftkaError(f"sender failed: {exc}"))
            # After drain(), which clears the wake-up flag: a reply that lands from here on
            # sets it again, so the wait below cannot sleep through it.
            self._handle_replies()
            self._streams.expire()
            if batches:
                continue
            if self._closed and not self._accumulator.has_unsent():
                return
            if next_ms is None:
                wait_s = SENDER_IDLE_POLL_S
            else:
                wait_s = max(0.001, min(next_ms / 1000, SENDER_IDLE_POLL_S))
            self._accumulator.wait_for_work(wait_s)

    def _send_batches(self, batches: list[ProducerBatch]) -> None:
        """Send each batch to its leader without waiting for the answers."""
        by_leader: dict[str, list[ProducerBatch]] = defaultdict(list)
        refresh_needed = False
        if self.idempotent and not self._identity.known:
            self._init_producer_id()
        for batch in batches:
            if self.idempotent:
                self._identity.stamp(batch)
            if not batch.attempts:
                # KIP-480: keyless records move on once their partition's batch is sent,
                # not only when it is full; else, with linger_ms small against the round
                # trip, every keyless record of a topic queued behind one partition's single
                # in-flight batch (at 10,000 records/s: seconds of latency, BENCHMARKS.md).
                # A notice for a partition the topic already left is ignored.
                self._next_sticky(batch.topic, batch.partition)
            address = self.metadata.leader_address(batch.topic, batch.partition)
            if address is None:
                refresh_needed = True
                self._retry(
                    batch,
                    BrokerNotAvailableError(f"no leader known for {batch.topic}-{batch.partition}"),
                )
            else:
                by_leader[address].append(batch)
        for address, group in by_leader.items():
            request = broker_pb2.ProduceRequest(
                acks=self.acks,
                timeout_ms=int(self.request_timeout_s * 1000),
                partitions=[
                    broker_pb2.PartitionProduceData(
                        topic=b.topic, partition=b.partition, record_batches=self._encode(b)
                    )
                    for b in group
                ],
            )
            def arrived(done: Any, address: str = address,
                        group: list[ProducerBatch] = group) -> None:
                self._reply_arrived(address, group, done)

            if not self._streams.send(address, request, arrived):  # a broker without it
                self._connections.broker(address).Produce.future(
                    request, timeout=self.request_timeout_s + PRODUCE_DEADLINE_GRACE_S
                ).add_done_callback(arrived)
        if refresh_needed:
            self.metadata.refresh_in_background()

    def _reply_arrived(self, address: str, group: list[ProducerBatch], future: Any) -> None:
        """On a gRPC thread: hand the reply to the sender and wake it."""
        self._replies.put((address, group, future))
        self._accumulator.wake()

    def _handle_replies(self) -> None:
        refresh_needed = False
        while True:
            try:
                address, group, future = self._replies.get_nowait()
            except queue.Empty:
                break
            try:
                refresh_needed |= self._handle_reply(address, group, future)
            except Exception as exc:  # never let the sender thread die
                log.exception("handling a reply from %s failed", address)
                for batch in group:
                    if not batch.result.done:
                        self._fail(batch, RaftkaError(f"sender failed: {exc}"))
        if refresh_needed:
            self.metadata.refresh_in_background()

    @staticmethod
    def _encode(batch: ProducerBatch) -> bytes:
        return batch.encoded()

    def _init_producer_id(self) -> None:
        """Ask any broker for a producer id; on failure batches go out without one (and
        retry later), so a broker outage never blocks the sender."""
        request = broker_pb2.InitProducerIdRequest()
        for address in self.metadata.candidates():
            try:
                reply = self._connections.broker(address).InitProducerId(
                    request, timeout=self.request_timeout_s
                )
            except grpc.RpcError as exc:
                self.metadata.note_unreachable(address)
                log.debug("InitProducerId at %s: %s", address, exc)
                continue
            if reply.error_code == 0:
                self._identity.reset(reply.producer_id, reply.producer_epoch)
                return
            log.debug("InitProducerId at %s: %s", address, reply.error_message)

    def _handle_reply(self, address: str, group: list[ProducerBatch], future: Any) -> bool:
        """Settle the batches of one Produce reply; True when the metadata needs a refresh
        (a retriable error without a usable leader hint)."""
        # A batch already settled (failed by the sender's catch-all after it went out)
        # must not be settled twice: its bytes were freed once.
        group = [batch for batch in group if not batch.result.done]
        try:
            response = future.result()
        except grpc.RpcError as exc:
            error = translate_rpc_error(exc, address)
            if getattr(exc, "code", lambda: None)() == grpc.StatusCode.UNAVAILABLE:
                self.metadata.note_unreachable(address)
            for batch in group:
                self._retry(batch, error)
            return True
        except RaftkaError as stream_error:  # the Produce stream broke or timed out
            for batch in group:
                self._retry(batch, stream_error)
            return True
        refresh = False
        replies = {(p.topic, p.partition): p for p in response.partitions}
        for batch in group:
            reply = replies.get((batch.topic, batch.partition))
            if reply is None:
                self._retry(batch, RaftkaError("the broker's reply missed this partition"))
            elif reply.error_code:
                error = error_for(reply.error_code, reply.error_message)
                hinted = reply.error_code == Code.NOT_LEADER_OR_FOLLOWER and (
                    self.metadata.use_leader_hint(
                        batch.topic,
                        batch.partition,
                        reply.leader_id,
                        reply.leader_epoch,
                        response.node_endpoints,
                    )
                )
                refresh |= error.retriable and not hinted
                self._retry(batch, error, hinted=hinted)
            else:
                self._succeed(batch, reply.base_offset)
        return refresh

    def _succeed(self, batch: ProducerBatch, base_offset: int) -> None:
        batch.result.complete(base_offset, None)
        self._accumulator.complete(batch)

    def _fail(self, batch: ProducerBatch, error: BaseException) -> None:
        if batch.producer_id >= 0 and batch.producer_id == self._identity.producer_id:
            self._identity.forget()  # its sequences left a gap: start a new sequence space
        batch.result.complete(-1, error)
        self._accumulator.complete(batch)

    def _retry(self, batch: ProducerBatch, error: BaseException, hinted: bool = False) -> None:
        """Requeue `batch` (or fail it: not retriable, or out of time). `hinted`: the new
        leader is known, so the retry goes at once."""
        now_ms = int(time.time() * 1000)
        batch.attempts += 1
        retriable = getattr(error, "retriable", False)
        expired = now_ms - batch.created_ms >= self.delivery_timeout_ms
        if not retriable or expired or (self._closed and not retriable):
            if expired and retriable:
                error = RequestTimedOutError(
                    f"{batch.topic}-{batch.partition}: not delivered within "
                    f"delivery_timeout_ms={self.delivery_timeout_ms} (last error: {error})"
                )
            self._fail(batch, error)
            return
        log.debug("retrying %s-%d after %s", batch.topic, batch.partition, error)
        name = getattr(error, "code_name", type(error).__name__)
        self.retries[name] += 1
        if self.on_retry is not None:
            self.on_retry(batch.topic, batch.partition, error)
        wait_ms = 0 if hinted else backoff.backoff_ms(
            batch.attempts, self._random.random(), self.retry_backoff_ms, self.retry_backoff_max_ms
        )
        self._accumulator.requeue(batch, now_ms + wait_ms)


class BulkSendResult:
    """How the records of one send_many() call ended: one object for all of them."""

    __slots__ = ("_count", "_order", "_segments", "timestamp_ms")

    def __init__(
        self,
        segments: list[tuple[BatchResult, int, int]],
        timestamp_ms: int,
        order: list[tuple[int, list[int]]] | None,
        count: int,
    ) -> None:
        self._segments = segments
        self._order = order  # keyed records: which input positions went to each partition
        self._count = count
        self.timestamp_ms = timestamp_ms

    def __len__(self) -> int:
        return self._count

    def done(self) -> bool:
        return all(result.done for result, _, _ in self._segments)

    def wait(self, timeout: float | None = None) -> None:
        """Wait until every record is acknowledged; raise the first error (or TimeoutError)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for result, _, _ in self._segments:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not result.wait(left):
                raise TimeoutError(f"records not acknowledged within {timeout}s")
            if result.error is not None:
                raise result.error

    def get(self, timeout: float | None = None) -> list[RecordMetadata]:
        """Every record's metadata, in the order given to send_many (raises as wait())."""
        self.wait(timeout)
        found = [
            RecordMetadata(result.topic, result.partition, result.base_offset + first + i,
                           self.timestamp_ms)
            for result, first, count in self._segments
            for i in range(count)
        ]
        if self._order is None:
            return found
        placed: list[RecordMetadata | None] = [None] * self._count
        cursor = 0
        for _, indexes in self._order:
            for index in indexes:
                placed[index] = found[cursor]
                cursor += 1
        return [m for m in placed if m is not None]
