"""Per-partition batching of records before they are sent (Kafka's RecordAccumulator).

How it works: records for a partition join its open batch until the batch reaches
`batch_size_bytes`; a batch is ready when it is full, when it has waited `linger_ms`, or when
the producer flushes. A record is written into its batch's RecordBatch v2 builder as it is
appended (aiokafka's compiled DefaultRecordBatchBuilder, the same one `records.encode_batch`
uses, so the bytes are identical): per record that is the one C call, with no Python object
kept per record; the batch is built once, when it is first sent.

At most one batch per partition is in flight, so retries never reorder a partition's records: a
failed batch goes back to the front of its queue. The total of buffered bytes is bounded by
`buffer_memory_bytes`; appends beyond it wait for space.
Time is passed in (`now_ms`); the only side effect is the thread synchronisation.

Waking the sender: anything that can make a batch ready sooner than the sender's last
`drain()` said — a new batch (with linger_ms=0 it is ready at once), a full one, a flush, a
requeue, a completion — sets a wake-up flag and notifies. `wait_for_work()` returns at once
while the flag is set, so a wake-up between the sender's `drain()` and its wait is not lost
(Kafka's `sender.wakeup()` on `newBatchCreated`). Without it, a record sent with
linger_ms=0 waited out the sender's idle poll: ~100 ms per synchronous send.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from raftka.records import (
    COMPRESSION_NONE,
    MAGIC_V2,
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    NO_SEQUENCE,
    restamp_producer,
)

log = logging.getLogger("raftka.client")

# Bytes a record costs beyond its key, value and headers (varints, attributes, deltas).
RECORD_OVERHEAD_BYTES = 24
BATCH_OVERHEAD_BYTES = 61


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int


class BatchResult:
    """How one batch ended; every record's future reads it. One event per batch rather than
    one per record (as Kafka's ProduceRequestResult), since send() runs once per record."""

    __slots__ = ("_callbacks", "_event", "_lock", "base_offset", "error", "partition", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.base_offset = -1
        self.error: BaseException | None = None
        self._event = threading.Event()
        self._lock = threading.Lock()  # a callback added as the batch completes runs once
        # (callback, its argument): a pair per record future rather than a closure, which
        # was two more objects per record for the garbage collector to track.
        self._callbacks: list[tuple[Callable[[Any], None], Any]] = []

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def complete(self, base_offset: int, error: BaseException | None) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self.base_offset = base_offset
            self.error = error
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback, argument in callbacks:
            _call_safely(callback, argument)

    def wait(self, timeout: float | None) -> bool:
        return self._event.wait(timeout)

    def on_done(self, callback: Callable[[Any], None], argument: Any) -> None:
        """`callback(argument)` once the batch is done (at once if it is)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append((callback, argument))
                return
        _call_safely(callback, argument)


def _call_safely(callback: Callable[[Any], None], argument: Any) -> None:
    """An application's callback that raises is logged, as Kafka's producer does: on the
    sender thread its exception would leave the batch unfinished and its partition stuck."""
    try:
        callback(argument)
    except Exception:
        log.exception("a send callback raised; the producer goes on")


class RecordFuture:
    """Completes with RecordMetadata once the record is acknowledged (or with an error)."""

    __slots__ = ("_index", "_result", "timestamp_ms")

    def __init__(self, result: BatchResult, index: int, timestamp_ms: int) -> None:
        self._result = result
        self._index = index
        self.timestamp_ms = timestamp_ms

    def done(self) -> bool:
        return self._result.done

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """The record's metadata; raises its error, or TimeoutError if not done in time."""
        if not self._result.wait(timeout):
            raise TimeoutError(f"record not acknowledged within {timeout}s")
        if self._result.error is not None:
            raise self._result.error
        base = self._result.base_offset
        return RecordMetadata(
            self._result.topic,
            self._result.partition,
            base + self._index if base >= 0 else -1,
            self.timestamp_ms,
        )

    result = get

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self._result.wait(timeout):
            raise TimeoutError(f"record not acknowledged within {timeout}s")
        return self._result.error

    def add_done_callback(self, callback: Callable[[RecordFuture], None]) -> None:
        self._result.on_done(callback, self)


@dataclass(slots=True)
class PendingRecord:
    """One record to append (the accumulator's tests and callers that hold records)."""

    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]
    timestamp_ms: int


def record_size(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]
) -> int:
    size = RECORD_OVERHEAD_BYTES + len(key or b"") + len(value or b"")
    for header_key, header_value in headers:
        size += len(header_key) + len(header_value or b"") + 4
    return size


