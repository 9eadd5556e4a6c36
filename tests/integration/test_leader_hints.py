"""NOT_LEADER_OR_FOLLOWER answers say where the leader is (Kafka's KIP-951), with real
brokers: gRPC Produce and Fetch carry the leader's id, epoch and gRPC address; Kafka Produce
v10 carries CurrentLeader and NodeEndpoints with its Kafka address. And the SDK uses them:
after the leader is killed, a producer's first write lands on the new leader."""

from __future__ import annotations

import datetime
import io
import socket
import struct

import grpc
import pytest
from kio.index import load_request_schema, load_response_schema
from kio.schema.response_header.v1.header import ResponseHeader
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import Records

from raftka import Admin, Producer
from raftka.proto.raftka.v1 import broker_pb2, broker_pb2_grpc, common_pb2
from raftka.records import encode_batch
from tests.harness import LocalCluster, wait_for

pytestmark = pytest.mark.integration
Code = common_pb2.ErrorCode
TOPIC = "hinted"


@pytest.fixture
def cluster(cluster_factory) -> LocalCluster:
    cluster = cluster_factory(3, {"default.replication.factor": "3", "min.insync.replicas": "2"})
    cluster.start()
    cluster.wait_ready()
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(TOPIC, num_partitions=1, replication_factor=3)
    return cluster


def leader_of(cluster: LocalCluster) -> tuple[int, int]:
    """(leader id, leader epoch) of TOPIC-0 once every broker agrees on it."""

    def agreed() -> tuple[int, int] | None:
        seen = set()
        for broker in cluster.brokers.values():
            if not broker.running:
                continue
            with grpc.insecure_channel(broker.address) as channel:
                reply = broker_pb2_grpc.BrokerServiceStub(channel).Metadata(
                    broker_pb2.MetadataRequest(topics=[TOPIC]), timeout=2)
            p = reply.topics[0].partitions[0]
            seen.add((p.leader_id, p.leader_epoch))
        found = seen.pop() if len(seen) == 1 else None
        return found if found and found[0] > 0 else None

    result = wait_for(agreed, 30, f"one leader of {TOPIC}-0 on every broker")
    assert isinstance(result, tuple)
    return result


def test_grpc_not_leader_answers_name_the_leader_and_its_address(cluster):
    leader, epoch = leader_of(cluster)
    other = next(i for i in cluster.brokers if i != leader)
    with grpc.insecure_channel(cluster.brokers[other].address) as channel:
        stub = broker_pb2_grpc.BrokerServiceStub(channel)
        produced = stub.Produce(broker_pb2.ProduceRequest(acks=1, partitions=[
            broker_pb2.PartitionProduceData(topic=TOPIC, partition=0,
                                            records=[common_pb2.Record(value=b"x")])]),
            timeout=5)
        fetched = stub.Fetch(broker_pb2.FetchRequest(replica_id=-1, partitions=[
            broker_pb2.FetchPartition(topic=TOPIC, partition=0, fetch_offset=0,
                                      current_leader_epoch=-1, last_fetched_epoch=-1)]),
            timeout=5)
    for response in (produced, fetched):
        (reply,) = response.partitions
        assert reply.error_code == Code.NOT_LEADER_OR_FOLLOWER
        assert (reply.leader_id, reply.leader_epoch) == (leader, epoch)
        (endpoint,) = response.node_endpoints
        assert (endpoint.broker_id, f"{endpoint.host}:{endpoint.port}") == (
            leader, cluster.brokers[leader].address)


def kafka_call(port: int, api_key: int, version: int, body: object) -> object:
    schema = type(body)
    header = schema.__header_schema__(request_api_key=api_key, request_api_version=version,
                                      correlation_id=7, client_id="test")
    buffer = io.BytesIO()
    entity_writer(schema.__header_schema__)(buffer, header)
    entity_writer(schema)(buffer, body)
    frame = buffer.getvalue()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", conn.recv(4, socket.MSG_WAITALL))[0]
        data = b""
        while len(data) < size:
            data += conn.recv(size - len(data))
    _, header_size = entity_reader(ResponseHeader)(data, 0)
    response, _ = entity_reader(load_response_schema(api_key, version))(data, header_size)
    return response


def test_kafka_produce_v10_not_leader_answers_carry_current_leader_and_node_endpoints(cluster):
    leader, epoch = leader_of(cluster)
    other = next(i for i in cluster.brokers if i != leader)
    request = load_request_schema(0, 10)
    module = __import__(request.__module__, fromlist=["TopicProduceData", "PartitionProduceData"])
    data = module.PartitionProduceData(index=0,
                                       records=Records(encode_batch([(None, b"k", [], 1)])))
    body = request(transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=5),
                   topic_data=(module.TopicProduceData(name=TOPIC, partition_data=(data,)),))
    response = kafka_call(cluster.brokers[other].kafka_port, 0, 10, body)
    (topic,) = response.responses
    (part,) = topic.partition_responses
    assert part.error_code.value == Code.NOT_LEADER_OR_FOLLOWER
    assert (part.current_leader.leader_id, part.current_leader.leader_epoch) == (leader, epoch)
    (node,) = response.node_endpoints
    assert (node.node_id, node.host, node.port) == (
        leader, "127.0.0.1", cluster.brokers[leader].kafka_port)


def test_after_the_leader_is_killed_a_producer_carries_on_to_the_new_leader(cluster):
    leader, epoch = leader_of(cluster)
    with Producer(cluster.bootstrap, acks="all", linger_ms=0) as producer:
        producer.send(TOPIC, b"before", partition=0).get(timeout=10)
        cluster.brokers[leader].kill()
        producer.send(TOPIC, b"after", partition=0).get(timeout=30)
        new_leader, new_epoch = leader_of(cluster)
        assert new_leader != leader and new_epoch > epoch
        assert producer.metadata.leader_address(TOPIC, 0) == cluster.brokers[new_leader].address
