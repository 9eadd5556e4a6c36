"""How a 3-broker cluster's costs grow with partitions (RF=3): the "Scale" figures.

    python bench/partition_scale.py [--partitions 100 1000 10000] [--per-topic 1000]
                                    [--records 100000] [--nofile N] [--json]
                                    [--set KEY=VALUE ...] [--workdir DIR]
                                    [--idle-seconds S] [--produce-only]

For each N, on a fresh cluster (real broker processes, `raftka cluster up`'s layout):
  create_s              CreateTopics for N partitions (topics of at most --per-topic) answered
  isr_full_s            ... until every partition has a leader and a full ISR (Metadata)
  propagation_s         CreateTopics of the last topic sent -> every broker's own Metadata
                        has it
  rss_mb / fds          per broker, resident memory (/proc/PID/status VmRSS) and open file
                        descriptors (/proc/PID/fd) once the ISRs are full, after producing,
                        and after the restarts
  status_s              `raftka cluster status --json` as a subprocess (CLI start-up included)
  console_topics_s      the console backend's topic list, and one topic's page
  produce_rps           confluent-kafka through the Kafka listeners, acks=all, 100-byte
                        records spread round-robin over every partition
  restart_one_s         kill -9 of one broker (not the controller) and its start -> unfenced
                        with every ISR full again (log recovery included)
  restart_all_s         SIGTERM of all three, then start all -> the same
  idle_cpu_pct          per broker, CPU (user+system, % of one core) over --idle-seconds with
                        every ISR full and nothing produced: what the replication rounds of
                        quiet partitions cost
  produce_cpu_s         per broker, CPU seconds (user+system) during the produce step
  produce_requests      per broker, the requests it answered during the produce step, by
                        protocol/request (its /metrics): replication/Fetch, kafka/Produce, ...
  emfile_lines          "Too many open files" lines in the brokers' logs (should be 0)
  metadata              after each step: the metadata offset (records), the Raft commit index
                        (entries: one per controller batch), the ISR changes leaders proposed
                        ("proposing ISR" lines) and the AlterPartition batches the controller
                        committed ("AlterPartition from broker" lines; a tree before batching
                        sends one AlterPartition and commits one entry per proposal)
--nofile N runs the brokers with RLIMIT_NOFILE N (the broker setting max.open.files).
--produce-only stops after the first produce (create, ISRs full, produce), for a quick
before/after of the produce path (`--tree` elsewhere: run this file from the other tree).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from bench.cluster_timings import Bench, admin
from raftka.proto.raftka.v1 import admin_pb2, broker_pb2

REPO = Path(__file__).resolve().parents[1]
# How long one CreateTopics of up to 1,000 partitions may take to be answered (s).
CREATE_TIMEOUT_S = 120.0
WHOLE_TIMEOUT_S = 900.0
ISR_TIMEOUT_S = 120.0


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def broker_pids(bench: Bench) -> dict[int, int]:
    pids = {}
    for broker_id in bench.addresses:
        pid = bench.local.pid_of(broker_id)
        if pid is not None:
            pids[broker_id] = pid
    return pids


def process_figures(bench: Bench) -> dict[str, dict[int, float]]:
    rss: dict[int, float] = {}
    fds: dict[int, float] = {}
    for broker_id, pid in broker_pids(bench).items():
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss[broker_id] = round(int(line.split()[1]) / 1024, 1)
            fds[broker_id] = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_mb": rss, "fds": fds}


def cpu_seconds(bench: Bench) -> dict[int, float]:
    """utime+stime of each broker process so far (/proc/PID/stat), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for broker_id, pid in broker_pids(bench).items():
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[broker_id] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def cpu_between(before: dict[int, float], after: dict[int, float]) -> dict[int, float]:
    return {b: round(after[b] - before[b], 2) for b in after if b in before}