# The builder's own size limit: never reached, the accumulator decides when a batch is full.
_BUILDER_NO_LIMIT = 2**31 - 1
# One empty header list for every header-less record (the builder reads it, never changes
# it; it takes only a list): send() and append_many pass it rather than a new list each.
NO_HEADERS: list[tuple[str, bytes | None]] = []


@dataclass(slots=True)
class ProducerBatch:
    topic: str
    partition: int
    created_ms: int
    record_count: int = 0
    size_bytes: int = BATCH_OVERHEAD_BYTES
    attempts: int = 0
    retry_after_ms: int = 0
    # Set once, when the batch is first sent by an idempotent producer; kept for retries so
    # the leader can recognise a retry of a batch it already stored.
    producer_id: int = -1
    producer_epoch: int = -1
    base_sequence: int = -1
    result: BatchResult = field(init=False)
    _builder: DefaultRecordBatchBuilder | None = field(init=False)
    _encoded: bytearray | None = field(init=False, default=None)
    # The (id, epoch, sequence) written into `_encoded`, to restamp it if they change.
    _stamped: tuple[int, int, int] = field(init=False, default=(-1, -1, -1))

    def __post_init__(self) -> None:
        self.result = BatchResult(self.topic, self.partition)
        self._builder = DefaultRecordBatchBuilder(
            MAGIC_V2,
            COMPRESSION_NONE,
            0,
            NO_PRODUCER_ID,
            NO_PRODUCER_EPOCH,
            NO_SEQUENCE,
            _BUILDER_NO_LIMIT,
        )

    def add(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]],
        timestamp_ms: int,
    ) -> int:
        """Write one record into the batch; its index (offset delta) in the batch."""
        if self._builder is None:
            raise RuntimeError("a batch that was sent takes no more records")
        index = self.record_count
        self._builder.append(index, timestamp_ms, key, value, headers)
        self.record_count = index + 1
        return index

    def add_many(
        self,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None,
        start: int,
        stop: int,
        timestamp_ms: int,
    ) -> None:
        """Write records start..stop-1 of `values` (and `keys`), without headers: add() in
        a loop with nothing but the builder's C call per record."""
        builder = self._builder
        if builder is None:
            raise RuntimeError("a batch that was sent takes no more records")
        append = builder.append
        first = self.record_count
        if keys is None:
            for index, value in enumerate(values[start:stop], first):
                append(index, timestamp_ms, None, value, NO_HEADERS)
        else:
            for index, (key, value) in enumerate(
                zip(keys[start:stop], values[start:stop], strict=True), first
            ):
                append(index, timestamp_ms, key, value, NO_HEADERS)
        self.record_count = first + stop - start

    def encoded(self) -> bytes:
        """The batch's RecordBatch v2 bytes, with its current producer id, epoch and base
        sequence (built on the first call; a later call after a stamp patches the header
        and recomputes the CRC rather than rebuilding the records)."""
        stamp = (self.producer_id, self.producer_epoch, self.base_sequence)
        if self._encoded is None:
            if self._builder is None or not self.record_count:
                raise ValueError("a record batch needs at least one record")
            self._builder.set_producer_state(*stamp)
            self._encoded = self._builder.build()
            self._builder = None
            self._stamped = stamp
        elif stamp != self._stamped:
            restamp_producer(self._encoded, *stamp)
            self._stamped = stamp
        return bytes(self._encoded)


class BufferFullError(Exception):
    """buffer.memory is used up and did not free within max.block.ms."""


