"""Everything on at once (issue 16's Done-when): one 3-broker cluster whose Kafka listeners are
SASL_SSL (SCRAM-SHA-256/512, PLAIN), whose gRPC listener is TLS with a user and password
required on every client call (SASL_SSL), whose brokers call each other over TLS presenting
their certificates, with the authorizer on, a super user (admin) and ACLs for a normal user
(alice).

The clients of test_client_security.py (SASL_PLAINTEXT) and test_tls.py (TLS without SASL)
run here against that one cluster: confluent-kafka, kafka-python and kafkajs produce and
consume; the SDK and the CLI over TLS with credentials; clients without SASL, in plaintext or
with a wrong password are refused and read nothing; an authenticated user without ACLs cannot
produce, consume, create or delete (29/30/31) and nothing changes; and a leader killed with
kill -9 loses none of a confluent producer's acknowledged records."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftka.client.errors import AuthenticationError, AuthorizationError
from raftka.client.local_ca import LocalCa
from raftka.client.security_admin import SecurityAdmin
from raftka.client.tls_options import TlsOptions
from raftka.cluster.acl import Operation, ResourceType
from tests.harness import LocalCluster, wait_for
from tests.integration.test_client_security import (
    FAILED_MESSAGE,
    PASSWORDS,
    Secured,
    _authenticate,
    _closed,
    _handshake,
    _metadata_v1,
    _node_modules,
    _send,
    _unique,
)
from tests.tls_harness import secure, sign_harness_calls

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


class FullySecured(Secured):
    """test_client_security's helpers, over TLS: SASL_SSL for Kafka clients, the CA for the
    SDK, and the cluster secret's authority over TLS for making users and ACLs."""

    def __init__(self, cluster: LocalCluster, ca: LocalCa) -> None:
        super().__init__(cluster, {})
        self.ca = ca
        self.tls = TlsOptions(ca.ca)

    @property
    def grpc(self) -> str:
        return self.cluster.bootstrap  # the main gRPC listener is SASL_SSL itself

    def security(self, bootstrap: str | None = None) -> SecurityAdmin:
        return SecurityAdmin(bootstrap or self.cluster.bootstrap, tls=self.tls,
                             cluster_secret_file=str(self.cluster.secret_file))

    def conf(self, user: str, mechanism: str = "SCRAM-SHA-256",
             password: str | None = None) -> dict[str, str]:
        return {**super().conf(user, mechanism, password), "security.protocol": "SASL_SSL",
                "ssl.ca.location": self.ca.ca}

    def kafka_python(self, user: str, mechanism: str = "SCRAM-SHA-256") -> dict[str, str]:
        return {"bootstrap_servers": self.kafka, "security_protocol": "SASL_SSL",
                "ssl_cafile": self.ca.ca, "sasl_mechanism": mechanism,
                "sasl_plain_username": user, "sasl_plain_password": PASSWORDS[user]}

    def tls_socket(self, broker_id: int = 1) -> ssl.SSLSocket:
        context = ssl.create_default_context(cafile=self.ca.ca)
        raw = socket.create_connection(
            ("127.0.0.1", self.cluster.brokers[broker_id].kafka_port), timeout=10)
        return context.wrap_socket(raw, server_hostname="127.0.0.1")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullySecured]:
    root = tmp_path_factory.mktemp("fully-secured")
    cluster = LocalCluster(root, 3, {
        "authorizer.enabled": "true", "super.users": "User:admin",
        "default.replication.factor": "3", "min.insync.replicas": "2",
        "offsets.topic.num.partitions": "3", "group.initial.rebalance.delay.ms": "300",
        "auto.create.topics.enable": "false", "replica.lag.time.max.ms": "4000"})
    # TLS everywhere, brokers presenting their certificates to each other (test_tls.py's
    # setting); Kafka listeners SASL_SSL; the main gRPC listener (which the other brokers
    # call too, signed with the cluster secret) wants a user and password from clients.
    ca = secure(cluster, root, client_auth="requested", kafka_protocol="SASL_SSL")
    for broker in cluster.brokers.values():
        broker.settings = {**broker.settings, "grpc.security.protocol": "SASL_SSL"}
    sign_harness_calls(cluster, ca)
    cluster.start()
    try:
        cluster.wait_ready(timeout_s=60)
        secured = FullySecured(cluster, ca)
        with secured.security() as admin:
            for name, password in PASSWORDS.items():
                admin.create_user(name, password, iterations=4096)
        yield secured
    finally:
        cluster.stop_all()


