"""Failover and metadata timings of a local 3-broker cluster, over N trials (median and max).

    python bench/cluster_timings.py [--trials 10] [--json] [--only NAME ...]

Measures, with default broker settings unless --set is given:
  controller_failover_ms  kill -9 of the controller -> the next metadata change committed
                          (a CreateTopics sent to a survivor succeeds)
  fencing_ms              kill -9 of a broker -> the controller has fenced it
  metadata_propagation_ms CreateTopics sent -> every broker has the topic in its own image
  leader_failover_ms      kill -9 of a partition leader -> the first acks=all write to that
                          partition acknowledged (a write sent after the kill)
Each trial restarts what it killed and waits until the cluster is whole again.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from raftka.client.local_cluster import ClusterLayout, LocalCluster
from raftka.proto.raftka.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    broker_pb2,
    broker_pb2_grpc,
    common_pb2,
)


def free_base_port() -> int:
    for base in range(30_000, 60_000, 100):
        ports = [base + 10 * i + j for i in range(3) for j in range(3)]
        try:
            for port in ports:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports")


def admin(address: str) -> admin_pb2_grpc.AdminServiceStub:
    return admin_pb2_grpc.AdminServiceStub(grpc.insecure_channel(address))


def broker(address: str) -> broker_pb2_grpc.BrokerServiceStub:
    return broker_pb2_grpc.BrokerServiceStub(grpc.insecure_channel(address))


class Bench:
    def __init__(self, root: Path, settings: dict[str, str]) -> None:
        self.local = LocalCluster(root)
        self.layout: ClusterLayout = self.local.create_or_load(3, free_base_port(), settings)
        self.addresses = {n.broker_id: n.address for n in self.layout.all_nodes()}

    def start(self, ids: list[int] | None = None) -> None:
        for broker_id in ids or list(self.addresses):
            self.local.start_node(self.layout, broker_id, detach=True)
        self.wait_whole()

    def describe(self, broker_id: int | None = None) -> admin_pb2.DescribeClusterResponse:
        best = None
        for bid, address in self.addresses.items():
            if broker_id is not None and bid != broker_id:
                continue
            try:
                answer = admin(address).DescribeCluster(
                    admin_pb2.DescribeClusterRequest(), timeout=1
                )
            except grpc.RpcError:
                continue
            if best is None or answer.metadata_offset > best.metadata_offset:
                best = answer
        if best is None:
            raise RuntimeError("no broker answered")
        return best

    def wait_whole(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                view = self.describe()
                if (
                    view.controller_id > 0
                    and all(not b.fenced for b in view.brokers)
                    and len(view.brokers) == 3
                    and self._isr_full()
                ):
                    return
            except RuntimeError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"cluster did not become whole: {self._not_whole()}")

    def _not_whole(self) -> str:
        for address in self.addresses.values():
            try:
                reply = broker(address).Metadata(broker_pb2.MetadataRequest(), timeout=1)
            except grpc.RpcError:
                continue
            return (
                ", ".join(
                    f"{t.name}-{p.partition} leader {p.leader_id} isr {list(p.isr)}"
                    for t in reply.topics
                    for p in t.partitions
                    if len(p.isr) < len(p.replicas) or p.leader_id <= 0
                )
                or "brokers"
            )
        return "no broker answered"

    def _isr_full(self) -> bool:
        for address in self.addresses.values():
            try:
                reply = broker(address).Metadata(broker_pb2.MetadataRequest(), timeout=1)
            except grpc.RpcError:
                continue
            return all(
                len(p.isr) == len(p.replicas) and p.leader_id > 0
                for t in reply.topics
                for p in t.partitions
            )
        return False

    def create_topic(self, via: int, name: str, replication_factor: int = 3) -> bool:
        request = admin_pb2.CreateTopicsRequest(
            topics=[admin_pb2.NewTopic(name=name, replication_factor=replication_factor)]
        )
        try:
            reply = admin(self.addresses[via]).CreateTopics(request, timeout=2)
        except grpc.RpcError:
            return False
        return reply.topics[0].error_code == common_pb2.ErrorCode.NONE

    def stop(self) -> None:
        self.local.stop_all(self.layout)


def timed(trials: int, label: str, trial: Callable[[int], float]) -> dict[str, object]:
    samples = []
    for i in range(trials):
        value = trial(i)
        samples.append(round(value, 1))
        print(f"  {label} trial {i + 1}/{trials}: {value:.0f} ms", file=sys.stderr, flush=True)
    return {"median": round(statistics.median(samples), 1), "max": max(samples), "samples": samples}


def controller_failover(bench: Bench, i: int) -> float:
    controller = bench.describe().controller_id
    survivor = next(b for b in bench.addresses if b != controller)
    bench.local.kill_node(controller)
    killed = time.monotonic()
    attempt = 0
    # replication factor 1: once the dead broker is fenced only two are left to place on
    while not bench.create_topic(survivor, f"cf-{i}-{attempt}", replication_factor=1):
        attempt += 1
        if time.monotonic() - killed > 60:
            raise RuntimeError("no metadata change committed within 60 s")
        time.sleep(0.005)
    elapsed = (time.monotonic() - killed) * 1000
    bench.start([controller])
    return elapsed


def fencing(bench: Bench, i: int) -> float:
    view = bench.describe()
    victim = next(b for b in bench.addresses if b != view.controller_id)
    bench.local.kill_node(victim)
    killed = time.monotonic()
    while True:
        fenced = {b.endpoint.broker_id: b.fenced for b in bench.describe().brokers}
        if fenced.get(victim):
            break
        if time.monotonic() - killed > 60:
            raise RuntimeError(f"broker {victim} not fenced within 60 s")
        time.sleep(0.005)
    elapsed = (time.monotonic() - killed) * 1000
    bench.start([victim])
    return elapsed


def metadata_propagation(bench: Bench, i: int) -> float:
    name = f"mp-{i}"
    seen: dict[int, float] = {}

    def watch(broker_id: int) -> None:
        stub = broker(bench.addresses[broker_id])
        while True:
            reply = stub.Metadata(broker_pb2.MetadataRequest(topics=[name]), timeout=2)
            if reply.topics[0].error_code == 0:
                seen[broker_id] = time.monotonic()
                return
            time.sleep(0.001)

    watchers = [threading.Thread(target=watch, args=(b,)) for b in bench.addresses]
    for thread in watchers:
        thread.start()
    sent = time.monotonic()
    assert bench.create_topic(1, name)
    for thread in watchers:
        thread.join(10)
    return (max(seen.values()) - sent) * 1000


def leader_failover(bench: Bench, i: int) -> float:
    name = f"lf-{i}"
    assert bench.create_topic(1, name)
    bench.wait_whole()
    stop = threading.Event()
    acked_after: list[float] = []
    killed_at: list[float] = []

    def leader_address() -> str | None:
        for address in bench.addresses.values():
            try:
                reply = broker(address).Metadata(
                    broker_pb2.MetadataRequest(topics=[name]), timeout=1
                )
            except grpc.RpcError:
                continue
            leader = reply.topics[0].partitions[0].leader_id
            endpoints = {b.broker_id: f"{b.host}:{b.port}" for b in reply.brokers}
            return endpoints.get(leader)
        return None

    def write_loop() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            address = leader_address()
            if address is None:
                time.sleep(0.02)
                continue
            request = broker_pb2.ProduceRequest(
                acks=-1,
                timeout_ms=1000,
                partitions=[
                    broker_pb2.PartitionProduceData(
                        topic=name, partition=0, records=[common_pb2.Record(value=b"x" * 100)]
                    )
                ],
            )
            try:
                reply = broker(address).Produce(request, timeout=2).partitions[0]
            except grpc.RpcError:
                time.sleep(0.02)
                continue
            if reply.error_code == 0 and killed_at and sent > killed_at[0]:
                acked_after.append(time.monotonic())
                return
            if reply.error_code:
                time.sleep(0.02)

    victim_address = leader_address()
    victim = next(b for b, a in bench.addresses.items() if a == victim_address)
    writer = threading.Thread(target=write_loop)
    writer.start()
    time.sleep(0.5)
    bench.local.kill_node(victim)
    killed_at.append(time.monotonic())
    writer.join(60)
    stop.set()
    if not acked_after:
        raise RuntimeError(f"no write to {name} acknowledged within 60 s of the kill")
    elapsed = (acked_after[0] - killed_at[0]) * 1000
    bench.start([victim])
    return elapsed


TIMINGS = {
    "controller_failover_ms": controller_failover,
    "fencing_ms": fencing,
    "metadata_propagation_ms": metadata_propagation,
    "leader_failover_ms": leader_failover,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", nargs="*", choices=sorted(TIMINGS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workdir", help="keep the brokers' data and logs here")
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    results: dict[str, object] = {
        "trials": args.trials,
        "settings": settings,
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="raftka-bench-") as scratch:
        root = args.workdir or scratch
        bench = Bench(Path(root), settings)
        try:
            bench.start()
            for name in args.only or list(TIMINGS):
                print(f"{name}:", file=sys.stderr, flush=True)
                results[name] = timed(args.trials, name, lambda i, f=TIMINGS[name]: f(bench, i))
        finally:
            bench.stop()
    if args.json:
        print(json.dumps(results))
    else:
        for name in TIMINGS:
            if name in results:
                r = results[name]
                assert isinstance(r, dict)
                print(f"{name:26} median {r['median']:8.1f}  max {r['max']:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
