"""The client side of a fault run: producers writing unique integers, consumer groups
committing offsets, and the final reads (through the leaders, and from the replicas' files).

Producers: raftka.Producer with acks="all" (idempotence on, its default with acks=all), and
optionally confluent_kafka's Producer (enable.idempotence, acks=all) on the Kafka listeners.
Each value comes from one shared counter, so every value is written once by one producer;
it is also the record's key, so the values spread over every partition (Kafka's murmur2);
its WriteOp records the invoke time and then the ack's (partition, offset) or the error.
Each producer keeps at most `max_in_flight` values outstanding and paces itself to `rate`
values a second, so a stalled cluster does not pile up an unbounded backlog.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any

from raftka import Admin, Consumer, Producer, RecordFuture, TopicPartition
from raftka.records import iter_headers
from tests.faults.history import (
    CommitOp,
    History,
    ReadRecord,
    ReplicaBatch,
    ReplicaLog,
    WriteOp,
)

log = logging.getLogger("raftka.faults.workload")


class Values:
    """Unique integers for every producer of a run."""

    def __init__(self) -> None:
        self._next = itertools.count(1)
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            return next(self._next)


class _Paced:
    """The send loop every producer kind shares: pacing, the in-flight bound, stopping."""

    def __init__(
        self, name: str, history: History, values: Values, rate: float, max_in_flight: int
    ) -> None:
        self.name = name
        self.history = history
        self.values = values
        self.interval_s = 1.0 / rate
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._seq = itertools.count()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self.thread.start()

    def _send(self, op: WriteOp) -> None:
        raise NotImplementedError

    def _poll(self) -> None:
        """Let the client deliver callbacks (confluent_kafka needs it; raftka does not)."""

    def _loop(self) -> None:
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                self._poll()
                with self._lock:
                    busy = self.in_flight >= self.max_in_flight
                if busy:
                    time.sleep(0.01)
                    continue
                op = self.history.invoke_write(self.values.take(), self.name, next(self._seq))
                with self._lock:
                    self.in_flight += 1
                try:
                    self._send(op)
                except Exception as exc:  # send() itself refused (buffer, metadata)
                    self._completed(op, None, exc)
                    time.sleep(0.05)
                next_at = max(next_at + self.interval_s, time.monotonic() - 1.0)
                delay = next_at - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
        except BaseException as exc:
            log.exception("producer %s failed", self.name)
            self.error = exc

    def _completed(self, op: WriteOp, where: tuple[int, int] | None,
                   error: BaseException | str | None) -> None:
        if error is None and where is not None:
            self.history.ack_write(op, *where)
        else:
            self.history.fail_write(op, error or "no metadata")
        with self._lock:
            self.in_flight -= 1

    def stop(self, flush_timeout_s: float) -> None:
        self._stop.set()
        self.thread.join(30)


class RaftkaProducer(_Paced):
    def __init__(self, name: str, bootstrap: str, topic: str, history: History,
                 values: Values, rate: float, max_in_flight: int,
                 settings: dict[str, Any] | None = None) -> None:
        super().__init__(name, history, values, rate, max_in_flight)
        self.topic = topic
        options: dict[str, Any] = {
            "acks": "all",
            "linger_ms": 5,
            "request_timeout_ms": 5_000,
            "delivery_timeout_ms": 30_000,
            "max_block_ms": 10_000,
            "client_id": name,
        }
        options.update(settings or {})
        self.producer = Producer(bootstrap, **options)
        if options["acks"] in ("all", -1):
            assert self.producer.idempotent, "acks=all must turn idempotence on"

    def _send(self, op: WriteOp) -> None:
        data = str(op.value).encode()
        future = self.producer.send(self.topic, data, key=data)
        future.add_done_callback(functools.partial(self._on_done, op=op))

    def _on_done(self, future: RecordFuture, op: WriteOp) -> None:
        try:
            metadata = future.get(0)
        except Exception as exc:
            self._completed(op, None, exc)
            return
        self._completed(op, (metadata.partition, metadata.offset), None)

    def stop(self, flush_timeout_s: float) -> None:
        super().stop(flush_timeout_s)
        try:
            self.producer.flush(flush_timeout_s)
        except Exception as exc:
            self.history.note(f"{self.name}: flush: {exc}")
        # close() fails what is still queued ("the producer was closed"): outcome unknown
        self.producer.close(timeout=1)


class KafkaProducer(_Paced):
    """confluent_kafka (librdkafka) through the brokers' Kafka listeners."""

    def __init__(self, name: str, bootstrap: str, topic: str, history: History,
                 values: Values, rate: float, max_in_flight: int, acks: str = "all",
                 config: dict[str, Any] | None = None) -> None:
        """`config`: more librdkafka settings (SASL ones for a secured cluster)."""
        super().__init__(name, history, values, rate, max_in_flight)
        from confluent_kafka import Producer as ConfluentProducer

        self.topic = topic
        self.producer: Any = ConfluentProducer({
            "bootstrap.servers": bootstrap,
            "client.id": name,
            "enable.idempotence": acks == "all",
            "acks": acks,
            "linger.ms": 5,
            "request.timeout.ms": 5_000,
            "message.timeout.ms": 30_000,
            "socket.timeout.ms": 5_000,
            **(config or {}),
        }, logger=logging.getLogger(f"raftka.faults.librdkafka.{name}"))  # not stderr

    def _send(self, op: WriteOp) -> None:
        if self.producer is None:
            raise RuntimeError("the producer is closed")
        data = str(op.value).encode()
        self.producer.produce(
            self.topic, data, key=data,
            on_delivery=lambda err, msg, op=op: self._on_delivery(err, msg, op),
        )

    def _on_delivery(self, err: Any, msg: Any, op: WriteOp) -> None:
        if err is not None:
            self._completed(op, None, f"KafkaError: {err}")
        else:
            self._completed(op, (msg.partition(), msg.offset()), None)

    def _poll(self) -> None:
        if self.producer is not None:
            self.producer.poll(0)

    def stop(self, flush_timeout_s: float) -> None:
        super().stop(flush_timeout_s)
        if self.producer is None:
            return
        left = self.producer.flush(flush_timeout_s)
        if left:
            self.history.note(f"{self.name}: {left} messages undelivered at the end")
            self.producer.purge()
            self.producer.flush(1)
        # Destroy librdkafka's instance now: its threads would otherwise go on reconnecting
        # to the brokers' addresses after the network is gone.
        self.producer.close()
        self.producer = None