def _allow_alice(secured: FullySecured, topic: str, group: str) -> None:
    secured.allow("User:alice", ResourceType.TOPIC, topic, Operation.WRITE, Operation.READ)
    secured.allow("User:alice", ResourceType.GROUP, group, Operation.READ)


def _consume(conf: dict[str, str], topic: str, count: int, timeout_s: float = 30) -> list[bytes]:
    from confluent_kafka import Consumer

    consumer = Consumer({**conf, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is not None:
                assert message.error() is None, message.error()
                values.append(message.value())
    finally:
        consumer.close()
    return values


def _read_partition(conf: dict[str, str], topic: str, count: int,
                    timeout_s: float = 30) -> list[bytes]:
    """Partition 0 of `topic` from offset 0, assigned (no group, no coordinator)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**conf, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is not None and message.error() is None:
                values.append(message.value())
    finally:
        consumer.close()
    return values


# ---------------------------------------------------------------- authenticated clients
def test_confluent_kafka_scram_sha_512_over_sasl_ssl_rf3_acks_all(secured: FullySecured):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    topic, group = _unique("ck-saslssl"), _unique("ck-saslssl-group")
    secured.create_topic(topic, 2)
    _allow_alice(secured, topic, group)
    conf = secured.conf("alice", "SCRAM-SHA-512")
    producer = Producer({**conf, "acks": "all", "enable.idempotence": True})
    errors: list = []
    for i in range(100):
        producer.produce(topic, f"m{i}".encode(), on_delivery=lambda e, _: errors.append(e))
    assert producer.flush(30) == 0
    assert errors == [None] * 100
    described = AdminClient(secured.conf("admin")).list_topics(topic, timeout=10)
    assert all(len(p.replicas) == 3 for p in described.topics[topic].partitions.values())
    got = _consume({**conf, "group.id": group}, topic, 100)
    assert sorted(got) == sorted(f"m{i}".encode() for i in range(100))


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_kafka_python_over_sasl_ssl(secured: FullySecured, mechanism: str):
    from kafka import KafkaConsumer, KafkaProducer

    topic, group = _unique("kp-saslssl"), _unique("kp-saslssl-group")
    secured.create_topic(topic)
    _allow_alice(secured, topic, group)
    producer = KafkaProducer(acks="all", **secured.kafka_python("alice", mechanism))
    for i in range(20):
        producer.send(topic, f"k{i}".encode()).get(30)
    producer.close()
    consumer = KafkaConsumer(topic, group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=15000,
                             **secured.kafka_python("alice", mechanism))
    values = []
    for record in consumer:
        values.append(record.value)
        if len(values) == 20:
            break
    consumer.close()
    assert sorted(values) == sorted(f"k{i}".encode() for i in range(20))


@pytest.mark.node
@pytest.mark.parametrize("mechanism", ["scram-sha-256", "scram-sha-512"])
def test_kafkajs_over_sasl_ssl_with_scram(secured: FullySecured, mechanism: str):
    from tests.node_harness import NEST_DIR, json_lines

    node, modules = shutil.which("node"), _node_modules()
    if node is None or modules is None:
        pytest.skip("node or kafkajs (examples/nestjs/node_modules or $NODE_PATH) missing")
    topic, group = _unique("js-saslssl"), _unique("js-saslssl-group")
    secured.create_topic(topic, 3)
    _allow_alice(secured, topic, group)
    done = subprocess.run(
        [node, "kafkajs-roundtrip.js", "--brokers", secured.kafka, "--topic", topic,
         "--group", group, "--count", "50", "--timeout-ms", "30000",
         "--sasl-mechanism", mechanism, "--ssl-ca", secured.ca.ca],
        cwd=NEST_DIR, capture_output=True, text=True, timeout=90,
        env={**os.environ, "NODE_PATH": str(modules), "KAFKA_USERNAME": "alice",
             "KAFKA_PASSWORD": PASSWORDS["alice"]})
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    (summary,) = [line for line in json_lines(done.stdout) if "produced" in line]
    assert summary["produced"] == summary["consumed"] == 50 and summary["missing"] == []


def _nest_dir(tmp_path: Path) -> Path:
    """Where the Nest scripts can run: examples/nestjs with its node_modules, else a copy of
    the scripts beside a link to $NODE_PATH's (Nest is ES modules, which ignore NODE_PATH)."""
    from tests.node_harness import NEST_DIR

    modules = _node_modules()
    if shutil.which("node") is None or modules is None:
        pytest.skip("node or examples/nestjs/node_modules (or $NODE_PATH) missing")
    if modules == NEST_DIR / "node_modules":
        return NEST_DIR
    if not (modules / "@nestjs" / "microservices").is_dir():
        pytest.skip(f"{modules} has no @nestjs/microservices")
    copy = tmp_path / "nestjs"
    copy.mkdir()
    for script in NEST_DIR.glob("*.js"):
        shutil.copy(script, copy / script.name)
    (copy / "node_modules").symlink_to(modules)
    return copy


@pytest.mark.node
def test_nestjs_kafka_transport_over_sasl_ssl(secured: FullySecured, tmp_path: Path):
    from tests.node_harness import NodeProcess, json_lines, run_node

    where = _nest_dir(tmp_path)
    group = _unique("nest")
    for topic in ("events.created", "math.sum", "math.sum.reply"):
        if topic not in secured.topics():
            secured.create_topic(topic)
        secured.allow("User:alice", ResourceType.TOPIC, topic, Operation.READ,
                      Operation.WRITE, Operation.DESCRIBE)
    for suffix in ("-server", "-client"):
        secured.allow("User:alice", ResourceType.GROUP, group + suffix, Operation.READ)
    env = {"KAFKA_SSL_CA": secured.ca.ca, "KAFKA_SASL_MECHANISM": "scram-sha-512",
           "KAFKA_USERNAME": "alice", "KAFKA_PASSWORD": PASSWORDS["alice"]}
    app = NodeProcess("nest-app.js", "--brokers", secured.kafka, "--group-id", group,
                      stderr_path=tmp_path / "nest-app.stderr", cwd=where, env=env)
    try:
        app.wait_for_line(lambda line: line.get("ready") is True, 60, "the Nest app to start")
        done = run_node("nest-client.js", "--brokers", secured.kafka, "--group-id", group,
                        "--timeout-ms", "30000", cwd=where, env=env)
        assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        lines = json_lines(done.stdout)
        (emitted,) = [line for line in lines if line.get("emitted") == "events.created"]
        (reply,) = [line for line in lines if line.get("pattern") == "math.sum"]
        assert reply == {"pattern": "math.sum", "request": [1, 2, 3], "reply": 6}
        app.wait_for_line(lambda line: line.get("event") == "events.created"
                          and line.get("payload") == emitted["payload"], 20,
                          "the Nest app to print the emitted event")
    finally:
        app.stop()
    # the same client with a wrong password is refused, by the broker's SASL answer
    refused = run_node("nest-client.js", "--brokers", secured.kafka, "--group-id", group,
                       "--timeout-ms", "5000", cwd=where,
                       env={**env, "KAFKA_PASSWORD": "wrong"})
    assert refused.returncode != 0
    assert "authentication failed" in refused.stderr.lower(), refused.stderr[-2000:]


def test_sdk_and_cli_over_tls_with_credentials(secured: FullySecured, tmp_path: Path):
    from raftka import Consumer, Producer
    from raftka.client.consumer import TopicPartition

    topic = _unique("sdk-tls")
    secured.create_topic(topic)
    secured.allow("User:alice", ResourceType.TOPIC, topic, Operation.WRITE, Operation.READ)
    with Producer(secured.grpc, username="alice", password=PASSWORDS["alice"],
                  tls=secured.tls) as producer:
        producer.send(topic, b"via grpc tls").get(30)
    consumer = Consumer(bootstrap_servers=secured.grpc, username="alice",
                        password=PASSWORDS["alice"], tls=secured.tls,
                        auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, 0)])
    got: list = []
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            got.extend(r.value for r in batch)
    consumer.close()
    assert got == [b"via grpc tls"]
    # what the SDK wrote over gRPC is what a Kafka client reads over SASL_SSL
    assert secured.end_offset(topic) == 1
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORDS["admin"])
    out = _cli("topics", "list", "--json", "--bootstrap", secured.grpc, "--tls-ca",
               secured.ca.ca, "--user", "admin", "--password-file", str(password_file))
    assert out.returncode == 0, out.stderr
    assert topic in out.stdout
    # the CLI with a wrong password, and without any: refused, saying why
    password_file.write_text("wrong")
    wrong = _cli("topics", "list", "--bootstrap", secured.grpc, "--tls-ca", secured.ca.ca,
                 "--user", "admin", "--password-file", str(password_file))
    assert wrong.returncode != 0 and "SASL_AUTHENTICATION_FAILED" in wrong.stdout + wrong.stderr
    anonymous = _cli("topics", "list", "--bootstrap", secured.grpc, "--tls-ca", secured.ca.ca)
    assert anonymous.returncode != 0
    assert "requires authentication" in anonymous.stdout + anonymous.stderr


