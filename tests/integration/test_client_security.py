"""SASL and ACLs with real clients against a real 3-broker cluster: confluent-kafka and
kafka-python over SASL_PLAINTEXT with SCRAM-SHA-256/512 and PLAIN; wrong passwords refused
with SASL_AUTHENTICATION_FAILED; unauthorized produce/consume/create/delete refused with
Kafka's codes and nothing changed; ACLs and users managed with confluent-kafka's AdminClient;
the SDK and CLI with credentials on a SASL gRPC listener; KIP-368 session expiry.

Users are made with the cluster secret's authority (SecurityAdmin(cluster_secret_file=...)),
as the README says to make the first admin."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftka.client.errors import AuthenticationError, AuthorizationError
from raftka.client.security_admin import SecurityAdmin
from raftka.cluster.acl import AclBinding, Operation, PatternType, Permission, ResourceType
from tests.harness import LocalCluster, free_port_block, wait_for

pytestmark = pytest.mark.integration
PASSWORDS = {"admin": "admin-pw", "alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
FAILED_MESSAGE = "Authentication failed: Invalid username or password"
# Longest wait for every broker to apply an ACL from the metadata log (s).
ACL_PROPAGATION_S = 15.0


class Secured:
    def __init__(self, cluster: LocalCluster, grpc_sasl: dict[int, int]) -> None:
        self.cluster = cluster
        self.grpc_sasl = grpc_sasl  # broker id -> port of its SASL_PLAINTEXT gRPC listener

    @property
    def kafka(self) -> str:
        return self.cluster.kafka_bootstrap

    @property
    def grpc(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.grpc_sasl.values())

    def security(self, bootstrap: str | None = None) -> SecurityAdmin:
        """An admin with the cluster secret's authority, on `bootstrap` (default: all)."""
        return SecurityAdmin(bootstrap or self.cluster.bootstrap,
                             cluster_secret_file=str(self.cluster.secret_file))

    def allow(self, principal: str, kind: ResourceType, name: str, *ops: Operation,
              pattern: PatternType = PatternType.LITERAL) -> None:
        """Add the ACLs and wait until every broker has applied them: a broker learns
        them from the metadata log, a moment after the controller commits them, and a
        request it answers before then is judged by the ACLs it had."""
        bindings = [AclBinding(kind, name, pattern, principal, "*", op, Permission.ALLOW)
                    for op in ops]
        with self.security() as admin:
            admin.add_acls(bindings)
        for broker in self.cluster.brokers.values():
            with self.security(broker.address) as local:
                wait_for(lambda local=local: set(bindings) <= set(local.list_acls()),
                         ACL_PROPAGATION_S, f"broker {broker.broker_id} to apply {bindings}")

    def conf(self, user: str, mechanism: str = "SCRAM-SHA-256",
             password: str | None = None) -> dict[str, str]:
        return {"bootstrap.servers": self.kafka, "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": mechanism, "sasl.username": user,
                "sasl.password": PASSWORDS.get(user, "x") if password is None else password}

    def end_offset(self, topic: str, partition: int = 0) -> int:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({**self.conf("admin"), "group.id": "offsets-probe"})
        try:
            return int(consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                      timeout=10)[1])
        finally:
            consumer.close()

    def topics(self) -> set[str]:
        from confluent_kafka.admin import AdminClient

        return set(AdminClient(self.conf("admin")).list_topics(timeout=10).topics)

    def create_topic(self, name: str, partitions: int = 1) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient(self.conf("admin"))  # kept alive until the answer is in
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=3)])
        futures[name].result(15)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    cluster = LocalCluster(tmp_path_factory.mktemp("secured"), 3, {
        "authorizer.enabled": "true", "super.users": "User:admin",
        "default.replication.factor": "3", "min.insync.replicas": "2",
        "offsets.topic.num.partitions": "3", "group.initial.rebalance.delay.ms": "300",
        "auto.create.topics.enable": "false"})
    taken = {b.port + i for b in cluster.brokers.values() for i in range(4)}
    while True:
        base = free_port_block(len(cluster.brokers))
        if not taken.intersection(range(base, base + len(cluster.brokers))):
            break
    grpc_sasl = {}
    for offset, (broker_id, broker) in enumerate(cluster.brokers.items()):
        grpc_sasl[broker_id] = base + offset
        broker.settings = {
            **broker.settings,
            "listeners": f"SASL_PLAINTEXT://127.0.0.1:{broker.kafka_port}",
            "grpc.listeners": f"SASL_PLAINTEXT://127.0.0.1:{grpc_sasl[broker_id]}",
        }
    cluster.start()
    try:
        cluster.wait_ready()
        secured = Secured(cluster, grpc_sasl)
        with secured.security() as admin:
            for name, password in PASSWORDS.items():
                admin.create_user(name, password, iterations=4096)
        yield secured
    finally:
        cluster.stop_all()


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ authentication
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_confluent_kafka_produces_and_consumes_with_sasl(secured: Secured, mechanism: str):
    from confluent_kafka import Consumer, Producer

    topic, group = _unique("alice-ck"), _unique("alice-ck-group")
    secured.create_topic(topic, 2)
    secured.allow("User:alice", ResourceType.TOPIC, topic, Operation.WRITE, Operation.READ)
    secured.allow("User:alice", ResourceType.GROUP, group, Operation.READ)
    producer = Producer({**secured.conf("alice", mechanism), "enable.idempotence": True})
    errors: list = []
    for i in range(20):
        producer.produce(topic, f"m{i}".encode(), on_delivery=lambda e, _: errors.append(e))
    assert producer.flush(30) == 0
    assert errors == [None] * 20
    consumer = Consumer({**secured.conf("alice", mechanism), "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(values) < 20 and time.monotonic() < deadline:
        message = consumer.poll(1)
        if message is not None:
            assert message.error() is None, message.error()
            values.append(message.value())
    consumer.commit(asynchronous=False)
    consumer.close()
    assert sorted(values) == sorted(f"m{i}".encode() for i in range(20))


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_kafka_python_produces_and_consumes_with_sasl(secured: Secured, mechanism: str):
    from kafka import KafkaConsumer, KafkaProducer

    topic, group = _unique("alice-kp"), _unique("alice-kp-group")
    secured.create_topic(topic)
    secured.allow("User:alice", ResourceType.TOPIC, topic, Operation.WRITE, Operation.READ)
    secured.allow("User:alice", ResourceType.GROUP, group, Operation.READ)
    sasl = {"bootstrap_servers": secured.kafka, "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": mechanism, "sasl_plain_username": "alice",
            "sasl_plain_password": PASSWORDS["alice"]}
    producer = KafkaProducer(acks="all", **sasl)  # idempotent by default: InitProducerId
    for i in range(10):
        producer.send(topic, f"k{i}".encode()).get(30)
    producer.close()
    consumer = KafkaConsumer(topic, group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=15000, **sasl)
    values = []
    for record in consumer:
        values.append(record.value)
        if len(values) == 10:
            break
    consumer.commit()
    consumer.close()
    assert sorted(values) == sorted(f"k{i}".encode() for i in range(10))


@pytest.mark.parametrize("user,password", [("alice", "wrong"), ("nobody", "alice-pw")])
def test_wrong_password_or_unknown_user_gets_one_generic_refusal(secured: Secured, user: str,
                                                                 password: str):
    from confluent_kafka import KafkaError, Producer
    from kafka.net.sasl.scram import ScramClient

    # SCRAM-SHA-512 by hand (kafka-python's SCRAM client): the same answer either way
    port = int(secured.kafka.split(",")[0].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        assert _handshake(sock, "SCRAM-SHA-512") == 0
        client = ScramClient(user, password, "SCRAM-SHA-512")
        code, _, _, server_first = _authenticate_raw(sock, client.first_message())
        assert code == 0
        client.process_server_first_message(server_first)
        code, message, _, _ = _authenticate_raw(sock, client.final_message())
        assert (code, message) == (58, FAILED_MESSAGE)
        assert _closed(sock)
    # librdkafka reports it as an authentication error with the broker's text
    errors: list = []
    producer = Producer({**secured.conf(user, "SCRAM-SHA-512", password),
                         "error_cb": errors.append, "message.timeout.ms": 3000})
    producer.produce("anything", b"x")
    producer.flush(5)
    assert any(e.code() == KafkaError._AUTHENTICATION and FAILED_MESSAGE in e.str()
               for e in errors), errors
    # the broker logged the attempt: who, and from where
    wait_for(lambda: any(f"authentication failed for user '{user}' from 127.0.0.1:" in
                         b.log_text() for b in secured.cluster.brokers.values()), 10,
             "the failed attempt in a broker log")


def test_raw_sasl_exchange_and_requests_before_authentication(secured: Secured):
    port = int(secured.kafka.split(",")[0].rsplit(":", 1)[1])
    # a request before authenticating closes the connection
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        _send(sock, _metadata_v1(1))
        assert _closed(sock)
    # PLAIN with a wrong password: SASL_AUTHENTICATION_FAILED (58), generic text, closed
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        assert _handshake(sock, "PLAIN") == 0
        code, message, _ = _authenticate(sock, b"\0alice\0nope")
        assert (code, message) == (58, FAILED_MESSAGE)
        assert _closed(sock)
    # the right one: served afterwards
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        assert _handshake(sock, "PLAIN") == 0
        code, _, lifetime = _authenticate(sock, b"\0alice\0alice-pw")
        assert code == 0 and lifetime == 0  # no connections.max.reauth.ms here
        _send(sock, _metadata_v1(9))
        assert struct.unpack(">i", _recv_frame(sock)[:4])[0] == 9
    # an unsupported mechanism is named in the answer
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        assert _handshake(sock, "GSSAPI") == 33


# ------------------------------------------------------------------- authorization
def test_unauthorized_produce_is_refused_and_stores_nothing(secured: Secured):
    from confluent_kafka import KafkaError, Producer

    topic = _unique("guarded")
    secured.create_topic(topic)
    before = secured.end_offset(topic)
    producer = Producer({**secured.conf("bob"), "message.timeout.ms": 10000})
    errors: list = []
    producer.produce(topic, b"not allowed", on_delivery=lambda e, _: errors.append(e))
    producer.flush(20)
    assert errors and errors[0] is not None
    assert errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert secured.end_offset(topic) == before


def test_unauthorized_consume_topic_and_group(secured: Secured):
    from confluent_kafka import Consumer, KafkaError, Producer

    topic, group = _unique("readable"), _unique("bob-group")
    secured.create_topic(topic)
    producer = Producer(secured.conf("admin"))
    producer.produce(topic, b"secret")
    producer.flush(20)

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

    # the group is allowed, the topic not
    secured.allow("User:bob", ResourceType.GROUP, group, Operation.READ)
    assert first_error({**secured.conf("bob"), "group.id": group}) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    # the topic is allowed (to carol), the group not
    secured.allow("User:carol", ResourceType.TOPIC, topic, Operation.READ)
    assert first_error({**secured.conf("carol"), "group.id": group}) == \
        KafkaError.GROUP_AUTHORIZATION_FAILED


def test_unauthorized_create_and_delete_change_nothing(secured: Secured):
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient, NewTopic

    existing, wanted = _unique("keep"), _unique("never")
    secured.create_topic(existing)
    bob = AdminClient(secured.conf("bob"))
    created = bob.create_topics([NewTopic(wanted, 1, 1)])[wanted]
    with pytest.raises(Exception) as refused:
        created.result(15)
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    deleted = bob.delete_topics([existing])[existing]
    with pytest.raises(Exception) as refused:
        deleted.result(15)
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    names = secured.topics()
    assert existing in names and wanted not in names
    # bob cannot even see the topic in Metadata (no DESCRIBE)
    assert existing not in AdminClient(secured.conf("bob")).list_topics(timeout=10).topics


def test_idempotent_producer_without_any_write_gets_cluster_authorization_failed(
        secured: Secured):
    from kafka import KafkaProducer
    from kafka.errors import ClusterAuthorizationFailedError, KafkaError

    topic = _unique("idem")
    secured.create_topic(topic)
    # carol may see the topic, and write to none: InitProducerId is refused (KIP-679)
    secured.allow("User:carol", ResourceType.TOPIC, topic, Operation.DESCRIBE)
    producer = KafkaProducer(
        bootstrap_servers=secured.kafka, security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="carol",
        sasl_plain_password=PASSWORDS["carol"], enable_idempotence=True, max_block_ms=10000)
    try:
        with pytest.raises(KafkaError) as refused:
            producer.send(topic, b"x").get(20)
        assert isinstance(refused.value, ClusterAuthorizationFailedError) or \
            "ClusterAuthorizationFailed" in f"{refused.value!r} {refused.value}", refused.value
    finally:
        producer.close(timeout=5)
    assert secured.end_offset(topic) == 0


# ---------------------------------------------------------------------- management
def test_acls_managed_with_confluent_admin_client(secured: Secured):
    from confluent_kafka import Producer
    from confluent_kafka.admin import (
        AclBinding as KafkaAcl,
    )
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
    )
    from confluent_kafka.admin import (
        ResourceType as KafkaResource,
    )

    topic = _unique("managed")
    secured.create_topic(topic)
    admin = AdminClient(secured.conf("admin"))
    binding = KafkaAcl(KafkaResource.TOPIC, topic, ResourcePatternType.LITERAL, "User:bob",
                       "*", AclOperation.WRITE, AclPermissionType.ALLOW)
    for future in admin.create_acls([binding]).values():
        future.result(15)
    wanted = AclBindingFilter(KafkaResource.TOPIC, topic, ResourcePatternType.ANY, None,
                              None, AclOperation.ANY, AclPermissionType.ANY)
    described = admin.describe_acls(wanted).result(15)
    assert [(b.name, b.principal, b.operation) for b in described] == \
        [(topic, "User:bob", AclOperation.WRITE)]
    errors: list = []
    producer = Producer({**secured.conf("bob"), "message.timeout.ms": 10000})
    producer.produce(topic, b"now allowed", on_delivery=lambda e, _: errors.append(e))
    producer.flush(20)
    assert errors == [None]
    removed = admin.delete_acls([wanted])
    assert [len(f.result(15)) for f in removed.values()] == [1]
    assert admin.describe_acls(wanted).result(15) == []
    # and the CLI sees the same ACLs (with the cluster secret's authority)
    secured.allow("User:bob", ResourceType.TOPIC, topic, Operation.READ)
    listed = _cli(secured, "acls", "list", "--topic", topic, "--json")
    assert [(a["principal"], a["operation"]) for a in json.loads(listed)] == \
        [("User:bob", "READ")]


def test_users_managed_with_confluent_admin_client(secured: Secured):
    from confluent_kafka import Producer
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient(secured.conf("admin"))
    upsert = UserScramCredentialUpsertion(
        "dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"dave-pw")
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(15)
    described = admin.describe_user_scram_credentials(["dave"])["dave"].result(15)
    infos = described.scram_credential_infos
    assert [(i.mechanism, i.iterations) for i in infos] == [(ScramMechanism.SCRAM_SHA_512,
                                                             4096)]
    # dave can log in (and do nothing else)
    dave = {**secured.conf("dave", "SCRAM-SHA-512", "dave-pw")}
    assert AdminClient(dave).list_topics(timeout=10).topics is not None
    listed = json.loads(_cli(secured, "users", "list", "--json"))
    assert {"dave", "admin", "alice"} <= {u["user"] for u in listed}
    assert all("salt" not in json.dumps(u) for u in listed)
    delete = UserScramCredentialDeletion("dave", ScramMechanism.SCRAM_SHA_512)
    for future in admin.alter_user_scram_credentials([delete]).values():
        future.result(15)
    errors: list = []
    producer = Producer({**dave, "message.timeout.ms": 5000,
                         "error_cb": lambda e: errors.append(e)})
    producer.produce("anything", b"x")
    producer.flush(8)
    assert any("Authentication failed" in str(e) for e in errors), errors


def test_sdk_and_cli_with_credentials_on_a_sasl_grpc_listener(secured: Secured, tmp_path: Path):
    from raftka import Consumer, Producer
    from raftka.client.consumer import TopicPartition

    topic = _unique("sdk")
    secured.create_topic(topic)
    secured.allow("User:alice", ResourceType.TOPIC, topic, Operation.WRITE, Operation.READ)
    with Producer(secured.grpc, username="alice", password=PASSWORDS["alice"]) as producer:
        producer.send(topic, b"via grpc").get(30)
    consumer = Consumer(bootstrap_servers=secured.grpc, username="alice",
                        password=PASSWORDS["alice"], auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, 0)])
    got: list = []
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            got.extend(r.value for r in batch)
    consumer.close()
    assert got == [b"via grpc"]
    # wrong password, no credentials: UNAUTHENTICATED; bob: PERMISSION_DENIED, nothing stored
    for kwargs in ({"username": "alice", "password": "wrong"}, {}):
        with pytest.raises(AuthenticationError), \
                Producer(secured.grpc, max_block_ms=5000, **kwargs) as refused:
            refused.send(topic, b"x").get(10)
    with pytest.raises(AuthorizationError, match="TOPIC_AUTHORIZATION_FAILED"), \
            Producer(secured.grpc, username="bob", password=PASSWORDS["bob"]) as bob:
        bob.send(topic, b"x").get(10)
    assert secured.end_offset(topic) == 1
    # anonymous on the PLAINTEXT gRPC listener: subject to the same ACLs
    with pytest.raises(AuthorizationError), Producer(secured.cluster.bootstrap) as anonymous:
        anonymous.send(topic, b"x").get(10)
    # the CLI, as a user
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORDS["admin"])
    out = _cli(secured, "topics", "list", "--json", "--bootstrap", secured.grpc,
               "--user", "admin", "--password-file", str(password_file), secret=False)
    assert topic in out
    failed = _cli(secured, "topics", "list", "--bootstrap", secured.grpc, "--user", "admin",
                  "--password-file", str(tmp_path / "missing"), secret=False, check=False)
    assert "cannot read --password-file" in failed


