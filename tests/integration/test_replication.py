"""Replication and failover with real broker processes: what acks=all promises survives
kill -9, pauses, torn disks and losing the majority — exactly once and in order."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import pytest

from raftka import Admin, Consumer, Producer
from raftka.client.consumer import TopicPartition
from raftka.client.errors import RaftkaError
from raftka.proto.raftka.v1 import broker_pb2, broker_pb2_grpc, common_pb2
from tests.harness import LocalCluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
Code = common_pb2.ErrorCode
SETTINGS = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "broker.session.timeout.ms": "2000",
    "replica.lag.time.max.ms": "4000",
    "leader.imbalance.check.interval.ms": "1000",
}


def start_cluster(cluster_factory, **overrides: str) -> LocalCluster:
    cluster = cluster_factory(3, {**SETTINGS, **overrides})
    cluster.start()
    cluster.wait_ready()
    return cluster


def partition_state(cluster: LocalCluster, topic: str, partition: int = 0):
    """The partition as the most up-to-date broker sees it: a broker that was just paused
    or cut off still describes the old leader and ISR until it has caught up."""
    offsets: dict[int, int] = {}
    for broker_id, broker in cluster.brokers.items():
        if broker.running:
            try:
                offsets[broker_id] = cluster.describe(via=broker_id).metadata_offset
            except RuntimeError:
                continue
    for broker_id in sorted(offsets, key=lambda b: -offsets[b]):
        broker = cluster.brokers[broker_id]
        try:
            with Admin(broker.address, request_timeout_ms=3000) as admin:
                return admin.describe_topic(topic).partitions[partition]
        except RaftkaError:
            continue
    raise AssertionError("no broker could describe the topic")


def wait_isr(cluster: LocalCluster, topic: str, members: set[int], partition: int = 0) -> None:
    wait_for(
        lambda: set(partition_state(cluster, topic, partition).isr) == members,
        30,
        f"ISR of {topic}-{partition} to be {sorted(members)}",
    )


def read_partition(bootstrap: str, topic: str, partition: int = 0) -> list[int]:
    """Every committed record of the partition, as the numbers they carry. Reads until the
    high watermark stops moving: right after a leader change it lags (as in Kafka) until every
    follower has fetched from the new leader."""
    consumer = Consumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", request_timeout_ms=10_000
    )
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    values: list[int] = []
    deadline = time.monotonic() + 30
    settled_at: int | None = None
    while time.monotonic() < deadline:
        end = consumer.end_offsets([tp])[tp]
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(int(r.value) for r in records)
        if settled_at == end:
            break
        settled_at = end
        time.sleep(2.0)
    consumer.close()
    assert settled_at is not None and consumer.position(tp) >= settled_at
    return values


class NumberedProducer:
    """Sends 0, 1, 2, ... with acks=all in the background (number n to partition
    n % partitions) and remembers what was acked."""

    def __init__(self, bootstrap: str, topic: str, partitions: int = 1) -> None:
        self.topic = topic
        self.partitions = partitions
        self.acked: list[int] = []
        self.failed: list[tuple[int, str]] = []
        self.sent = 0
        self._stop = threading.Event()
        self._producer = Producer(
            bootstrap,
            acks="all",
            linger_ms=2,
            retry_backoff_ms=50,
            delivery_timeout_ms=60_000,
            request_timeout_ms=5_000,
        )
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> NumberedProducer:
        self._thread.start()
        return self

    def _run(self) -> None:
        window = []
        while not self._stop.is_set():
            number = self.sent
            window.append(
                (
                    number,
                    self._producer.send(
                        self.topic, str(number).encode(), partition=number % self.partitions
                    ),
                )
            )
            self.sent += 1
            if len(window) >= 20:
                self._settle(window)
                window = []
        self._settle(window)

    def _settle(self, window: list) -> None:
        for number, future in window:
            try:
                future.get(timeout=90)
                self.acked.append(number)
            except Exception as exc:
                self.failed.append((number, str(exc)))

    def wait_for_acks(self, count: int, timeout_s: float = 60) -> None:
        start = len(self.acked)
        wait_for(lambda: len(self.acked) >= start + count, timeout_s, f"{count} more acks")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)
        self._producer.close(timeout=30)


def assert_exactly_once_in_order(values: list[int], acked: list[int]) -> None:
    assert values == sorted(values), "records are out of order"
    assert len(values) == len(set(values)), "a record was written twice"
    missing = set(acked) - set(values)
    assert not missing, f"acknowledged records lost: {sorted(missing)[:20]}"


def test_followers_hold_the_same_records_as_the_leader(cluster_factory):
    cluster = start_cluster(cluster_factory)
    with Producer(cluster.bootstrap, acks="all") as producer:
        for i in range(300):
            producer.send("copies", str(i).encode(), partition=0)
        producer.flush()
    state = partition_state(cluster, "copies")
    assert set(state.isr) == {1, 2, 3} and state.high_watermark == 300
    logs = {}
    for broker_id, broker in cluster.brokers.items():
        wait_for(
            lambda b=broker: (
                sum(p.stat().st_size for p in (b.data_dir / "logs" / "copies-0").glob("*.log")) > 0
            ),
            10,
            "replica data",
        )
        logs[broker_id] = b"".join(
            p.read_bytes() for p in sorted((broker.data_dir / "logs" / "copies-0").glob("*.log"))
        )
    wait_for(
        lambda: len({len(v) for v in logs.values()}) == 1 or _reread(cluster, logs),
        10,
        "followers to catch up",
    )
    assert logs[1] == logs[2] == logs[3]


def _reread(cluster: LocalCluster, logs: dict[int, bytes]) -> bool:
    for broker_id, broker in cluster.brokers.items():
        logs[broker_id] = b"".join(
            p.read_bytes() for p in sorted((broker.data_dir / "logs" / "copies-0").glob("*.log"))
        )
    return len(set(logs.values())) == 1


def test_kill_9_of_leaders_and_the_controller_loses_no_acknowledged_record(cluster_factory):
    """Rounds of kill -9 while numbered acks=all writes flow to three partitions (one led by
    each broker): the leader of partition 0, then another, then the controller — which leads
    a partition too, so controller and leader die together."""
    cluster = start_cluster(cluster_factory)
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("numbers", num_partitions=3, replication_factor=3)
    producer = NumberedProducer(cluster.bootstrap, "numbers", partitions=3).start()
    try:
        for round_number in range(3):
            producer.wait_for_acks(300)
            if round_number < 2:
                victim = partition_state(cluster, "numbers", round_number).leader_id
            else:
                victim = cluster.describe().controller_id
                led = [
                    i
                    for i in range(3)
                    if partition_state(cluster, "numbers", i).leader_id == victim
                ]
                assert led, "the controller should lead a partition (preferred leaders)"
            cluster.brokers[victim].kill()
            producer.wait_for_acks(300, timeout_s=60)
            cluster.brokers[victim].start()
            cluster.wait_ready()
            for i in range(3):
                wait_isr(cluster, "numbers", {1, 2, 3}, partition=i)
    finally:
        producer.stop()
    assert not producer.failed, producer.failed[:5]
    total = 0
    for partition in range(3):
        values = read_partition(cluster.bootstrap, "numbers", partition)
        acked = [n for n in producer.acked if n % 3 == partition]
        assert_exactly_once_in_order(values, acked)
        total += len(values)
    assert total == producer.sent


@pytest.mark.parametrize("also_controller", [False, True], ids=["leader", "leader-and-controller"])
def test_paused_leader_accepts_nothing_that_survives_and_rejoins(cluster_factory, also_controller):
    """A leader frozen (SIGSTOP) past its session, then woken with a write already in its
    socket. With also_controller the frozen broker is the controller as well: it wakes still
    believing it leads the quorum, and must not renew its own lease from its old image."""
    cluster = start_cluster(cluster_factory)
    partition = 0
    if also_controller:
        with Admin(cluster.bootstrap) as admin:
            admin.create_topic("paused", num_partitions=3)
        controller_id = cluster.describe().controller_id
        partition = next(p for p in range(3)
                         if partition_state(cluster, "paused", p).leader_id == controller_id)
    with Producer(cluster.bootstrap, acks="all") as producer:
        for i in range(50):
            producer.send("paused", str(i).encode(), partition=partition)
        producer.flush()
    old_leader = partition_state(cluster, "paused", partition).leader_id
    # A connection to the old leader, open before it freezes: what is sent on it while the
    # broker is paused waits in its socket and is read the moment it wakes up.
    channel = cluster.brokers[old_leader].channel()
    stub = broker_pb2_grpc.BrokerServiceStub(channel)
    stub.Metadata(broker_pb2.MetadataRequest(), timeout=5)
    cluster.brokers[old_leader].signal(signal.SIGSTOP)
    try:
        wait_for(
            lambda: partition_state(cluster, "paused", partition).leader_id not in (-1, old_leader),
            20,
            "a new leader",
        )
        stale = stub.Produce.future(
            broker_pb2.ProduceRequest(
                acks=1,
                timeout_ms=5000,
                partitions=[
                    broker_pb2.PartitionProduceData(
                        topic="paused",
                        partition=partition,
                        records=[common_pb2.Record(value=b"999999")],
                    )
                ],
            ),
            timeout=90,
        )
        with Producer(cluster.bootstrap, acks="all") as producer:
            sent = [producer.send("paused", str(i).encode(), partition=partition)
                    for i in range(50, 100)]
            producer.flush()
            assert all(future.get(30).offset >= 50 for future in sent)
        # and a consumer's read, also waiting in the old leader's socket: it must not be
        # served from the frozen broker's log as if it still led (it lacks 50..99)
        stale_read = stub.Fetch.future(
            broker_pb2.FetchRequest(
                replica_id=-1,
                max_wait_ms=0,
                partitions=[
                    broker_pb2.FetchPartition(
                        topic="paused", partition=partition, fetch_offset=0,
                        current_leader_epoch=-1,
                    )
                ],
            ),
            timeout=90,
        )
    finally:
        cluster.brokers[old_leader].signal(signal.SIGCONT)
    try:
        read = stale_read.result().partitions[0]
        assert read.error_code == Code.NOT_LEADER_OR_FOLLOWER and not read.record_batches, read
    except grpc.RpcError as exc:
        assert exc.code() != grpc.StatusCode.OK
    try:
        reply = stale.result().partitions[0]
    except grpc.RpcError as exc:  # a refusal at the transport level is a refusal too
        reply = None
        assert exc.code() != grpc.StatusCode.OK
    if reply is not None:
        assert reply.error_code == Code.NOT_LEADER_OR_FOLLOWER, reply
        assert (
            "refusing writes" in reply.error_message
            or "fenced" in reply.error_message
            or "not the leader" in reply.error_message
            or "does not host" in reply.error_message
        ), reply
    channel.close()
    wait_isr(cluster, "paused", {1, 2, 3}, partition=partition)
    values = read_partition(cluster.bootstrap, "paused", partition)
    assert values == list(range(100))


def test_follower_with_a_torn_tail_truncates_and_rejoins(cluster_factory):
    cluster = start_cluster(cluster_factory)
    with Producer(cluster.bootstrap, acks="all") as producer:
        for i in range(100):
            producer.send("torn", str(i).encode(), partition=0)
        producer.flush()
    follower = next(i for i in (1, 2, 3) if i != partition_state(cluster, "torn").leader_id)
    cluster.brokers[follower].kill()
    segment = sorted((cluster.brokers[follower].data_dir / "logs" / "torn-0").glob("*.log"))[-1]
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) - 7])  # a torn last batch
    cluster.brokers[follower].start()
    cluster.wait_ready([follower])
    wait_isr(cluster, "torn", {1, 2, 3})
    with Producer(cluster.bootstrap, acks="all") as producer:
        for i in range(100, 120):
            producer.send("torn", str(i).encode(), partition=0)
        producer.flush()
    assert read_partition(cluster.bootstrap, "torn") == list(range(120))
    assert "torn or corrupt" in cluster.brokers[follower].log_text()


def test_without_a_majority_acks_all_fails_clearly_and_nothing_is_lost(cluster_factory):
    cluster = start_cluster(cluster_factory)
    with Producer(cluster.bootstrap, acks="all") as producer:
        for i in range(30):
            producer.send("quorum", str(i).encode(), partition=0)
        producer.flush()
    leader = partition_state(cluster, "quorum").leader_id
    others = [i for i in (1, 2, 3) if i != leader]
    for broker_id in others:
        cluster.brokers[broker_id].kill()
    # Without a Raft majority nothing can fence anyone; the survivor's lease with the
    # controller lapses after one session timeout and from then on it refuses writes.
    stub = broker_pb2_grpc.BrokerServiceStub(cluster.brokers[leader].channel())

    def refused() -> bool:
        reply = stub.Produce(
            broker_pb2.ProduceRequest(
                acks=-1,
                timeout_ms=500,
                partitions=[
                    broker_pb2.PartitionProduceData(
                        topic="quorum", partition=0, records=[common_pb2.Record(value=b"-1")]
                    )
                ],
            ),
            timeout=10,
        ).partitions[0]
        return (
            reply.error_code == Code.NOT_LEADER_OR_FOLLOWER
            and "refusing writes" in reply.error_message
        )

    wait_for(refused, 15, "the leader to refuse writes")
    with Producer(
        cluster.brokers[leader].address,
        acks="all",
        delivery_timeout_ms=4000,
        request_timeout_ms=1000,
    ) as producer:
        future = producer.send("quorum", b"-2", partition=0)
        with pytest.raises(RaftkaError) as failure:
            future.get(30)
    assert "refusing writes" in str(failure.value)
    for broker_id in others:
        cluster.brokers[broker_id].start()
    cluster.wait_ready()
    wait_isr(cluster, "quorum", {1, 2, 3})
    values = read_partition(cluster.bootstrap, "quorum")
    # the probes sent before the lease lapsed timed out (outcome unknown, as in Kafka) and
    # may be committed now; nothing refused is, and nothing acknowledged is missing
    assert [v for v in values if v >= 0] == list(range(30))
    assert -2 not in values
    with Producer(cluster.bootstrap, acks="all") as producer:
        assert producer.send("quorum", b"30", partition=0).get(30).offset >= 30


def test_preferred_leader_returns_after_its_broker_comes_back(cluster_factory):
    cluster = start_cluster(cluster_factory)
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("prefer", num_partitions=3, replication_factor=3)
    before = {
        p.partition: p.leader_id for p in (partition_state(cluster, "prefer", i) for i in range(3))
    }
    victim = before[0]
    cluster.brokers[victim].kill()
    wait_for(
        lambda: partition_state(cluster, "prefer", 0).leader_id not in (-1, victim), 20, "failover"
    )
    cluster.brokers[victim].start()
    cluster.wait_ready()
    wait_for(
        lambda: all(partition_state(cluster, "prefer", i).leader_id == before[i] for i in range(3)),
        40,
        "preferred leaders to be restored",
    )


def test_cli_produce_with_acks_all_keeps_going_through_a_leader_kill(cluster_factory):
    import subprocess
    import sys
    from pathlib import Path

    cluster = start_cluster(cluster_factory)
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("drill", num_partitions=1, replication_factor=3)
    produce = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "raftka",
            "produce",
            "drill",
            "--acks",
            "all",
            "--bootstrap",
            cluster.bootstrap,
        ],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert produce.stdin is not None
    leader = partition_state(cluster, "drill").leader_id
    for i in range(3000):
        produce.stdin.write(f"{i}\n")
        if i % 100 == 0:
            produce.stdin.flush()
            time.sleep(0.05)
        if i == 1000:
            # Only once the CLI has produced through this leader: a CLI slow to start (a
            # loaded machine) would else meet the new leader first and retry nothing.
            wait_for(lambda: partition_state(cluster, "drill").high_watermark > 0, 60,
                     "the CLI's first acknowledged records")
            cluster.brokers[leader].kill()
    produce.stdin.close()
    assert produce.wait(120) == 0, produce.stderr.read() if produce.stderr else ""
    report = produce.stderr.read() if produce.stderr else ""
    assert "Produced 3000 records" in report and "carried on through" in report, report
    assert read_partition(cluster.bootstrap, "drill") == list(range(3000))
