"""`raftka bench produce|consume`: throughput figures for 100-byte records (or any size).

Two modes each, because they answer different questions:
- `sdk`: through the Python Producer/Consumer, as an application would (per-record work in
  Python on the client dominates);
- `batches` / `raw`: pre-built RecordBatch v2 batches sent with several Produce requests in
  flight, and fetches that move stored bytes without decoding them — what the broker itself
  sustains, as Kafka's perf tools (written in Java) would show.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from raftka import cpuset
from raftka.client.cli_common import EXIT_OK, CliError, add_bootstrap, add_json
from raftka.client.errors import TopicAlreadyExistsError, error_for

PROGRESS_INTERVAL_S = 2.0
# --switch-interval-ms bounds (ms): below 0.1 the threads spend their time handing the GIL
# back and forth; above 100 a waiting thread stalls for a tenth of a second.
SWITCH_INTERVAL_MIN_MS = 0.1
SWITCH_INTERVAL_MAX_MS = 100.0


def register(commands: Any) -> None:
    bench = commands.add_parser("bench", help="measure produce/consume throughput")
    actions = bench.add_subparsers(dest="action", metavar="ACTION", required=True)
    produce = actions.add_parser("produce", help="produce N records and report records/s")
    produce.add_argument("--topic", default="bench")
    produce.add_argument("--records", type=int, default=200_000)
    produce.add_argument("--size", type=int, default=100, help="value bytes per record")
    produce.add_argument("--acks", default="all", choices=["0", "1", "all"])
    produce.add_argument("--partitions", type=int, default=3)
    produce.add_argument(
        "--replication-factor",
        type=int,
        default=0,
        help="for a new topic (default: the broker's default)",
    )
    produce.add_argument(
        "--mode",
        choices=["sdk", "sdk-many", "batches"],
        default="sdk",
        help="sdk: Producer.send per record; sdk-many: Producer.send_many in chunks; "
        "batches: pre-built batches",
    )
    produce.add_argument(
        "--batch-size",
        type=int,
        default=262_144,
        help="bytes per batch (sdk: batch.size; batches: batch to build)",
    )
    produce.add_argument("--linger-ms", type=int, default=5)
    produce.add_argument(
        "--in-flight", type=int, default=4, help="batches mode: concurrent Produce requests"
    )
    produce.add_argument(
        "--rpc",
        choices=["unary", "stream"],
        default="unary",
        help="batches mode: a unary Produce call per batch, or the ProduceStream the SDK "
        "producer uses (one stream per leader)",
    )
    produce.add_argument(
        "--switch-interval-ms",
        type=float,
        default=None,
        help="sys.setswitchinterval for this process first (ms; Python's default 5): how long "
        "the producer's sender and reply threads may wait for the GIL while the sending "
        "thread runs (see README, 'Throughput and the GIL')",
    )
    add_cpu(produce)
    add_bootstrap(produce)
    add_json(produce)
    produce.set_defaults(handler=run_produce)

    consume = actions.add_parser("consume", help="read N records from the start")
    consume.add_argument("--topic", default="bench")
    consume.add_argument("--records", type=int, default=200_000)
    consume.add_argument("--mode", choices=["sdk", "raw"], default="sdk")
    add_cpu(consume)
    add_bootstrap(consume)
    add_json(consume)
    consume.set_defaults(handler=run_consume)


def add_cpu(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cpu",
        default="",
        metavar="CPUS",
        help="run this process on these CPUs only (a list such as 0 or 0,2-3), as "
        "`taskset -c` would: its Python threads then hand the GIL to each other on one core "
        "(raftka/cpuset.py; README, 'Throughput and the GIL')",
    )


def _pin(args: argparse.Namespace) -> list[int]:
    """Apply --cpu before any thread starts; the CPUs this process runs on."""
    if args.cpu == cpuset.AUTO:
        raise CliError("--cpu takes CPU numbers (e.g. 0 or 0,2-3), not auto")
    try:
        cpuset.apply(args.cpu, 0, "--cpu")
        return sorted(cpuset.allowed_cpus())
    except cpuset.CpuSetError as exc:
        raise CliError(str(exc)) from None


def _report(
    args: argparse.Namespace,
    what: str,
    records: int,
    payload_bytes: int,
    seconds: float,
    extra: dict[str, Any] | None = None,
) -> None:
    result = {
        "benchmark": what,
        "mode": args.mode,
        "topic": args.topic,
        "records": records,
        "seconds": round(seconds, 3),
        "records_per_s": round(records / seconds) if seconds else 0,
        "mb_per_s": round(payload_bytes / seconds / 1e6, 2) if seconds else 0,
        **(extra or {}),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{what} ({args.mode}): {records} records in {seconds:.2f}s = "
            f"{result['records_per_s']:,} records/s, {result['mb_per_s']} MB/s of values"
        )


class _Progress:
    def __init__(self, label: str, total: int, quiet: bool) -> None:
        self.label, self.total, self.quiet = label, total, quiet
        self.started = self.last = time.monotonic()

    def tick(self, done: int) -> None:
        now = time.monotonic()
        if self.quiet or now - self.last < PROGRESS_INTERVAL_S:
            return
        self.last = now
        rate = done / (now - self.started)
        print(
            f"... {self.label}: {done}/{self.total} records, {rate:,.0f}/s",
            file=sys.stderr,
            flush=True,
        )


def _ensure_topic(args: argparse.Namespace) -> None:
    from raftka.client.admin import Admin

    with Admin(args.bootstrap) as admin, contextlib.suppress(TopicAlreadyExistsError):
        admin.create_topic(args.topic, args.partitions, args.replication_factor)


# ---------------------------------------------------------------------------- produce
def run_produce(args: argparse.Namespace) -> int:
    if args.records <= 0 or args.size < 0:
        raise CliError("--records must be positive and --size >= 0")
    interval_ms = args.switch_interval_ms
    if interval_ms is not None:
        if not SWITCH_INTERVAL_MIN_MS <= interval_ms <= SWITCH_INTERVAL_MAX_MS:
            raise CliError(f"--switch-interval-ms must be {SWITCH_INTERVAL_MIN_MS:g} to "
                           f"{SWITCH_INTERVAL_MAX_MS:g} ms, got {interval_ms:g}")
        sys.setswitchinterval(interval_ms / 1000)
    cpus = _pin(args)
    _ensure_topic(args)
    cpu_started = time.process_time()
    if args.mode == "sdk":
        seconds = _produce_sdk(args)
    elif args.mode == "sdk-many":
        seconds = _produce_sdk_many(args)
    else:
        seconds = _produce_batches(args)
    _report(
        args,
        "produce",
        args.records,
        args.records * args.size,
        seconds,
        {
            "acks": args.acks,
            "size": args.size,
            "client_cpu_s": round(time.process_time() - cpu_started, 3),
            "switch_interval_ms": round(sys.getswitchinterval() * 1000, 3),
            "cpus": cpuset.format_cpu_list(cpus),
        },
    )
    return EXIT_OK


def _produce_sdk(args: argparse.Namespace) -> float:
    from raftka.client.producer import Producer

    value = os.urandom(args.size)
    progress = _Progress("produce", args.records, args.json)
    with Producer(
        args.bootstrap,
        acks=args.acks,
        linger_ms=args.linger_ms,
        batch_size=args.batch_size,
        buffer_memory=256 * 1024 * 1024,
    ) as producer:
        producer.partitions_for(args.topic)
        started = time.monotonic()
        last = None
        for i in range(args.records):
            last = producer.send(args.topic, value)
            if i % 10_000 == 0:
                progress.tick(i)
        producer.flush()
        seconds = time.monotonic() - started
        if last is not None:
            last.get(5)
    return seconds


# Records per send_many() call in `--mode sdk-many`.
SEND_MANY_CHUNK = 10_000


def _produce_sdk_many(args: argparse.Namespace) -> float:
    from raftka.client.producer import Producer

    value = os.urandom(args.size)
    progress = _Progress("produce", args.records, args.json)
    with Producer(
        args.bootstrap,
        acks=args.acks,
        linger_ms=args.linger_ms,
        batch_size=args.batch_size,
        buffer_memory=256 * 1024 * 1024,
    ) as producer:
        producer.partitions_for(args.topic)
        started = time.monotonic()
        results = []
        sent = 0
        while sent < args.records:
            count = min(SEND_MANY_CHUNK, args.records - sent)
            results.append(producer.send_many(args.topic, [value] * count))
            sent += count
            progress.tick(sent)
        producer.flush()
        seconds = time.monotonic() - started
        for result in results:
            result.wait(5)
    return seconds


def _produce_batches(args: argparse.Namespace) -> float:
    from raftka.client.metadata import ClusterMetadata
    from raftka.client.transport import Connections, bootstrap_list
    from raftka.proto.raftka.v1 import broker_pb2
    from raftka.records import encode_batch

    acks = -1 if args.acks == "all" else int(args.acks)
    per_batch = max(1, args.batch_size // (args.size + 10))
    value = os.urandom(args.size)
    batch = encode_batch([(None, value, [], 0)] * per_batch, now_ms=int(time.time() * 1000))
    connections = Connections()
    metadata = ClusterMetadata(bootstrap_list(args.bootstrap), connections)
    partitions = metadata.ensure_topic(args.topic, allow_auto_create=False)
    leaders = []
    for info in partitions:
        address = metadata.leader_address(args.topic, info.partition)
        if address is None:
            raise CliError(f"{args.topic}-{info.partition} has no leader right now")
        leaders.append(address)
    batches = -(-args.records // per_batch)
    progress = _Progress("produce", args.records, args.json)
    sent = 0
    lock = threading.Lock()

    def request_for(index: int) -> Any:
        return broker_pb2.ProduceRequest(
            acks=acks,
            timeout_ms=30_000,
            partitions=[
                broker_pb2.PartitionProduceData(
                    topic=args.topic, partition=index % len(partitions), record_batches=batch
                )
            ],
        )

    def acknowledged(reply: Any) -> None:
        nonlocal sent
        item = reply.partitions[0]
        if item.error_code:
            raise error_for(item.error_code, item.error_message)
        with lock:
            sent += per_batch
            progress.tick(sent)

    def send(index: int) -> None:
        address = leaders[index % len(partitions)]
        acknowledged(connections.broker(address).Produce(request_for(index), timeout=60))

    started = time.monotonic()
    if args.rpc == "stream":
        _send_on_streams(connections, batches, args.in_flight,
                         lambda i: (leaders[i % len(partitions)], request_for(i)), acknowledged)
    else:
        with ThreadPoolExecutor(max_workers=args.in_flight) as pool:
            for future in [pool.submit(send, i) for i in range(batches)]:
                future.result()
    seconds = time.monotonic() - started
    connections.close()
    args.records = batches * per_batch
    return seconds


# Longest wait for one batch's acknowledgement on a ProduceStream (s).
STREAM_DEADLINE_S = 60.0


def _send_on_streams(connections: Any, count: int, in_flight: int,
                     request_for: Any, acknowledged: Any) -> None:
    """Send `count` requests on ProduceStreams with at most `in_flight` unanswered; the
    first failure (a stream's or a partition's error) is raised once the rest are in."""
    from raftka.client.produce_stream import ProduceStreams, StreamReply

    streams = ProduceStreams(connections, STREAM_DEADLINE_S)
    window = threading.Semaphore(in_flight)
    errors: list[BaseException] = []

    def answered(reply: StreamReply) -> None:
        try:
            acknowledged(reply.result())
        except Exception as exc:  # handed to the sending thread, which raises it
            errors.append(exc)
        finally:
            window.release()

    try:
        for index in range(count):
            window.acquire()
            if errors:
                window.release()  # unused: the wait below must get all in_flight back
                break
            address, request = request_for(index)
            if not streams.send(address, request, answered):
                raise CliError(f"broker {address} has no ProduceStream; use --rpc unary")
        for _ in range(in_flight):
            window.acquire()
    finally:
        streams.close()
    if errors:
        raise errors[0]


# ---------------------------------------------------------------------------- consume
def run_consume(args: argparse.Namespace) -> int:
    cpus = _pin(args)
    cpu_started = time.process_time()
    if args.mode == "sdk":
        records, payload, seconds = _consume_sdk(args)
    else:
        records, payload, seconds = _consume_raw(args)
    _report(
        args,
        "consume",
        records,
        payload,
        seconds,
        {"client_cpu_s": round(time.process_time() - cpu_started, 3),
         "cpus": cpuset.format_cpu_list(cpus)},
    )
    return EXIT_OK


def _consume_sdk(args: argparse.Namespace) -> tuple[int, int, float]:
    from raftka.client.consumer import Consumer

    consumer = Consumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        auto_offset_reset="earliest",
        max_poll_records=10_000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    progress = _Progress("consume", args.records, args.json)
    count = payload = 0
    started = time.monotonic()
    idle_since = started
    while count < args.records and time.monotonic() - idle_since < 10:
        batch = consumer.poll(timeout_ms=500)
        if batch:
            idle_since = time.monotonic()
        for records in batch.values():
            count += len(records)
            payload += sum(len(r.value or b"") for r in records)
        progress.tick(count)
    seconds = time.monotonic() - started
    consumer.close()
    if count < args.records:
        raise CliError(f"only {count} of {args.records} records found in '{args.topic}'")
    return count, payload, seconds


def _consume_raw(args: argparse.Namespace) -> tuple[int, int, float]:
    """Fetch stored batches without decoding them: what the broker moves per second."""
    from raftka.client.metadata import ClusterMetadata
    from raftka.client.transport import Connections, bootstrap_list
    from raftka.proto.raftka.v1 import broker_pb2
    from raftka.records import iter_headers

    connections = Connections()
    metadata = ClusterMetadata(bootstrap_list(args.bootstrap), connections)
    partitions = metadata.ensure_topic(args.topic, allow_auto_create=False)
    offsets = {p.partition: 0 for p in partitions}
    count = payload = 0
    progress = _Progress("consume", args.records, args.json)
    started = time.monotonic()
    while count < args.records:
        moved = False
        for partition in list(offsets):
            address = metadata.leader_address(args.topic, partition)
            if address is None:
                raise CliError(f"{args.topic}-{partition} has no leader right now")
            request = broker_pb2.FetchRequest(
                replica_id=-1,
                max_wait_ms=0,
                max_bytes=32 << 20,
                partitions=[
                    broker_pb2.FetchPartition(
                        topic=args.topic,
                        partition=partition,
                        fetch_offset=offsets[partition],
                        partition_max_bytes=16 << 20,
                        current_leader_epoch=-1,
                    )
                ],
            )
            reply = connections.broker(address).Fetch(request, timeout=30).partitions[0]
            if reply.error_code:
                raise error_for(reply.error_code, reply.error_message)
            for _, header in iter_headers(reply.record_batches):
                count += header.last_offset - max(header.base_offset, offsets[partition]) + 1
                offsets[partition] = header.next_offset
                moved = True
            payload += len(reply.record_batches)
        progress.tick(count)
        if not moved:
            break
    seconds = time.monotonic() - started
    connections.close()
    return count, payload, seconds
