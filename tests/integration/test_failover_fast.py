"""Fast failover with real broker processes: a dead broker is fenced on proof of death (its
port refuses connections), not after its session timeout; a paused one still waits out its
session; SIGTERM hands leadership over before the process exits. What acks=all promises
holds throughout."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import pytest

from raftka.proto.raftka.v1 import broker_pb2, broker_pb2_grpc
from tests.harness import LocalCluster, wait_for
from tests.integration.test_replication import (
    NumberedProducer,
    assert_exactly_once_in_order,
    read_partition,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SETTINGS = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "replica.lag.time.max.ms": "4000",
    "leader.imbalance.check.interval.ms": "600000",  # leaders stay where failover put them
}
# A session far longer than anything these tests wait: whatever fences within it, does so
# on proof of death.
LONG_SESSION = {"broker.session.timeout.ms": "30000", "broker.heartbeat.interval.ms": "500"}
TOPIC = "fast"


def leaders(cluster: LocalCluster, via: int, topic: str = TOPIC) -> dict[int, tuple[int, list]]:
    """partition -> (leader, isr) as broker `via` answers Metadata now."""
    with cluster.brokers[via].channel() as channel:
        reply = broker_pb2_grpc.BrokerServiceStub(channel).Metadata(
            broker_pb2.MetadataRequest(topics=[topic]), timeout=2
        )
    return {p.partition: (p.leader_id, list(p.isr)) for p in reply.topics[0].partitions}


def start(cluster_factory, **overrides: str) -> LocalCluster:
    cluster = cluster_factory(3, {**SETTINGS, **overrides})
    cluster.start()
    cluster.wait_ready()
    admin_create(cluster)
    return cluster


def admin_create(cluster: LocalCluster, partitions: int = 3) -> None:
    from raftka import Admin

    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(TOPIC, num_partitions=partitions, replication_factor=3)
    wait_for(lambda: all(len(isr) == 3 for _, isr in leaders(cluster, 1).values()), 30,
             "every replica in sync")


def victim_and_partition(cluster: LocalCluster, controller: bool) -> tuple[int, int]:
    """A broker that leads a partition of TOPIC and is (or is not) the controller."""
    controller_id = cluster.describe().controller_id
    for partition, (leader, _) in sorted(leaders(cluster, 1).items()):
        if (leader == controller_id) == controller:
            return leader, partition
    raise AssertionError("no partition with such a leader")


def fenced(cluster: LocalCluster, via: int, broker_id: int) -> bool:
    return any(b.fenced for b in cluster.describe(via=via).brokers
               if b.endpoint.broker_id == broker_id)


@pytest.mark.parametrize("also_controller", [False, True], ids=["leader", "leader+controller"])
def test_kill_9_is_proof_of_death_no_session_timeout_is_waited(cluster_factory, also_controller):
    """With a 30 s session, a killed leader — and, when it was also the controller, the new
    controller's takeover probe — gets it fenced and its partition a new leader in seconds,
    with every acknowledged write kept."""
    cluster = start(cluster_factory, **LONG_SESSION)
    victim, partition = victim_and_partition(cluster, also_controller)
    survivor = next(b for b in cluster.brokers if b != victim)
    writer = NumberedProducer(cluster.bootstrap, TOPIC, partitions=3).start()
    writer.wait_for_acks(50)
    killed = time.monotonic()
    cluster.brokers[victim].kill()
    wait_for(lambda: leaders(cluster, survivor)[partition][0] not in (victim, -1), 10,
             "a new leader")
    wait_for(lambda: fenced(cluster, survivor, victim), 10, f"broker {victim} fenced")
    replaced_s = time.monotonic() - killed
    writer.wait_for_acks(50, timeout_s=20)  # acks=all flows again on the new leaders
    assert replaced_s < 10, f"took {replaced_s:.1f} s: that is no proof-of-death fencing"
    cluster.brokers[victim].start()
    cluster.wait_ready()
    writer.stop()
    for p in range(3):
        values = read_partition(cluster.bootstrap, TOPIC, p)
        assert_exactly_once_in_order(values, [n for n in writer.acked if n % 3 == p])


def test_a_paused_leader_is_silent_not_dead_and_waits_out_its_session(cluster_factory):
    """SIGSTOP: the kernel still accepts connections for a stopped process, so nothing proves
    it dead; it is fenced when its session (4 s) runs out, not before."""
    cluster = start(cluster_factory, **{"broker.session.timeout.ms": "4000",
                                        "broker.heartbeat.interval.ms": "250"})
    victim, partition = victim_and_partition(cluster, controller=False)
    survivor = next(b for b in cluster.brokers if b != victim)
    paused = time.monotonic()
    cluster.brokers[victim].signal(signal.SIGSTOP)
    try:
        while time.monotonic() - paused < 3.0:
            assert not fenced(cluster, survivor, victim), "fenced before its session ran out"
            assert leaders(cluster, survivor)[partition][0] == victim
            time.sleep(0.2)
        wait_for(lambda: fenced(cluster, survivor, victim), 10, f"broker {victim} fenced")
        # The session counts from its last heartbeat, up to one interval before the pause.
        assert time.monotonic() - paused >= 4.0 - 0.25 - 0.1
    finally:
        cluster.brokers[victim].signal(signal.SIGCONT)
    cluster.wait_ready()


class HandoverWatch:
    """Polls the survivors every few ms for when one of them answers that it leads
    `partition` and that `victim` is in no ISR of the topic; for when another broker is the
    controller; and the victim, for when it stops answering."""

    def __init__(self, cluster: LocalCluster, victim: int, partition: int):
        self.handed_over_at: float | None = None
        self.controller_moved_at: float | None = None
        self.victim_silent_at: float | None = None
        self._args = (cluster, victim, partition)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cluster, victim, partition = self._args
        survivors = [b for b in cluster.brokers if b != victim]
        while not self._stop.is_set():
            for survivor in survivors:
                try:
                    state = leaders(cluster, survivor)
                    controller = cluster.describe(via=survivor, timeout_s=1).controller_id
                except (grpc.RpcError, RuntimeError):
                    continue
                now = time.monotonic()
                if self.handed_over_at is None and state[partition][0] == survivor and all(
                    victim not in isr for _, isr in state.values()
                ):
                    self.handed_over_at = now
                if self.controller_moved_at is None and controller not in (victim, -1, 0):
                    self.controller_moved_at = now
            if self.victim_silent_at is None:
                try:
                    leaders(cluster, victim)
                except grpc.RpcError:
                    self.victim_silent_at = time.monotonic()
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.mark.parametrize("also_controller", [False, True], ids=["leader", "leader+controller"])
def test_sigterm_hands_leadership_over_before_the_process_exits(cluster_factory, also_controller):
    """Controlled shutdown: while the SIGTERMed leader still answers — so before its process
    exits, and before a probe could prove it dead — its partition already has another
    leader and it is in no ISR (and, if it was the controller, another broker is); no
    acknowledged write is lost. (The new leader's own answer counts: the stopping broker waits
    for exactly that.)"""
    cluster = start(cluster_factory)
    victim, partition = victim_and_partition(cluster, also_controller)
    writer = NumberedProducer(cluster.bootstrap, TOPIC, partitions=3).start()
    writer.wait_for_acks(50)
    watch = HandoverWatch(cluster, victim, partition)
    process = cluster.brokers[victim].process
    assert process is not None
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    exited = time.monotonic()
    time.sleep(0.3)  # anything the watch saw late it saw after the exit
    watch.stop()
    assert process.returncode == 0
    assert watch.handed_over_at is not None and watch.victim_silent_at is not None
    assert watch.handed_over_at < watch.victim_silent_at < exited, (
        "leadership moved only once the broker had stopped answering (found dead, not "
        "handed over)"
    )
    if also_controller:
        assert watch.controller_moved_at is not None
        assert watch.controller_moved_at < watch.victim_silent_at
    writer.wait_for_acks(50, timeout_s=20)
    cluster.brokers[victim].start()
    cluster.wait_ready()
    writer.stop()
    for p in range(3):
        values = read_partition(cluster.bootstrap, TOPIC, p)
        assert_exactly_once_in_order(values, [n for n in writer.acked if n % 3 == p])
