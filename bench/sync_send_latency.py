"""Synchronous send latency: one record, wait for its ack, repeat — the Python SDK (gRPC) and
confluent-kafka (the Kafka listener) side by side on one local 3-broker cluster, RF=3.

    python bench/sync_send_latency.py [--sends 500] [--json]

Why: a synchronous send should cost one round trip. The SDK once slept in its sender until a
100 ms poll interval ran out before sending a record queued with linger_ms=0 (p50 ~103 ms
while confluent-kafka took 0.8 ms on the same brokers); this prints both, per acks setting,
so a regression shows as a ratio in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raftka.client.admin import Admin  # noqa: E402
from raftka.client.local_cluster import LocalCluster  # noqa: E402
from tests.harness import free_port_block  # noqa: E402

WARMUP_SENDS = 20
PORTS_PER_CLUSTER = 30  # three brokers, PORT_STRIDE 10 apart


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max": round(ordered[-1], 2),
    }


def sdk_sends(bootstrap: str, topic: str, acks: str, sends: int) -> list[float]:
    from raftka.client.producer import Producer

    samples = []
    with Producer(bootstrap, acks=acks, linger_ms=0) as producer:
        for i in range(WARMUP_SENDS + sends):
            started = time.perf_counter()
            producer.send(topic, b"x" * 100, partition=0).get(timeout=10)
            if i >= WARMUP_SENDS:
                samples.append((time.perf_counter() - started) * 1000)
    return samples


def kafka_sends(bootstrap: str, topic: str, acks: str, sends: int) -> list[float]:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 0,
                         "enable.idempotence": acks == "all"})
    samples = []
    for i in range(WARMUP_SENDS + sends):
        done: list[object] = []
        started = time.perf_counter()
        producer.produce(topic, b"x" * 100, partition=0,
                         on_delivery=lambda err, msg, done=done: done.append(err))
        while not done:
            producer.poll(1)
        if done[0] is not None:
            raise RuntimeError(f"confluent-kafka send failed: {done[0]}")
        if i >= WARMUP_SENDS:
            samples.append((time.perf_counter() - started) * 1000)
    producer.flush(10)
    return samples


def wait_ready(bootstrap: str, topic: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with Admin(bootstrap, request_timeout_ms=3000) as admin:
                admin.create_topic(topic, num_partitions=1, replication_factor=3)
            return
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" in str(exc):
                return
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {"sends": args.sends, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="raftka-sync-send-") as root:
        local = LocalCluster(root)
        layout = local.create_or_load(3, free_port_block(PORTS_PER_CLUSTER), {})
        for node in layout.all_nodes():
            local.start_node(layout, node.broker_id, detach=True)
        try:
            grpc_bootstrap = layout.bootstrap
            kafka_bootstrap = ",".join(f"127.0.0.1:{n.kafka_port}" for n in layout.all_nodes())
            topic = "sync-send"
            wait_ready(grpc_bootstrap, topic)
            runs: list[tuple[str, Callable[[str, str, str, int], list[float]], str]] = [
                ("sdk", sdk_sends, grpc_bootstrap),
                ("confluent_kafka", kafka_sends, kafka_bootstrap),
            ]
            for acks in ("1", "all"):
                for name, run, bootstrap in runs:
                    samples = run(bootstrap, topic, acks, args.sends)
                    results[f"{name}_acks_{acks}_ms"] = percentiles(samples)
                    print(f"  {name} acks={acks}: {percentiles(samples)}", file=sys.stderr,
                          flush=True)
        finally:
            local.stop_all(layout)
    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            if isinstance(value, dict):
                print(f"{key:28} p50 {value['p50']:7.2f}  p99 {value['p99']:7.2f}  "
                      f"max {value['max']:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