def test_a_produce_stream_refuses_only_the_topics_the_caller_may_not_write(secured: Secured):
    """One request on alice's ProduceStream for a topic she may write and one she may
    not: the first is stored, the second answered TOPIC_AUTHORIZATION_FAILED, and the
    stream serves her next request (a unary Produce would refuse the whole call)."""
    from raftka.client.credentials import Credentials
    from raftka.client.transport import Connections
    from raftka.proto.raftka.v1 import broker_pb2, common_pb2
    from raftka.records import encode_batch

    mine, theirs = _unique("stream-mine"), _unique("stream-theirs")
    secured.create_topic(mine)
    secured.create_topic(theirs)
    secured.allow("User:alice", ResourceType.TOPIC, mine, Operation.WRITE)
    connections = Connections(credentials=Credentials("alice", PASSWORDS["alice"]))
    try:
        address = next(iter(secured.grpc.split(",")))
        metadata = connections.broker(address).Metadata(
            broker_pb2.MetadataRequest(topics=[mine]), timeout=10)
        leader = metadata.topics[0].partitions[0].leader_id
        leader_address = f"127.0.0.1:{secured.grpc_sasl[leader]}"

        def item(topic: str) -> broker_pb2.PartitionProduceData:
            return broker_pb2.PartitionProduceData(
                topic=topic, partition=0,
                record_batches=encode_batch([(None, b"v", [], 0)],
                                            now_ms=int(time.time() * 1000)))

        requests = [broker_pb2.ProduceRequest(acks=-1, timeout_ms=10_000, correlation_id=1,
                                              partitions=[item(mine), item(theirs)]),
                    broker_pb2.ProduceRequest(acks=-1, timeout_ms=10_000, correlation_id=2,
                                              partitions=[item(mine)])]
        answers = {a.correlation_id: {p.topic: p for p in a.partitions}
                   for a in connections.broker(leader_address).ProduceStream(
                       iter(requests), timeout=30)}
    finally:
        connections.close()
    code = common_pb2.ErrorCode
    assert answers[1][mine].error_code == code.NONE
    assert answers[1][theirs].error_code == code.TOPIC_AUTHORIZATION_FAILED
    assert "User:alice may not WRITE" in answers[1][theirs].error_message
    assert answers[2][mine].error_code == code.NONE
    assert secured.end_offset(mine) == 2
    assert secured.end_offset(theirs) == 0


