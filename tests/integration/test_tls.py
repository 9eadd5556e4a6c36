"""TLS with real broker processes: a 3-broker cluster serving TLS on its gRPC and Kafka
listeners and replicating over TLS; the SDK, confluent-kafka and kafka-python over SSL (with
and without a client certificate); a plaintext client and a client trusting another CA are
refused with a clear error; mutual TLS required refuses a client without a certificate; a
broker whose key is not its certificate's does not start."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest

from raftka import Admin, Consumer, Producer
from raftka.client.consumer import TopicPartition
from raftka.client.errors import RaftkaError
from raftka.client.local_ca import LocalCa, write_local_ca
from raftka.client.tls_options import TlsOptions
from tests.harness import LocalCluster, wait_for
from tests.tls_harness import client_options, secure

pytestmark = pytest.mark.integration
SETTINGS = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "300",
    "replica.lag.time.max.ms": "4000",
}


class Secured:
    def __init__(self, cluster: LocalCluster, ca: LocalCa) -> None:
        self.cluster = cluster
        self.ca = ca
        self.tls = client_options(ca)  # with the client certificate
        self.trust = TlsOptions(ca.ca)  # the CA only


@pytest.fixture(scope="module")
def secured(tmp_path_factory) -> Secured:
    """Three brokers; client certificates requested (Kafka) but not required."""
    root = tmp_path_factory.mktemp("tls-cluster")
    cluster = LocalCluster(root, 3, SETTINGS)
    ca = secure(cluster, root, client_auth="requested")
    cluster.start()
    try:
        cluster.wait_ready(timeout_s=60)
        yield Secured(cluster, ca)
    finally:
        cluster.stop_all()


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory) -> LocalCa:
    return write_local_ca(str(tmp_path_factory.mktemp("other-ca")), {1: "127.0.0.1"})


def isr_of(admin: Admin, topic: str, partition: int = 0) -> tuple[int, set[int]]:
    state = admin.describe_topic(topic).partitions[partition]
    return state.leader_id, set(state.isr)


def read_values(bootstrap: str, tls: TlsOptions, topic: str, count: int) -> list[bytes]:
    consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", tls=tls,
                        request_timeout_ms=10_000)
    consumer.assign([TopicPartition(topic, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(values) < count and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            values.extend(r.value for r in records)
    consumer.close()
    return values


def test_sdk_over_tls_replicates_over_tls_and_survives_a_leader_kill(secured):
    cluster, tls = secured.cluster, secured.trust
    with Admin(cluster.bootstrap, tls=tls) as admin:
        admin.create_topic("tls-orders", num_partitions=1, replication_factor=3)
        with Producer(cluster.bootstrap, acks="all", tls=tls) as producer:
            for i in range(200):
                producer.send("tls-orders", value=f"{i}".encode())
            producer.flush()
        # Every follower fetched from the leader over TLS: all three are in sync.
        wait_for(lambda: isr_of(admin, "tls-orders")[1] == {1, 2, 3}, 30, "ISR of 3")
        leader, _ = isr_of(admin, "tls-orders")
        cluster.brokers[leader].kill()
        wait_for(lambda: isr_of(admin, "tls-orders")[0] not in (leader, -1), 30,
                 "a new leader")
        with Producer(cluster.bootstrap, acks="all", tls=tls) as producer:
            for i in range(200, 400):
                producer.send("tls-orders", value=f"{i}".encode())
            producer.flush()
        assert read_values(cluster.bootstrap, tls, "tls-orders", 400) == [
            f"{i}".encode() for i in range(400)]
        cluster.brokers[leader].start()
        cluster.wait_ready(timeout_s=60)
        # The restarted broker catches up from the new leader over TLS.
        wait_for(lambda: isr_of(admin, "tls-orders")[1] == {1, 2, 3}, 30, "ISR of 3 again")


def confluent_conf(secured: Secured, **extra: str) -> dict[str, str]:
    return {"bootstrap.servers": secured.cluster.kafka_bootstrap, "security.protocol": "SSL",
            "ssl.ca.location": secured.ca.ca, **extra}


@pytest.mark.parametrize("with_certificate", [False, True], ids=["ssl", "mtls"])
def test_confluent_kafka_over_ssl(secured, with_certificate):
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import Producer as KafkaProducer

    topic = f"ck-ssl-{with_certificate}"
    extra = ({"ssl.certificate.location": secured.ca.client_cert,
              "ssl.key.location": secured.ca.client_key} if with_certificate else {})
    producer = KafkaProducer(confluent_conf(secured, acks="all", **extra))
    for i in range(50):
        producer.produce(topic, f"m{i}".encode())
    assert producer.flush(30) == 0
    consumer = KafkaConsumer(confluent_conf(secured, **{"group.id": f"g-{topic}",
                                                        "auto.offset.reset": "earliest"},
                                            **extra))
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(got) < 50 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            got.append(message.value())
    consumer.close()
    assert sorted(got) == sorted(f"m{i}".encode() for i in range(50))
    # What they wrote is what the SDK reads over gRPC TLS.
    assert sorted(read_values(secured.cluster.bootstrap, secured.trust, topic, 50)) == sorted(got)


def test_kafka_python_over_ssl(secured):
    kafka = pytest.importorskip("kafka")
    producer = kafka.KafkaProducer(bootstrap_servers=secured.cluster.kafka_bootstrap,
                                   security_protocol="SSL", ssl_cafile=secured.ca.ca, acks="all")
    for i in range(20):
        producer.send("kp-ssl", f"k{i}".encode())
    producer.flush(30)
    producer.close()
    consumer = kafka.KafkaConsumer("kp-ssl", bootstrap_servers=secured.cluster.kafka_bootstrap,
                                   security_protocol="SSL", ssl_cafile=secured.ca.ca,
                                   ssl_certfile=secured.ca.client_cert,
                                   ssl_keyfile=secured.ca.client_key,
                                   auto_offset_reset="earliest", consumer_timeout_ms=10_000)
    got = [m.value for m in consumer]
    consumer.close()
    assert got == [f"k{i}".encode() for i in range(20)]


def api_versions_frame() -> bytes:
    client_id = b"plain"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def test_plaintext_to_the_kafka_tls_port_is_refused_cleanly(secured):
    broker = secured.cluster.brokers[1]
    with socket.create_connection(("127.0.0.1", broker.kafka_port), timeout=10) as plain:
        plain.sendall(api_versions_frame())
        received = b""
        while chunk := plain.recv(4096):
            received += chunk
    # No Kafka answer (it would start with a size and correlation id 7): at most a TLS alert,
    # then the broker closed the connection.
    assert struct.pack(">i", 7) not in received[4:8]
    assert not received or received[0] == 0x15  # TLS alert record
    wait_for(lambda: "did not speak TLS" in broker.log_text(), 10, "the refusal logged")
    assert "Traceback" not in broker.log_text()


def test_a_plaintext_kafka_client_gets_no_metadata(secured):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": secured.cluster.kafka_bootstrap})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    del admin  # the traceback's frame would keep it retrying after the cluster is gone


def test_plaintext_grpc_client_gets_a_clear_error(secured, monkeypatch):
    for name in ("RAFTKA_TLS", "RAFTKA_TLS_CA", "RAFTKA_TLS_CERT", "RAFTKA_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    with (pytest.raises(RaftkaError, match=r"closed the connection: if it serves TLS, connect "
                                           r"with TLS \(--tls-ca"),
          Admin(secured.cluster.bootstrap, request_timeout_ms=3000, tls=None) as admin):
        admin.list_topics()


def test_a_client_trusting_another_ca_is_refused(secured, other_ca):
    with (pytest.raises(RaftkaError, match="TLS handshake failed: CERTIFICATE_VERIFY_FAILED"),
          Admin(secured.cluster.bootstrap, request_timeout_ms=3000,
                tls=TlsOptions(other_ca.ca)) as admin):
        admin.list_topics()
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": secured.cluster.kafka_bootstrap,
                         "security.protocol": "SSL", "ssl.ca.location": other_ca.ca})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    del admin


def test_mutual_tls_required_refuses_a_client_without_a_certificate(cluster_factory,
                                                                      tmp_path, other_ca):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    cluster = cluster_factory(1)
    ca = secure(cluster, tmp_path, client_auth="required")
    cluster.start()
    cluster.wait_ready(timeout_s=60)
    with Admin(cluster.bootstrap, tls=client_options(ca)) as admin:
        admin.create_topic("mtls", num_partitions=1, replication_factor=1)
    with (pytest.raises(RaftkaError, match=r"present one its CA signed \(--tls-cert"),
          Admin(cluster.bootstrap, request_timeout_ms=3000, tls=TlsOptions(ca.ca)) as admin):
        admin.list_topics()
    # A certificate from another CA is no better than none.
    with pytest.raises(RaftkaError), Admin(cluster.bootstrap, request_timeout_ms=3000,
               tls=TlsOptions(ca.ca, other_ca.client_cert, other_ca.client_key)) as admin:
        admin.list_topics()
    kafka = f"127.0.0.1:{cluster.brokers[1].kafka_port}"
    without = AdminClient({"bootstrap.servers": kafka, "security.protocol": "SSL",
                           "ssl.ca.location": ca.ca})
    with pytest.raises(KafkaException):
        without.list_topics(timeout=3)
    del without
    with_cert = AdminClient({"bootstrap.servers": kafka, "security.protocol": "SSL",
                             "ssl.ca.location": ca.ca,
                             "ssl.certificate.location": ca.client_cert,
                             "ssl.key.location": ca.client_key})
    assert "mtls" in with_cert.list_topics(timeout=10).topics
    del with_cert
    assert "TLS handshake failed" in cluster.brokers[1].log_text()


def test_a_broker_whose_key_is_not_its_certificates_does_not_start(cluster_factory, tmp_path):
    cluster = cluster_factory(1)
    ca = secure(cluster, tmp_path)
    broker = cluster.brokers[1]
    broker.settings = {**broker.settings, "ssl.key.location": ca.client_key}
    broker.start()
    assert broker.process is not None
    assert broker.process.wait(30) == 2
    assert "the key does not belong to the certificate" in broker.log_text()
    missing = Path(tmp_path) / "nope.pem"
    broker.settings = {**broker.settings, "ssl.key.location": str(missing)}
    broker.start()
    assert broker.process.wait(30) == 2
    assert f"ssl.key.location: {missing} does not exist" in broker.log_text()
