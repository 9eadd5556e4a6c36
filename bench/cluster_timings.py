"""Failover and metadata timings of a local 3-broker cluster, over N trials (median and max).

    python bench/cluster_timings.py [--trials 20] [--load-trials 5] [--json] [--only NAME ...]
                                    [--nats] [--set KEY=VALUE ...] [--workdir DIR]

Measures, with default broker settings unless --set is given:
  controller_failover_ms   kill -9 of the controller -> the next metadata change committed
                           (a CreateTopics sent to a survivor succeeds)
  fencing_ms               kill -9 of a broker (not the controller) -> the controller has
                           fenced it
  metadata_propagation_ms  CreateTopics sent -> every broker has the topic in its own image
  leader_kill_ms           kill -9 of a partition leader that is not the controller -> the
                           first acks=all write to that partition acknowledged (one sent after
                           the kill; the writer asks Metadata for the leader before each write)
  leader_and_controller_kill_ms   the same when the leader is also the controller
  leader_pause_ms          SIGSTOP of a partition leader (not the controller) -> the same;
                           silence, not proof of death: the session timeout decides
  sigterm_leader_under_load   SIGTERM of a partition leader (controlled shutdown) and its
                           restart while confluent-kafka produces acks=all through the Kafka
                           listeners (its own process, 500 records/s over 3 partitions):
                           delivery errors the application sees, the longest time without a
                           delivery over the whole trial (restart and rejoin included) and
                           during the hand-over alone (SIGTERM -> exit + 100 ms), the slowest
                           record, SIGTERM -> process exit
  rolling_restart_under_load  every broker in turn: SIGTERM, exit, start, whole again; same
                           figures per full rolling restart (--load-trials of them)
With --nats, NATS JetStream R3 failover (bench/nats_bench.py) runs in the same invocation
when nats-server and nats-py are installed. Each trial restarts what it killed and waits until
the cluster is whole again (every broker unfenced, every ISR full).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
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


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_base_port() -> int:
    """A base whose 3 x 3 ports are free, below the ephemeral range (an outgoing connection
    cannot take one of them between this check and the brokers binding)."""
    for base in range(20_000, _ephemeral_low() - 30, 100):
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
        self.kafka_bootstrap = ",".join(
            f"127.0.0.1:{n.kafka_port}" for n in self.layout.all_nodes()
        )
        self._stubs: dict[str, broker_pb2_grpc.BrokerServiceStub] = {}
        self._stubs_lock = threading.Lock()

    def broker(self, address: str) -> broker_pb2_grpc.BrokerServiceStub:
        """One channel per broker, kept (a new channel per call costs a connection)."""
        with self._stubs_lock:
            stub = self._stubs.get(address)
            if stub is None:
                stub = self._stubs[address] = broker(address)
            return stub

    def leader_of(self, topic: str, partition: int = 0) -> int | None:
        """The partition's leader as the first broker that answers Metadata says."""
        for address in self.addresses.values():
            try:
                reply = self.broker(address).Metadata(
                    broker_pb2.MetadataRequest(topics=[topic]), timeout=0.5
                )
            except grpc.RpcError:
                continue
            partitions = reply.topics[0].partitions if reply.topics else []
            for p in partitions:
                if p.partition == partition:
                    return p.leader_id if p.leader_id > 0 else None
            return None
        return None

    def controller_id(self) -> int:
        return self.describe().controller_id

    def topic_led_by(self, prefix: str, leader: int | None, avoid: int | None) -> str:
        """A new RF=3 topic whose partition 0 is led by `leader` (or by anyone but
        `avoid`): topics are created until one is."""
        for attempt in range(12):
            name = f"{prefix}-{attempt}"
            self.must_create_topic(name)
            self.wait_whole()
            current = self.leader_of(name)
            if current is None:
                continue
            if (leader is None or current == leader) and current != avoid:
                return name
        raise RuntimeError(f"no topic led by {leader} (avoiding {avoid}) after 12 tries")

    def restart(self, broker_id: int) -> None:
        self.local.start_node(self.layout, broker_id, detach=True)
        self.wait_whole()

    def wait_exit(self, pid: int, timeout_s: float = 30) -> float:
        """Seconds until process `pid` (a child) has exited; reaps it."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done == pid:
                return time.monotonic() - started
            time.sleep(0.005)
        raise RuntimeError(f"pid {pid} did not exit within {timeout_s} s")

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

    def create_topic(
        self, via: int, name: str, replication_factor: int = 3, partitions: int = 1
    ) -> bool:
        request = admin_pb2.CreateTopicsRequest(
            topics=[admin_pb2.NewTopic(
                name=name, replication_factor=replication_factor, num_partitions=partitions
            )]
        )
        try:
            reply = admin(self.addresses[via]).CreateTopics(request, timeout=2)
        except grpc.RpcError:
            return False
        return reply.topics[0].error_code == common_pb2.ErrorCode.NONE

    def must_create_topic(self, name: str, partitions: int = 1) -> None:
        """Through any broker, retried for up to 10 s (a controller may be moving)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for via in self.addresses:
                if self.create_topic(via, name, partitions=partitions):
                    return
                if self.leader_of(name) is not None:
                    return  # an earlier attempt did create it
            time.sleep(0.1)
        raise RuntimeError(f"could not create topic {name}")

    def drop_topics(self, prefix: str) -> None:
        """Delete this trial's topics, so that trials do not pile partitions up (every
        broker's metadata work grows with them, which later trials would measure)."""
        for address in self.addresses.values():
            try:
                reply = self.broker(address).Metadata(broker_pb2.MetadataRequest(), timeout=2)
            except grpc.RpcError:
                continue
            names = [t.name for t in reply.topics if t.name.startswith(prefix)]
            if names:
                with contextlib.suppress(grpc.RpcError):
                    admin(address).DeleteTopics(admin_pb2.DeleteTopicsRequest(names=names),
                                                timeout=5)
            return

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
    bench.drop_topics(f"cf-{i}-")
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
    bench.drop_topics(name)
    return (max(seen.values()) - sent) * 1000


