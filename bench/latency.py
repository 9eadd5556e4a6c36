"""Produce and end-to-end latency at fixed rates, open loop (no coordinated omission).

    python bench/latency.py [--rates 1000,10000,50000] [--seconds 10] [--linger-ms 1]
                            [--client sdk|kafka] [--json]

Why open loop: a closed-loop benchmark (send, wait, send) stops sending while the system
stalls, so the stall hides in a few samples — coordinated omission. Here record i is due
at `start + i / rate`, whatever happened before; when the sender falls behind it sends the
overdue records at once, and every latency is measured from the record's *scheduled* time,
so time spent behind schedule counts against the system.

--gc-freeze: the producing process calls gc.freeze() once it is set up (the Python docs'
gc.freeze, as latency-minded services do), so full collections no longer walk the ~36,000
objects its imports made. Kept to check the garbage collector's share: once the SDK's
per-record reference cycle was gone (client/accumulator.py: gen-0 collections in a 7 s run
at 10,000 records/s fell from 378 to 9) it made no consistent difference (BENCHMARKS.md).
The default measures the process as Python leaves it.

Two latencies per record:
- produce: scheduled time to acknowledgement (acks=all, RF=3, min.insync.replicas=2), taken
  in the Producer's completion callback;
- end-to-end: scheduled time to a consumer (a separate process, so it does not share the
  producer's GIL) handing the record out of poll(). The scheduled wall-clock time travels in
  the record's value; both processes read the same clock.

--tick-ms: the shortest sleep of the load generator when it is ahead of schedule (default 1
ms): it then sends every record that fell due meanwhile, each still stamped with its own
scheduled time, so the wait counts in its latency. Sleeping until each record's own time
(--tick-ms 0) woke the producing process 10,000 times a second at 10,000 records/s, and
those wake-ups took CPU from the brokers on the same two cores (BENCHMARKS.md). Kafka's
producer-perf-test throttles the same way (its ThroughputThrottler sleeps 2 ms at least).

--client: who produces. `sdk` (default), the Python SDK over gRPC; `kafka`, confluent-kafka
(librdkafka, C) through the brokers' Kafka listener, with the same acks, idempotence,
linger and batch size. The same brokers either way: the difference between the two is what
the producing client and its protocol add. The end-to-end consumer is the SDK's in both.

Starts a 3-broker cluster in a temporary directory unless --bootstrap is given. The first
`--warmup-s` seconds of each rate are sent but not counted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster_timings import free_base_port  # noqa: E402
from bench.sdk_compare import wait_for_brokers  # noqa: E402
from raftka.client.local_cluster import LocalCluster  # noqa: E402

# The value starts with the record's index and its scheduled wall-clock time (ns).
STAMP = struct.Struct(">qq")
PERCENTILES = (50.0, 99.0, 99.9)
# How long the consumer waits for stragglers after the last record is due (s).
DRAIN_S = 10.0
# The load generator's shortest sleep when ahead of schedule (ms); see --tick-ms.
DEFAULT_TICK_MS = 1.0


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    if not samples_ms:
        return {}
    ordered = sorted(samples_ms)
    last = len(ordered) - 1
    out = {f"p{p:g}": round(ordered[min(last, int(p / 100 * len(ordered)))], 3)
           for p in PERCENTILES}
    out["max"] = round(ordered[-1], 3)
    out["samples"] = len(ordered)
    return out


# ----------------------------------------------------------------------------- consumer
def consume_role(args: argparse.Namespace) -> int:
    """Child process: read the topic from its end, report end-to-end latencies."""
    from raftka.client.consumer import Consumer
    from raftka.client.types import TopicPartition

    consumer = Consumer(bootstrap_servers=args.bootstrap, fetch_max_wait_ms=100,
                        max_poll_records=10_000)
    partitions = [TopicPartition(args.topic, p) for p in range(args.partitions)]
    consumer.assign(partitions)
    consumer.seek_to_end(*partitions)
    for tp in partitions:
        consumer.position(tp)
    print("ready", flush=True)
    latencies: list[float] = []
    seen = 0
    deadline = time.monotonic() + args.timeout_s
    while seen < args.records and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=100).values():
            now_ns = time.time_ns()
            for record in records:
                index, scheduled_ns = STAMP.unpack_from(record.value)
                seen += 1
                if index >= args.skip:
                    latencies.append((now_ns - scheduled_ns) / 1e6)
    consumer.close()
    print(json.dumps({"seen": seen, "latencies_ms": percentiles(latencies)}), flush=True)
    return 0


# ----------------------------------------------------------------------------- producer
class SdkSender:
    """The load generator's producer: the Python SDK over gRPC (the default)."""

    def __init__(self, bootstrap: str, topic: str, args: argparse.Namespace) -> None:
        from raftka.client.producer import Producer

        self.topic = topic
        self.errors = 0
        self._producer = Producer(bootstrap, acks="all", linger_ms=args.linger_ms,
                                  batch_size=args.batch_size)

    def __enter__(self) -> SdkSender:
        self._producer.partitions_for(self.topic)  # metadata before the clock starts
        return self

    def __exit__(self, *_: object) -> None:
        self._producer.close()

    def send(self, value: bytes, done: Callable[[], None] | None) -> None:
        future = self._producer.send(self.topic, value)
        if done is not None:
            def completed(f: Any, done: Callable[[], None] = done) -> None:
                if f.exception() is not None:
                    self.errors += 1
                done()
            future.add_done_callback(completed)

    def wait(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def flush(self) -> None:
        self._producer.flush()


class KafkaSender:
    """The load generator's producer: confluent-kafka (librdkafka) through the brokers'
    Kafka listener, acks=all and idempotent as the SDK's, linger.ms and batch.size the
    same. Its delivery callbacks run inside poll(), so the generator waits in poll()
    instead of sleeping, and each acknowledgement is taken when it arrives."""

    def __init__(self, bootstrap: str, topic: str, args: argparse.Namespace) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.errors = 0
        self._producer = Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
            "linger.ms": args.linger_ms, "batch.size": args.batch_size,
            # librdkafka leaves Nagle on by default; with requests pipelined on a
            # connection it held small ones back for the peer's delayed ACK (40 ms)
            "socket.nagle.disable": True,
            "max.in.flight.requests.per.connection": getattr(args, "kafka_in_flight", 5),
        })

    def __enter__(self) -> KafkaSender:
        self._producer.list_topics(self.topic, timeout=30)  # metadata before the clock
        return self

    def __exit__(self, *_: object) -> None:
        self._producer.flush(30)

    def send(self, value: bytes, done: Callable[[], None] | None) -> None:
        if done is None:
            self._producer.produce(self.topic, value)
            return

        def delivered(err: Any, _msg: Any, done: Callable[[], None] = done) -> None:
            if err is not None:
                self.errors += 1
            done()
        self._producer.produce(self.topic, value, on_delivery=delivered)

    def wait(self, seconds: float) -> None:
        self._producer.poll(seconds)

    def flush(self) -> None:
        if self._producer.flush(60):
            raise RuntimeError("confluent-kafka: records still unacknowledged after 60 s")