def idle_cpu(bench: Bench, seconds: float) -> dict[int, float]:
    """Each broker's CPU over `seconds` of doing nothing asked of it, in % of one core."""
    before = cpu_seconds(bench)
    time.sleep(seconds)
    return {b: round(100 * used / seconds, 1)
            for b, used in cpu_between(before, cpu_seconds(bench)).items()}


class ScaleBench(Bench):
    def __init__(self, root: Path, settings: dict[str, str], nofile: int | None) -> None:
        super().__init__(root, settings)
        if nofile is not None:
            self.layout.settings["max.open.files"] = str(nofile)

    def start_ids(self, ids: list[int]) -> None:
        for broker_id in ids:
            self.local.start_node(self.layout, broker_id, detach=True)

    def wait_whole_long(self) -> float:
        started = time.monotonic()
        self.wait_whole(WHOLE_TIMEOUT_S)
        return time.monotonic() - started

    def metadata(self, address: str, topics: list[str] | None = None) -> Any:
        return self.broker(address).Metadata(
            broker_pb2.MetadataRequest(topics=topics or []), timeout=60
        )

    def create(self, name: str, partitions: int) -> None:
        request = admin_pb2.CreateTopicsRequest(
            topics=[admin_pb2.NewTopic(name=name, replication_factor=3,
                                       num_partitions=partitions)]
        )
        deadline = time.monotonic() + CREATE_TIMEOUT_S
        while True:
            for address in self.addresses.values():
                try:
                    reply = admin(address).CreateTopics(request, timeout=CREATE_TIMEOUT_S)
                except grpc.RpcError:
                    continue
                topic = reply.topics[0]
                if topic.error_code in (0, 36):  # NONE, TOPIC_ALREADY_EXISTS (a retry)
                    return
                if topic.error_code in (7, 41):  # REQUEST_TIMED_OUT, NOT_CONTROLLER: again
                    progress(f"  {name}: {topic.error_message}; retrying")
                    break
                raise RuntimeError(f"CreateTopics {name}: {topic.error_code} {topic.error_message}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not create {name}")
            time.sleep(0.2)

    def isr_full_count(self) -> tuple[int, int]:
        """(full, known) partitions as the broker with the newest metadata says: a broker
        just restarted answers from an old (or empty) image until it caught up."""
        best: tuple[int, int, int] = (-1, 0, 0)
        for address in self.addresses.values():
            try:
                offset = admin(address).DescribeCluster(
                    admin_pb2.DescribeClusterRequest(), timeout=10).metadata_offset
                reply = self.metadata(address)
            except grpc.RpcError:
                continue
            partitions = [p for t in reply.topics for p in t.partitions]
            full = sum(1 for p in partitions if p.leader_id > 0 and len(p.isr) == len(p.replicas))
            if offset > best[0]:
                best = (offset, full, len(partitions))
        return best[1], best[2]


def wait_isr_full(bench: ScaleBench, total: int, label: str) -> float:
    started = time.monotonic()
    last_report = 0.0
    while True:
        full, seen = bench.isr_full_count()
        if seen >= total and full == seen:
            return time.monotonic() - started
        now = time.monotonic()
        if now - last_report > 5:
            progress(f"  {label}: {full}/{total} partitions with a full ISR")
            last_report = now
        if now - started > ISR_TIMEOUT_S:
            # Reported, not fatal: the figures after it still say something.
            progress(f"  {label}: ISRs not full after {ISR_TIMEOUT_S} s ({full}/{total})")
            return -1.0
        time.sleep(0.2)


def propagation(bench: ScaleBench, name: str, sent: float) -> float:
    seen: dict[int, float] = {}

    def watch(broker_id: int) -> None:
        while time.monotonic() - sent < CREATE_TIMEOUT_S:
            with contextlib.suppress(grpc.RpcError):
                reply = bench.metadata(bench.addresses[broker_id], [name])
                if reply.topics and reply.topics[0].error_code == 0:
                    seen[broker_id] = time.monotonic()
                    return
            time.sleep(0.002)

    threads = [threading.Thread(target=watch, args=(b,)) for b in bench.addresses]
    for thread in threads:
        thread.start()
    return _join_max(threads, seen, sent)