def test_a_produce_stream_ends_when_its_user_is_deleted(secured: Secured):
    """Credentials are checked per request on a stream, as per unary call: once the user
    is deleted, the open stream's next request ends it UNAUTHENTICATED."""
    import queue

    import grpc

    from raftka.client.credentials import Credentials
    from raftka.client.transport import Connections
    from raftka.proto.raftka.v1 import broker_pb2
    from raftka.records import encode_batch

    topic, user, password = _unique("stream-user"), _unique("dora"), "dora-pw"
    secured.create_topic(topic)
    with secured.security() as admin:
        admin.create_user(user, password, iterations=4096)
    secured.allow(f"User:{user}", ResourceType.TOPIC, topic, Operation.WRITE)
    connections = Connections(credentials=Credentials(user, password))
    outbox: queue.SimpleQueue = queue.SimpleQueue()

    def requests():
        while (item := outbox.get()) is not None:
            yield item

    def request(number: int) -> broker_pb2.ProduceRequest:
        batch = encode_batch([(None, b"v", [], 0)], now_ms=int(time.time() * 1000))
        return broker_pb2.ProduceRequest(acks=-1, timeout_ms=10_000, correlation_id=number,
                                         partitions=[broker_pb2.PartitionProduceData(
                                             topic=topic, partition=0, record_batches=batch)])

    try:
        address = next(iter(secured.grpc.split(",")))
        leader = connections.broker(address).Metadata(
            broker_pb2.MetadataRequest(topics=[topic]), timeout=10).topics[0].partitions[0]
        call = connections.broker(f"127.0.0.1:{secured.grpc_sasl[leader.leader_id]}") \
            .ProduceStream(requests(), timeout=60)
        outbox.put(request(1))
        assert next(call).partitions[0].error_code == 0
        with secured.security() as admin:
            admin.delete_user(user)
        # the deletion reaches the leader through the metadata log: until then, answered
        with pytest.raises(grpc.RpcError) as ended:
            for number in range(2, 200):
                outbox.put(request(number))
                next(call)
                time.sleep(0.1)
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        outbox.put(None)
        connections.close()


