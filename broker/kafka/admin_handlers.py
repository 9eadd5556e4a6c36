"""Kafka protocol: ApiVersions, Metadata, CreateTopics, DeleteTopics, DescribeConfigs,
DescribeCluster. Thin: read the request, call the same core as the gRPC AdminService, return
the response fields."""

from __future__ import annotations

import uuid
from typing import Any

from raftka.broker.core import BrokerCore
from raftka.broker.kafka import api_table
from raftka.broker.kafka.codec import Request, field, timeout_ms
from raftka.cluster import topic_config
from raftka.cluster.image import MetadataImage
from raftka.cluster.naming import InvalidTopicNameError, validate_topic_name
from raftka.proto.raftka.v1 import admin_pb2, common_pb2

Code = common_pb2.ErrorCode
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
SOURCE_TOPIC = 1
SOURCE_STATIC_BROKER = 4
SOURCE_DEFAULT = 5


def topic_uuid(topic_id: str) -> uuid.UUID:
    """Kafka wants a UUID; Raftka's topic ids are shorter hex strings: pad them."""
    try:
        return uuid.UUID(topic_id.ljust(32, "0")[:32])
    except ValueError:
        return uuid.uuid5(uuid.NAMESPACE_OID, topic_id)


def kafka_brokers(image: MetadataImage, listener: str) -> list[dict[str, Any]]:
    """The live brokers at their addresses for `listener` (brokers without it are left out,
    as in Kafka)."""
    out = []
    for b in sorted(image.brokers.values(), key=lambda b: b.broker_id):
        endpoint = b.kafka_endpoint(listener)
        if not b.fenced and endpoint is not None:
            out.append({"node_id": b.broker_id, "broker_id": b.broker_id, "host": endpoint[0],
                        "port": endpoint[1], "rack": None})
    return out


# The Kafka metadata.version this listener behaves as (KIP-778 feature levels: 15 is
# 3.7-IV0). Advertised as supported and finalized in ApiVersions v3+, since tools read the
# cluster's version from it (kafka-ui showed "Unknown" without it). Raftka has one metadata
# format, so the level is fixed and its min equals its max.
METADATA_VERSION_FEATURE = "metadata.version"
METADATA_VERSION_LEVEL = 15


def api_versions_body() -> dict[str, Any]:
    return {
        "error_code": 0, "api_keys": api_table.api_versions(), "throttle_time": 0,
        "supported_features": [{"name": METADATA_VERSION_FEATURE, "min_version": 1,
                                "max_version": METADATA_VERSION_LEVEL}],
        "finalized_features_epoch": 0,
        "finalized_features": [{"name": METADATA_VERSION_FEATURE,
                                "max_version_level": METADATA_VERSION_LEVEL,
                                "min_version_level": METADATA_VERSION_LEVEL}],
    }


async def api_versions(core: BrokerCore, request: Request) -> dict[str, Any]:
    return api_versions_body()


async def metadata(core: BrokerCore, request: Request) -> dict[str, Any]:
    body = request.body
    asked = field(body, "topics")
    image = core.metadata_image
    if asked is None or (request.api_version == 0 and not asked):
        names = sorted(image.topics)
    else:
        names = [t.name for t in asked if t.name]
    if field(body, "allow_auto_topic_creation", True):
        await core.topics.auto_create_missing(names)  # failures: reported per topic below
        image = core.metadata_image
    controller = core.controller_id()
    return {
        "throttle_time": 0, "brokers": kafka_brokers(image, request.listener),
        "cluster_id": image.cluster_id,
        "controller_id": controller if controller is not None else -1,
        "topics": [_topic_metadata(image, name, core.not_leading, not core.caught_up)
                   for name in names],
    }


def _topic_metadata(image: MetadataImage, name: str, not_leading: int | None,
                    catching_up: bool = False) -> dict[str, Any]:
    """`not_leading`, `catching_up`: see metadata_view.metadata_response."""
    topic = image.topics.get(name)
    if topic is None:
        try:
            validate_topic_name(name)
            code = Code.LEADER_NOT_AVAILABLE if catching_up else Code.UNKNOWN_TOPIC_OR_PARTITION
        except InvalidTopicNameError:
            code = Code.INVALID_TOPIC_EXCEPTION
        return {"error_code": code, "name": name, "topic_id": uuid.UUID(int=0),
                "is_internal": False, "partitions": []}
    return {
        "error_code": 0, "name": name, "topic_id": topic_uuid(topic.topic_id),
        "is_internal": topic.internal,
        "partitions": [{
            "error_code": 0 if _leader(p.leader, not_leading) >= 0
            else Code.LEADER_NOT_AVAILABLE,
            "partition_index": index, "leader_id": _leader(p.leader, not_leading),
            "leader_epoch": p.leader_epoch,
            "replica_nodes": list(p.replicas), "isr_nodes": list(p.isr),
            "offline_replicas": [r for r in p.replicas
                                 if r not in image.brokers or image.brokers[r].fenced],
        } for index, p in enumerate(topic.partitions)],
    }


def _leader(leader: int, not_leading: int | None) -> int:
    return -1 if leader == not_leading else leader


