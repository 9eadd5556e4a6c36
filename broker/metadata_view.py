"""Read-only answers from the metadata image: Metadata, ListTopics, DescribeTopics,
DescribeCluster. Pure functions of (image, request) so any broker answers the same way."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from raftka.broker.listeners import DEFAULT_LISTENER
from raftka.cluster import topic_config
from raftka.cluster.image import NO_LEADER, MetadataImage, TopicImage
from raftka.cluster.naming import InvalidTopicNameError, validate_topic_name
from raftka.proto.raftka.v1 import admin_pb2, broker_pb2, common_pb2

Code = common_pb2.ErrorCode
Offsets = Callable[[str, int], tuple[int, int]]


def _endpoint(image: MetadataImage, broker_id: int, listener: str) -> common_pb2.BrokerEndpoint:
    """The broker's address for the gRPC listener the asking client came in on."""
    b = image.brokers[broker_id]
    host, port = b.grpc_endpoint(listener)
    return common_pb2.BrokerEndpoint(
        broker_id=b.broker_id, host=host, port=port, kafka_port=b.kafka_port,
        kafka_listeners=[common_pb2.NamedEndpoint(name=n, host=h, port=p)
                         for n, h, p in b.kafka_listeners],
        grpc_listeners=[common_pb2.NamedEndpoint(name=n, host=h, port=p)
                        for n, h, p in b.grpc_listeners],
        replication_port=b.replication_port,
    )


def named_leaders(replies: Iterable[Any]) -> list[int]:
    """Leader ids that NOT_LEADER_OR_FOLLOWER replies name (each once, in order)."""
    return list(dict.fromkeys(
        r.leader_id for r in replies
        if r.error_code == Code.NOT_LEADER_OR_FOLLOWER and r.leader_id >= 0
    ))


def leader_endpoints(
    image: MetadataImage, leader_ids: Iterable[int], listener: str = DEFAULT_LISTENER
) -> list[common_pb2.BrokerEndpoint]:
    """KIP-951: where the leaders a reply names are, for the asking client's gRPC listener,
    so it retries there without a Metadata round trip. Fenced or unknown brokers are left
    out: sending a client to a broker the controller declared dead costs it a timeout."""
    return [
        _endpoint(image, broker_id, listener)
        for broker_id in leader_ids
        if broker_id in image.brokers and not image.brokers[broker_id].fenced
    ]


def metadata_response(
    image: MetadataImage, topics: list[str], controller_id: int | None,
    listener: str = DEFAULT_LISTENER, not_leading: int | None = None,
    catching_up: bool = False,
) -> broker_pb2.MetadataResponse:
    """`not_leading`: this broker's id while it is fenced (e.g. just restarted, not yet
    registered): its image may be old, so partitions it shows itself leading are answered as
    LEADER_NOT_AVAILABLE (clients ask again, or ask another broker) instead.

    `catching_up`: this broker has not applied the metadata holding its registration yet, so
    a topic missing from `image` may well exist: it is answered LEADER_NOT_AVAILABLE too, not
    UNKNOWN_TOPIC_OR_PARTITION, on which librdkafka fails every queued message (seen in the
    fault harness: 28 confluent-kafka writes failed "Local: Unknown topic" after a restart)."""
    response = broker_pb2.MetadataResponse(
        cluster_id=image.cluster_id,
        controller_id=controller_id if controller_id is not None else -1,
        metadata_offset=image.offset,
    )
    for broker_id in image.unfenced_broker_ids():
        response.brokers.append(_endpoint(image, broker_id, listener))
    names = topics or sorted(image.topics)
    for name in names:
        item = response.topics.add(name=name)
        topic = image.topics.get(name)
        if topic is None:
            try:
                validate_topic_name(name)
            except InvalidTopicNameError as exc:
                item.error_code, item.error_message = Code.INVALID_TOPIC_EXCEPTION, str(exc)
                continue
            if catching_up:
                item.error_code = Code.LEADER_NOT_AVAILABLE
                item.error_message = "this broker is starting: catching up on cluster metadata"
                continue
            item.error_code = Code.UNKNOWN_TOPIC_OR_PARTITION
            item.error_message = f"topic '{name}' does not exist"
            continue
        item.topic_id = topic.topic_id
        item.internal = topic.internal
        for index, p in enumerate(topic.partitions):
            leader = NO_LEADER if p.leader == not_leading else p.leader
            entry = item.partitions.add(
                partition=index,
                leader_id=leader,
                leader_epoch=p.leader_epoch,
                replicas=p.replicas,
                isr=p.isr,
            )
            if leader < 0:
                entry.error_code = Code.LEADER_NOT_AVAILABLE
    return response


def list_topics(image: MetadataImage, include_internal: bool) -> admin_pb2.ListTopicsResponse:
    response = admin_pb2.ListTopicsResponse()
    for name in sorted(image.topics):
        topic = image.topics[name]
        if topic.internal and not include_internal:
            continue
        response.topics.add(
            name=name,
            topic_id=topic.topic_id,
            num_partitions=len(topic.partitions),
            replication_factor=topic.replication_factor,
            internal=topic.internal,
        )
    return response


def describe_topics(
    image: MetadataImage, names: list[str], topic_defaults: dict[str, str], local_offsets: Offsets
) -> admin_pb2.DescribeTopicsResponse:
    response = admin_pb2.DescribeTopicsResponse()
    for name in names:
        item = response.topics.add(name=name)
        topic = image.topics.get(name)
        if topic is None:
            item.error_code = Code.UNKNOWN_TOPIC_OR_PARTITION
            item.error_message = f"topic '{name}' does not exist"
            continue
        _describe(item, topic, topic_defaults, local_offsets)
    return response


def _describe(
    item: admin_pb2.TopicDescription,
    topic: TopicImage,
    topic_defaults: dict[str, str],
    local_offsets: Offsets,
) -> None:
    item.topic_id = topic.topic_id
    item.internal = topic.internal
    for index, p in enumerate(topic.partitions):
        start, hw = local_offsets(topic.name, index)
        item.partitions.add(
            partition=index,
            leader_id=p.leader,
            leader_epoch=p.leader_epoch,
            replicas=p.replicas,
            isr=p.isr,
            log_start_offset=start,
            high_watermark=hw,
        )
    effective = topic_config.resolve(topic.configs, topic_defaults)
    for key in sorted(effective):
        item.configs.add(name=key, value=effective[key], is_default=key not in topic.configs)


def describe_cluster(
    image: MetadataImage, controller_id: int | None, listener: str = DEFAULT_LISTENER
) -> admin_pb2.DescribeClusterResponse:
    response = admin_pb2.DescribeClusterResponse(
        cluster_id=image.cluster_id,
        controller_id=controller_id if controller_id is not None else -1,
        metadata_offset=image.offset,
    )
    for broker_id in sorted(image.brokers):
        b = image.brokers[broker_id]
        response.brokers.add(
            endpoint=_endpoint(image, broker_id, listener),
            fenced=b.fenced,
            incarnation_id=b.incarnation_id,
            voter=b.voter,
            pid=b.pid,
        )
    return response