class GroupConsumer:
    """One member of a consumer group (raftka.Consumer: the KIP-848 protocol over gRPC):
    reads what it is assigned, records what it got and what it held when, and commits its
    positions synchronously every `commit_interval_s`."""

    def __init__(self, bootstrap: str, topic: str, group_id: str, history: History,
                 commit_interval_s: float = 1.0, member: str = "raftka-m0") -> None:
        self.history = history
        self.group_id = group_id
        self.member = member
        self.commit_interval_s = commit_interval_s
        self.consumer = Consumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            request_timeout_ms=5_000,
            fetch_max_wait_ms=200,
            client_id=member,
        )
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"group-{member}", daemon=True)
        self.error: BaseException | None = None
        self.positions: dict[TopicPartition, int] = {}

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        last_commit = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    batch = self.consumer.poll(timeout_ms=300)
                except Exception as exc:
                    self.history.note(f"group consumer poll: {type(exc).__name__}: {exc}")
                    self._stop.wait(0.5)
                    continue
                self.history.owned(self.group_id, self.member,
                                   {tp.partition for tp in self.consumer.assignment()})
                for tp, records in batch.items():
                    for record in records:
                        self.history.consume(tp.partition, record.offset, int(record.value))
                        self.positions[tp] = record.offset + 1
                if time.monotonic() - last_commit >= self.commit_interval_s:
                    last_commit = time.monotonic()
                    self._commit()
        except BaseException as exc:
            log.exception("group consumer failed")
            self.error = exc

    def _commit(self) -> None:
        # only positions of partitions this member still holds: a revoked one is not ours
        owned = self.consumer.assignment()
        offsets = {tp: o for tp, o in self.positions.items() if tp in owned}
        if not offsets:
            return
        ops = [self.history.invoke_commit(tp.partition, o, self.group_id, self.member)
               for tp, o in sorted(offsets.items())]
        error: BaseException | None = None
        try:
            self.consumer.commit(offsets)
        except Exception as exc:
            error = exc
        for op in ops:
            self.history.complete_commit(op, error)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(30)
        self.history.owned(self.group_id, self.member, set())
        try:
            self.consumer.close()
        except Exception as exc:
            self.history.note(f"group consumer {self.member} close: {exc}")