def run_rate(bootstrap: str, topic: str, rate: int, args: argparse.Namespace) -> dict[str, Any]:
    total = int(rate * args.seconds)
    skip = int(rate * args.warmup_s)
    child = subprocess.Popen(
        [sys.executable, __file__, "--consume-role", "--bootstrap", bootstrap, "--topic", topic,
         "--partitions", str(args.partitions), "--records", str(total), "--skip", str(skip),
         "--timeout-s", str(args.seconds + DRAIN_S + 20)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the consumer did not start")
        produce_ms: list[float] = []
        lock = threading.Lock()
        padding = b"\0" * max(0, args.size - STAMP.size)
        client = getattr(args, "client", "sdk")
        sender = (SdkSender(bootstrap, topic, args) if client == "sdk"
                  else KafkaSender(args.kafka_bootstrap, topic, args))
        with sender:
            frozen = getattr(args, "gc_freeze", False)
            if frozen:
                gc.collect()
                gc.freeze()
            start = time.perf_counter() + 0.1
            start_wall_ns = time.time_ns() + 100_000_000
            interval = 1.0 / rate
            tick_s = getattr(args, "tick_ms", DEFAULT_TICK_MS) / 1000
            worst_lag = 0.0
            i = 0
            while i < total:
                now = time.perf_counter()
                due = start + i * interval
                if due > now:
                    sender.wait(max(due - now, tick_s))
                    continue
                worst_lag = max(worst_lag, now - due)
                # everything overdue goes now, each stamped with its own scheduled time
                while i < total and start + i * interval <= now:
                    scheduled = start + i * interval
                    value = STAMP.pack(i, start_wall_ns + int(i * interval * 1e9)) + padding
                    if i >= skip:
                        def done(scheduled: float = scheduled) -> None:
                            elapsed = (time.perf_counter() - scheduled) * 1000
                            with lock:
                                produce_ms.append(elapsed)
                        sender.send(value, done)
                    else:
                        sender.send(value, None)
                    i += 1
                sender.wait(0)
            sender.flush()
            if frozen:
                gc.unfreeze()
        out, _ = child.communicate(timeout=args.seconds + DRAIN_S + 60)
        end_to_end = json.loads(out.strip().splitlines()[-1])
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return {
        "rate": rate,
        "records": total,
        "counted": total - skip,
        "linger_ms": args.linger_ms,
        "tick_ms": getattr(args, "tick_ms", DEFAULT_TICK_MS),
        "gc_freeze": getattr(args, "gc_freeze", False),
        "batch_size": args.batch_size,
        "worst_send_lag_ms": round(worst_lag * 1000, 3),
        "client": client,
        "kafka_in_flight": getattr(args, "kafka_in_flight", 5) if client == "kafka" else None,
        "produce_errors": sender.errors,
        "produce_ms": percentiles(produce_ms),
        "end_to_end_ms": end_to_end["latencies_ms"],
        "consumer_saw": end_to_end["seen"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,10000,50000",
                        help="records/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="per rate")
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=100, help="record value bytes")
    parser.add_argument("--linger-ms", type=int, default=1)
    parser.add_argument("--tick-ms", type=float, default=DEFAULT_TICK_MS,
                        help="shortest sleep when ahead of schedule (0: until each record)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=262_144,
        help="bytes (as bench/throughput.py): with one batch in flight per partition, "
        "a batch must hold a round trip's worth of records",
    )
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() in the producing process once set up (see above)")
    parser.add_argument("--client", choices=("sdk", "kafka"), default="sdk",
                        help="sdk: the Python SDK over gRPC; kafka: confluent-kafka through "
                        "the Kafka listener")
    parser.add_argument("--bootstrap", help="an existing cluster (default: start one)")
    parser.add_argument("--kafka-in-flight", type=int, default=5,
                        help="--client kafka: max.in.flight.requests.per.connection (1-5 "
                        "with idempotence; librdkafka's default 5)")
    parser.add_argument("--kafka-bootstrap",
                        help="its Kafka listeners (with --bootstrap and --client kafka)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--consume-role", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--records", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--skip", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--timeout-s", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume_role:
        return consume_role(args)
    rates = [int(r) for r in args.rates.split(",")]
    if any(r <= 0 for r in rates) or args.seconds <= args.warmup_s:
        parser.error("rates must be positive and --seconds longer than --warmup-s")
    if not 1 <= args.kafka_in_flight <= 5:
        parser.error("--kafka-in-flight must be 1 to 5 (idempotence allows at most 5)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="raftka-latency-") as scratch:
        local = layout = None
        bootstrap = args.bootstrap
        if bootstrap is None:
            local = LocalCluster(scratch)
            layout = local.create_or_load(3, free_base_port(), {})
            for node in layout.all_nodes():
                local.start_node(layout, node.broker_id, detach=True)
            wait_for_brokers(layout.bootstrap, 3)
            time.sleep(1.0)  # their heartbeats unfence them just after registering
            bootstrap = layout.bootstrap
            args.kafka_bootstrap = layout.kafka_bootstrap
        if args.client == "kafka" and not args.kafka_bootstrap:
            parser.error("--client kafka with --bootstrap needs --kafka-bootstrap")
        try:
            from raftka.client.admin import Admin
            from raftka.client.errors import TopicAlreadyExistsError

            for rate in rates:
                topic = f"latency-{rate}-{int(time.time())}"
                with Admin(bootstrap) as admin, suppress(TopicAlreadyExistsError):
                    admin.create_topic(topic, args.partitions, 3)
                row = run_rate(bootstrap, topic, rate, args)
                rows.append(row)
                print(f"  {rate:>7,}/s produce {row['produce_ms']}  e2e {row['end_to_end_ms']}",
                      file=sys.stderr, flush=True)
        finally:
            if local is not None and layout is not None:
                local.stop_all(layout)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'rate/s':>8} {'what':<11} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8}")
    for row in rows:
        for what in ("produce_ms", "end_to_end_ms"):
            p = row[what]
            print(f"{row['rate']:>8,} {what[:-3]:<11} {p.get('p50', '-'):>8} "
                  f"{p.get('p99', '-'):>8} {p.get('p99.9', '-'):>9} {p.get('max', '-'):>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