def test_describe_acls_without_an_authorizer_is_security_disabled(cluster_factory):
    # kafka-python raises the code; librdkafka (confluent-kafka) turns it into an empty list
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        KafkaAdminClient,
        ResourcePatternFilter,
    )
    from kafka.admin import ResourceType as KafkaResource
    from kafka.errors import SecurityDisabledError

    cluster = cluster_factory(1)
    cluster.start()
    cluster.wait_ready()
    admin = KafkaAdminClient(bootstrap_servers=cluster.kafka_bootstrap)
    wanted = ACLFilter(principal=None, host="*", operation=ACLOperation.ANY,
                       permission_type=ACLPermissionType.ANY,
                       resource_pattern=ResourcePatternFilter(KafkaResource.TOPIC, None,
                                                              ACLResourcePatternType.ANY))
    with pytest.raises(SecurityDisabledError):
        admin.describe_acls(wanted)
    admin.close()


def test_session_expiry_closes_a_connection_that_does_not_reauthenticate(cluster_factory):
    from confluent_kafka import Producer

    cluster = cluster_factory(1, {"connections.max.reauth.ms": "1500",
                                  "offsets.topic.replication.factor": "1"})
    broker = cluster.brokers[1]
    broker.settings["listeners"] = f"SASL_PLAINTEXT://127.0.0.1:{broker.kafka_port}"
    cluster.start()
    cluster.wait_ready()
    with SecurityAdmin(cluster.bootstrap, cluster_secret_file=str(cluster.secret_file)) as a:
        a.create_user("alice", "alice-pw", iterations=4096)
    port = broker.kafka_port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        assert _handshake(sock, "PLAIN") == 0
        code, _, lifetime = _authenticate(sock, b"\0alice\0alice-pw")
        assert (code, lifetime) == (0, 1500)
        _send(sock, _metadata_v1(1))
        _recv_frame(sock)
        time.sleep(2.0)
        _send(sock, _metadata_v1(2))  # past the session, not re-authenticated
        assert _closed(sock)
    closed_before = broker.log_text().count("without re-authenticating")
    # librdkafka re-authenticates (KIP-368) and keeps producing past several lifetimes
    producer = Producer({"bootstrap.servers": cluster.kafka_bootstrap,
                         "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
                         "sasl.username": "alice", "sasl.password": "alice-pw"})
    errors: list = []
    for i in range(8):
        producer.produce("reauth", f"{i}".encode(), on_delivery=lambda e, _: errors.append(e))
        producer.flush(15)
        time.sleep(0.6)
    assert errors == [None] * 8
    assert broker.log_text().count("without re-authenticating") == closed_before


