"""Cluster authentication with real broker processes: a stranger's pickle runs on no port,
pysyncobj's utility commands are not served, internal RPCs need the cluster's credentials, a
broker with another secret cannot join, listeners stay on 127.0.0.1, and a broker refuses to
run a multi-voter cluster without a secret."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pickle
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pysyncobj.encryptor import getEncryptor
from pysyncobj.utility import TcpUtility, UtilityException

from raftka import Admin, Producer
from raftka.cluster.cluster_auth import AUTH_HEADER, ClusterCredentials, raft_password
from raftka.proto.raftka.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    broker_pb2,
    broker_pb2_grpc,
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
)
from tests.harness import (
    PORTS_PER_BROKER,
    LocalCluster,
    free_port_block,
    wait_for,
    write_secret_file,
)

pytestmark = pytest.mark.integration
Code = common_pb2.ErrorCode
REPO = Path(__file__).resolve().parents[2]
REJECTED = "rejected a Raft frame"
FORWARDED = "x-raftka-forwarded"
CREATE_TOPICS = "/raftka.v1.AdminService/CreateTopics"
DELETE_TOPICS = "/raftka.v1.AdminService/DeleteTopics"
FETCH = "/raftka.v1.BrokerService/Fetch"


def controller_method(name: str) -> str:
    return f"/raftka.v1.ControllerService/{name}"


def three_nodes(cluster_factory, settings: dict[str, str] | None = None) -> LocalCluster:
    cluster = cluster_factory(3, {"default.replication.factor": "3", **(settings or {})})
    cluster.start()
    cluster.wait_ready()
    return cluster


def unfenced(cluster: LocalCluster, via: int | None = None) -> set[int]:
    return {b.endpoint.broker_id for b in cluster.describe(via=via).brokers if not b.fenced}


def secret_of(cluster: LocalCluster) -> bytes:
    """The secret as the brokers use it (surrounding whitespace stripped)."""
    return cluster.secret_file.read_bytes().strip()


def describe_partition(cluster: LocalCluster, topic: str) -> admin_pb2.PartitionDescription:
    with Admin(cluster.bootstrap, request_timeout_ms=10_000) as admin:
        return admin.describe_topic(topic).partitions[0]


def wait_isr(cluster: LocalCluster, topic: str, members: set[int]) -> None:
    wait_for(
        lambda: set(describe_partition(cluster, topic).isr) == members,
        30,
        f"ISR of {topic}-0 to be {sorted(members)}",
    )


def topic_names(cluster: LocalCluster, via: int) -> set[str]:
    with grpc.insecure_channel(cluster.brokers[via].address) as channel:
        reply = admin_pb2_grpc.AdminServiceStub(channel).ListTopics(
            admin_pb2.ListTopicsRequest(include_internal=True), timeout=5
        )
    return {t.name for t in reply.topics}


def serving_on(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="raftka.v1.BrokerService"), timeout=3
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def produce_all(cluster: LocalCluster, topic: str, count: int) -> None:
    with Producer(cluster.bootstrap, acks="all", request_timeout_ms=10_000) as producer:
        futures = [producer.send(topic, f"v{i}".encode(), partition=0) for i in range(count)]
        producer.flush(30)
    for future in futures:
        future.get(10)


# ------------------------------------------------------------------ the pickle payload
class _RunsCommand:
    """Unpickling this runs a shell command: what a stranger would send pysyncobj, which used
    to unpickle every frame on its port."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def pickle_body(marker: Path) -> bytes:
    return zlib.compress(pickle.dumps(_RunsCommand(f"touch {marker}")))


def frame(body: bytes) -> bytes:
    """One frame as pysyncobj's TcpConnection reads it: native-endian int length, then data."""
    return struct.pack("i", len(body)) + body