class KafkaGroupConsumer:
    """One member of a classic Kafka consumer group (confluent_kafka: JoinGroup/SyncGroup
    over the Kafka listeners): what it holds comes from its assign/revoke callbacks; it
    records what it reads and commits every `commit_interval_s`.

    Commits are asynchronous, one at a time, their outcome taken from librdkafka's commit
    callback: a synchronous commit has no timeout in librdkafka and hung a run for good
    (seed 71: it blocked in the member's thread while close() waited on it). One whose
    answer never comes stays pending, which the checker treats as possibly stored. The
    member's own thread closes it, never another thread while it polls."""

    def __init__(self, bootstrap: str, topic: str, group_id: str, history: History,
                 member: str, commit_interval_s: float = 1.0) -> None:
        from confluent_kafka import Consumer as ConfluentConsumer

        self.history = history
        self.topic = topic
        self.group_id = group_id
        self.member = member
        self.commit_interval_s = commit_interval_s
        self._in_flight: list[CommitOp] = []
        self.consumer: Any = ConfluentConsumer({
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "client.id": member,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6_000,
            "heartbeat.interval.ms": 1_000,
            "socket.timeout.ms": 5_000,
            "on_commit": self._on_commit,
        }, logger=logging.getLogger(f"raftka.faults.librdkafka.{member}"))
        self._held: set[int] = set()
        self.positions: dict[int, int] = {}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"group-{member}", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_revoke)
        self.thread.start()

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._held |= {p.partition for p in partitions}
        self.history.owned(self.group_id, self.member, set(self._held))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self._held -= {p.partition for p in partitions}
        for p in partitions:
            self.positions.pop(p.partition, None)
        self.history.owned(self.group_id, self.member, set(self._held))

    def _on_commit(self, err: Any, partitions: list[Any]) -> None:
        ops, self._in_flight = self._in_flight, []
        refused = {p.partition: p.error for p in partitions or [] if p.error is not None}
        for op in ops:
            problem = err if err is not None else refused.get(op.partition)
            self.history.complete_commit(
                op, None if problem is None else RuntimeError(f"commit refused: {problem}"))

    def _loop(self) -> None:
        last_commit = time.monotonic()
        try:
            while not self._stop.is_set():
                message = self.consumer.poll(0.3)
                if message is not None and message.error() is None:
                    self.history.consume(message.partition(), message.offset(),
                                         int(message.value()))
                    self.positions[message.partition()] = message.offset() + 1
                if time.monotonic() - last_commit >= self.commit_interval_s:
                    last_commit = time.monotonic()
                    self._commit()
        except BaseException as exc:
            log.exception("kafka group consumer %s failed", self.member)
            self.error = exc
        finally:
            self.history.owned(self.group_id, self.member, set())
            try:
                self.consumer.close()
            except Exception as exc:
                self.history.note(f"kafka group consumer {self.member} close: {exc}")

    def _commit(self) -> None:
        from confluent_kafka import TopicPartition as KafkaTopicPartition

        if self._in_flight:
            return  # the previous commit has not been answered yet
        offsets = {p: o for p, o in self.positions.items() if p in self._held}
        if not offsets:
            return
        self._in_flight = [self.history.invoke_commit(p, o, self.group_id, self.member)
                           for p, o in sorted(offsets.items())]
        try:
            self.consumer.commit(
                offsets=[KafkaTopicPartition(self.topic, p, o) for p, o in sorted(offsets.items())],
                asynchronous=True,
            )
        except Exception as exc:
            ops, self._in_flight = self._in_flight, []
            for op in ops:
                self.history.complete_commit(op, exc)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(45)
        if self.thread.is_alive():
            self.history.note(f"kafka group consumer {self.member} did not stop in 45 s")