# -------------------------------------------------------------------------- helpers
def _cli(secured: Secured, *args: str, secret: bool = True, check: bool = True) -> str:
    command = [sys.executable, "-m", "raftka", *args]
    if secret:
        command += ["--cluster-secret-file", str(secured.cluster.secret_file)]
    if "--bootstrap" not in args:
        command += ["--bootstrap", secured.cluster.bootstrap]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    if check:
        assert done.returncode == 0, done.stderr
        return done.stdout
    return done.stdout + done.stderr


def _header(api_key: int, version: int, correlation: int) -> bytes:
    client = b"security-test"
    return struct.pack(">hhih", api_key, version, correlation, len(client)) + client


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">i", len(payload)) + payload)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _recv_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
    return _recv_exactly(sock, size)


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True


def _metadata_v1(correlation: int) -> bytes:
    return _header(3, 1, correlation) + struct.pack(">i", -1)


def _handshake(sock: socket.socket, mechanism: str) -> int:
    _send(sock, _header(17, 1, 100) + struct.pack(">h", len(mechanism)) + mechanism.encode())
    body = _recv_frame(sock)
    return int(struct.unpack_from(">h", body, 4)[0])


def _authenticate(sock: socket.socket, token: bytes) -> tuple[int, str | None, int]:
    """SaslAuthenticate v1: (error code, error message, session lifetime ms)."""
    code, message, lifetime, _ = _authenticate_raw(sock, token)
    return code, message, lifetime


