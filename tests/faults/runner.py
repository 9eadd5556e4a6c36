"""One fault run from start to verdict, shared by tests/faults/test_nemesis.py and
bench/fault_run.py.

1. Build the network (tests/faults/netns.py), start the brokers in it, create the topic
   (RF=3, min.insync.replicas=2, several partitions) and wait until every ISR is full.
2. Start the producers and the consumer groups (raftka's KIP-848 members, and optionally a
   classic Kafka group of confluent_kafka members), and the nemesis for `duration_s`.
3. Stop the nemesis, heal everything, stop the clients (flushing what they hold).
4. Wait until the cluster is whole (every broker serving, every ISR full), read every
   partition from the beginning through the high watermark, note ISRs and group offsets.
5. Stop every broker (SIGTERM, so the logs are closed cleanly) and read each replica's
   segment files of each partition.
6. Check (tests/faults/checker.py).

Whatever happens, `finally` stops every process it started (by pid) and deletes the
network; the history is written to `work_dir/history.jsonl` for a post-mortem.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from raftka import Admin
from tests.faults.checker import Report, check
from tests.faults.cluster import NamespacedCluster
from tests.faults.history import DEFAULT_GROUP, FinalState, History
from tests.faults.nemesis import KINDS, Nemesis, Schedule
from tests.faults.netns import FaultNetwork
from tests.faults.workload import (
    GroupConsumer,
    KafkaGroupConsumer,
    KafkaProducer,
    RaftkaProducer,
    Values,
    describe_partitions,
    final_read,
    group_offsets,
    high_watermarks,
    read_replica_logs,
)

TOPIC = "faults"
MAX_OVERRUN_S = 120.0
GROUP = DEFAULT_GROUP
KAFKA_GROUP = "faults-kafka-group"


@dataclass
class TrialConfig:
    seed: int
    brokers: int = 3
    voters: int = 3
    duration_s: float = 60.0
    partitions: int = 6
    producers: int = 3
    kafka_producers: int = 0
    rate_per_producer: float = 60.0
    max_in_flight: int = 200
    consumer: bool = True
    # members of the raftka (KIP-848) group; and of a classic Kafka group (confluent_kafka)
    group_members: int = 2
    kafka_consumers: int = 0
    # "all" is the promise under test; "1" shows that the checker sees what it loses
    acks: str = "all"
    kinds: tuple[str, ...] = KINDS
    schedule: Schedule = field(default_factory=Schedule)
    settings: dict[str, str] = field(default_factory=dict)


@dataclass
class TrialResult:
    config: TrialConfig
    report: Report
    history: History
    final: FinalState
    work_dir: Path
    elapsed_s: float
    faults_by_kind: dict[str, int]
    # the root namespace's guard route had to stay: a socket still pointed into the subnet
    guard_kept: bool = False

    def summary(self) -> dict[str, object]:
        return {
            "seed": self.config.seed,
            "brokers": self.config.brokers,
            "voters": self.config.voters,
            "duration_s": self.config.duration_s,
            "elapsed_s": round(self.elapsed_s, 1),
            "guard_kept": self.guard_kept,
            "faults_by_kind": self.faults_by_kind,
            "faults": [
                {"kind": f.kind, "targets": f.targets, "start_s": f.start_s, "end_s": f.end_s,
                 "recovered_s": f.recovered_s, "description": f.description,
                 "commands": f.commands, "note": f.note}
                for f in self.history.faults
            ],
            "notes": self.history.notes + self.final.notes,
            "history": str(self.work_dir / "history.jsonl"),
            **self.report.to_json(),
        }


SETTINGS = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "broker.session.timeout.ms": "2000",
    "replica.lag.time.max.ms": "2000",
}


def run_trial(config: TrialConfig, work_dir: Path,
              progress: Callable[[str], None] | None = None) -> TrialResult:
    say = progress or (lambda text: None)
    started = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(config.seed)
    history = History()
    network = FaultNetwork(list(range(1, config.brokers + 1)))
    cluster: NamespacedCluster | None = None
    nemesis: Nemesis | None = None
    clients: list[RaftkaProducer | KafkaProducer] = []
    consumers: list[GroupConsumer | KafkaGroupConsumer] = []
    final = FinalState()
    stop = threading.Event()
    try:
        network.create()
        say(f"network: 10.213.{network.octet}.0/24, namespaces {network.prefix}*")
        cluster = NamespacedCluster(work_dir, network, {**SETTINGS, **config.settings},
                                    voter_count=config.voters)
        cluster.start()
        cluster.wait_ready(timeout_s=60)
        with Admin(cluster.bootstrap) as admin:
            admin.create_topic(TOPIC, config.partitions, 3, {"min.insync.replicas": "2"})
        nemesis = Nemesis(cluster, network, history, rng, TOPIC, config.partitions,
                          config.kinds, config.schedule)
        if not nemesis.await_recovery(None, 60):
            raise RuntimeError("the topic's ISRs never filled before the faults")
        say(f"cluster ready: {config.brokers} brokers, {config.voters} voters")

        values = Values()
        for i in range(config.producers):
            clients.append(RaftkaProducer(f"raftka-{i}", cluster.bootstrap, TOPIC, history,
                                          values, config.rate_per_producer,
                                          config.max_in_flight, {"acks": config.acks}))
        for i in range(config.kafka_producers):
            clients.append(KafkaProducer(f"kafka-{i}", cluster.kafka_bootstrap, TOPIC, history,
                                         values, config.rate_per_producer,
                                         config.max_in_flight, config.acks))
        if config.consumer:
            consumers += [GroupConsumer(cluster.bootstrap, TOPIC, GROUP, history,
                                        member=f"raftka-m{i}")
                          for i in range(max(1, config.group_members))]
            consumers += [KafkaGroupConsumer(cluster.kafka_bootstrap, TOPIC, KAFKA_GROUP,
                                             history, member=f"kafka-m{i}")
                          for i in range(config.kafka_consumers)]
        for client in clients:
            client.start()
        for consumer in consumers:
            consumer.start()
        nemesis.start(stop, config.duration_s)
        _monitor(history, config.duration_s, say, nemesis)
        stop.set()
        nemesis.join()
        say("healing")
        nemesis.heal_everything()
        for client in clients:
            client.stop(flush_timeout_s=40)
        for consumer in consumers:
            consumer.stop()
        say(f"clients stopped: {history.counts()}")
        final = _final_state(cluster, nemesis, config, history)
        say(f"final read: {len(final.reads)} records, HW {final.high_watermarks}")
    finally:
        stop.set()
        for client in clients:
            with contextlib.suppress(Exception):
                client.stop(flush_timeout_s=1)
        for consumer in consumers:
            with contextlib.suppress(Exception):
                consumer.stop()
        if nemesis is not None:
            nemesis.join(30)
            nemesis.close()
        if cluster is not None:
            _stop_brokers(cluster)
        network.close()
        with contextlib.suppress(Exception):
            history.dump(work_dir / "history.jsonl", final)
    if cluster is not None:
        final.replica_logs = read_replica_logs(
            {i: b.data_dir for i, b in cluster.brokers.items()}, TOPIC, config.partitions
        )
    report = check(history, final)
    for name, client in [(c.name, c) for c in clients]:
        if client.error is not None:
            final.notes.append(f"{name} crashed: {client.error!r}")
    for consumer in consumers:
        if consumer.error is not None:
            final.notes.append(f"consumer {consumer.member} crashed: {consumer.error!r}")
    if nemesis is not None and nemesis.error is not None:
        final.notes.append(f"nemesis crashed: {nemesis.error!r}")
    faults_by_kind = {kind: sum(1 for f in history.faults if f.kind == kind)
                      for kind in config.kinds}
    if network.guard_kept:
        final.notes.append(f"the guard route for {network.network} was kept: a client socket "
                           "was still open after the clean-up")
    result = TrialResult(config, report, history, final, work_dir,
                         time.monotonic() - started, faults_by_kind, network.guard_kept)
    (work_dir / "summary.json").write_text(json.dumps(
        {**result.summary(), "config": _config_json(config)}, indent=2, default=str))
    return result


def _config_json(config: TrialConfig) -> dict[str, object]:
    return dataclasses.asdict(config)


def _monitor(history: History, duration_s: float, say: Callable[[str], None],
             nemesis: Nemesis) -> None:
    """Report progress every 10 s while the nemesis runs (it ends its cycle after
    `duration_s`; past MAX_OVERRUN_S more it is stopped)."""
    deadline = time.monotonic() + duration_s + MAX_OVERRUN_S
    last = time.monotonic()
    while time.monotonic() < deadline and (nemesis.thread is None or nemesis.thread.is_alive()):
        time.sleep(0.5)
        if time.monotonic() - last >= 10:
            last = time.monotonic()
            counts = history.counts()
            current = next((f for f in reversed(history.faults) if f.end_s is None), None)
            say(f"t={history.now():6.1f}s ops={counts['invoked']} ok={counts['ok']} "
                f"fail={counts['fail']} pending={counts['pending']} faults={counts['faults']} "
                f"consumed={counts['consumed']} now: "
                f"{current.description if current else 'no fault'}")


def _final_state(cluster: NamespacedCluster, nemesis: Nemesis, config: TrialConfig,
                 history: History) -> FinalState:
    final = FinalState()
    if not nemesis.await_recovery(None, 90):
        final.notes.append("the cluster was not whole 90 s after the last heal; the final "
                           "read goes ahead with what answers")
    final.reads, final.high_watermarks = final_read(cluster.bootstrap, TOPIC, config.partitions)
    final.replicas, final.isr = describe_partitions(cluster.bootstrap, TOPIC)
    if config.consumer:
        try:
            final.committed = group_offsets(cluster.bootstrap, GROUP, TOPIC)
            if config.kafka_consumers:
                final.group_committed[KAFKA_GROUP] = group_offsets(cluster.bootstrap,
                                                                   KAFKA_GROUP, TOPIC)
        except Exception as exc:
            final.notes.append(f"group offsets could not be read: {exc!r}")
    # the HW of each partition as its leader has it now: the replicas are compared below it
    latest = high_watermarks(cluster.bootstrap, TOPIC, config.partitions)
    if latest != final.high_watermarks:
        final.notes.append(f"high watermarks moved after the final read: {latest}")
    return final


def _stop_brokers(cluster: NamespacedCluster) -> None:
    """SIGCONT (a paused broker cannot act on SIGTERM), SIGTERM, then SIGKILL for any that
    does not exit in 20 s; only the pids this cluster started."""
    for broker in cluster.brokers.values():
        if broker.running:
            broker.signal(signal.SIGCONT)
            broker.signal(signal.SIGTERM)
    for broker in cluster.brokers.values():
        if broker.process is None:
            continue
        try:
            broker.process.wait(20)
        except subprocess.TimeoutExpired:
            broker.kill()