def _join_max(threads: list[threading.Thread], seen: dict[int, float], sent: float) -> float:
    for thread in threads:
        thread.join()
    return round(max(seen.values()) - sent, 3) if len(seen) == len(threads) else -1.0


def create_all(bench: ScaleBench, total: int, per_topic: int) -> dict[str, Any]:
    sizes = [per_topic] * (total // per_topic) + ([total % per_topic] if total % per_topic else [])
    names = [f"scale-{i}" for i in range(len(sizes))]
    started = time.monotonic()
    propagation_s = -1.0
    for i, (name, size) in enumerate(zip(names, sizes, strict=True)):
        progress(f"  creating {name} ({size} partitions)")
        sent = time.monotonic()
        if i == len(sizes) - 1:
            seen: dict[int, float] = {}
            threads = [
                threading.Thread(target=_watch_until, args=(bench, b, name, sent, seen))
                for b in bench.addresses
            ]
            for thread in threads:
                thread.start()
            bench.create(name, size)
            propagation_s = _join_max(threads, seen, sent)
        else:
            bench.create(name, size)
    create_s = time.monotonic() - started
    isr_s = wait_isr_full(bench, total, "create")
    return {
        "topics": names,
        "create_s": round(create_s, 2),
        "isr_full_s": round(create_s + isr_s, 2) if isr_s >= 0 else -1,
        "propagation_last_topic_s": propagation_s,
    }


def _watch_until(
    bench: ScaleBench, broker_id: int, name: str, sent: float, seen: dict[int, float]
) -> None:
    while time.monotonic() - sent < CREATE_TIMEOUT_S:
        with contextlib.suppress(grpc.RpcError):
            reply = bench.metadata(bench.addresses[broker_id], [name])
            if reply.topics and reply.topics[0].error_code == 0 and reply.topics[0].partitions:
                seen[broker_id] = time.monotonic()
                return
        time.sleep(0.002)


def status_time(bench: ScaleBench) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "raftka", "cluster", "status", "--data-dir",
         str(bench.local.root), "--json"],
        env=env, capture_output=True, timeout=300, check=False,
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"cluster status failed: {done.stderr.decode()[-500:]}")
    return round(elapsed, 3)


def console_times(bench: ScaleBench, topic: str) -> dict[str, float]:
    from raftka.client.console.backend import ClusterBackend

    backend = ClusterBackend(list(bench.addresses.values()))
    try:
        started = time.monotonic()
        backend.topics()
        listed = time.monotonic()
        backend.topic(topic)
        paged = time.monotonic()
    finally:
        backend.close()
    return {"console_topics_s": round(listed - started, 3),
            "console_topic_page_s": round(paged - listed, 3)}