def _authenticate_raw(sock: socket.socket,
                      token: bytes) -> tuple[int, str | None, int, bytes]:
    """SaslAuthenticate v1: (error code, error message, session lifetime ms, auth bytes)."""
    _send(sock, _header(36, 1, 101) + struct.pack(">i", len(token)) + token)
    body = _recv_frame(sock)
    (code,) = struct.unpack_from(">h", body, 4)
    (length,) = struct.unpack_from(">h", body, 6)
    position = 8
    message = None
    if length >= 0:
        message = body[position:position + length].decode()
        position += length
    (token_length,) = struct.unpack_from(">i", body, position)
    reply = body[position + 4:position + 4 + max(0, token_length)]
    position += 4 + max(0, token_length)
    (lifetime,) = struct.unpack_from(">q", body, position)
    return int(code), message, int(lifetime), reply


def _node_modules() -> Path | None:
    """kafkajs: the examples' own node_modules, else $NODE_PATH (e.g. another checkout's)."""
    import os

    from tests.node_harness import NEST_DIR

    local = NEST_DIR / "node_modules"
    if local.is_dir():
        return local
    given = os.environ.get("NODE_PATH")
    return Path(given) if given and (Path(given) / "kafkajs").is_dir() else None


@pytest.mark.node
@pytest.mark.parametrize("mechanism", ["scram-sha-256", "scram-sha-512"])
def test_kafkajs_round_trip_with_scram(secured: Secured, mechanism: str):
    import os
    import shutil

    from tests.node_harness import NEST_DIR, json_lines

    node, modules = shutil.which("node"), _node_modules()
    if node is None or modules is None:
        pytest.skip("node or kafkajs (examples/nestjs/node_modules or $NODE_PATH) missing")
    topic, group = _unique("alice-js"), _unique("alice-js-group")
    secured.create_topic(topic, 3)
    secured.allow("User:alice", ResourceType.TOPIC, topic, Operation.WRITE, Operation.READ)
    secured.allow("User:alice", ResourceType.GROUP, group, Operation.READ)
    done = subprocess.run(
        [node, "kafkajs-roundtrip.js", "--brokers", secured.kafka, "--topic", topic,
         "--group", group, "--count", "50", "--timeout-ms", "30000",
         "--sasl-mechanism", mechanism],
        cwd=NEST_DIR, capture_output=True, text=True, timeout=90,
        env={**os.environ, "NODE_PATH": str(modules), "KAFKA_USERNAME": "alice",
             "KAFKA_PASSWORD": PASSWORDS["alice"]})
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    (summary,) = [line for line in json_lines(done.stdout) if "produced" in line]
    assert summary["produced"] == summary["consumed"] == 50 and summary["missing"] == []