# ------------------------------------------------------------------ refused clients
def test_sdk_without_credentials_or_with_a_wrong_password_is_refused(secured: FullySecured):
    from confluent_kafka import Producer as KafkaProducer

    from raftka import Admin, Producer

    topic = _unique("sdk-refused")
    secured.create_topic(topic)
    stored = KafkaProducer({**secured.conf("admin"), "acks": "all"})
    stored.produce(topic, b"secret")  # something to read, for the refused readers below
    assert stored.flush(20) == 0
    for kwargs in ({"username": "alice", "password": "wrong"}, {}):
        with pytest.raises(AuthenticationError), \
                Producer(secured.grpc, max_block_ms=5000, tls=secured.tls, **kwargs) as refused:
            refused.send(topic, b"x").get(10)
        with pytest.raises(AuthenticationError), \
                Admin(secured.grpc, request_timeout_ms=5000, tls=secured.tls, **kwargs) as admin:
            admin.list_topics()
    from raftka import Consumer
    from raftka.client.consumer import TopicPartition

    anonymous = Consumer(bootstrap_servers=secured.grpc, tls=secured.tls,
                         auto_offset_reset="earliest", request_timeout_ms=5000)
    try:
        anonymous.assign([TopicPartition(topic, 0)])
        with pytest.raises(AuthenticationError):
            anonymous.poll(timeout_ms=5000)
    finally:
        anonymous.close()
    # the harness's own certificate is no user either: TLS alone does not authenticate
    from tests.tls_harness import client_options

    with pytest.raises(AuthenticationError), \
            Admin(secured.grpc, request_timeout_ms=5000, tls=client_options(secured.ca)) as a:
        a.list_topics()
    assert secured.end_offset(topic) == 1


