"""Kafka protocol: FindCoordinator, the classic group protocol (JoinGroup, SyncGroup,
Heartbeat, LeaveGroup), OffsetCommit, OffsetFetch, ListGroups, DescribeGroups.

The group state lives in the same coordinator as the gRPC groups (broker/groups/), and
committed offsets are shared: a Kafka client's commits are what `raftka groups describe`
shows, and the reverse.
"""

from __future__ import annotations

from typing import Any

from raftka.broker.core import BrokerCore
from raftka.broker.errors import to_error
from raftka.broker.groups.classic_protocol import ClassicProtocol
from raftka.broker.groups.offsets_log import OFFSETS_TOPIC, partition_for_group
from raftka.broker.kafka.codec import Request, field, timeout_ms
from raftka.proto.raftka.v1 import common_pb2, group_pb2

Code = common_pb2.ErrorCode
KEY_TYPE_GROUP = 0


def _code(name_or_number: Any) -> int:
    return Code.Value(name_or_number) if isinstance(name_or_number, str) else int(name_or_number)


def _classic(core: BrokerCore) -> ClassicProtocol:
    return core.classic_groups


# ----------------------------------------------------------------------- coordinator
async def find_coordinator(core: BrokerCore, request: Request) -> dict[str, Any]:
    body = request.body
    keys = list(field(body, "coordinator_keys", None) or [])
    single = field(body, "key")
    if single is not None:
        keys = [single]
    key_type = int(field(body, "key_type", KEY_TYPE_GROUP) or 0)
    found = [await _locate(core, key, key_type, request.listener) for key in keys]
    if request.api_version >= 4:
        return {"throttle_time": 0, "coordinators": found}
    first = found[0] if found else {"error_code": Code.INVALID_REQUEST,
                                    "error_message": "no key", "node_id": -1, "host": "",
                                    "port": -1}
    return {"throttle_time": 0, **{k: v for k, v in first.items() if k != "key"}}


async def _locate(core: BrokerCore, key: str, key_type: int,
                  listener: str) -> dict[str, Any]:
    missing = {"key": key, "node_id": -1, "host": "", "port": -1}
    if key_type != KEY_TYPE_GROUP:
        return {**missing, "error_code": Code.COORDINATOR_NOT_AVAILABLE,
                "error_message": "transactions are not supported"}
    reply = await core.group_directory.find_coordinator(key, listener)
    if reply.error_code:
        return {**missing, "error_code": reply.error_code,
                "error_message": reply.error_message}
    broker = core.group_directory.coordinator_of(reply.coordinator.broker_id)
    endpoint = broker.kafka_endpoint(listener) if broker is not None else None
    if broker is None or endpoint is None:
        return {**missing, "error_code": Code.COORDINATOR_NOT_AVAILABLE,
                "error_message": f"the coordinator has no Kafka listener {listener}"}
    return {"key": key, "node_id": broker.broker_id, "host": endpoint[0],
            "port": endpoint[1], "error_code": 0, "error_message": None}


# ------------------------------------------------------------------------ membership
async def join_group(core: BrokerCore, request: Request) -> dict[str, Any]:
    body = request.body
    session_ms = timeout_ms(body.session_timeout)
    rebalance_ms = timeout_ms(field(body, "rebalance_timeout"), session_ms)
    try:
        result = await _classic(core).join(
            body.group_id, body.member_id, request.client_id or "", body.protocol_type,
            [(p.name, bytes(p.metadata)) for p in body.protocols], session_ms, rebalance_ms,
            require_known_member_id=request.api_version >= 4,
            group_instance_id=field(body, "group_instance_id"))
    except Exception as exc:
        code, _ = to_error(exc)
        result = {"error_code": code, "member_id": body.member_id, "generation_id": -1,
                  "protocol_name": "", "leader": "", "members": []}
    return {"throttle_time": 0, **result, "error_code": _code(result["error_code"])}


async def sync_group(core: BrokerCore, request: Request) -> dict[str, Any]:
    body = request.body
    try:
        result = await _classic(core).sync(
            body.group_id, body.member_id, body.generation_id,
            {a.member_id: bytes(a.assignment) for a in body.assignments},
            group_instance_id=field(body, "group_instance_id"))
    except Exception as exc:
        code, _ = to_error(exc)
        result = {"error_code": code, "assignment": b""}
    return {"throttle_time": 0, **result, "error_code": _code(result["error_code"])}


async def heartbeat(core: BrokerCore, request: Request) -> dict[str, Any]:
    body = request.body
    try:
        code: Any = _classic(core).heartbeat(body.group_id, body.member_id,
                                               body.generation_id,
                                               field(body, "group_instance_id"))
    except Exception as exc:
        code, _ = to_error(exc)
    return {"throttle_time": 0, "error_code": _code(code)}