# ------------------------------------------------------- admin operations under ACLs
def _admin_fixture(secured: Secured, prefix: str) -> tuple[str, str]:
    """A topic with 2 partitions (5 records in partition 0, retention.ms set) and an empty
    group with committed offsets on it, made by the super user."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    topic, group = _unique(prefix), _unique(f"{prefix}-group")
    admin = AdminClient(secured.conf("admin"))
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=3,
                                  config={"retention.ms": "86400000"})])[topic].result(15)
    producer = Producer({**secured.conf("admin"), "acks": "all"})
    for i in range(5):
        producer.produce(topic, f"r{i}".encode(), partition=0)
    assert producer.flush(30) == 0
    consumer = Consumer({**secured.conf("admin"), "group.id": group,
                         "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
    consumer.close()
    return topic, group


def _state(secured: Secured, topic: str, group: str) -> tuple[int, str, int, list[int]]:
    """What the admin operations could change: partition count, retention.ms, partition 0's
    log start offset, the group's committed offsets (empty when the group is gone)."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    admin = AdminClient(secured.conf("admin"))
    partitions = len(admin.list_topics(topic, timeout=10).topics[topic].partitions)
    configs = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
    (described,) = configs.values()
    retention = described.result(15)["retention.ms"].value
    consumer = Consumer({**secured.conf("admin"), "group.id": group})
    try:
        low, _ = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        committed = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        consumer.close()
    return partitions, retention, int(low), [c.offset for c in committed if c.offset >= 0]


def _refusal(future: object) -> int:
    from confluent_kafka import KafkaException

    with pytest.raises(KafkaException) as refused:
        future.result(15)  # type: ignore[attr-defined]
    return int(refused.value.args[0].code())


