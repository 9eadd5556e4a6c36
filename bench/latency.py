"""Produce and end-to-end latency at fixed rates, open loop (no coordinated omission).

    python bench/latency.py [--rates 1000,10000,50000] [--seconds 10] [--linger-ms 1] [--json]

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
def run_rate(bootstrap: str, topic: str, rate: int, args: argparse.Namespace) -> dict[str, Any]:
    from raftka.client.producer import Producer

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
        with Producer(
            bootstrap, acks="all", linger_ms=args.linger_ms, batch_size=args.batch_size
        ) as producer:
            producer.partitions_for(topic)
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
                    time.sleep(max(due - now, tick_s))
                    continue
                worst_lag = max(worst_lag, now - due)
                # everything overdue goes now, each stamped with its own scheduled time
                while i < total and start + i * interval <= now:
                    scheduled = start + i * interval
                    value = STAMP.pack(i, start_wall_ns + int(i * interval * 1e9)) + padding
                    future = producer.send(topic, value)
                    if i >= skip:
                        def done(_: object, scheduled: float = scheduled) -> None:
                            elapsed = (time.perf_counter() - scheduled) * 1000
                            with lock:
                                produce_ms.append(elapsed)
                        future.add_done_callback(done)
                    i += 1
            producer.flush()
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
    parser.add_argument("--bootstrap", help="an existing cluster (default: start one)")
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