def test_kafka_clients_without_sasl_or_tls_read_nothing(secured: FullySecured):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    topic = _unique("unseen")
    secured.create_topic(topic)
    for conf in ({"bootstrap.servers": secured.kafka},  # plaintext to a TLS port
                 {"bootstrap.servers": secured.kafka, "security.protocol": "SSL",
                  "ssl.ca.location": secured.ca.ca},  # TLS, no SASL
                 {"bootstrap.servers": secured.kafka, "security.protocol": "SASL_PLAINTEXT",
                  "sasl.mechanism": "PLAIN", "sasl.username": "alice",
                  "sasl.password": PASSWORDS["alice"]}):  # SASL without TLS
        admin = AdminClient(conf)
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=3)
        del admin
    # by hand over TLS: a request before SASL closes the connection, nothing answered
    with secured.tls_socket() as sock:
        _send(sock, _metadata_v1(1))
        assert _closed(sock)


def test_wrong_password_is_sasl_authentication_failed(secured: FullySecured):
    from confluent_kafka import KafkaError, Producer

    with secured.tls_socket(2) as sock:
        assert _handshake(sock, "PLAIN") == 0
        code, message, _ = _authenticate(sock, b"\0alice\0nope")
        assert (code, message) == (58, FAILED_MESSAGE)
        assert _closed(sock)
    with secured.tls_socket(2) as sock:  # the right one is served afterwards
        assert _handshake(sock, "PLAIN") == 0
        assert _authenticate(sock, b"\0alice\0alice-pw")[0] == 0
    errors: list = []
    producer = Producer({**secured.conf("alice", "SCRAM-SHA-512", "wrong"),
                         "error_cb": errors.append, "message.timeout.ms": 3000})
    producer.produce("anything", b"x")
    producer.flush(5)
    assert any(e.code() == KafkaError._AUTHENTICATION and FAILED_MESSAGE in e.str()
               for e in errors), errors