def test_unauthorized_kafka_admin_operations_are_refused_and_change_nothing(secured: Secured):
    from confluent_kafka import KafkaError, TopicPartition
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
    )
    from confluent_kafka.admin import ResourceType as KafkaResource

    topic, group = _admin_fixture(secured, "ops-refused")
    before = _state(secured, topic, group)
    assert before == (2, "86400000", 0, [3])
    # bob may see the topic and the group (so the client finds their leader and
    # coordinator) and use them, but not change them
    secured.allow("User:bob", ResourceType.TOPIC, topic, Operation.DESCRIBE, Operation.READ,
                  Operation.WRITE)
    secured.allow("User:bob", ResourceType.GROUP, group, Operation.DESCRIBE, Operation.READ)
    bob = AdminClient(secured.conf("bob"))
    assert _refusal(bob.create_partitions([NewPartitions(topic, 4)])[topic]) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    (altered,) = bob.alter_configs([ConfigResource(
        KafkaResource.TOPIC, topic, set_config={"retention.ms": "1000"})]).values()
    assert _refusal(altered) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    (incremental,) = bob.incremental_alter_configs([ConfigResource(
        KafkaResource.TOPIC, topic, incremental_configs=[ConfigEntry(
            "retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])]).values()
    assert _refusal(incremental) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    (broker,) = bob.incremental_alter_configs([ConfigResource(
        KafkaResource.BROKER, "1", incremental_configs=[ConfigEntry(
            "log.retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])]).values()
    assert _refusal(broker) == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    (trimmed,) = bob.delete_records([TopicPartition(topic, 0, 4)]).values()
    assert _refusal(trimmed) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _refusal(bob.delete_consumer_groups([group])[group]) == \
        KafkaError.GROUP_AUTHORIZATION_FAILED
    assert _state(secured, topic, group) == before


def test_unauthorized_offset_delete_and_log_dirs_through_kafka_python(secured: Secured):
    from kafka import TopicPartition
    from kafka.admin import KafkaAdminClient

    topic, group = _admin_fixture(secured, "ops-kp")
    secured.allow("User:carol", ResourceType.TOPIC, topic, Operation.DESCRIBE)
    secured.allow("User:carol", ResourceType.GROUP, group, Operation.DESCRIBE)
    before = _state(secured, topic, group)
    carol = KafkaAdminClient(
        bootstrap_servers=secured.kafka, security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="carol",
        sasl_plain_password=PASSWORDS["carol"])
    try:
        def offset_delete_code() -> int:
            try:
                answer = carol.delete_group_offsets(group, [TopicPartition(topic, 0)])
            except Exception as exc:  # a group-level error is raised
                return int(getattr(exc, "errno", -1))
            (error,) = answer.values()
            return int(getattr(error, "errno", error or 0))

        assert offset_delete_code() == 30  # no DELETE on the group
        secured.allow("User:carol", ResourceType.GROUP, group, Operation.DELETE)
        assert offset_delete_code() == 29  # no READ on the topic
        assert _state(secured, topic, group) == before
        # DescribeLogDirs without DESCRIBE on the cluster: no log dirs from any broker
        # (kafka-python does not show the v3+ top-level code; the unit tests check it)
        refused = carol.describe_log_dirs()
        assert len(refused) == 3 and all(b["log_dirs"] == [] for b in refused), refused
    finally:
        carol.close()


def test_authorized_kafka_admin_operations_succeed(secured: Secured):
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions
    from confluent_kafka.admin import ResourceType as KafkaResource

    topic, group = _admin_fixture(secured, "ops-allowed")
    secured.allow("User:alice", ResourceType.TOPIC, topic, Operation.ALTER,
                  Operation.ALTER_CONFIGS, Operation.DELETE, Operation.DESCRIBE)
    secured.allow("User:alice", ResourceType.GROUP, group, Operation.DELETE,
                  Operation.DESCRIBE)
    alice = AdminClient(secured.conf("alice"))
    alice.create_partitions([NewPartitions(topic, 3)])[topic].result(15)
    (altered,) = alice.alter_configs([ConfigResource(
        KafkaResource.TOPIC, topic, set_config={"retention.ms": "3600000"})]).values()
    altered.result(15)
    (trimmed,) = alice.delete_records([TopicPartition(topic, 0, 4)]).values()
    assert trimmed.result(15).low_watermark == 4
    alice.delete_consumer_groups([group])[group].result(15)
    wait_for(lambda: _state(secured, topic, group) == (3, "3600000", 4, []), 15,
             "alice's changes to show")


def test_unauthorized_sdk_admin_operations_are_refused_and_change_nothing(secured: Secured):
    from raftka import Admin

    topic, group = _admin_fixture(secured, "ops-sdk")
    secured.allow("User:bob", ResourceType.TOPIC, topic, Operation.DESCRIBE, Operation.READ)
    secured.allow("User:bob", ResourceType.GROUP, group, Operation.DESCRIBE, Operation.READ)
    before = _state(secured, topic, group)
    with Admin(secured.grpc, username="bob", password=PASSWORDS["bob"],
               request_timeout_ms=10_000) as bob:
        refusals = {
            "alter_configs": lambda: bob.alter_configs(topic, {"retention.ms": "1000"}),
            "replace_configs": lambda: bob.alter_configs(topic, {"retention.ms": "1000"},
                                                         replace_all=True),
            "create_partitions": lambda: bob.create_partitions(topic, 4),
            "delete_records": lambda: bob.delete_records(topic, 0, 4),
        }
        for call in refusals.values():
            with pytest.raises(AuthorizationError, match="TOPIC_AUTHORIZATION_FAILED"):
                call()
        with pytest.raises(AuthorizationError, match="CLUSTER_AUTHORIZATION_FAILED"):
            bob.describe_log_dirs()
        with pytest.raises(AuthorizationError, match="GROUP_AUTHORIZATION_FAILED"):
            bob.groups.delete_group(group)
        with pytest.raises(AuthorizationError, match="GROUP_AUTHORIZATION_FAILED"):
            bob.groups.delete_offsets(group, [topic])
        # the message names who may not do what, as the other RPCs' refusals do
        with pytest.raises(AuthorizationError,
                           match=f"User:bob may not ALTER topic '{topic}'"):
            bob.create_partitions(topic, 4)
    # DELETE on the group, but no READ on the topic
    secured.allow("User:carol", ResourceType.GROUP, group, Operation.DELETE,
                  Operation.DESCRIBE)
    secured.allow("User:carol", ResourceType.TOPIC, topic, Operation.DESCRIBE)
    with Admin(secured.grpc, username="carol", password=PASSWORDS["carol"],
               request_timeout_ms=10_000) as carol, \
            pytest.raises(AuthorizationError, match="TOPIC_AUTHORIZATION_FAILED"):
        carol.groups.delete_offsets(group, [topic])
    assert _state(secured, topic, group) == before


def test_authorized_sdk_admin_operations_succeed(secured: Secured):
    from raftka import Admin

    topic, group = _admin_fixture(secured, "ops-sdk-ok")
    secured.allow("User:alice", ResourceType.TOPIC, topic, Operation.ALTER,
                  Operation.ALTER_CONFIGS, Operation.DELETE, Operation.READ,
                  Operation.DESCRIBE)
    secured.allow("User:alice", ResourceType.GROUP, group, Operation.DELETE,
                  Operation.DESCRIBE)
    secured.allow("User:alice", ResourceType.CLUSTER, "kafka-cluster", Operation.DESCRIBE)
    with Admin(secured.grpc, username="alice", password=PASSWORDS["alice"]) as alice:
        alice.alter_configs(topic, {"retention.ms": "3600000"})
        alice.create_partitions(topic, 3)
        assert alice.delete_records(topic, 0, 4) == 4
        assert len(alice.describe_log_dirs()) == 3
        (deleted,) = alice.groups.delete_offsets(group, [topic])
        assert deleted.error_code == 0
    wait_for(lambda: _state(secured, topic, group) == (3, "3600000", 4, []), 15,
             "alice's changes to show")