def open_and_send(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(data)
    return sock


def closed_by_peer(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the other side closes the connection within `timeout_s` (what it sends first
    is read and dropped)."""
    deadline = time.monotonic() + timeout_s
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65_536):
                return True
    except TimeoutError:
        return False
    except OSError:  # reset
        return True
    finally:
        sock.close()
    return False


def separate_ports(cluster: LocalCluster, count: int) -> int:
    """A block of free ports that overlaps none of the cluster's own."""
    taken = {b.port + i for b in cluster.brokers.values() for i in range(PORTS_PER_BROKER)}
    for _ in range(50):
        base = free_port_block(count)
        if taken.isdisjoint(range(base, base + count)):
            return base
    raise RuntimeError("no separate port block found")


def test_a_pickled_command_sent_to_any_port_runs_nothing(cluster_factory, tmp_path):
    cluster = cluster_factory(3, {"default.replication.factor": "3"})
    extra_base = separate_ports(cluster, 3)
    extra_ports = {}
    for broker_id, broker in cluster.brokers.items():
        extra_ports[broker_id] = extra_base + broker_id - 1
        broker.settings = {
            **broker.settings,
            "grpc.listeners": f"EXTERNAL://127.0.0.1:{extra_ports[broker_id]}",
            "listener.security.protocol.map": "EXTERNAL:PLAINTEXT",
        }
    cluster.start()
    cluster.wait_ready()
    assert all(serving_on(f"127.0.0.1:{port}") for port in extra_ports.values())

    # The payload is live: unpickled, it runs its command (here, in the test process).
    control = tmp_path / "control-marker"
    pickle.loads(zlib.decompress(frame(pickle_body(control))[4:]))
    assert control.exists()

    markers = tmp_path / "markers"
    markers.mkdir()
    wrong_fernet = getEncryptor(raft_password(b"another cluster's secret!"))
    sent: dict[tuple[int, str], socket.socket] = {}
    for broker_id, broker in cluster.brokers.items():
        ports = {
            "raft": broker.raft_port,
            "grpc": broker.port,
            "kafka": broker.kafka_port,
            "grpc-extra": extra_ports[broker_id],
            "replication": broker.replication_port,
        }
        for name, port in ports.items():
            body = pickle_body(markers / f"ran-{broker_id}-{name}")
            sent[broker_id, name] = open_and_send(port, frame(body))
        # As a broker with another secret would send it: a Fernet token under the wrong key.
        body = pickle_body(markers / f"ran-{broker_id}-raft-wrong-key")
        token = wrong_fernet.encrypt_at_time(body, int(time.monotonic()))
        sent[broker_id, "raft-wrong-key"] = open_and_send(broker.raft_port, frame(token))

    for (broker_id, name), sock in sent.items():
        closed = closed_by_peer(sock, 3)
        if name.startswith("raft") or name == "replication":
            assert closed, f"broker {broker_id} kept the connection of a forged {name} frame open"
    time.sleep(0.5)  # anything that ran would have touched its marker by now

    assert sorted(p.name for p in markers.iterdir()) == []
    for broker_id, broker in cluster.brokers.items():
        assert broker.running, f"broker {broker_id} exited:\n{broker.log_text()[-3000:]}"
        assert REJECTED in broker.log_text(), f"broker {broker_id} logged no rejected frame"
    cluster.wait_ready(timeout_s=15)
    assert cluster.describe().controller_id in (1, 2, 3)
    assert all(serving_on(f"127.0.0.1:{port}") for port in extra_ports.values())
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("after-pickles", num_partitions=1, replication_factor=3)
    produce_all(cluster, "after-pickles", 5)
    assert describe_partition(cluster, "after-pickles").high_watermark == 5


# ------------------------------------------------------------- pysyncobj's utility
def run_utility(password: str | None, address: str, command: list[str]) -> tuple[object, float]:
    """(reply or the exception raised, seconds taken) of one pysyncobj utility command."""
    utility = TcpUtility(password, timeout=3)  # derives the Fernet key: slow, not timed
    started = time.monotonic()
    try:
        outcome: object = utility.executeCommand(address, command)
    except Exception as exc:
        outcome = exc
    return outcome, time.monotonic() - started


def test_pysyncobj_utility_commands_are_not_served(cluster_factory):
    cluster = three_nodes(cluster_factory)
    before = cluster.describe()
    leader = before.controller_id
    follower = next(i for i in (1, 2, 3) if i != leader)
    raft = {i: f"127.0.0.1:{b.raft_port}" for i, b in cluster.brokers.items()}
    commands = [
        ["remove", raft[follower]],
        ["transfer", raft[follower]],
        ["set_version", "1"],
        ["add", "127.0.0.1:1"],
        ["status"],
    ]
    passwords = {
        "none": None,
        "wrong": "not-the-cluster-password",
        "right": raft_password(secret_of(cluster)),
    }
    runs = [
        (label, target, command)
        for label in passwords
        for target in (leader, follower)
        for command in commands
    ]
    outcomes: dict[int, tuple[object, float]] = {}

    def run(index: int, label: str, target: int, command: list[str]) -> None:
        outcomes[index] = run_utility(passwords[label], raft[target], list(command))

    threads = [
        threading.Thread(target=run, args=(i, *spec), daemon=True) for i, spec in enumerate(runs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert len(outcomes) == len(runs)

    for index, (label, target, command) in enumerate(runs):
        outcome, took = outcomes[index]
        what = f"{command} to broker {target} with the {label} password"
        # Served, 'status' answers a dict and the others 'SUCCESS ...' / 'FAIL ...' / an error
        # text; not served, the utility gets no reply at all.
        assert isinstance(outcome, UtilityException), f"{what} was answered: {outcome!r}"
        if label != "right":  # refused at the first frame, not after the utility's timeout
            assert took < 2.5, f"{what} took {took:.1f}s"

    time.sleep(1)  # a transfer or removal, had one been done, would show by now
    after = cluster.describe()
    assert after.controller_id == leader
    assert {(b.endpoint.broker_id, b.incarnation_id, b.voter, b.fenced) for b in after.brokers} == {
        (b.endpoint.broker_id, b.incarnation_id, b.voter, b.fenced) for b in before.brokers
    }
    assert unfenced(cluster) == {1, 2, 3}
    for broker_id, broker in cluster.brokers.items():
        assert broker.running, f"broker {broker_id} exited:\n{broker.log_text()[-3000:]}"
        # A refused command is dropped with its connection, not an error in Raft's loop.
        assert "failed _onTick" not in broker.log_text(), broker.log_text()[-3000:]
    with Admin(cluster.bootstrap, request_timeout_ms=15_000) as admin:
        admin.create_topic("still-three", num_partitions=1, replication_factor=3)
    assert sorted(describe_partition(cluster, "still-three").replicas) == [1, 2, 3]
    wait_isr(cluster, "still-three", {1, 2, 3})


# ------------------------------------------------------------------- internal RPCs
def refused(call: object, request: object, metadata: tuple | None, what: str = "") -> None:
    """Make the call; it must fail with UNAUTHENTICATED (CLUSTER_AUTHORIZATION_FAILED)."""
    try:
        reply = call(request, timeout=10, metadata=metadata)  # type: ignore[operator]
    except grpc.RpcError as error:
        code, details = error.code(), error.details()
        assert code == grpc.StatusCode.UNAUTHENTICATED, (what, code, details)
        assert details.startswith("CLUSTER_AUTHORIZATION_FAILED"), (what, details)
    else:
        raise AssertionError(f"{what} was served: {reply}")


def bad_credentials(cluster: LocalCluster, method: str, broker_id: int) -> dict[str, tuple | None]:
    """Metadata a stranger could send for `method`, each of which must be refused."""
    now = int(time.time() * 1000)
    right = ClusterCredentials(secret_of(cluster))
    wrong = ClusterCredentials(b"x" * 32)
    other_method = controller_method("BrokerHeartbeat")
    if method == other_method:
        other_method = controller_method("AllocateProducerIds")
    return {
        "none": None,
        "wrong secret": ((AUTH_HEADER, wrong.token(method, broker_id, now)),),
        "another method's token": ((AUTH_HEADER, right.token(other_method, broker_id, now)),),
        "ten minutes old": ((AUTH_HEADER, right.token(method, broker_id, now - 600_000)),),
        "ten minutes ahead": ((AUTH_HEADER, right.token(method, broker_id, now + 600_000)),),
        "malformed": ((AUTH_HEADER, f"v1.{broker_id}.{now}.not-a-mac"),),
        "empty": ((AUTH_HEADER, ""),),
    }


def test_internal_rpcs_need_the_cluster_credentials(cluster_factory):
    cluster = three_nodes(cluster_factory)
    with Admin(cluster.bootstrap, request_timeout_ms=15_000) as admin:
        admin.create_topic("guarded", num_partitions=1, replication_factor=3)
    produce_all(cluster, "guarded", 5)
    wait_isr(cluster, "guarded", {1, 2, 3})
    partition = describe_partition(cluster, "guarded")
    leader = partition.leader_id
    victim = next(i for i in (1, 2, 3) if i != leader)
    controller = cluster.describe().controller_id
    before = {b.endpoint.broker_id: b for b in cluster.describe(via=controller).brokers}

    channel = grpc.insecure_channel(cluster.brokers[controller].address)
    stub = controller_pb2_grpc.ControllerServiceStub(channel)

    def epoch_of(broker_id: int) -> int:
        """The broker's epoch, as the controller holds it: re-registering the same
        incarnation (with credentials) changes nothing and answers with it."""
        registered = before[broker_id]
        reply = stub.RegisterBroker(
            controller_pb2.RegisterBrokerRequest(
                broker_id=broker_id,
                incarnation_id=registered.incarnation_id,
                endpoint=registered.endpoint,
                voter=registered.voter,
                pid=registered.pid,
            ),
            timeout=10,
            metadata=cluster.internal_metadata(controller_method("RegisterBroker")),
        )
        assert reply.error_code == Code.NONE, reply.error_message
        return int(reply.broker_epoch)

    epochs = {i: epoch_of(i) for i in (1, 2, 3)}
    # The partition's epochs, from a (credentialed) AlterPartition the controller refuses for
    # a stale broker epoch: so the forged one below is exactly what the leader would send.
    probe = stub.AlterPartition(
        controller_pb2.AlterPartitionRequest(
            broker_id=leader, broker_epoch=-1, topic="guarded", partition=0, new_isr=[leader]
        ),
        timeout=10,
        metadata=cluster.internal_metadata(controller_method("AlterPartition")),
    )
    assert probe.error_code == Code.STALE_BROKER_EPOCH and sorted(probe.isr) == [1, 2, 3]
    offset_before = cluster.describe(via=controller).metadata_offset

    forged = {
        "RegisterBroker": controller_pb2.RegisterBrokerRequest(
            broker_id=victim,
            incarnation_id=uuid.uuid4().hex,
            endpoint=before[victim].endpoint,
            voter=True,
            pid=4242,
        ),
        "BrokerHeartbeat": controller_pb2.BrokerHeartbeatRequest(
            broker_id=victim, broker_epoch=epochs[victim], metadata_offset=10**9
        ),
        "AlterPartition": controller_pb2.AlterPartitionRequest(
            broker_id=leader,
            broker_epoch=epochs[leader],
            topic="guarded",
            partition=0,
            leader_epoch=probe.leader_epoch,
            partition_epoch=probe.partition_epoch,
            new_isr=[leader],
        ),
        "AllocateProducerIds": controller_pb2.AllocateProducerIdsRequest(
            broker_id=leader, broker_epoch=epochs[leader]
        ),
    }
    for name, request in forged.items():
        method = controller_method(name)
        for label, metadata in bad_credentials(cluster, method, victim).items():
            refused(getattr(stub, name), request, metadata, f"{name} with {label} credentials")
    # A broker that is not the controller checks credentials before anything else.
    not_controller = next(i for i in (1, 2, 3) if i != controller)
    with grpc.insecure_channel(cluster.brokers[not_controller].address) as other:
        refused(
            controller_pb2_grpc.ControllerServiceStub(other).RegisterBroker,
            forged["RegisterBroker"],
            None,
            f"RegisterBroker without credentials to broker {not_controller}",
        )

    # Nothing changed: no metadata written, no broker re-registered or fenced, same ISR.
    time.sleep(0.5)
    after = {b.endpoint.broker_id: b for b in cluster.describe(via=controller).brokers}
    assert {i: (b.incarnation_id, b.fenced) for i, b in after.items()} == {
        i: (b.incarnation_id, b.fenced) for i, b in before.items()
    }
    assert cluster.describe(via=controller).metadata_offset == offset_before
    assert {i: epoch_of(i) for i in (1, 2, 3)} == epochs
    assert sorted(describe_partition(cluster, "guarded").isr) == [1, 2, 3]
    assert "refused /raftka.v1.ControllerService/RegisterBroker" in (
        cluster.brokers[controller].log_text()
    )

    # Replica fetches need credentials; a consumer's fetch does not.
    def fetch_request(replica_id: int) -> broker_pb2.FetchRequest:
        return broker_pb2.FetchRequest(
            replica_id=replica_id,
            max_wait_ms=0,
            max_bytes=1 << 20,
            replica_broker_epoch=epochs[victim] if replica_id >= 0 else 0,
            partitions=[
                broker_pb2.FetchPartition(
                    topic="guarded", partition=0, fetch_offset=0,
                    current_leader_epoch=-1, last_fetched_epoch=-1,
                )
            ],
        )

    with grpc.insecure_channel(cluster.brokers[leader].address) as leader_channel:
        broker_stub = broker_pb2_grpc.BrokerServiceStub(leader_channel)
        for label, metadata in bad_credentials(cluster, FETCH, victim).items():
            refused(broker_stub.Fetch, fetch_request(victim), metadata, f"replica Fetch, {label}")
        (fetched,) = broker_stub.Fetch(fetch_request(-1), timeout=10).partitions
        assert fetched.error_code == Code.NONE, fetched.error_message
        assert fetched.high_watermark == 5 and fetched.record_batches

    # Forwarded admin calls (brokers only: they may create internal topics) need them too.
    admin_stub = admin_pb2_grpc.AdminServiceStub(channel)
    create = admin_pb2.CreateTopicsRequest(
        topics=[admin_pb2.NewTopic(name="sneaky", num_partitions=1, replication_factor=3)]
    )
    delete = admin_pb2.DeleteTopicsRequest(names=["guarded"])
    for label, metadata in bad_credentials(cluster, CREATE_TOPICS, 0).items():
        forwarded = (*(metadata or ()), (FORWARDED, "1"))
        refused(admin_stub.CreateTopics, create, forwarded, f"forwarded CreateTopics, {label}")
    for label, metadata in bad_credentials(cluster, DELETE_TOPICS, 0).items():
        forwarded = (*(metadata or ()), (FORWARDED, "1"))
        refused(admin_stub.DeleteTopics, delete, forwarded, f"forwarded DeleteTopics, {label}")
    time.sleep(0.3)
    names = topic_names(cluster, controller)
    assert "sneaky" not in names and "guarded" in names

    # With the cluster's credentials the same calls work: the checks refuse strangers, not
    # everything.
    created = admin_stub.CreateTopics(
        create, timeout=15, metadata=cluster.internal_metadata(CREATE_TOPICS, ((FORWARDED, "1"),))
    )
    assert [t.error_code for t in created.topics] == [Code.NONE], created
    allocated = stub.AllocateProducerIds(
        forged["AllocateProducerIds"],
        timeout=10,
        metadata=cluster.internal_metadata(controller_method("AllocateProducerIds")),
    )
    assert allocated.error_code == Code.NONE and allocated.count > 0
    with grpc.insecure_channel(cluster.brokers[leader].address) as leader_channel:
        replica_fetch = broker_pb2_grpc.BrokerServiceStub(leader_channel).Fetch(
            fetch_request(victim), timeout=10, metadata=cluster.internal_metadata(FETCH, (), victim)
        )
        assert replica_fetch.partitions[0].error_code == Code.NONE
    # The forged AlterPartition was a valid one: with credentials it shrinks the ISR (and the
    # leader lets the followers back in afterwards).
    shrunk = stub.AlterPartition(
        forged["AlterPartition"],
        timeout=10,
        metadata=cluster.internal_metadata(controller_method("AlterPartition"), (), leader),
    )
    assert shrunk.error_code == Code.NONE and list(shrunk.isr) == [leader], shrunk
    channel.close()
    wait_isr(cluster, "guarded", {1, 2, 3})


def test_heartbeats_without_credentials_do_not_keep_a_dead_broker_alive(cluster_factory):
    cluster = three_nodes(cluster_factory)
    controller = cluster.describe().controller_id
    victim = next(i for i in (1, 2, 3) if i != controller)
    registered = {b.endpoint.broker_id: b for b in cluster.describe().brokers}[victim]
    with grpc.insecure_channel(cluster.brokers[controller].address) as channel:
        stub = controller_pb2_grpc.ControllerServiceStub(channel)
        epoch = stub.RegisterBroker(
            controller_pb2.RegisterBrokerRequest(
                broker_id=victim,
                incarnation_id=registered.incarnation_id,
                endpoint=registered.endpoint,
                voter=True,
                pid=registered.pid,
            ),
            timeout=10,
            metadata=cluster.internal_metadata(controller_method("RegisterBroker")),
        ).broker_epoch
        cluster.brokers[victim].kill()
        killed_at = time.monotonic()
        heartbeat = controller_pb2.BrokerHeartbeatRequest(
            broker_id=victim, broker_epoch=epoch, metadata_offset=10**9
        )
        wrong = ClusterCredentials(b"y" * 32)
        while victim in unfenced(cluster, via=controller):
            assert time.monotonic() - killed_at < 10, "the dead broker stayed unfenced"
            now = int(time.time() * 1000)
            token = wrong.token(controller_method("BrokerHeartbeat"), victim, now)
            refused(stub.BrokerHeartbeat, heartbeat, None, "heartbeat without credentials")
            refused(stub.BrokerHeartbeat, heartbeat, ((AUTH_HEADER, token),), "wrong secret")
            time.sleep(0.1)
    assert cluster.describe().controller_id == controller


# ------------------------------------------------------------- another cluster secret
def never(condition: object, seconds: float, interval_s: float = 0.25) -> None:
    """`condition()` stays false for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert not condition(), "the condition became true"  # type: ignore[operator]
        time.sleep(interval_s)


def test_an_observer_with_another_secret_cannot_join(cluster_factory, tmp_path):
    cluster = cluster_factory(4, voter_count=3)
    cluster.start([1, 2, 3])
    cluster.wait_ready([1, 2, 3])
    stranger = cluster.brokers[4]
    stranger.secret_file = write_secret_file(tmp_path / "wrong.secret")
    stranger.start()

    def joined() -> bool:
        return 4 in {b.endpoint.broker_id for b in cluster.describe(via=1).brokers}

    never(joined, 8)
    assert not stranger.serving()
    assert unfenced(cluster, via=1) == {1, 2, 3}
    assert cluster.describe(via=1).controller_id in (1, 2, 3)
    voter_logs = "".join(cluster.brokers[i].log_text() for i in (1, 2, 3))
    assert REJECTED in voter_logs or "refused /raftka.v1.ControllerService" in voter_logs
    with Admin(cluster.brokers[1].address, request_timeout_ms=15_000) as admin:
        admin.create_topic("without-4", num_partitions=1, replication_factor=3)
    assert sorted(describe_partition(cluster, "without-4").replicas) == [1, 2, 3]


def test_a_voter_with_another_secret_cannot_vote_or_register(cluster_factory, tmp_path):
    cluster = cluster_factory(3)
    cluster.brokers[3].secret_file = write_secret_file(tmp_path / "wrong.secret")
    cluster.start()
    cluster.wait_ready([1, 2])
    controller = cluster.describe(via=1).controller_id
    assert controller in (1, 2)

    def joined() -> bool:
        brokers = cluster.describe(via=1).brokers
        return 3 in {b.endpoint.broker_id for b in brokers} or cluster.brokers[3].serving()

    never(joined, 6)
    assert cluster.describe(via=1).controller_id == controller
    assert REJECTED in cluster.brokers[1].log_text() + cluster.brokers[2].log_text()
    # The odd one out says what to check in its own log, too.
    wait_for(lambda: "check that this broker's cluster secret" in cluster.brokers[3].log_text(),
             15, "broker 3's hint about its secret")


# ---------------------------------------------------------------------- listen hosts
def listening_sockets() -> list[tuple[str, int]]:
    """(local address, port) of every listening TCP socket, from ss."""
    output = subprocess.run(
        ["ss", "-ltnH"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    found = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        address, _, port = fields[3].rpartition(":")
        found.append((address, int(port)))
    return found


def listening_sockets_from_proc() -> list[tuple[str, int]]:
    found = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_address, hex_port = fields[1].split(":")
            # Each 32-bit word in host (little-endian) order. Not socket.inet_ntop: importing
            # pysyncobj replaces it with a Windows-only version.
            raw = bytes.fromhex(hex_address)
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            address = str(ipaddress.ip_address(packed))
            found.append((address, int(hex_port, 16)))
    return found


def is_127_0_0_1(address: str) -> bool:
    """gRPC listens on an IPv6 socket for 127.0.0.1 (::ffff:127.0.0.1): the same host."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").partition("%")[0])
    except ValueError:  # "*": every address
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip) == "127.0.0.1"


def test_every_listener_binds_the_configured_host_only(cluster_factory):
    cluster = three_nodes(cluster_factory)
    ports = {
        port: f"broker {i} {name}"
        for i, b in cluster.brokers.items()
        for name, port in (("grpc", b.port), ("raft", b.raft_port), ("kafka", b.kafka_port),
                           ("replication", b.replication_port))
    }
    read = listening_sockets if shutil.which("ss") else listening_sockets_from_proc

    def all_listening() -> list[tuple[str, int]]:
        sockets = [(a, p) for a, p in read() if p in ports]
        return sockets if {p for _, p in sockets} == set(ports) else []

    sockets = wait_for(all_listening, 10, "every broker port to listen")
    assert isinstance(sockets, list)
    wrong = [(ports[p], a) for a, p in sockets if not is_127_0_0_1(a)]
    assert wrong == [], f"bound beyond 127.0.0.1: {wrong}"


# ------------------------------------------------------------------------ start-up
def broker_command(data_dir: Path, base: int, *extra: str, voters: bool = True) -> list[str]:
    command = [
        sys.executable, "-m", "raftka", "broker", "--id", "1", "--data-dir", str(data_dir),
        "--listen", f"127.0.0.1:{base}", "--raft-listen", f"127.0.0.1:{base + 1}",
        "--kafka-port", str(base + 2),
    ]
    if voters:
        # Voter 2 past the broker's own ports (gRPC, Raft, Kafka, -, replication at +4).
        command += ["--voters", f"1@127.0.0.1:{base + 1},2@127.0.0.1:{base + 5}"]
    return command + list(extra)


def env_without_secret() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAFTKA_CLUSTER_SECRET", None)
    env.pop("RAFTKA_CLUSTER_SECRET_FILE", None)
    return env


def run_to_exit(
    command: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=REPO, env=env or env_without_secret(), capture_output=True, text=True,
        timeout=60,
    )


class Started:
    """A broker process run by the test itself, killed by PID when done."""

    def __init__(self, command: list[str], log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=env_without_secret(), stdout=log, stderr=subprocess.STDOUT
            )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def test_a_cluster_broker_without_a_secret_refuses_to_start(tmp_path):
    result = run_to_exit(broker_command(tmp_path / "data", free_port_block(6)))
    assert result.returncode == 2, result.stderr
    assert "cluster secret" in result.stderr


def test_secrets_too_short_or_missing_are_refused(tmp_path):
    short = write_secret_file(tmp_path / "short.secret", "tooshort")
    base = free_port_block(6)
    result = run_to_exit(broker_command(tmp_path / "a", base, "--cluster-secret-file", str(short)))
    assert result.returncode == 2, result.stderr
    assert "at least 16" in result.stderr and str(short) in result.stderr
    result = run_to_exit(
        broker_command(tmp_path / "b", base),
        {**env_without_secret(), "RAFTKA_CLUSTER_SECRET": "  short  "},
    )
    assert result.returncode == 2 and "at least 16" in result.stderr, result.stderr
    missing = tmp_path / "missing.secret"
    result = run_to_exit(
        broker_command(tmp_path / "c", base),
        {**env_without_secret(), "RAFTKA_CLUSTER_SECRET_FILE": str(missing)},
    )
    assert result.returncode == 2 and "does not exist" in result.stderr, result.stderr


def test_allow_no_cluster_secret_starts_with_a_warning(tmp_path):
    base = free_port_block(6)
    broker = Started(
        broker_command(tmp_path / "data", base, "--allow-no-cluster-secret"),
        tmp_path / "broker.log",
    )
    try:
        wait_for(
            lambda: "WITHOUT a cluster secret" in broker.log_text()
            or broker.process.poll() is not None,
            30,
            "the warning",
        )
        time.sleep(0.5)
        assert broker.process.poll() is None, broker.log_text()
        warnings = [line for line in broker.log_text().splitlines() if "WARNING" in line]
        assert any("WITHOUT a cluster secret" in line for line in warnings), broker.log_text()

        # The warning is true, and the payload the other tests send is live: without a
        # secret, pysyncobj unpickles it and runs its command.
        marker = tmp_path / "ran-without-a-secret"

        def ran() -> bool:
            with contextlib.suppress(OSError):
                closed_by_peer(open_and_send(base + 1, frame(pickle_body(marker))), 1)
            return marker.exists()

        wait_for(ran, 15, "the pickled command to run", interval_s=0.2)
    finally:
        broker.kill()


def test_a_lone_broker_makes_its_own_secret(tmp_path):
    data = tmp_path / "data"
    base = free_port_block(3)
    secret = data / "cluster.secret"
    for run in range(2):  # the second start keeps the secret the first one made
        broker = Started(broker_command(data, base, voters=False), tmp_path / f"broker-{run}.log")
        try:
            wait_for(
                lambda b=broker: b.process.poll() is None and serving_on(f"127.0.0.1:{base}"),
                30,
                "the lone broker to serve",
            )
            assert secret.exists()
            assert secret.stat().st_mode & 0o777 == 0o600
            if run == 0:
                made = secret.read_bytes()
                assert len(made.strip()) >= 32
            else:
                assert secret.read_bytes() == made
        finally:
            broker.kill()