def produce(bench: ScaleBench, topics: list[str], per_topic: int, total: int,
            records: int) -> dict[str, Any]:
    from confluent_kafka import Producer

    producer = Producer({
        "bootstrap.servers": bench.kafka_bootstrap,
        "acks": "all",
        "linger.ms": 20,
        "queue.buffering.max.messages": 1_000_000,
        "enable.idempotence": False,
        "message.timeout.ms": 120_000,
    })
    errors = 0

    def on_delivery(error: Any, message: Any) -> None:
        nonlocal errors
        if error is not None:
            errors += 1

    targets = [(t, p) for t in topics for p in range(min(per_topic, total))][:total]
    value = b"x" * 100
    # Metadata for every topic first, so the timed part is producing.
    for topic in topics:
        producer.list_topics(topic, timeout=60)
    started = time.monotonic()
    for i in range(records):
        topic, partition = targets[i % len(targets)]
        while True:
            try:
                producer.produce(topic, value, partition=partition, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(150)
    elapsed = time.monotonic() - started
    return {"produce_records": records, "produce_s": round(elapsed, 2),
            "produce_rps": round(records / elapsed), "produce_errors": errors,
            "produce_unflushed": remaining}


def broker_serving(address: str) -> bool:
    """The broker's own health check: SERVING once this incarnation is registered and
    unfenced (the metadata alone still shows a killed incarnation as unfenced)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="raftka.v1.BrokerService"), timeout=2)
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def wait_serving(bench: ScaleBench) -> None:
    """Until a controller exists and every broker says it serves."""
    deadline = time.monotonic() + WHOLE_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(RuntimeError):
            view = bench.describe()
            if (view.controller_id > 0 and len(view.brokers) == 3
                    and all(broker_serving(a) for a in bench.addresses.values())):
                return
        time.sleep(0.1)
    raise RuntimeError("brokers not all unfenced")


def restart_one(bench: ScaleBench, total: int) -> dict[str, float]:
    controller = bench.controller_id()
    victim = next(b for b in bench.addresses if b != controller)
    pid = bench.local.kill_node(victim, signal.SIGKILL)
    with contextlib.suppress(RuntimeError):
        bench.wait_exit(pid)
    started = time.monotonic()
    bench.start_ids([victim])
    wait_serving(bench)
    serving = time.monotonic() - started
    isr = wait_isr_full(bench, total, "restart one")
    return {"restart_one_serving_s": round(serving, 2),
            "restart_one_isr_full_s": round(time.monotonic() - started, 2) if isr >= 0 else -1}


def restart_all(bench: ScaleBench, total: int) -> dict[str, float]:
    stopped = time.monotonic()
    bench.local.stop_all(bench.layout, timeout_s=120)
    stop_s = time.monotonic() - stopped
    started = time.monotonic()
    bench.start_ids(list(bench.addresses))
    wait_serving(bench)
    serving = time.monotonic() - started
    isr = wait_isr_full(bench, total, "restart all")
    return {"stop_all_s": round(stop_s, 2), "restart_all_serving_s": round(serving, 2),
            "restart_all_isr_full_s": round(time.monotonic() - started, 2) if isr >= 0 else -1}


def request_counts(bench: ScaleBench) -> dict[int, dict[str, float]]:
    """Each broker's requests answered so far, by "protocol/request" (its /metrics)."""
    counts: dict[int, dict[str, float]] = {}
    for node in bench.layout.all_nodes():
        with contextlib.suppress(OSError, ValueError):
            url = f"http://127.0.0.1:{node.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as reply:
                text = reply.read().decode()
            mine = counts.setdefault(node.broker_id, {})
            for line in text.splitlines():
                if line.startswith("kafka_network_requestmetrics_requests_total{"):
                    labels, value = line.rsplit(" ", 1)
                    found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
                    key = f"{found.get('protocol')}/{found.get('request')}"
                    mine[key] = mine.get(key, 0.0) + float(value)
    return counts


def counts_between(before: dict[int, dict[str, float]],
                   after: dict[int, dict[str, float]]) -> dict[int, dict[str, int]]:
    """Requests answered in between, per broker, the ones that moved only."""
    out: dict[int, dict[str, int]] = {}
    for broker_id, now in after.items():
        then = before.get(broker_id, {})
        moved = {key: int(value - then.get(key, 0.0)) for key, value in now.items()}
        out[broker_id] = {key: value for key, value in sorted(moved.items()) if value}
    return out


def metadata_figures(bench: ScaleBench) -> dict[str, int]:
    """How much metadata the run wrote so far, and how much of it was ISR changes."""
    figures = {"metadata_offset": -1, "raft_commit_index": -1}
    with contextlib.suppress(RuntimeError):
        figures["metadata_offset"] = int(bench.describe().metadata_offset)
    for node in bench.layout.all_nodes():
        with contextlib.suppress(OSError, ValueError):
            url = f"http://127.0.0.1:{node.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as reply:
                for line in reply.read().decode().splitlines():
                    if line.startswith("kafka_server_raft_metrics_high_watermark "):
                        figures["raft_commit_index"] = max(figures["raft_commit_index"],
                                                           int(float(line.split()[1])))
    proposals = batches = 0
    for broker_id in bench.addresses:
        with contextlib.suppress(OSError):
            text = bench.local.log_path(broker_id).read_text(errors="replace")
            proposals += text.count(": proposing ISR ")
            batches += text.count("AlterPartition from broker ")
    figures["isr_proposals"] = proposals
    figures["alter_partition_batches_logged"] = batches
    return figures


def emfile_lines(bench: ScaleBench) -> int:
    count = 0
    for broker_id in bench.addresses:
        with contextlib.suppress(OSError):
            text = bench.local.log_path(broker_id).read_text(errors="replace")
            count += text.count("Too many open files")
    return count


def run_one(root: Path, total: int, args: argparse.Namespace,
            settings: dict[str, str]) -> dict[str, Any]:
    bench = ScaleBench(root, settings, args.nofile)
    result: dict[str, Any] = {"partitions": total, "replicas_per_broker": total}
    try:
        progress(f"{total} partitions: starting 3 brokers")
        bench.start_ids(list(bench.addresses))
        bench.wait_whole_long()
        result["idle"] = process_figures(bench)
        result.update(create_all(bench, total, args.per_topic))
        progress(f"  created: {result['create_s']} s, ISRs full at {result['isr_full_s']} s")
        result["after_create"] = {**process_figures(bench), **metadata_figures(bench)}
        result["status_s"] = status_time(bench)
        result.update(console_times(bench, result["topics"][0]))
        progress(f"  status {result['status_s']} s, console {result['console_topics_s']} s")
        if args.idle_seconds > 0:
            result["idle_cpu_pct"] = idle_cpu(bench, args.idle_seconds)
            progress(f"  idle CPU % per broker: {result['idle_cpu_pct']}")
        before, asked = cpu_seconds(bench), request_counts(bench)
        result["produce"] = produce(bench, result["topics"], args.per_topic, total, args.records)
        result["produce"]["produce_cpu_s"] = cpu_between(before, cpu_seconds(bench))
        # what each broker answered meanwhile: a broker that burns twice the others' CPU
        # (seen a few times, BENCHMARKS.md) shows here whether it was asked more
        result["produce"]["produce_requests"] = counts_between(asked, request_counts(bench))
        progress(f"  produce {result['produce']}")
        result["after_produce"] = {**process_figures(bench), **metadata_figures(bench)}
        if not args.produce_only:
            result.update(restart_one(bench, total))
            result["after_restart_one"] = metadata_figures(bench)
            progress(f"  restart one: {result['restart_one_isr_full_s']} s")
            result.update(restart_all(bench, total))
            progress(f"  restart all: {result['restart_all_isr_full_s']} s")
            result["status_after_restart_s"] = status_time(bench)
            result["produce_after_restart"] = produce(
                bench, result["topics"], args.per_topic, total, args.records // 5)
            result["after_restart"] = {**process_figures(bench), **metadata_figures(bench)}
    finally:
        result["emfile_lines"] = emfile_lines(bench)
        bench.stop()
    del result["topics"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--per-topic", type=int, default=1000)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--nofile", type=int, help="RLIMIT_NOFILE of the brokers")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workdir", help="keep the brokers' data and logs here")
    parser.add_argument("--idle-seconds", type=float, default=10.0,
                        help="measure the brokers' idle CPU this long after create (0: skip)")
    parser.add_argument("--produce-only", action="store_true",
                        help="stop after create and the first produce")
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="raftka-scale-") as scratch:
        for total in args.partitions:
            root = Path(args.workdir or scratch) / f"n{total}"
            results.append(run_one(root, total, args, settings))
            if args.json:
                print(json.dumps(results[-1]), flush=True)
    if not args.json:
        for r in results:
            print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
