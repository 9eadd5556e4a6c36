"""Throughput through the Kafka listener with confluent-kafka (librdkafka), next to the gRPC
path: 100-byte records, a 3-broker cluster, RF=3, acks=all.

    python bench/kafka_bench.py [--records 300000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster_timings import Bench  # noqa: E402
from raftka.client.admin import Admin  # noqa: E402


def kafka_produce(bootstrap: str, topic: str, records: int, size: int,
                  conf: dict[str, str] | None = None) -> dict[str, object]:
    """`conf`: more client settings (e.g. security.protocol=SSL, bench/tls_cost.py)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "batch.size": 262144, "queue.buffering.max.messages": 1_000_000,
                         "enable.idempotence": True, **(conf or {})})
    value = b"x" * size
    started = time.monotonic()
    for _ in range(records):
        while True:
            try:
                producer.produce(topic, value)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(120)
    seconds = time.monotonic() - started
    return {"records": records, "seconds": round(seconds, 2),
            "records_per_s": round(records / seconds),
            "mb_per_s": round(records * size / seconds / 1e6, 2)}


def kafka_consume(bootstrap: str, topic: str, records: int, partitions: int,
                  group: bool, conf: dict[str, str] | None = None) -> dict[str, object]:
    """Read `records` from the start: assigned partitions (the data path alone), or as a
    fresh group member (the time then includes joining the group)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{time.time()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 8388608,
                         **(conf or {})})
    started = time.monotonic()
    if group:
        consumer.subscribe([topic])
    else:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    count = 0
    total_bytes = 0
    deadline = time.monotonic() + 300
    while count < records and time.monotonic() < deadline:
        for message in consumer.consume(10000, 1.0):
            if not message.error():
                count += 1
                total_bytes += len(message.value())
    seconds = time.monotonic() - started
    consumer.close()
    return {"records": count, "seconds": round(seconds, 2),
            "records_per_s": round(count / seconds) if seconds else 0,
            "mb_per_s": round(total_bytes / seconds / 1e6, 2) if seconds else 0}


def brokers_cpu_s(bench: Bench) -> float:
    """CPU seconds (user + system) the broker processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for node in bench.layout.all_nodes():
        pid = bench.local.pid_of(node.broker_id)
        if pid is not None:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def with_broker_cpu(bench: Bench, run: Callable[[], dict[str, object]]) -> dict[str, object]:
    """The phase's figures plus the brokers' CPU time for it: what the broker costs per
    record, which the client-bound throughput hides."""
    before = brokers_cpu_s(bench)
    figures = run()
    figures["broker_cpu_s"] = round(brokers_cpu_s(bench) - before, 2)
    return figures


def grpc_bench(bootstrap: str, topic: str, records: int, size: int,
               what: str) -> dict[str, object]:
    args = ["produce", "--acks", "all", "--mode", "sdk", "--size", str(size)] \
        if what == "produce" else ["consume", "--mode", "sdk"]
    result = subprocess.run([sys.executable, "-m", "raftka", "bench", *args, "--bootstrap",
                             bootstrap, "--topic", topic, "--records", str(records),
                             "--json"], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="raftka-kafka-bench-") as root:
        bench = Bench(Path(root), {})
        try:
            bench.start()
            layout = bench.layout
            kafka = ",".join(f"127.0.0.1:{n.kafka_port}" for n in layout.all_nodes())
            with Admin(layout.bootstrap) as admin:
                admin.create_topic("via-kafka", num_partitions=3, replication_factor=3)
                admin.create_topic("via-grpc", num_partitions=3, replication_factor=3)
            phases: dict[str, Callable[[], dict[str, object]]] = {
                "kafka_produce": lambda: kafka_produce(kafka, "via-kafka", args.records,
                                                       args.size),
                "kafka_consume": lambda: kafka_consume(kafka, "via-kafka", args.records, 3,
                                                       False),
                "kafka_group_consume": lambda: kafka_consume(kafka, "via-kafka", args.records,
                                                             3, True),
                "grpc_produce": lambda: grpc_bench(layout.bootstrap, "via-grpc", args.records,
                                                   args.size, "produce"),
                "grpc_consume": lambda: grpc_bench(layout.bootstrap, "via-grpc", args.records,
                                                   args.size, "consume"),
            }
            results = {name: with_broker_cpu(bench, run) for name, run in phases.items()}
        finally:
            bench.stop()
    print(json.dumps(results) if args.json else json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