# --------------------------------------------------------------------- final reads
def final_read(bootstrap: str, topic: str, partitions: int, timeout_s: float = 120,
               settle_s: float = 2.0) -> tuple[list[ReadRecord], dict[int, int]]:
    """Every record of every partition from the beginning through the high watermark,
    read through the leaders; repeated until the high watermarks stop moving (right after
    a leader change the HW lags until the followers have fetched from the new leader).
    Returns the records in read order and the high watermark of each partition."""
    consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                        request_timeout_ms=10_000, client_id="faults-final-read")
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    records: list[ReadRecord] = []
    deadline = time.monotonic() + timeout_s
    settled: dict[TopicPartition, int] | None = None
    try:
        while time.monotonic() < deadline:
            ends = consumer.end_offsets(tps)
            while (any(consumer.position(tp) < ends[tp] for tp in tps)
                   and time.monotonic() < deadline):
                for tp, batch in consumer.poll(timeout_ms=500).items():
                    records.extend(ReadRecord(tp.partition, r.offset, int(r.value))
                                   for r in batch)
            if settled == ends:
                break
            settled = ends
            time.sleep(settle_s)
        else:
            raise TimeoutError(f"the final read did not settle within {timeout_s}s")
    finally:
        consumer.close()
    return records, {tp.partition: ends[tp] for tp in tps}


def high_watermarks(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer(bootstrap_servers=bootstrap, request_timeout_ms=10_000,
                        client_id="faults-offsets")
    try:
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        consumer.close()
    return {tp.partition: offset for tp, offset in ends.items()}


def describe_partitions(bootstrap: str, topic: str) -> tuple[dict[int, list[int]],
                                                              dict[int, list[int]]]:
    """(replicas, isr) of each partition."""
    with Admin(bootstrap, request_timeout_ms=10_000) as admin:
        description = admin.describe_topic(topic)
    replicas = {p.partition: sorted(p.replicas) for p in description.partitions}
    isr = {p.partition: sorted(p.isr) for p in description.partitions}
    return replicas, isr


def group_offsets(bootstrap: str, group_id: str, topic: str) -> dict[int, int]:
    with Admin(bootstrap, request_timeout_ms=10_000) as admin:
        description = admin.groups.describe_group(group_id)
    return {o.partition: o.offset for o in description.offsets if o.topic == topic}


def read_replica_log(directory: Path, broker: int, partition: int) -> ReplicaLog:
    """The batches of a stopped broker's partition directory, segment files in offset
    order (their names are the base offsets), as stored on disk."""
    batches: list[ReplicaBatch] = []
    for segment in sorted(directory.glob("*.log")):
        data = segment.read_bytes()
        for position, header in iter_headers(data):
            batches.append(ReplicaBatch(header.base_offset, header.last_offset,
                                        data[position:position + header.size_bytes]))
    return ReplicaLog(broker, partition, batches)


def read_replica_logs(data_dirs: dict[int, Path], topic: str,
                      partitions: int) -> list[ReplicaLog]:
    logs: list[ReplicaLog] = []
    for broker, data_dir in sorted(data_dirs.items()):
        for partition in range(partitions):
            directory = data_dir / "logs" / f"{topic}-{partition}"
            if directory.is_dir():
                logs.append(read_replica_log(directory, broker, partition))
    return logs