class RecordAccumulator:
    def __init__(self, batch_size_bytes: int, linger_ms: int, buffer_memory_bytes: int) -> None:
        if batch_size_bytes <= 0 or linger_ms < 0 or buffer_memory_bytes <= 0:
            raise ValueError("batch size and buffer memory must be positive; linger >= 0")
        self.batch_size_bytes = batch_size_bytes
        self.linger_ms = linger_ms
        self.buffer_memory_bytes = buffer_memory_bytes
        self._queues: dict[tuple[str, int], deque[ProducerBatch]] = {}
        self._in_flight: set[tuple[str, int]] = set()
        self._buffered_bytes = 0
        self._flushing = 0
        # Set when a batch may have become ready since the sender's last drain(); see above.
        self._wakeup = False
        # A plain Lock under the condition: `with self._lock` is one C call, where
        # `with self.condition` (an RLock behind Python-level __enter__) cost ~0.3 us a
        # record. Nothing here takes it twice; callbacks run outside it (abort_all).
        self._lock = threading.Lock()
        self.condition = threading.Condition(self._lock)

    # ------------------------------------------------------------------------ producers
    def append(
        self,
        topic: str,
        partition: int,
        record: PendingRecord,
        size: int,
        now_ms: int,
        max_block_s: float,
    ) -> tuple[RecordFuture, bool]:
        """Queue a record: its future, and whether its batch became full (worth waking the
        sender)."""
        return self.append_record(
            topic,
            partition,
            record.key,
            record.value,
            list(record.headers),
            record.timestamp_ms,
            size,
            now_ms,
            max_block_s,
        )

    def append_record(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]],
        timestamp_ms: int,
        size: int,
        now_ms: int,
        max_block_s: float,
    ) -> tuple[RecordFuture, bool]:
        """`append` without a PendingRecord: the producer's per-record path."""
        with self._lock:
            if self._buffered_bytes + size > self.buffer_memory_bytes:
                self._wait_for_room(size, max_block_s)
            queue = self._queues.get((topic, partition))
            batch = queue[-1] if queue else None
            if (
                batch is not None
                and not batch.attempts
                and (batch.size_bytes + size <= self.batch_size_bytes or not batch.record_count)
            ):  # the common case, inline: the open batch takes the record
                started_new, queue_length = False, len(queue)  # type: ignore[arg-type]
            else:
                batch, started_new, queue_length = self._open_batch(
                    topic, partition, size, now_ms
                )
            # ProducerBatch.add inline (its builder is there: a batch in the queue that was
            # never sent has one): the builder's C call without a Python call around it
            index = batch.record_count
            batch._builder.append(  # type: ignore[union-attr]
                index, timestamp_ms, key, value, headers)
            batch.record_count = index + 1
            future = RecordFuture(batch.result, index, timestamp_ms)
            batch.size_bytes += size
            self._buffered_bytes += size
            # a batch just filled up: the previous one (a new batch was needed) or this one
            full = batch.size_bytes >= self.batch_size_bytes or (started_new and queue_length > 1)
            if full or started_new:  # a new batch is due at its linger, maybe before the
                self._wake()  # sender's next wake-up
            return future, full

    def append_many(
        self,
        topic: str,
        partition: int,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None,
        timestamp_ms: int,
        now_ms: int,
        max_block_s: float,
    ) -> tuple[list[tuple[BatchResult, int, int]], bool]:
        """Queue many records (no headers) for one partition under one lock: the segments
        (batch result, index of the first record in it, count) they landed in, and whether
        a batch became full. Per record: its size, one prefix sum and the builder's C call;
        where each batch ends is found by bisecting the prefix sums (the same rule as
        append: a record joins while the batch stays within batch_size_bytes, an empty
        batch takes any record)."""
        segments: list[tuple[BatchResult, int, int]] = []
        full_seen = False
        total = len(values)
        if keys is None:
            sizes = [RECORD_OVERHEAD_BYTES + (len(v) if v is not None else 0) for v in values]
        else:
            sizes = [
                RECORD_OVERHEAD_BYTES + (len(k) if k is not None else 0)
                + (len(v) if v is not None else 0)
                for k, v in zip(keys, values, strict=True)
            ]
        before = list(accumulate(sizes, initial=0))  # before[i]: bytes of records 0..i-1
        position = 0
        with self._lock:
            while position < total:
                size = sizes[position]
                if self._buffered_bytes + size > self.buffer_memory_bytes:
                    self._wait_for_room(size, max_block_s)
                batch, started_new, queue_length = self._open_batch(
                    topic, partition, size, now_ms
                )
                full_seen |= started_new and queue_length > 1
                first = batch.record_count
                budget = min(self.batch_size_bytes - batch.size_bytes,
                             self.buffer_memory_bytes - self._buffered_bytes)
                # the last record that keeps the batch within budget; at least one
                stop = max(position + 1,
                           bisect_right(before, before[position] + budget, position + 1) - 1)
                batch.add_many(values, keys, position, stop, timestamp_ms)
                added = before[stop] - before[position]
                position = stop
                batch.size_bytes += added
                self._buffered_bytes += added
                segments.append((batch.result, first, batch.record_count - first))
                full_seen |= batch.size_bytes >= self.batch_size_bytes
            self._wake()
        return segments, full_seen

    def _wait_for_room(self, size: int, max_block_s: float) -> None:
        """Wait (condition held) until `size` more bytes fit in buffer_memory_bytes."""
        if not self.condition.wait_for(
            lambda: (
                self._buffered_bytes + size <= self.buffer_memory_bytes
                or self._buffered_bytes == 0
            ),
            timeout=max_block_s,
        ):
            raise BufferFullError(
                f"producer buffer full ({self._buffered_bytes} of "
                f"{self.buffer_memory_bytes} bytes) for {max_block_s:.1f}s"
            )

    def _open_batch(
        self, topic: str, partition: int, size: int, now_ms: int
    ) -> tuple[ProducerBatch, bool, int]:
        """The batch a record of `size` bytes joins (a new one when the last is full or
        was sent before), whether it is new, and the partition's queue length."""
        queue = self._queues.get((topic, partition))
        if queue is None:
            queue = self._queues[(topic, partition)] = deque()
        batch = queue[-1] if queue else None
        if (
            batch is None
            or batch.attempts
            or (batch.size_bytes + size > self.batch_size_bytes and batch.record_count)
        ):
            batch = ProducerBatch(topic, partition, now_ms)
            queue.append(batch)
            return batch, True, len(queue)
        return batch, False, len(queue)

    def _wake(self) -> None:
        """Tell the sender to drain again (call with the condition held)."""
        self._wakeup = True
        self.condition.notify_all()

    def begin_flush(self) -> None:
        with self._lock:
            self._flushing += 1
            self._wake()

    def end_flush(self) -> None:
        with self._lock:
            self._flushing -= 1

    # --------------------------------------------------------------------------- sender
    def drain(self, now_ms: int, force: bool = False) -> tuple[list[ProducerBatch], int | None]:
        """Ready batches (one per partition not in flight), marked in flight; and in how many
        ms the next batch becomes ready (None: nothing queued)."""
        ready: list[ProducerBatch] = []
        next_ms: int | None = None
        with self._lock:
            self._wakeup = False  # this drain sees everything that happened before it
            flushing = force or self._flushing > 0
            for key, queue in self._queues.items():
                if not queue or key in self._in_flight:
                    continue
                batch = queue[0]
                due_ms = max(batch.created_ms + self.linger_ms, batch.retry_after_ms)
                full = batch.size_bytes >= self.batch_size_bytes or len(queue) > 1
                retry_wait = batch.retry_after_ms > now_ms
                if not retry_wait and (full or flushing or due_ms <= now_ms):
                    queue.popleft()
                    self._in_flight.add(key)
                    ready.append(batch)
                else:
                    wait = max(0, due_ms - now_ms)
                    next_ms = wait if next_ms is None else min(next_ms, wait)
        return ready, next_ms

    def complete(self, batch: ProducerBatch) -> None:
        """The batch is done (acknowledged or failed for good): free its bytes."""
        with self._lock:
            self._in_flight.discard((batch.topic, batch.partition))
            self._buffered_bytes -= batch.size_bytes - BATCH_OVERHEAD_BYTES
            self._wake()  # its partition's next batch may go now

    def requeue(self, batch: ProducerBatch, retry_after_ms: int) -> None:
        """Put a batch back at the front of its queue to retry it after a backoff."""
        with self._lock:
            batch.retry_after_ms = retry_after_ms
            self._queues.setdefault((batch.topic, batch.partition), deque()).appendleft(batch)
            self._in_flight.discard((batch.topic, batch.partition))
            self._wake()

    def has_unsent(self) -> bool:
        with self._lock:
            return bool(self._in_flight) or any(self._queues.values())

    def wait_for_work(self, timeout_s: float) -> bool:
        """Wait until woken (see above) or `timeout_s`; True if woken."""
        with self._lock:
            if not self._wakeup:
                self.condition.wait(timeout_s)
            woken, self._wakeup = self._wakeup, False
            return woken

    def wake(self) -> None:
        """Wake the sender from outside (e.g. a reply arrived for it to handle)."""
        with self._lock:
            self._wake()

    def wait_until_empty(self, timeout_s: float | None) -> bool:
        with self._lock:
            return self.condition.wait_for(
                lambda: not self._in_flight and not any(self._queues.values()), timeout_s
            )

    def abort_all(self, error: BaseException) -> None:
        with self._lock:
            aborted = [batch for queue in self._queues.values() for batch in queue]
            for queue in self._queues.values():
                queue.clear()
            self._buffered_bytes = 0
            self.condition.notify_all()
        for batch in aborted:  # outside the lock: a callback may call send()
            batch.result.complete(-1, error)
