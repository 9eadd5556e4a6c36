"""Kafka protocol: the admin operations kafka-ui, Redpanda Console, confluent-kafka's
AdminClient and the Kafka CLI tools use to change a cluster: AlterConfigs (33),
IncrementalAlterConfigs (44), CreatePartitions (37), DeleteRecords (21), DeleteGroups (42),
OffsetDelete (47), DescribeLogDirs (35).

Thin, as every Kafka handler: translate the request into the gRPC core's call (the same one
AdminService and GroupService use: topic_admin.py, log_admin.py, the group coordinator),
and its answer back. Error codes are Kafka's (common.proto uses Kafka's numbers). Which
requests are refused before reaching the core, and why, is decided by the pure helpers
`incremental_alteration` and `full_alteration`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raftka.broker.core import BrokerCore
from raftka.broker.errors import to_error
from raftka.broker.kafka.codec import Request, field, timeout_ms
from raftka.proto.raftka.v1 import admin_pb2, common_pb2, group_pb2

Code = common_pb2.ErrorCode
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
# IncrementalAlterConfigs' config_operation values (Kafka's AlterConfigOp.OpType).
OP_SET, OP_DELETE, OP_APPEND, OP_SUBTRACT = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Refusal:
    code: int
    message: str


def resource_refusal(resource_type: int, name: str) -> Refusal | None:
    """Only topic configs can change: broker configs are static (the broker's TOML file)."""
    if resource_type == RESOURCE_TOPIC:
        return None
    if resource_type == RESOURCE_BROKER:
        return Refusal(Code.INVALID_REQUEST,
                       f"broker {name or '(default)'} configs are static: set them in the "
                       "broker's config file and restart it")
    return Refusal(Code.INVALID_REQUEST,
                   f"resource type {resource_type} is not supported (2: topic)")


def incremental_alteration(topic: str, entries: Sequence[tuple[str, int, str | None]]
                           ) -> admin_pb2.TopicConfigAlteration | Refusal:
    """IncrementalAlterConfigs entries (name, operation, value) as one alteration. APPEND and
    SUBTRACT apply to list-typed configs, which no Raftka topic config is."""
    alteration = admin_pb2.TopicConfigAlteration(topic=topic)
    seen: set[str] = set()
    for name, operation, value in entries:
        if name in seen:
            return Refusal(Code.INVALID_REQUEST, f"config '{name}' appears twice")
        seen.add(name)
        if operation == OP_SET:
            if value is None:
                return Refusal(Code.INVALID_CONFIG, f"config '{name}': SET needs a value")
            alteration.set[name] = value
        elif operation == OP_DELETE:
            alteration.delete.append(name)
        elif operation in (OP_APPEND, OP_SUBTRACT):
            return Refusal(Code.INVALID_CONFIG,
                           f"config '{name}' is not a list: APPEND and SUBTRACT do not apply")
        else:
            return Refusal(Code.INVALID_REQUEST,
                           f"config '{name}': unknown operation {operation} "
                           "(0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT)")
    return alteration


def full_alteration(topic: str, entries: Sequence[tuple[str, str | None]]
                    ) -> admin_pb2.TopicConfigAlteration | Refusal:
    """AlterConfigs: the entries become the topic's whole config (a null value: left out)."""
    alteration = admin_pb2.TopicConfigAlteration(topic=topic, replace_all=True)
    for name, value in entries:
        if name in alteration.set:
            return Refusal(Code.INVALID_REQUEST, f"config '{name}' appears twice")
        if value is not None:
            alteration.set[name] = value
    return alteration


async def _alter(core: BrokerCore, request: Request,
                 planned: list[tuple[Any, admin_pb2.TopicConfigAlteration | Refusal]]
                 ) -> dict[str, Any]:
    alterations = [a for _, a in planned if isinstance(a, admin_pb2.TopicConfigAlteration)]
    answers: dict[int, tuple[int, str]] = {}
    if alterations:
        response = await core.topics.alter_configs(admin_pb2.AlterConfigsRequest(
            topics=alterations, validate_only=bool(field(request.body, "validate_only", False))))
        for alteration, result in zip(alterations, response.topics, strict=True):
            answers[id(alteration)] = (result.error_code, result.error_message)
    out = []
    for resource, outcome in planned:
        if isinstance(outcome, Refusal):
            code, message = outcome.code, outcome.message
        else:
            code, message = answers[id(outcome)]
        out.append({"error_code": code, "error_message": message or None,
                    "resource_type": resource.resource_type,
                    "resource_name": resource.resource_name})
    return {"throttle_time": 0, "responses": out}


async def incremental_alter_configs(core: BrokerCore, request: Request) -> dict[str, Any]:
    planned: list[tuple[Any, admin_pb2.TopicConfigAlteration | Refusal]] = []
    for resource in request.body.resources:
        refusal = resource_refusal(resource.resource_type, resource.resource_name)
        planned.append((resource, refusal or incremental_alteration(
            resource.resource_name,
            [(c.name, int(c.config_operation), c.value) for c in resource.configs])))
    return await _alter(core, request, planned)


async def alter_configs(core: BrokerCore, request: Request) -> dict[str, Any]:
    planned: list[tuple[Any, admin_pb2.TopicConfigAlteration | Refusal]] = []
    for resource in request.body.resources:
        refusal = resource_refusal(resource.resource_type, resource.resource_name)
        planned.append((resource, refusal or full_alteration(
            resource.resource_name, [(c.name, c.value) for c in resource.configs])))
    return await _alter(core, request, planned)


async def create_partitions(core: BrokerCore, request: Request) -> dict[str, Any]:
    body = request.body
    results: list[dict[str, Any]] = []
    changes = []
    for topic in body.topics:
        if field(topic, "assignments"):
            results.append({"name": topic.name, "error_code": Code.INVALID_REQUEST,
                            "error_message": "manual replica assignment is not supported; "
                                             "leave assignments out to place them evenly"})
            continue
        changes.append(admin_pb2.PartitionCountChange(topic=topic.name, count=int(topic.count)))
    if changes:
        response = await core.topics.create_partitions(
            admin_pb2.CreatePartitionsRequest(
                topics=changes, validate_only=bool(field(body, "validate_only", False))),
            timeout_s=max(1.0, timeout_ms(field(body, "timeout")) / 1000))
        results += [{"name": r.topic, "error_code": r.error_code,
                     "error_message": r.error_message or None} for r in response.topics]
    return {"throttle_time": 0, "results": results}


async def delete_records(core: BrokerCore, request: Request) -> dict[str, Any]:
    proto = admin_pb2.DeleteRecordsRequest(partitions=[
        admin_pb2.DeleteRecordsPartition(topic=t.name, partition=p.partition_index,
                                         offset=p.offset)
        for t in request.body.topics for p in t.partitions])
    response = await core.log_admin.delete_records(proto)
    topics: dict[str, list[dict[str, Any]]] = {}
    for result in response.partitions:
        topics.setdefault(result.topic, []).append({
            "partition_index": result.partition, "low_watermark": result.low_watermark,
            "error_code": result.error_code})
    return {"throttle_time": 0,
            "topics": [{"name": name, "partitions": parts} for name, parts in topics.items()]}


async def delete_groups(core: BrokerCore, request: Request) -> dict[str, Any]:
    results = []
    for group_id in request.body.groups_names:
        code = 0
        try:
            await core.group_coordinator.delete(group_id)
        except Exception as exc:  # per group: NOT_COORDINATOR, NON_EMPTY_GROUP, ...
            code, _ = to_error(exc)
        results.append({"group_id": group_id, "error_code": code})
    return {"throttle_time": 0, "results": results}


async def offset_delete(core: BrokerCore, request: Request) -> dict[str, Any]:
    body = request.body
    asked = [(t.name, [p.partition_index for p in t.partitions]) for t in body.topics]
    proto = group_pb2.DeleteOffsetsRequest(group_id=body.group_id, topics=[
        group_pb2.TopicPartitions(topic=name, partitions=partitions)
        for name, partitions in asked])
    try:
        response = await core.group_coordinator.delete_offsets(proto)
    except Exception as exc:
        code, _ = to_error(exc)
        return {"error_code": code, "throttle_time": 0, "topics": []}
    by_topic = {r.topic: r.error_code for r in response.topics}
    return {"error_code": 0, "throttle_time": 0, "topics": [
        {"name": name, "partitions": [
            {"partition_index": p, "error_code": by_topic.get(name, 0)} for p in partitions]}
        for name, partitions in asked]}


async def describe_log_dirs(core: BrokerCore, request: Request) -> dict[str, Any]:
    asked = field(request.body, "topics")
    wanted = None if asked is None else {t.topic: set(t.partitions) for t in asked}
    described = core.log_admin.describe_log_dirs()
    topics: dict[str, list[dict[str, Any]]] = {}
    for p in described.partitions:
        if wanted is not None and p.partition not in wanted.get(p.topic, ()):
            continue
        topics.setdefault(p.topic, []).append({
            "partition_index": p.partition, "partition_size": p.size_bytes,
            "offset_lag": max(0, p.offset_lag), "is_future_key": False})
    return {"throttle_time": 0, "error_code": 0, "results": [{
        "error_code": 0, "log_dir": described.log_dir,
        "topics": [{"name": name, "partitions": parts} for name, parts in topics.items()],
        "total_bytes": described.total_bytes, "usable_bytes": described.usable_bytes}]}