class Prober:
    """A writer that always asks whoever Metadata names leader: one acks=all Produce of one
    record at a time, from a thread. It measures the cluster, not a client library (no
    backoff beyond 5 ms, no stale metadata); `first_ack_after` times a fault with it."""

    def __init__(self, bench: Bench, topic: str) -> None:
        self.bench = bench
        self.topic = topic
        self.fault_at: float | None = None
        self.acked_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        request = broker_pb2.ProduceRequest(
            acks=-1,
            timeout_ms=500,
            partitions=[
                broker_pb2.PartitionProduceData(
                    topic=self.topic, partition=0, records=[common_pb2.Record(value=b"x" * 100)]
                )
            ],
        )
        while not self._stop.is_set() and self.acked_at is None:
            sent = time.monotonic()
            leader = self.bench.leader_of(self.topic)
            address = self.bench.addresses.get(leader) if leader is not None else None
            if address is None:
                time.sleep(0.005)
                continue
            try:
                reply = self.bench.broker(address).Produce(request, timeout=1).partitions[0]
            except grpc.RpcError:
                time.sleep(0.005)
                continue
            if reply.error_code == 0 and self.fault_at is not None and sent > self.fault_at:
                self.acked_at = time.monotonic()
            elif reply.error_code:
                time.sleep(0.005)

    def wait_acked(self, timeout_s: float = 60) -> float:
        """ms from the fault to the first acknowledged write sent after it."""
        assert self.fault_at is not None
        deadline = time.monotonic() + timeout_s
        while self.acked_at is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no write to {self.topic} acknowledged {timeout_s} s after")
            time.sleep(0.002)
        return (self.acked_at - self.fault_at) * 1000