async def leave_group(core: BrokerCore, request: Request) -> dict[str, Any]:
    body = request.body
    members = [(m.member_id, field(m, "group_instance_id"))
               for m in field(body, "members", None) or []]
    single = field(body, "member_id")
    if single:
        members = [(single, None)]
    try:
        results = _classic(core).leave(body.group_id, members)
    except Exception as exc:
        code, _ = to_error(exc)
        return {"throttle_time": 0, "error_code": code, "members": []}
    return {"throttle_time": 0, "error_code": 0, "members": [
        {"member_id": m, "group_instance_id": instance, "error_code": _code(c)}
        for m, instance, c in results]}


# --------------------------------------------------------------------------- offsets
async def offset_commit(core: BrokerCore, request: Request) -> dict[str, Any]:
    body = request.body
    offsets = {(t.name, p.partition_index): (int(p.committed_offset),
                                             p.committed_metadata or "")
               for t in body.topics for p in t.partitions}
    generation = int(field(body, "generation_id_or_member_epoch", -1))
    results: dict[tuple[str, int], Any]
    try:
        results = dict(await _classic(core).commit(body.group_id, body.member_id or "",
                                                     generation, offsets,
                                                     field(body, "group_instance_id")))
    except Exception as exc:
        failure, _ = to_error(exc)
        results = dict.fromkeys(offsets, failure)
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for (topic, partition), code in results.items():
        by_topic.setdefault(topic, []).append(
            {"partition_index": partition, "error_code": _code(code)})
    return {"throttle_time": 0, "topics": [
        {"name": name, "partitions": parts} for name, parts in by_topic.items()]}


async def offset_fetch(core: BrokerCore, request: Request) -> dict[str, Any]:
    body = request.body
    topics = field(body, "topics")
    proto_request = group_pb2.OffsetFetchRequest(group_id=body.group_id)
    if topics:
        proto_request.partitions.extend(
            group_pb2.TopicPartitions(topic=t.name, partitions=list(t.partition_indexes))
            for t in topics)
    try:
        reply = core.group_coordinator.fetch_offsets(proto_request)
        error = 0
    except Exception as exc:
        error, _ = to_error(exc)
        reply = group_pb2.OffsetFetchResponse()
    if error:
        asked = [(t.name, p) for t in topics or [] for p in t.partition_indexes]
        return {"throttle_time": 0, "error_code": error, "topics": _offsets_by_topic(
            [(t, p, -1, "", error) for t, p in asked])}
    rows = [(o.topic, o.partition, o.offset, o.metadata, 0) for o in reply.offsets]
    return {"throttle_time": 0, "error_code": 0, "topics": _offsets_by_topic(rows)}


def _offsets_by_topic(rows: list[tuple[str, int, int, str, int]]) -> list[dict[str, Any]]:
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for topic, partition, offset, metadata, code in rows:
        by_topic.setdefault(topic, []).append({
            "partition_index": partition, "committed_offset": offset,
            "committed_leader_epoch": -1, "metadata": metadata, "error_code": code})
    return [{"name": name, "partitions": parts} for name, parts in by_topic.items()]


# ----------------------------------------------------------------------------- admin
async def list_groups(core: BrokerCore, request: Request) -> dict[str, Any]:
    """The groups this broker coordinates, as Kafka answers: Kafka clients ask every broker
    and put the answers together, so listing the whole cluster here named each group once
    per broker (librdkafka's test 0019 saw every group three times, and sent DescribeGroups
    to brokers that answered NOT_COORDINATOR). The gRPC ListGroups still lists them all."""
    reply = await core.group_directory.list_groups(local_only=True)
    return {"throttle_time": 0, "error_code": 0, "groups": [
        {"group_id": g.group_id, "protocol_type": "consumer", "group_state": g.state,
         "group_type": "consumer"} for g in reply.groups]}


async def describe_groups(core: BrokerCore, request: Request) -> dict[str, Any]:
    groups = []
    for group_id in request.body.groups:
        entry: dict[str, Any] = {"error_code": 0, "group_id": group_id, "group_state": "Dead",
                                 "protocol_type": "", "protocol_data": "", "members": [],
                                 "authorized_operations": -2147483648}
        count = core.group_coordinator.offsets_partitions()
        index = partition_for_group(group_id, count) if count else -1
        try:
            described = _classic(core).describe(group_id)
        except Exception as exc:
            code, _ = to_error(exc)
            entry["error_code"] = code
            described = None
        if described is not None:
            entry.update(group_state=described["state"],
                         protocol_type=described["protocol_type"],
                         protocol_data=described["protocol_name"], members=[
                             {"member_id": m["member_id"],
                              "group_instance_id": m["group_instance_id"],
                              "client_id": m["client_id"], "client_host": "",
                              "member_metadata": m["metadata"],
                              "member_assignment": m["assignment"]}
                             for m in described["members"]])
        elif entry["error_code"] == 0 and index >= 0:
            entry["group_state"] = "Empty"
        groups.append(entry)
    return {"throttle_time": 0, "groups": groups}


__all__ = ["OFFSETS_TOPIC"]
