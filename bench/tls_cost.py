"""What TLS costs on the Kafka listener: confluent-kafka (librdkafka) produce and consume on a
3-broker cluster (RF=3, acks=all), plaintext and then TLS (`raftka cluster up --tls`'s setup:
TLS on every listener and between brokers), in one sitting, with the brokers' CPU seconds.

    python bench/tls_cost.py [--records 300000] [--size 100] [--json]

Why a separate figure from bench/throughput.py (the gRPC path): a plaintext Kafka fetch sends
stored batches with sendfile, which TLS rules out (broker/kafka/zero_copy.py copies them), so
the consume side is where TLS should show most.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster_timings import free_base_port  # noqa: E402
from bench.kafka_bench import kafka_consume, kafka_produce  # noqa: E402
from raftka.client.admin import Admin  # noqa: E402
from raftka.client.local_cluster import LocalCluster  # noqa: E402

READY_WAIT_S = 60.0


def brokers_cpu_s(local: LocalCluster, nodes: int) -> float:
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for broker_id in range(1, nodes + 1):
        pid = local.pid_of(broker_id)
        if pid is not None:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def run(tls: bool, records: int, size: int) -> dict[str, dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="raftka-tls-cost-") as root:
        local = LocalCluster(root)
        layout = local.create_or_load(3, free_base_port(), {}, tls=tls)
        for node in layout.all_nodes():
            local.start_node(layout, node.broker_id, detach=True)
        try:
            options = local.client_tls() if tls else None
            deadline = time.monotonic() + READY_WAIT_S
            while True:
                try:
                    with Admin(layout.bootstrap, tls=options, request_timeout_ms=2000) as admin:
                        admin.create_topic("cost", num_partitions=3, replication_factor=3)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            time.sleep(2)  # every replica in sync before measuring
            conf = ({"security.protocol": "SSL", "ssl.ca.location": options.ca}
                    if options is not None else {})
            results = {}
            for name, phase in (
                ("produce", lambda: kafka_produce(layout.kafka_bootstrap, "cost", records, size,
                                                  conf)),
                ("consume", lambda: kafka_consume(layout.kafka_bootstrap, "cost", records, 3,
                                                  False, conf)),
            ):
                before = brokers_cpu_s(local, 3)
                figures = phase()
                figures["broker_cpu_s"] = round(brokers_cpu_s(local, 3) - before, 2)
                results[name] = figures
                print(f"  {'TLS' if tls else 'plaintext'} {name}: "
                      f"{figures['records_per_s']:,} rec/s, broker CPU {figures['broker_cpu_s']} s",
                      file=sys.stderr, flush=True)
            return results
        finally:
            local.stop_all(layout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {"plaintext": run(False, args.records, args.size),
               "tls": run(True, args.records, args.size)}
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{'listener':<10} {'phase':<8} {'records/s':>11} {'MB/s':>7} {'broker CPU s':>12}")
    for listener, phases in results.items():
        for phase, row in phases.items():
            print(f"{listener:<10} {phase:<8} {row['records_per_s']:>11,} {row['mb_per_s']:>7} "
                  f"{row['broker_cpu_s']:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