def _fault_trial(bench: Bench, name: str, want_controller: bool, signum: int) -> float:
    controller = bench.controller_id()
    wanted = controller if want_controller else None
    topic = bench.topic_led_by(name, wanted, avoid=None if want_controller else controller)
    victim = bench.leader_of(topic)
    assert victim is not None
    with Prober(bench, topic) as prober:
        time.sleep(0.3)  # warm: channels open, writes flowing
        prober.fault_at = time.monotonic()
        bench.local.kill_node(victim, signum)
        elapsed = prober.wait_acked()
    if signum == signal.SIGSTOP:
        bench.local.kill_node(victim, signal.SIGCONT)
        bench.wait_whole()
    else:
        bench.restart(victim)
    bench.drop_topics(f"{name}-")
    return elapsed


def leader_kill(bench: Bench, i: int) -> float:
    """kill -9 of a partition leader that is not the controller."""
    return _fault_trial(bench, f"lk-{i}", False, signal.SIGKILL)


def leader_and_controller_kill(bench: Bench, i: int) -> float:
    """kill -9 of a partition leader that is also the controller."""
    return _fault_trial(bench, f"lck-{i}", True, signal.SIGKILL)


def leader_pause(bench: Bench, i: int) -> float:
    """SIGSTOP of a partition leader (not the controller): silence, not proof of death."""
    return _fault_trial(bench, f"lp-{i}", False, signal.SIGSTOP)


def kafka_load_worker(bootstrap: str, topic: str, interval_s: float, config_json: str) -> int:
    """The load itself, in its own process (`--kafka-load-worker`), so that the benchmark's
    own threads never hold it up: confluent-kafka (librdkafka) producing acks=all,
    idempotent, one 100-byte record every `interval_s`; each delivery is one line on stdout,
    `sent_s acked_s error` (CLOCK_MONOTONIC, shared by every process here). Ends on SIGTERM,
    after flushing what is in flight."""
    from confluent_kafka import Producer

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    producer = Producer({
        "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
        "linger.ms": 0, "log_level": 3, **json.loads(config_json),
    })
    out = sys.stdout

    def delivered(sent_at: float, err: object) -> None:
        error = "-" if err is None else str(err).replace(" ", "_")
        out.write(f"{sent_at:.6f} {time.monotonic():.6f} {error}\n")

    next_send = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_send:
            try:
                producer.produce(
                    topic, b"x" * 100, on_delivery=lambda err, _msg, t=now: delivered(t, err)
                )
            except BufferError as exc:
                out.write(f"{now:.6f} {now:.6f} local_queue_full:{exc}\n")
            next_send += interval_s
        producer.poll(max(0.0, min(0.001, next_send - time.monotonic())))
        out.flush()
    producer.flush(30)
    out.flush()
    return 0


class KafkaLoad:
    """Runs `kafka_load_worker` in a child process and reads what the application saw:
    delivery errors, the longest time without any delivery, the slowest record."""

    def __init__(self, bootstrap: str, topic: str, interval_s: float, config: dict[str, object]):
        self.topic = topic
        self.deliveries: list[tuple[float, float, str]] = []  # (sent, acked, error or "-")
        self._process = subprocess.Popen(
            [sys.executable, __file__, "--kafka-load-worker", bootstrap, topic,
             str(interval_s), json.dumps(config)],
            stdout=subprocess.PIPE, text=True, stderr=subprocess.DEVNULL,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)

    def start(self) -> KafkaLoad:
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            sent, acked, error = line.split(maxsplit=2)
            self.deliveries.append((float(sent), float(acked), error.strip()))

    @property
    def sent(self) -> int:
        return len(self.deliveries)

    @property
    def errors(self) -> list[str]:
        return [e for _, _, e in self.deliveries if e != "-"]

    def window(self, started: float, ended: float | None = None) -> dict[str, float]:
        """Errors, longest time without a delivery, and slowest record acknowledged between
        `started` and `ended` (now)."""
        ended = time.monotonic() if ended is None else ended
        seen = [d for d in list(self.deliveries) if started <= d[1] <= ended]
        acked = sorted(a for _, a, e in seen if e == "-")
        times = [started, *acked, ended]
        slowest = max((a - s for s, a, e in seen if e == "-"), default=0.0)
        gap, gap_at = max((b - a, a) for a, b in itertools.pairwise(times))
        return {
            "errors": float(sum(1 for *_, e in seen if e != "-")),
            "longest_gap_ms": round(gap * 1000, 1),
            "longest_gap_at_ms": round((gap_at - started) * 1000, 1),  # after the window began
            "slowest_record_ms": round(slowest * 1000, 1),
        }

    def stop(self) -> None:
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(40)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)
        self._reader.join(10)


