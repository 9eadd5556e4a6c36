"""Consumer groups with real processes: sharing partitions, rebalancing when members come and
go, committed offsets that survive coordinator failover, fencing of stale and slow members."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from raftka import Admin, Consumer, Producer
from raftka.broker.log.dir_checkpoints import LOG_START_FILE, read_offsets
from raftka.client.consumer import TopicPartition
from raftka.proto.raftka.v1 import common_pb2, group_pb2, group_pb2_grpc
from tests.harness import LocalCluster, wait_for

pytestmark = pytest.mark.integration
Code = common_pb2.ErrorCode
REPO = Path(__file__).resolve().parents[2]
SETTINGS = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "group.consumer.session.timeout.ms": "3000",
    "group.consumer.heartbeat.interval.ms": "300",
    "offsets.topic.num.partitions": "3",
}


@pytest.fixture
def cluster(cluster_factory) -> LocalCluster:
    cluster = cluster_factory(3, SETTINGS)
    cluster.start()
    cluster.wait_ready()
    return cluster


class MemberProcess:
    """`raftka consume --group` in a child process; its JSON lines are collected."""

    def __init__(self, cluster: LocalCluster, topic: str, group: str) -> None:
        self.records: list[dict] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "raftka",
                "consume",
                topic,
                "--group",
                group,
                "--from-beginning",
                "--json",
                "--bootstrap",
                cluster.bootstrap,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.records.append(json.loads(line))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        if sig in (signal.SIGTERM, signal.SIGKILL):
            self.process.wait(30)


@pytest.fixture
def members():
    started: list[MemberProcess] = []
    yield started
    for member in started:
        if member.process.poll() is None:
            os.kill(member.process.pid, signal.SIGKILL)
            member.process.wait(10)


def describe(cluster: LocalCluster, group: str) -> dict:
    with Admin(cluster.bootstrap) as admin:
        description = admin.groups.describe_group(group)
    return {
        m.member_id: {(t.topic, p) for t in m.assignment for p in t.partitions}
        for m in description.members
    }


def stable_split(cluster: LocalCluster, group: str, members: int, partitions: int) -> dict:
    def balanced() -> dict | None:
        view = describe(cluster, group)
        owned = [tp for tps in view.values() for tp in tps]
        sizes = sorted(len(tps) for tps in view.values())
        fair = [partitions // members] * members
        if len(view) == members and len(owned) == len(set(owned)) == partitions and sizes == fair:
            return view
        return None

    result = wait_for(balanced, 30, f"{members} members to split {partitions} partitions")
    assert isinstance(result, dict)
    return result


def produce_numbers(cluster: LocalCluster, topic: str, start: int, count: int) -> None:
    with Producer(cluster.bootstrap, acks="all") as producer:
        for i in range(start, start + count):
            producer.send(topic, str(i).encode(), key=str(i).encode())
        producer.flush()


def seen_values(processes: list[MemberProcess]) -> set[int]:
    return {int(r["value"]) for member in processes for r in member.records}


def test_members_share_partitions_and_take_over_a_killed_members_share(cluster, members):
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("shared", num_partitions=6)
    members.extend(MemberProcess(cluster, "shared", "g") for _ in range(3))
    split = stable_split(cluster, "g", 3, 6)
    assert all(len(tps) == 2 for tps in split.values())
    produce_numbers(cluster, "shared", 0, 300)
    wait_for(lambda: seen_values(members) >= set(range(300)), 30, "the group to read 300")
    members[0].stop(signal.SIGKILL)
    killed_at = time.monotonic()
    stable_split(cluster, "g", 2, 6)
    assert time.monotonic() - killed_at < 20  # session timeout 3 s, plus reconciliation
    produce_numbers(cluster, "shared", 300, 300)
    wait_for(
        lambda: seen_values(members) >= set(range(600)),
        30,
        "the surviving members to read every record",
    )


def test_two_groups_each_read_everything(cluster, members):
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("fanout", num_partitions=3)
    produce_numbers(cluster, "fanout", 0, 200)
    first = [MemberProcess(cluster, "fanout", "alpha") for _ in range(2)]
    second = [MemberProcess(cluster, "fanout", "beta")]
    members.extend(first + second)
    wait_for(lambda: seen_values(first) >= set(range(200)), 30, "group alpha")
    wait_for(lambda: seen_values(second) >= set(range(200)), 30, "group beta")
    assert len([r for m in second for r in m.records]) == 200


def test_a_restarted_consumer_resumes_from_its_committed_offset(cluster):
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("resume", num_partitions=1)
    produce_numbers(cluster, "resume", 0, 100)
    consumer = Consumer(
        "resume",
        bootstrap_servers=cluster.bootstrap,
        group_id="r",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=40,
    )
    got: list[int] = []
    while len(got) < 40:
        for records in consumer.poll(timeout_ms=1000).values():
            got.extend(int(r.value) for r in records)
    consumer.commit()
    assert consumer.committed(TopicPartition("resume", 0)) == 40
    consumer.close()
    again = Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest")
    again.subscribe(["resume"], group_id="r")  # the subscribe(topics, group_id)
    rest: list[int] = []
    deadline = time.monotonic() + 20
    while len(rest) < 60 and time.monotonic() < deadline:
        for records in again.poll(timeout_ms=1000).values():
            rest.extend(int(r.value) for r in records)
    again.close()
    assert got[:40] == list(range(40)) and rest == list(range(40, 100))


def test_killing_the_coordinator_loses_no_committed_offset(cluster):
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("durable-offsets", num_partitions=2)
    produce_numbers(cluster, "durable-offsets", 0, 100)
    consumer = Consumer(
        "durable-offsets",
        bootstrap_servers=cluster.bootstrap,
        group_id="d",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    seen: list[int] = []
    while len(seen) < 100:
        for records in consumer.poll(timeout_ms=1000).values():
            seen.extend(int(r.value) for r in records)
    consumer.commit()
    with Admin(cluster.bootstrap) as admin:
        coordinator = admin.groups.describe_group("d").coordinator_id
    cluster.brokers[coordinator].kill()
    produce_numbers(cluster, "durable-offsets", 100, 50)
    more: list[int] = []
    deadline = time.monotonic() + 40
    while len(more) < 50 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            more.extend(int(r.value) for r in records)
    consumer.commit()
    assert sorted(more) == list(range(100, 150))
    consumer.close()
    with Admin(cluster.bootstrap) as admin:
        description = admin.groups.describe_group("d")
        assert description.coordinator_id != coordinator
        committed = {o.partition: o.offset for o in description.offsets}
    ends = {}
    with Consumer(bootstrap_servers=cluster.bootstrap) as probe:
        tps = [TopicPartition("durable-offsets", p) for p in (0, 1)]
        ends = {tp.partition: end for tp, end in probe.end_offsets(tps).items()}
    assert committed == ends


def test_a_member_with_a_stale_epoch_cannot_commit(cluster):
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("fenced", num_partitions=1)
    stub = None
    for broker in cluster.brokers.values():
        channel = grpc.insecure_channel(broker.address)
        found = group_pb2_grpc.GroupServiceStub(channel).FindCoordinator(
            group_pb2.FindCoordinatorRequest(group_id="s"), timeout=10
        )
        if not found.error_code:
            stub = group_pb2_grpc.GroupServiceStub(
                grpc.insecure_channel(f"{found.coordinator.host}:{found.coordinator.port}")
            )
            break
    assert stub is not None

    def heartbeat(**fields) -> group_pb2.ConsumerGroupHeartbeatResponse:
        request = group_pb2.ConsumerGroupHeartbeatRequest(group_id="s", **fields)
        return wait_for(
            lambda: (
                # retriable, as for Kafka clients: loading, or __consumer_offsets just made
                # and not yet known to the coordinator's broker
                (reply := stub.ConsumerGroupHeartbeat(request, timeout=5)).error_code
                not in (Code.COORDINATOR_LOAD_IN_PROGRESS, Code.COORDINATOR_NOT_AVAILABLE)
                and reply
            ),
            20,
            "the coordinator to load",
        )

    joined = heartbeat(member_epoch=0, subscribed_topic_names=["fenced"], has_subscription=True)
    assert joined.error_code == Code.NONE and joined.member_epoch > 0

    def commit(epoch: int, member: str = joined.member_id) -> group_pb2.OffsetCommitResponse:
        return stub.OffsetCommit(
            group_pb2.OffsetCommitRequest(
                group_id="s",
                member_id=member,
                member_epoch=epoch,
                partitions=[group_pb2.OffsetCommitPartition(topic="fenced", partition=0, offset=0)],
            ),
            timeout=10,
        )

    assert commit(joined.member_epoch).error_code == Code.NONE
    assert commit(joined.member_epoch + 7).error_code == Code.FENCED_MEMBER_EPOCH
    assert commit(1, member="zombie").error_code == Code.UNKNOWN_MEMBER_ID
    admin_reset = commit(-1, member="")
    assert admin_reset.error_code == Code.NON_EMPTY_GROUP


def test_a_paused_member_is_fenced_not_left_owning_partitions(cluster, members):
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("slow", num_partitions=4)
    members.extend(MemberProcess(cluster, "slow", "p") for _ in range(2))
    stable_split(cluster, "p", 2, 4)
    members[0].stop(signal.SIGSTOP)
    try:
        only = stable_split(cluster, "p", 1, 4)
        assert len(only) == 1
    finally:
        members[0].stop(signal.SIGCONT)
    produce_numbers(cluster, "slow", 0, 100)
    wait_for(lambda: seen_values(members) >= set(range(100)), 30, "every record")
    stable_split(cluster, "p", 2, 4)  # the woken member rejoins and gets a share again


def test_groups_cli_describe_reset_and_delete(cluster, members):
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("cli-groups", num_partitions=2)
    produce_numbers(cluster, "cli-groups", 0, 40)
    member = MemberProcess(cluster, "cli-groups", "ops")
    members.append(member)
    wait_for(lambda: len(member.records) >= 40, 30, "the member to read")

    def raftka(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "raftka", *args, "--bootstrap", cluster.bootstrap],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )

    def described() -> dict:
        result = raftka("groups", "describe", "ops", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    data = wait_for(
        lambda: (d := described())["offsets"] and all(o["lag"] == 0 for o in d["offsets"]) and d,
        30,
        "lag 0",
    )
    assert {a["partition"] for m in data["members"] for a in m["assignment"]} == {0, 1}
    assert {o["end"] for o in data["offsets"]} <= {o["committed"] for o in data["offsets"]}
    busy = raftka("groups", "reset-offsets", "ops", "--topic", "cli-groups", "--to-earliest")
    assert busy.returncode == 1 and "NON_EMPTY_GROUP" in busy.stderr
    member.stop()  # SIGTERM: the CLI commits and leaves the group at once
    assert member.process.returncode == 0
    assert not described()["members"]
    assert (
        raftka(
            "groups", "reset-offsets", "ops", "--topic", "cli-groups", "--to-earliest"
        ).returncode
        == 0
    )
    assert all(o["committed"] == 0 for o in described()["offsets"])
    listed = json.loads(raftka("groups", "list", "--json").stdout)
    assert "ops" in [g["group_id"] for g in listed]
    assert raftka("groups", "delete", "ops").returncode == 0
    assert "ops" not in [
        g["group_id"] for g in json.loads(raftka("groups", "list", "--json").stdout)
    ]


def test_offsets_log_stays_small_and_forgets_deleted_topics(cluster_factory):
    from raftka.broker.groups.offsets_log import partition_for_group

    cluster = cluster_factory(
        3,
        {**SETTINGS, "offsets.snapshot.every.records": "20", "offsets.topic.segment.bytes": "1024"},
    )
    cluster.start()
    cluster.wait_ready()
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("busy", num_partitions=1)
        admin.create_topic("doomed-topic", num_partitions=1)
    produce_numbers(cluster, "busy", 0, 200)
    produce_numbers(cluster, "doomed-topic", 0, 10)
    revoked: list = []
    assigned: list = []
    consumer = Consumer(
        bootstrap_servers=cluster.bootstrap,
        group_id="trim",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=2,
        on_assign=assigned.extend,
        on_revoke=revoked.extend,
    )
    consumer.subscribe(["busy", "doomed-topic"])
    read = 0
    while read < 210:  # a commit every 2 records: ~100 records in __consumer_offsets
        for records in consumer.poll(timeout_ms=1000).values():
            read += len(records)
        consumer.commit()
    assert sorted(assigned) == [("busy", 0), ("doomed-topic", 0)]
    index = partition_for_group("trim", 3)
    directories = [
        b.data_dir / "logs" / f"__consumer_offsets-{index}" for b in cluster.brokers.values()
    ]

    def trimmed() -> bool:
        # Each broker writes a moved log start offset to its log directory's checkpoint
        # at once (broker/log/dir_checkpoints.py).
        starts = [
            (read_offsets(str(d.parent / LOG_START_FILE)) or {}).get(
                ("__consumer_offsets", index), 0)
            for d in directories
        ]
        segments = [len(list(d.glob("*.log"))) for d in directories]
        return min(starts) > 50 and max(segments) < 30

    wait_for(trimmed, 20, "every replica to drop the log before the latest snapshot")
    with Admin(cluster.bootstrap) as admin:
        admin.delete_topic("doomed-topic")
        wait_for(
            lambda: {o.topic for o in admin.groups.describe_group("trim").offsets} == {"busy"},
            20,
            "offsets of the deleted topic to be gone",
        )
    wait_for(
        lambda: consumer.poll(timeout_ms=200) is not None and ("doomed-topic", 0) in revoked,
        20,
        "the deleted topic's partition revoked",
    )
    consumer.close()
    with Admin(cluster.bootstrap) as admin:
        committed = {
            (o.topic, o.partition): o.offset for o in admin.groups.describe_group("trim").offsets
        }
    assert committed == {("busy", 0): 200}
