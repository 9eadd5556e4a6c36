"""The replication stream (broker/replication/stream_*.py) with real broker processes: what
followers copy over it is byte for byte the leader's log, a follower that fell behind
catches up, a leader's kill -9 loses no acked record, a connection without the cluster
secret changes nothing, and brokers on the gRPC transport replicate with the others."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import time
from pathlib import Path

import pytest

from raftka import Admin, Producer
from raftka.broker.replication import stream_wire as wire
from raftka.proto.raftka.v1 import broker_pb2
from tests.harness import TLS_MODE_ENV, LocalCluster, wait_for
from tests.integration.test_metrics import scrape, value
from tests.integration.test_replication import (
    NumberedProducer,
    partition_state,
    read_partition,
    start_cluster,
    wait_isr,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STREAM_FETCHES = "kafka_network_requestmetrics_requests_total"


def stored_log(cluster: LocalCluster, broker_id: int, topic: str, partition: int = 0) -> bytes:
    """The partition's segment files on broker `broker_id`'s disk, concatenated in order."""
    folder = cluster.brokers[broker_id].data_dir / "logs" / f"{topic}-{partition}"
    return b"".join(path.read_bytes() for path in sorted(Path(folder).glob("*.log")))


def wait_identical(cluster: LocalCluster, topic: str, partition: int = 0,
                   ids: tuple[int, ...] = (1, 2, 3)) -> bytes:
    """Until every listed broker stores the same bytes for the partition (and some)."""
    def same() -> bytes | None:
        logs = {stored_log(cluster, i, topic, partition) for i in ids}
        return logs.pop() if len(logs) == 1 and logs != {b""} else None

    found = wait_for(same, 30, f"{topic}-{partition} to be byte-identical on {ids}")
    assert isinstance(found, bytes)
    return found


def stream_fetches(cluster: LocalCluster, broker_id: int) -> float:
    samples = scrape(cluster.brokers[broker_id].metrics_port)
    return value(samples, STREAM_FETCHES, request="Fetch", protocol="replication", error="NONE")


def produce(bootstrap: str, topic: str, count: int, size: int = 200, partitions: int = 1) -> None:
    with Producer(bootstrap, acks="all", linger_ms=5) as producer:
        futures = [producer.send(topic, os.urandom(size), key=str(i).encode(),
                                 partition=i % partitions) for i in range(count)]
        for future in futures:
            future.get(30)


def test_acked_records_are_byte_identical_on_every_replica(cluster_factory):
    cluster = start_cluster(cluster_factory)
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("copies", 1, 3)
    wait_isr(cluster, "copies", {1, 2, 3})
    # Large and small batches: big slices go by sendfile, small ones are copied inline.
    produce(cluster.bootstrap, "copies", 300, size=50)
    produce(cluster.bootstrap, "copies", 200, size=20_000)
    data = wait_identical(cluster, "copies")
    assert len(data) > 200 * 20_000
    leader = partition_state(cluster, "copies").leader_id
    assert stream_fetches(cluster, leader) > 0, "the followers did not fetch over the stream"


def test_a_follower_that_fell_behind_catches_up(cluster_factory):
    cluster = start_cluster(cluster_factory)
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("behind", 1, 3)
    wait_isr(cluster, "behind", {1, 2, 3})
    leader = partition_state(cluster, "behind").leader_id
    follower = next(i for i in cluster.brokers if i != leader)
    cluster.brokers[follower].stop()
    produce(",".join(b.address for i, b in cluster.brokers.items() if i != follower),
            "behind", 400, size=5_000)
    cluster.brokers[follower].start()
    cluster.wait_ready()
    wait_identical(cluster, "behind")
    wait_isr(cluster, "behind", {1, 2, 3})


def test_a_killed_leader_loses_no_acked_record(cluster_factory):
    cluster = start_cluster(cluster_factory)
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("kill", 1, 3)
    wait_isr(cluster, "kill", {1, 2, 3})
    producer = NumberedProducer(cluster.bootstrap, "kill").start()
    wait_for(lambda: len(producer.acked) > 300, 30, "records to be acked")
    leader = partition_state(cluster, "kill").leader_id
    cluster.brokers[leader].kill()
    wait_for(lambda: partition_state(cluster, "kill").leader_id not in (leader, -1), 30,
             "a new leader")
    acked_then = len(producer.acked)
    wait_for(lambda: len(producer.acked) > acked_then + 300, 30, "acks from the new leader")
    producer.stop()
    survivors = ",".join(b.address for i, b in cluster.brokers.items() if i != leader)
    stored = read_partition(survivors, "kill")
    assert set(producer.acked) <= set(stored), "an acked record was lost"
    assert len(stored) == len(set(stored)), "a record was stored twice"


def _read_until_closed(sock: socket.socket) -> tuple[bytes, bool]:
    """What the peer sends until it closes; (received, False) if it stays open 5 s."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return received, False
        except (ConnectionResetError, ssl.SSLError):
            return received, True
        if not chunk:
            return received, True
        received += chunk