LOAD_INTERVAL_S = 0.002  # 500 records/s
# librdkafka's defaults except a short retry backoff (100 ms by default): what is measured is
# the cluster's hand-over, not the client's fixed wait.
LOAD_CONFIG: dict[str, object] = {"retry.backoff.ms": 10, "retry.backoff.max.ms": 100}


def _load_topic(bench: Bench, name: str) -> str:
    bench.must_create_topic(name, partitions=3)
    bench.wait_whole()
    return name


def sigterm_leader_under_load(bench: Bench, i: int, load: KafkaLoad) -> dict[str, float]:
    """SIGTERM of the leader of one of the load's partitions (controlled shutdown), then its
    restart, under load; the window covers both, up to the cluster being whole again."""
    victim = bench.leader_of(load.topic, i % 3)
    assert victim is not None
    started = time.monotonic()
    pid = bench.local.kill_node(victim, signal.SIGTERM)
    exited_ms = bench.wait_exit(pid) * 1000
    exited = time.monotonic()
    bench.local.start_node(bench.layout, victim, detach=True)
    restarted_ms = (time.monotonic() - started) * 1000
    bench.wait_whole()
    whole_ms = (time.monotonic() - started) * 1000
    time.sleep(0.5)
    result = load.window(started)
    # SIGTERM -> exit (+100 ms): the hand-over alone, without the restart and the rejoin.
    result["handover_longest_gap_ms"] = load.window(started, exited + 0.1)["longest_gap_ms"]
    result["exit_ms"] = round(exited_ms, 1)
    result["restart_at_ms"] = round(restarted_ms, 1)
    result["whole_at_ms"] = round(whole_ms, 1)
    return result


def rolling_restart_under_load(bench: Bench, i: int, load: KafkaLoad) -> dict[str, float]:
    """Every broker in turn: SIGTERM, wait for its exit, start it, wait until whole."""
    started = time.monotonic()
    handover_gaps = []
    for broker_id in sorted(bench.addresses):
        terminated = time.monotonic()
        pid = bench.local.kill_node(broker_id, signal.SIGTERM)
        bench.wait_exit(pid)
        exited = time.monotonic()
        bench.restart(broker_id)
        handover_gaps.append(load.window(terminated, exited + 0.1)["longest_gap_ms"])
    time.sleep(0.5)
    result = load.window(started)
    result["handover_longest_gap_ms"] = max(handover_gaps)
    return result


def load_timed(
    bench: Bench, trials: int, label: str,
    trial: Callable[[Bench, int, KafkaLoad], dict[str, float]],
) -> dict[str, object]:
    load = KafkaLoad(bench.kafka_bootstrap, _load_topic(bench, f"{label}-load"), LOAD_INTERVAL_S,
                     LOAD_CONFIG).start()
    samples: list[dict[str, float]] = []
    try:
        time.sleep(1.0)
        for i in range(trials):
            sample = trial(bench, i, load)
            samples.append(sample)
            print(f"  {label} trial {i + 1}/{trials}: {sample}", file=sys.stderr, flush=True)
    finally:
        load.stop()
    out: dict[str, object] = {"client": f"confluent-kafka, {LOAD_CONFIG}, 500 records/s",
                              "records": load.sent, "acked": load.sent - len(load.errors),
                              "errors_total": len(load.errors),
                              "error_kinds": sorted(set(load.errors))[:5]}
    for key in samples[0]:
        values = [s[key] for s in samples]
        out[key] = {"median": round(statistics.median(values), 1), "max": max(values),
                    "samples": values}
    return out