# -------------------------------------------------------------- unauthorized clients
def test_unauthorized_produce_consume_create_delete_change_nothing(secured: FullySecured):
    from confluent_kafka import Consumer, KafkaError, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic, group, wanted = _unique("guarded"), _unique("bob-group"), _unique("never")
    secured.create_topic(topic)
    producer = Producer({**secured.conf("admin"), "acks": "all"})
    producer.produce(topic, b"secret")
    assert producer.flush(20) == 0
    # produce: TOPIC_AUTHORIZATION_FAILED (29), nothing stored
    errors: list = []
    bob = Producer({**secured.conf("bob", "SCRAM-SHA-512"), "message.timeout.ms": 10000})
    bob.produce(topic, b"not allowed", on_delivery=lambda e, _: errors.append(e))
    bob.flush(20)
    assert errors and errors[0] is not None
    assert errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert secured.end_offset(topic) == 1

    def first_error(conf: dict[str, str]) -> int:
        consumer = Consumer({**conf, "auto.offset.reset": "earliest"})
        consumer.subscribe([topic])
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                message = consumer.poll(1)
                if message is not None and message.error() is not None:
                    return int(message.error().code())
                assert message is None, "a refused consumer got a record"
            raise AssertionError("no error within 30 s")
        finally:
            consumer.close()

    # consume: the group allowed, the topic not (29); the topic allowed, the group not (30)
    secured.allow("User:bob", ResourceType.GROUP, group, Operation.READ)
    assert first_error({**secured.conf("bob"), "group.id": group}) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    secured.allow("User:carol", ResourceType.TOPIC, topic, Operation.READ)
    assert first_error({**secured.conf("carol"), "group.id": group}) == \
        KafkaError.GROUP_AUTHORIZATION_FAILED
    # create and delete: refused (29), the topics as they were
    admin = AdminClient(secured.conf("bob"))
    with pytest.raises(Exception) as refused:
        admin.create_topics([NewTopic(wanted, 1, 1)])[wanted].result(15)
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(Exception) as refused:
        admin.delete_topics([topic])[topic].result(15)
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    names = secured.topics()
    assert topic in names and wanted not in names
    assert secured.end_offset(topic) == 1


def test_idempotent_producer_without_write_is_cluster_authorization_failed(
        secured: FullySecured):
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    topic = _unique("idem")
    secured.create_topic(topic)
    secured.allow("User:carol", ResourceType.TOPIC, topic, Operation.DESCRIBE)
    producer = KafkaProducer(enable_idempotence=True, max_block_ms=10000,
                             **secured.kafka_python("carol"))
    try:
        with pytest.raises(KafkaError) as refused:
            producer.send(topic, b"x").get(20)
        assert "ClusterAuthorizationFailed" in f"{type(refused.value).__name__} " \
                                               f"{refused.value!r}", refused.value
    finally:
        producer.close(timeout=5)
    assert secured.end_offset(topic) == 0


def test_unauthorized_sdk_calls_are_refused(secured: FullySecured):
    from raftka import Admin, Producer

    topic = _unique("sdk-guarded")
    secured.create_topic(topic)
    with pytest.raises(AuthorizationError, match="TOPIC_AUTHORIZATION_FAILED"), \
            Producer(secured.grpc, username="bob", password=PASSWORDS["bob"],
                     tls=secured.tls) as bob:
        bob.send(topic, b"x").get(10)
    with Admin(secured.grpc, username="bob", password=PASSWORDS["bob"], tls=secured.tls,
               request_timeout_ms=10_000) as bob_admin:
        with pytest.raises(AuthorizationError, match="TOPIC_AUTHORIZATION_FAILED"):
            bob_admin.create_topic(_unique("sdk-never"), num_partitions=1,
                                   replication_factor=3)
        with pytest.raises(AuthorizationError, match="TOPIC_AUTHORIZATION_FAILED"):
            bob_admin.delete_topic(topic)
    # reading: bob has no READ on the topic
    from raftka import Consumer
    from raftka.client.consumer import TopicPartition

    consumer = Consumer(bootstrap_servers=secured.grpc, username="bob",
                        password=PASSWORDS["bob"], tls=secured.tls,
                        auto_offset_reset="earliest", request_timeout_ms=10_000)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        with pytest.raises(AuthorizationError, match="TOPIC_AUTHORIZATION_FAILED"):
            consumer.poll(timeout_ms=5000)
    finally:
        consumer.close()
    assert topic in secured.topics()
    assert secured.end_offset(topic) == 0


