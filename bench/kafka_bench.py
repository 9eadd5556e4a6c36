"""Throughput through the Kafka listener with confluent-kafka (librdkafka), next to the gRPC
path: 100-byte records, a 3-broker cluster, RF=3, acks=all.

    python bench/kafka_bench.py [--records 300000] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster_timings import Bench  # noqa: E402
from client.admin import Admin  # noqa: E402


def kafka_produce(bootstrap: str, topic: str, records: int, size: int) -> dict[str, object]:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "batch.size": 262144, "queue.buffering.max.messages": 1_000_000,
                         "enable.idempotence": True})
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


def kafka_consume(bootstrap: str, topic: str, records: int) -> dict[str, object]:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{time.time()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 8388608})
    started = time.monotonic()  # includes joining the group, as a fresh reader would
    consumer.subscribe([topic])
    count = 0
    deadline = time.monotonic() + 300
    while count < records and time.monotonic() < deadline:
        for message in consumer.consume(10000, 1.0):
            if not message.error():
                count += 1
    seconds = time.monotonic() - started
    consumer.close()
    return {"records": count, "seconds": round(seconds, 2),
            "records_per_s": round(count / seconds) if seconds else 0}


def grpc_bench(bootstrap: str, topic: str, records: int, what: str) -> dict[str, object]:
    args = ["produce", "--acks", "all", "--mode", "sdk"] if what == "produce" else \
        ["consume", "--mode", "sdk"]
    result = subprocess.run([sys.executable, "-m", "client", "bench", *args, "--bootstrap",
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
            results = {
                "kafka_produce": kafka_produce(kafka, "via-kafka", args.records, args.size),
                "kafka_consume": kafka_consume(kafka, "via-kafka", args.records),
                "grpc_produce": grpc_bench(layout.bootstrap, "via-grpc", args.records,
                                           "produce"),
                "grpc_consume": grpc_bench(layout.bootstrap, "via-grpc", args.records,
                                           "consume"),
            }
        finally:
            bench.stop()
    print(json.dumps(results) if args.json else json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