TIMINGS = {
    "controller_failover_ms": controller_failover,
    "fencing_ms": fencing,
    "metadata_propagation_ms": metadata_propagation,
    "leader_kill_ms": leader_kill,
    "leader_and_controller_kill_ms": leader_and_controller_kill,
    "leader_pause_ms": leader_pause,
}
LOAD_TIMINGS = {
    "sigterm_leader_under_load": sigterm_leader_under_load,
    "rolling_restart_under_load": rolling_restart_under_load,
}


def nats_failover(trials: int) -> dict[str, object]:
    """NATS JetStream R3 failover in the same run, when nats-server and nats-py are here."""
    try:
        import nats  # noqa: F401
    except ImportError:
        return {"skipped": "nats-py is not installed"}
    if shutil.which("nats-server") is None and not (
        Path(sys.executable).parent / "nats-server"
    ).exists():
        return {"skipped": "nats-server is not installed"}
    script = Path(__file__).resolve().parent / "nats_bench.py"
    done = subprocess.run(
        [sys.executable, str(script), "--records", "10000", "--trials", str(trials), "--json"],
        capture_output=True, text=True, timeout=3600, check=False,
    )
    if done.returncode != 0:
        return {"skipped": f"nats_bench.py failed: {done.stderr[-300:]}"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1])["failover_ms"])


def main() -> int:
    if sys.argv[1:2] == ["--kafka-load-worker"]:
        bootstrap, topic, interval_s, config_json = sys.argv[2:6]
        return kafka_load_worker(bootstrap, topic, float(interval_s), config_json)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--load-trials", type=int, default=5,
                        help="trials of rolling_restart_under_load (3 restarts each)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", nargs="*", choices=sorted([*TIMINGS, *LOAD_TIMINGS]))
    parser.add_argument("--nats", action="store_true", help="also NATS JetStream failover")
    parser.add_argument("--idle-topics", type=int, default=0, metavar="N",
                        help="first create N idle topics of 3 partitions (RF 3): metadata "
                             "work in a hand-over grows with the partitions a broker holds")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workdir", help="keep the brokers' data and logs here")
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    results: dict[str, object] = {
        "trials": args.trials,
        "settings": settings,
        "cpus": os.cpu_count(),
    }
    chosen = args.only or [*TIMINGS, *LOAD_TIMINGS]
    with tempfile.TemporaryDirectory(prefix="raftka-bench-") as scratch:
        root = args.workdir or scratch
        bench = Bench(Path(root), settings)
        try:
            bench.start()
            for index in range(args.idle_topics):
                bench.must_create_topic(f"idle-{index}", partitions=3)
            bench.wait_whole()
            results["idle_partitions"] = 3 * args.idle_topics
            for name in chosen:
                print(f"{name}:", file=sys.stderr, flush=True)
                if name in LOAD_TIMINGS:
                    rolling = name == "rolling_restart_under_load"
                    count = args.load_trials if rolling else args.trials
                    results[name] = load_timed(bench, count, name, LOAD_TIMINGS[name])
                else:
                    results[name] = timed(
                        args.trials, name, lambda i, f=TIMINGS[name]: f(bench, i)
                    )
        finally:
            bench.stop()
    if args.nats:
        print("nats_jetstream_failover_ms:", file=sys.stderr, flush=True)
        results["nats_jetstream_failover_ms"] = nats_failover(args.trials)
    if args.json:
        print(json.dumps(results))
        return 0
    for name, r in results.items():
        if not isinstance(r, dict):
            continue
        if "median" in r:
            print(f"{name:31} median {r['median']:8.1f}  max {r['max']:8.1f}")
        for key, figure in r.items():
            if isinstance(figure, dict) and "median" in figure:
                print(f"{name + '.' + key:31} median {figure['median']:8.1f}  "
                      f"max {figure['max']:8.1f}")
        if "errors_total" in r:
            print(f"{name + '.errors_total':31} {r['errors_total']} of {r['records']} records")
        if "skipped" in r:
            print(f"{name:31} skipped: {r['skipped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