async def create_topics(core: BrokerCore, request: Request) -> dict[str, Any]:
    body = request.body
    results: list[dict[str, Any]] = []
    new_topics = []
    for topic in body.topics:
        if field(topic, "assignments"):
            results.append({"name": topic.name, "error_code": Code.INVALID_REQUEST,
                            "error_message": "manual replica assignment is not supported",
                            "topic_id": uuid.UUID(int=0), "configs": None})
            continue
        new_topics.append(admin_pb2.NewTopic(
            name=topic.name, num_partitions=max(0, int(topic.num_partitions)),
            replication_factor=max(0, int(topic.replication_factor)),
            configs={c.name: c.value for c in topic.configs if c.value is not None}))
    if new_topics:
        proto_request = admin_pb2.CreateTopicsRequest(
            topics=new_topics, validate_only=bool(field(body, "validate_only", False)))
        timeout_s = max(1.0, timeout_ms(field(body, "timeout")) / 1000)
        try:
            response = await core.topics.create_topics(proto_request, timeout_s=timeout_s)
        except Exception as exc:
            return {"throttle_time": 0, "topics": results + [
                {"name": t.name, "error_code": Code.REQUEST_TIMED_OUT,
                 "error_message": str(exc), "topic_id": uuid.UUID(int=0), "configs": None}
                for t in new_topics]}
        for result in response.topics:
            results.append({
                "name": result.name, "error_code": result.error_code,
                "error_message": result.error_message or None,
                "topic_id": topic_uuid(result.topic_id) if result.topic_id else uuid.UUID(int=0),
                "num_partitions": result.num_partitions or -1,
                "replication_factor": result.replication_factor or -1, "configs": None,
            })
    return {"throttle_time": 0, "topics": results}


async def delete_topics(core: BrokerCore, request: Request) -> dict[str, Any]:
    body = request.body
    names = list(field(body, "topic_names", None) or [])
    for state in field(body, "topics", None) or []:
        if state.name:
            names.append(state.name)
    proto_request = admin_pb2.DeleteTopicsRequest(names=names)
    response = await core.topics.delete_topics(
        proto_request, timeout_s=max(1.0, timeout_ms(field(body, "timeout")) / 1000))
    return {"throttle_time": 0, "responses": [
        {"name": r.name, "topic_id": uuid.UUID(int=0), "error_code": r.error_code,
         "error_message": r.error_message or None} for r in response.topics]}


async def describe_configs(core: BrokerCore, request: Request) -> dict[str, Any]:
    image = core.image
    defaults = core.config.topic_config_defaults()
    results = []
    for resource in request.body.resources:
        keys = field(resource, "configuration_keys")
        wanted = set(keys) if keys else None
        result: dict[str, Any] = {"error_code": 0, "error_message": None,
                                  "resource_type": resource.resource_type,
                                  "resource_name": resource.resource_name, "configs": []}
        if resource.resource_type == RESOURCE_TOPIC:
            topic = image.topics.get(resource.resource_name)
            if topic is None:
                result.update(error_code=Code.UNKNOWN_TOPIC_OR_PARTITION,
                              error_message=f"topic '{resource.resource_name}' does not exist")
            else:
                effective = topic_config.resolve(topic.configs, defaults)
                result["configs"] = [
                    _config_entry(name, value, SOURCE_TOPIC if name in topic.configs
                                  else SOURCE_DEFAULT)
                    for name, value in sorted(effective.items())
                    if wanted is None or name in wanted]
        elif resource.resource_type == RESOURCE_BROKER:
            result["configs"] = [
                _config_entry(name, value, SOURCE_STATIC_BROKER, read_only=True)
                for name, value in sorted(_broker_configs(core).items())
                if wanted is None or name in wanted]
        else:
            result.update(error_code=Code.INVALID_REQUEST,
                          error_message=f"resource type {resource.resource_type} is not "
                                        "supported (2: topic, 4: broker)")
        results.append(result)
    return {"throttle_time": 0, "results": results}


def _config_entry(name: str, value: str, source: int, read_only: bool = False
                  ) -> dict[str, Any]:
    return {"name": name, "value": value, "read_only": read_only, "config_source": source,
            "is_default": source == SOURCE_DEFAULT, "is_sensitive": False, "synonyms": [],
            "documentation": None}


def _broker_configs(core: BrokerCore) -> dict[str, str]:
    config = core.config
    return {
        "broker.id": str(config.broker_id), "node.id": str(config.broker_id),
        "num.partitions": str(config.num_partitions),
        "default.replication.factor": str(config.default_replication_factor),
        "auto.create.topics.enable": str(config.auto_create_topics_enable).lower(),
        "min.insync.replicas": str(config.min_insync_replicas),
        "log.retention.ms": str(config.log_retention_ms),
        "log.segment.bytes": str(config.log_segment_bytes),
        "message.max.bytes": str(config.message_max_bytes),
        "offsets.topic.num.partitions": str(config.offsets_topic_num_partitions),
    }


async def describe_cluster(core: BrokerCore, request: Request) -> dict[str, Any]:
    image = core.image
    controller = core.controller_id()
    return {"throttle_time": 0, "error_code": 0, "error_message": None, "endpoint_type": 1,
            "cluster_id": image.cluster_id,
            "controller_id": controller if controller is not None else -1,
            "brokers": kafka_brokers(image, request.listener),
            "cluster_authorized_operations": -2147483648}