def test_acls_managed_over_sasl_ssl_by_the_super_user_only(secured: FullySecured):
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AclBinding as KafkaAcl
    from confluent_kafka.admin import (
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
    )
    from confluent_kafka.admin import ResourceType as KafkaResource

    topic = _unique("granted")
    secured.create_topic(topic)
    binding = KafkaAcl(KafkaResource.TOPIC, topic, ResourcePatternType.LITERAL, "User:bob",
                       "*", AclOperation.WRITE, AclPermissionType.ALLOW)
    # alice may not grant herself or anyone anything: CLUSTER_AUTHORIZATION_FAILED (31)
    alice = AdminClient(secured.conf("alice", "SCRAM-SHA-512"))
    (future,) = alice.create_acls([binding]).values()
    with pytest.raises(Exception) as refused:
        future.result(15)
    assert refused.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    errors: list = []
    bob = Producer({**secured.conf("bob"), "message.timeout.ms": 10000})
    bob.produce(topic, b"before", on_delivery=lambda e, _: errors.append(e))
    bob.flush(20)
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    # the super user may, over the same SASL_SSL listener; then bob's write goes in
    admin = AdminClient(secured.conf("admin", "SCRAM-SHA-512"))
    for done in admin.create_acls([binding]).values():
        done.result(15)
    errors.clear()
    wait_for(lambda: _produced(secured, topic), 15, "bob's write, once allowed")
    assert secured.end_offset(topic) >= 1


def _produced(secured: FullySecured, topic: str) -> bool:
    from confluent_kafka import Producer

    errors: list = []
    bob = Producer({**secured.conf("bob"), "message.timeout.ms": 5000})
    bob.produce(topic, b"after", on_delivery=lambda e, _: errors.append(e))
    bob.flush(10)
    return errors == [None]


# ---------------------------------------------------------------------------- failover
def test_leader_kill_loses_no_acknowledged_record(secured: FullySecured):
    """Last in the module: it kills a broker (and restarts it)."""
    from confluent_kafka import Producer

    from raftka import Admin

    topic, group = _unique("failover"), _unique("failover-group")
    secured.create_topic(topic)
    _allow_alice(secured, topic, group)
    cluster = secured.cluster
    with Admin(secured.grpc, username="admin", password=PASSWORDS["admin"],
               tls=secured.tls) as admin:
        wait_for(lambda: set(admin.describe_topic(topic).partitions[0].isr) == {1, 2, 3}, 30,
                 "an ISR of 3")
        leader = admin.describe_topic(topic).partitions[0].leader_id
    producer = Producer({**secured.conf("alice", "SCRAM-SHA-512"), "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5,
                         "message.timeout.ms": 60000})
    acked: list[bytes] = []
    failed: list = []
    stop = threading.Event()

    def delivered(error: object, message: object) -> None:
        if error is None:
            acked.append(message.value())  # type: ignore[attr-defined]
        else:
            failed.append(error)

    def produce() -> None:
        i = 0
        while not stop.is_set():
            producer.produce(topic, f"r{i}".encode(), on_delivery=delivered)
            producer.poll(0.005)
            i += 1

    writer = threading.Thread(target=produce, name="failover-producer")
    writer.start()
    try:
        wait_for(lambda: len(acked) >= 200, 30, "200 records acknowledged")
        cluster.brokers[leader].kill()  # kill -9
        at_kill = len(acked)
        wait_for(lambda: len(acked) >= at_kill + 500, 60,
                 "500 more records acknowledged after the kill")
    finally:
        stop.set()
        writer.join(10)
    assert producer.flush(60) == 0
    assert failed == []
    with Admin(secured.grpc, username="admin", password=PASSWORDS["admin"],
               tls=secured.tls) as admin:
        assert admin.describe_topic(topic).partitions[0].leader_id not in (leader, -1)
    cluster.brokers[leader].start()
    cluster.wait_ready(timeout_s=60)
    got = _consume({**secured.conf("alice", "SCRAM-SHA-512"), "group.id": group}, topic,
                   len(acked), timeout_s=60)
    missing = set(acked) - set(got)
    if missing:  # tell a group consumer that read too little from records not in the log
        stored = _read_partition(secured.conf("alice", "SCRAM-SHA-512"), topic, len(acked))
        raise AssertionError(
            f"the group consumer read {len(got)} of {len(acked)} acknowledged records; "
            f"{len(set(acked) - set(stored))} are not in the partition (read by assignment)\n"
            + cluster.logs())
    assert len(got) == len(set(got))  # idempotence: no duplicates either


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raftka", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO,
                          env={k: v for k, v in os.environ.items()
                               if not k.startswith("RAFTKA_TLS")})