def _connect(port: int, tls: bool | None = None) -> socket.socket:
    """A connection to a replication listener; TLS (with the harness's client certificate)
    when the cluster runs so (RAFTKA_TEST_TLS=1), unless `tls` says otherwise."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if tls is None:
        tls = os.environ.get(TLS_MODE_ENV) == "1"
    if not tls:
        return sock
    context = ssl.create_default_context(cafile=os.environ["RAFTKA_TLS_CA"])
    context.load_cert_chain(os.environ["RAFTKA_TLS_CERT"], os.environ["RAFTKA_TLS_KEY"])
    return context.wrap_socket(sock, server_hostname="127.0.0.1")


def _talk(port: int, data: bytes, tls: bool | None = None) -> tuple[bytes, bool]:
    """Send `data` on a fresh connection; what came back and whether the peer closed."""
    with _connect(port, tls) as sock:
        sock.sendall(data)
        return _read_until_closed(sock)


def _end_offset(cluster: LocalCluster, topic: str) -> int:
    return int(partition_state(cluster, topic).high_watermark)


def test_a_connection_without_the_secret_is_refused_and_changes_nothing(cluster_factory):
    cluster = start_cluster(cluster_factory, **{"replica.lag.time.max.ms": "30000"})
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("guarded", 1, 3)
    wait_isr(cluster, "guarded", {1, 2, 3})
    produce(cluster.bootstrap, "guarded", 50)
    state = partition_state(cluster, "guarded")
    leader = state.leader_id
    follower = next(i for i in state.isr if i != leader)
    port = cluster.brokers[leader].replication_port
    before = partition_state(cluster, "guarded")

    high_watermark = _end_offset(cluster, "guarded")

    # A bogus proof: the leader answers REFUSED and closes; a fetch sent after it (which
    # would report the follower back at offset 0) is never read.
    fetch = broker_pb2.FetchRequest(
        replica_id=follower, replica_broker_epoch=1 << 40, max_wait_ms=0, min_bytes=1,
        max_bytes=1 << 20,
        partitions=[broker_pb2.FetchPartition(topic="guarded", partition=0, fetch_offset=0,
                                              partition_max_bytes=1 << 20,
                                              current_leader_epoch=before.leader_epoch,
                                              last_fetched_epoch=-1)])
    with _connect(port) as sock:
        sock.sendall(wire.hello(follower, os.urandom(wire.NONCE_BYTES)))
        challenge = b""
        while len(challenge) < wire.CHALLENGE.size:
            challenge += sock.recv(wire.CHALLENGE.size - len(challenge))
        assert wire.parse_challenge(challenge)
        sock.sendall(os.urandom(wire.PROOF_BYTES))
        verdict, closed = _read_until_closed(sock)
        assert verdict == struct.pack(">B", wire.REFUSED) and closed
        with contextlib.suppress(OSError):
            sock.sendall(wire.request_frame(fetch.SerializeToString()))
            assert sock.recv(1) == b""

    # Garbage instead of a handshake: closed, nothing answered.
    received, closed = _talk(port, b"GET / HTTP/1.1\r\n".ljust(wire.HELLO.size, b"x"))
    assert closed and received == b""
    time.sleep(1.0)
    after = partition_state(cluster, "guarded")
    assert (after.isr, after.leader_id, after.leader_epoch) == (
        before.isr, before.leader_id, before.leader_epoch)
    assert _end_offset(cluster, "guarded") == high_watermark
    log = cluster.brokers[leader].log_text()
    assert "without valid cluster credentials" in log
    assert "not a replication handshake" in log
    # The real followers are unaffected: they still stream and keep up.
    produce(cluster.bootstrap, "guarded", 50)
    wait_identical(cluster, "guarded")


def test_brokers_on_the_grpc_transport_replicate_with_the_others(cluster_factory):
    cluster = cluster_factory(3, {
        "default.replication.factor": "3", "min.insync.replicas": "2",
        "leader.imbalance.check.interval.ms": "1000"})
    cluster.brokers[3].settings = {**cluster.brokers[3].settings,
                                   "replication.transport": "grpc"}
    cluster.start()
    cluster.wait_ready()
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("mixed", 3, 3)
    for partition in range(3):
        wait_isr(cluster, "mixed", {1, 2, 3}, partition)
    produce(cluster.bootstrap, "mixed", 600, size=3_000, partitions=3)
    for partition in range(3):
        wait_identical(cluster, "mixed", partition)
    leaders = {partition_state(cluster, "mixed", p).leader_id for p in range(3)}
    streaming_leaders = leaders - {3}
    assert streaming_leaders, "no partition is led by a stream broker"
    assert all(stream_fetches(cluster, i) > 0 for i in streaming_leaders)
    assert stream_fetches(cluster, 3) == 0, "broker 3 runs no replication listener"
    assert "replication listener" not in cluster.brokers[3].log_text()


def test_over_tls_the_stream_replicates_and_a_plaintext_peer_gets_nothing(
        cluster_factory, tmp_path, monkeypatch):
    from tests.tls_harness import client_options, secure

    cluster = cluster_factory(3, {"default.replication.factor": "3",
                                  "min.insync.replicas": "2"})
    ca = secure(cluster, tmp_path / "tls", client_auth="required")
    cluster.start()
    cluster.wait_ready(timeout_s=60)
    for key, setting in client_options(ca).environment().items():
        monkeypatch.setenv(key, setting)  # the SDK here, and partition_state's, use TLS
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("sealed", 1, 3)
    wait_isr(cluster, "sealed", {1, 2, 3})
    with Producer(cluster.bootstrap, acks="all", linger_ms=5) as producer:
        for _ in range(200):
            producer.send("sealed", os.urandom(10_000), partition=0)
        producer.flush()
    wait_identical(cluster, "sealed")
    leader = partition_state(cluster, "sealed").leader_id
    assert stream_fetches(cluster, leader) > 0
    # A plaintext handshake on the TLS port: no challenge comes back.
    received, closed = _talk(cluster.brokers[leader].replication_port,
                             wire.hello(2, os.urandom(wire.NONCE_BYTES)), tls=False)
    assert closed and not received.startswith(wire.MAGIC)


def test_a_broker_whose_default_replication_port_is_taken_serves_over_grpc(cluster_factory):
    """A configuration from before the listener (its EXTERNAL Kafka listener at gRPC + 4)."""
    cluster = cluster_factory(3, {"default.replication.factor": "3",
                                  "min.insync.replicas": "2"})
    broker = cluster.brokers[2]
    protocol = "SSL" if os.environ.get(TLS_MODE_ENV) == "1" else "PLAINTEXT"
    broker.settings = {
        **broker.settings,
        "listeners": f"{protocol}://127.0.0.1:{broker.kafka_port},"
                     f"EXTERNAL://127.0.0.1:{broker.replication_port}",
        "listener.security.protocol.map": f"EXTERNAL:{protocol},{protocol}:{protocol}",
    }
    cluster.start()
    cluster.wait_ready()
    assert "no replication listener: its default address" in broker.log_text()
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("yielding", 3, 3)
    for partition in range(3):
        wait_isr(cluster, "yielding", {1, 2, 3}, partition)
    produce(cluster.bootstrap, "yielding", 300, size=3_000, partitions=3)
    for partition in range(3):
        wait_identical(cluster, "yielding", partition)
    assert stream_fetches(cluster, 2) == 0


def checkpointed_high_watermarks(cluster: LocalCluster, broker_id: int,
                                 topic: str) -> dict[int, int]:
    """The high watermarks broker `broker_id` last wrote for `topic` (Kafka's
    replication-offset-checkpoint: version, count, then "topic partition offset" lines)."""
    path = cluster.brokers[broker_id].data_dir / "logs" / "replication-offset-checkpoint"
    try:
        lines = path.read_text().splitlines()[2:]
    except OSError:
        return {}
    found = {}
    for line in lines:
        name, partition, offset = line.split()
        if name == topic:
            found[int(partition)] = int(offset)
    return found


def test_every_replica_learns_the_final_high_watermark_of_quiet_partitions(cluster_factory):
    """With fetch sessions the leader tells a follower a partition's high watermark only
    when it changed since it last told it; once writes stop, every follower must still end
    up with the last one (a lost answer would leave it behind for good)."""
    cluster = start_cluster(cluster_factory)
    partitions = 6
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("quiet-hw", partitions, 3)
    for index in range(partitions):
        wait_isr(cluster, "quiet-hw", {1, 2, 3}, partition=index)
    produce(cluster.bootstrap, "quiet-hw", 600, size=50, partitions=partitions)
    expected = {index: 100 for index in range(partitions)}
    wait_for(lambda: all(checkpointed_high_watermarks(cluster, broker_id, "quiet-hw")
                         == expected for broker_id in cluster.brokers),
             40, "every broker's checkpoint to hold the final high watermarks")
