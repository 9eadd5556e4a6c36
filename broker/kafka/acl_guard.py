"""ACLs on every Kafka API: each handler runs behind a guard that checks the request's
principal (SASL or User:ANONYMOUS) against the ACLs before anything is done.

How: a guard splits a request into the parts the caller may act on and the parts it may not;
the handler sees only the allowed part (a copy of the request without the rest), and the
refused parts are answered with Kafka's codes: TOPIC_AUTHORIZATION_FAILED (29),
GROUP_AUTHORIZATION_FAILED (30), CLUSTER_AUTHORIZATION_FAILED (31). A refused part therefore
changes nothing. The operations are Kafka's (KafkaApis): Produce WRITE topic, Fetch READ
topic, Metadata/ListOffsets/OffsetForLeaderEpoch DESCRIBE topic, auto-creation and
CreateTopics CREATE cluster-or-topic, DeleteTopics DELETE topic, DescribeConfigs
DESCRIBE_CONFIGS, group APIs READ/DESCRIBE group (+ READ topic for commits), InitProducerId
IDEMPOTENT_WRITE cluster (or WRITE on some topic, KIP-679); the admin operations:
DeleteRecords DELETE topic, AlterConfigs/IncrementalAlterConfigs ALTER_CONFIGS topic (broker
resources: on the cluster), CreatePartitions ALTER topic, DescribeLogDirs DESCRIBE cluster,
DeleteGroups DELETE group, OffsetDelete DELETE group + READ topic.

An API without a guard here (one added later) is served only to callers allowed ALTER on
the cluster; others are disconnected with a log line: fail closed, never open.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from raftka.broker.core import BrokerCore
from raftka.broker.kafka.codec import MalformedRequestError, Request, field
from raftka.broker.kafka.responder import DeferredValues
from raftka.broker.kafka.zero_copy import SplicedResponse
from raftka.cluster.acl import CLUSTER_RESOURCE, Operation, ResourceType

log = logging.getLogger("raftka.kafka")

TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
CLUSTER_AUTHORIZATION_FAILED = 31
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
UNKNOWN_TOPIC_OR_PARTITION = 3
TOPIC, GROUP, CLUSTER = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER
RESOURCE_TOPIC, RESOURCE_BROKER = 2, 4

Response = dict[str, Any] | SplicedResponse | DeferredValues | None
Handler = Callable[[BrokerCore, Request], Awaitable[Response]]
Guard = Callable[[Handler, BrokerCore, Request], Awaitable[Response]]


class UnguardedApiError(MalformedRequestError):
    """An API with no authorization rule, from a caller not allowed ALTER on the cluster:
    the connection closes (there is no reply shape to refuse it with)."""


def _ok(core: BrokerCore, request: Request, op: Operation, kind: ResourceType,
        name: str) -> bool:
    return core.security.allowed(request.principal, request.host, op, kind, name)


def _cluster_ok(core: BrokerCore, request: Request, op: Operation) -> bool:
    return _ok(core, request, op, CLUSTER, CLUSTER_RESOURCE)


def _without(request: Request, **changes: Any) -> Request:
    """The request with some body fields replaced (kio bodies are frozen dataclasses)."""
    return dataclasses.replace(request, body=dataclasses.replace(request.body, **changes))


def _message(request: Request, op: Operation, what: str) -> str:
    return f"{request.principal} may not {op.name} {what}"


# ------------------------------------------------------------------------------ data
async def _produce(handler: Handler, core: BrokerCore, request: Request) -> Response:
    body = request.body
    denied = [t for t in body.topic_data if not _ok(core, request, Operation.WRITE, TOPIC,
                                                       t.name)]
    if not denied:
        return await handler(core, request)
    kept = tuple(t for t in body.topic_data if t not in denied)
    result: Response
    if kept:
        result = await handler(core, _without(request, topic_data=kept))
    else:
        result = None if int(body.acks) == 0 else {"throttle_time": 0, "responses": [],
                                                   "node_endpoints": []}
    refused = [
        {"name": t.name, "partition_responses": [
            {"index": p.index, "error_code": TOPIC_AUTHORIZATION_FAILED, "base_offset": -1,
             "log_start_offset": -1, "record_errors": [],
             "error_message": _message(request, Operation.WRITE, f"topic {t.name!r}")}
            for p in t.partition_data]} for t in denied]
    if isinstance(result, DeferredValues):  # the kept topics' acks are still awaited
        return DeferredValues(_with_refused_later(result, refused))
    return _with_refused(result, refused)


async def _with_refused_later(result: DeferredValues,
                              refused: list[dict[str, Any]]) -> dict[str, Any] | None:
    return _with_refused(await result.values, refused)


def _with_refused(result: dict[str, Any] | SplicedResponse | None,
                  refused: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A produce response with the refused topics' partitions added."""
    if result is None:
        return None
    assert isinstance(result, dict)
    result["responses"] = [*result["responses"], *refused]
    return result


async def _fetch(handler: Handler, core: BrokerCore, request: Request) -> Response:
    body = request.body
    denied = [t for t in body.topics if not _ok(core, request, Operation.READ, TOPIC,
                                                  t.topic)]
    if not denied:
        return await handler(core, request)
    kept = tuple(t for t in body.topics if t not in denied)
    result: Response = await handler(core, _without(request, topics=kept)) if kept else \
        SplicedResponse({"throttle_time": 0, "error_code": 0, "session_id": 0,
                         "responses": []})
    assert isinstance(result, SplicedResponse)
    result.values["responses"] = [*result.values["responses"], *(
        {"topic": t.topic, "partitions": [
            {"partition_index": p.partition, "error_code": TOPIC_AUTHORIZATION_FAILED,
             "high_watermark": -1, "last_stable_offset": -1, "log_start_offset": -1,
             "aborted_transactions": [], "preferred_read_replica": -1, "records": b""}
            for p in t.partitions]} for t in denied)]
    return result


async def _list_offsets(handler: Handler, core: BrokerCore, request: Request) -> Response:
    return await _per_topic(handler, core, request, "topics", "name", "name", lambda p: {
        "partition_index": p.partition_index, "error_code": TOPIC_AUTHORIZATION_FAILED,
        "timestamp": -1, "offset": -1, "leader_epoch": -1})


async def _offset_for_leader_epoch(handler: Handler, core: BrokerCore,
                                   request: Request) -> Response:
    return await _per_topic(handler, core, request, "topics", "topic", "topic", lambda p: {
        "partition": p.partition, "error_code": TOPIC_AUTHORIZATION_FAILED,
        "leader_epoch": -1, "end_offset": -1})


async def _per_topic(handler: Handler, core: BrokerCore, request: Request, list_name: str,
                     name_field: str, reply_name: str,
                     refused: Callable[[Any], dict[str, Any]],
                     op: Operation = Operation.DESCRIBE) -> Response:
    """For requests shaped topics[] -> partitions[] answered in `list_name` alike."""
    topics = getattr(request.body, list_name)
    denied = [t for t in topics if not _ok(core, request, op, TOPIC, getattr(t, name_field))]
    if not denied:
        return await handler(core, request)
    kept = tuple(t for t in topics if t not in denied)
    result: Response = await handler(core, _without(request, **{list_name: kept})) if kept else \
        {"throttle_time": 0, list_name: []}
    assert isinstance(result, dict)
    result[list_name] = [*result[list_name], *(
        {reply_name: getattr(t, name_field), "partitions": [refused(p) for p in t.partitions]}
        for t in denied)]
    return result


async def _init_producer_id(handler: Handler, core: BrokerCore, request: Request) -> Response:
    transactional_id = field(request.body, "transactional_id")
    if transactional_id:
        allowed = _ok(core, request, Operation.WRITE, ResourceType.TRANSACTIONAL_ID,
                      transactional_id)
        code = TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    else:
        allowed = _cluster_ok(core, request, Operation.IDEMPOTENT_WRITE) or \
            core.security.may_write_some_topic(request.principal, request.host)
        code = CLUSTER_AUTHORIZATION_FAILED
    if allowed:
        return await handler(core, request)
    return {"throttle_time": 0, "error_code": code, "producer_id": -1, "producer_epoch": -1}


# ----------------------------------------------------------------------------- admin
async def _metadata(handler: Handler, core: BrokerCore, request: Request) -> Response:
    asked = field(request.body, "topics")
    if asked is None or (request.api_version == 0 and not asked):
        every = await handler(core, request)
        assert isinstance(every, dict)
        every["topics"] = [t for t in every["topics"]
                           if _ok(core, request, Operation.DESCRIBE, TOPIC, t["name"])]
        return every
    image = core.metadata_image
    auto_create = bool(field(request.body, "allow_auto_topic_creation", True))
    may_create_any = _cluster_ok(core, request, Operation.CREATE)
    refused: dict[str, int] = {}
    for topic in asked:
        name = topic.name
        if not name:
            continue
        describable = _ok(core, request, Operation.DESCRIBE, TOPIC, name)
        if not describable:
            refused[name] = TOPIC_AUTHORIZATION_FAILED
        elif (auto_create and name not in image.topics and not may_create_any
              and not _ok(core, request, Operation.CREATE, TOPIC, name)):
            refused[name] = UNKNOWN_TOPIC_OR_PARTITION  # may not create it: not created
    if not refused:
        return await handler(core, request)
    kept = tuple(t for t in asked if t.name not in refused)
    result: Response = await handler(core, _without(request, topics=kept))
    assert isinstance(result, dict)
    names = {t.name for t in kept}
    result["topics"] = [t for t in result["topics"] if t["name"] in names] + [
        {"error_code": code, "name": name, "topic_id": uuid.UUID(int=0), "is_internal": False,
         "partitions": []} for name, code in refused.items()]
    return result


async def _create_topics(handler: Handler, core: BrokerCore, request: Request) -> Response:
    topics = request.body.topics
    if _cluster_ok(core, request, Operation.CREATE):
        return await handler(core, request)
    denied = [t for t in topics if not _ok(core, request, Operation.CREATE, TOPIC, t.name)]
    if not denied:
        return await handler(core, request)
    kept = tuple(t for t in topics if t not in denied)
    result: Response = await handler(core, _without(request, topics=kept)) if kept else \
        {"throttle_time": 0, "topics": []}
    assert isinstance(result, dict)
    result["topics"] = [*result["topics"], *(
        {"name": t.name, "error_code": TOPIC_AUTHORIZATION_FAILED,
         "error_message": _message(request, Operation.CREATE, f"topic {t.name!r}"),
         "topic_id": uuid.UUID(int=0), "num_partitions": -1, "replication_factor": -1,
         "configs": None} for t in denied)]
    return result


async def _delete_topics(handler: Handler, core: BrokerCore, request: Request) -> Response:
    body = request.body
    by_name = field(body, "topic_names", None)
    states = field(body, "topics", None)
    names = list(by_name or []) + [s.name for s in states or [] if s.name]
    denied = [n for n in names if not _ok(core, request, Operation.DELETE, TOPIC, n)]
    if not denied:
        return await handler(core, request)
    if by_name is not None:
        narrowed = _without(request, topic_names=tuple(n for n in by_name if n not in denied))
    else:
        narrowed = _without(request, topics=tuple(s for s in states if s.name not in denied))
    result: Response = await handler(core, narrowed) if len(denied) < len(names) else \
        {"throttle_time": 0, "responses": []}
    assert isinstance(result, dict)
    result["responses"] = [*result["responses"], *(
        {"name": n, "topic_id": uuid.UUID(int=0), "error_code": TOPIC_AUTHORIZATION_FAILED,
         "error_message": _message(request, Operation.DELETE, f"topic {n!r}")}
        for n in denied)]
    return result


async def _describe_configs(handler: Handler, core: BrokerCore, request: Request) -> Response:
    return await _config_resources(handler, core, request, Operation.DESCRIBE_CONFIGS,
                                   "results", {"configs": []})


async def _alter_configs(handler: Handler, core: BrokerCore, request: Request) -> Response:
    """AlterConfigs and IncrementalAlterConfigs alike (Kafka's AuthHelper: ALTER_CONFIGS)."""
    return await _config_resources(handler, core, request, Operation.ALTER_CONFIGS,
                                   "responses", {})


async def _config_resources(handler: Handler, core: BrokerCore, request: Request,
                            op: Operation, reply_list: str,
                            refusal_extra: dict[str, Any]) -> Response:
    """For requests naming config resources: `op` on each topic resource, or on the
    cluster for broker resources; refused ones answered in `reply_list`."""
    refused = []
    kept = []
    for resource in request.body.resources:
        if resource.resource_type == RESOURCE_TOPIC:
            allowed = _ok(core, request, op, TOPIC, resource.resource_name)
            code = TOPIC_AUTHORIZATION_FAILED
            what = f"topic {resource.resource_name!r}"
        elif resource.resource_type == RESOURCE_BROKER:
            allowed = _cluster_ok(core, request, op)
            code = CLUSTER_AUTHORIZATION_FAILED
            what = "the cluster"
        else:
            allowed, code, what = True, 0, ""  # the handler refuses unknown types itself
        if allowed:
            kept.append(resource)
        else:
            refused.append({"error_code": code, "error_message": _message(request, op, what),
                            "resource_type": resource.resource_type,
                            "resource_name": resource.resource_name, **refusal_extra})
    if not refused:
        return await handler(core, request)
    result: Response = await handler(core, _without(request, resources=tuple(kept))) if kept else \
        {"throttle_time": 0, reply_list: []}
    assert isinstance(result, dict)
    result[reply_list] = [*result[reply_list], *refused]
    return result


async def _create_partitions(handler: Handler, core: BrokerCore, request: Request) -> Response:
    topics = request.body.topics
    denied = [t for t in topics if not _ok(core, request, Operation.ALTER, TOPIC, t.name)]
    if not denied:
        return await handler(core, request)
    kept = tuple(t for t in topics if t not in denied)
    result: Response = await handler(core, _without(request, topics=kept)) if kept else \
        {"throttle_time": 0, "results": []}
    assert isinstance(result, dict)
    result["results"] = [*result["results"], *(
        {"name": t.name, "error_code": TOPIC_AUTHORIZATION_FAILED,
         "error_message": _message(request, Operation.ALTER, f"topic {t.name!r}")}
        for t in denied)]
    return result


async def _delete_records(handler: Handler, core: BrokerCore, request: Request) -> Response:
    return await _per_topic(handler, core, request, "topics", "name", "name", lambda p: {
        "partition_index": p.partition_index, "low_watermark": -1,
        "error_code": TOPIC_AUTHORIZATION_FAILED}, op=Operation.DELETE)


async def _describe_log_dirs(handler: Handler, core: BrokerCore, request: Request) -> Response:
    """Kafka's rule: DESCRIBE on the cluster, else no log dirs; v3+ also says why (the
    error_code field does not exist before v3, where the empty results are the answer)."""
    if _cluster_ok(core, request, Operation.DESCRIBE):
        return await handler(core, request)
    return {"throttle_time": 0, "error_code": CLUSTER_AUTHORIZATION_FAILED, "results": []}


# ---------------------------------------------------------------------------- groups
def _group_gate(op: Operation, refused: Callable[[Request], dict[str, Any]]) -> Guard:
    async def guard(handler: Handler, core: BrokerCore, request: Request) -> Response:
        if _ok(core, request, op, GROUP, request.body.group_id):
            return await handler(core, request)
        return refused(request)
    return guard


_join_group = _group_gate(Operation.READ, lambda r: {
    "throttle_time": 0, "error_code": GROUP_AUTHORIZATION_FAILED, "generation_id": -1,
    "protocol_name": None, "leader": "", "member_id": r.body.member_id or "", "members": []})
_sync_group = _group_gate(Operation.READ, lambda r: {
    "throttle_time": 0, "error_code": GROUP_AUTHORIZATION_FAILED, "assignment": b""})
_heartbeat = _group_gate(Operation.READ, lambda r: {
    "throttle_time": 0, "error_code": GROUP_AUTHORIZATION_FAILED})
_leave_group = _group_gate(Operation.READ, lambda r: {
    "throttle_time": 0, "error_code": GROUP_AUTHORIZATION_FAILED, "members": []})


async def _find_coordinator(handler: Handler, core: BrokerCore, request: Request) -> Response:
    body = request.body
    key_type = int(field(body, "key_type", 0) or 0)
    kind = ResourceType.TRANSACTIONAL_ID if key_type == 1 else GROUP
    code = TRANSACTIONAL_ID_AUTHORIZATION_FAILED if key_type == 1 else \
        GROUP_AUTHORIZATION_FAILED
    single = field(body, "key")
    keys = [single] if single is not None else list(field(body, "coordinator_keys", ()) or ())
    denied = [k for k in keys if not _ok(core, request, Operation.DESCRIBE, kind, k)]
    if not denied:
        return await handler(core, request)
    message = f"{request.principal} may not DESCRIBE {kind.name.lower()} {denied[0]!r}"
    refusal = {"error_code": code, "error_message": message, "node_id": -1, "host": "",
               "port": -1}
    if single is not None:
        return {"throttle_time": 0, **refusal}
    kept = tuple(k for k in keys if k not in denied)
    result: Response = await handler(core, _without(request, coordinator_keys=kept)) if kept else \
        {"throttle_time": 0, "coordinators": []}
    assert isinstance(result, dict)
    result["coordinators"] = [*result["coordinators"],
                              *({**refusal, "key": k} for k in denied)]
    return result


async def _offset_commit(handler: Handler, core: BrokerCore, request: Request) -> Response:
    body = request.body
    if not _ok(core, request, Operation.READ, GROUP, body.group_id):
        return {"throttle_time": 0, "topics": _all_partitions(
            body.topics, GROUP_AUTHORIZATION_FAILED)}
    return await _per_topic(handler, core, request, "topics", "name", "name", lambda p: {
        "partition_index": p.partition_index, "error_code": TOPIC_AUTHORIZATION_FAILED},
        op=Operation.READ)


def _all_partitions(topics: Iterable[Any], code: int) -> list[dict[str, Any]]:
    return [{"name": t.name, "partitions": [
        {"partition_index": p.partition_index, "error_code": code} for p in t.partitions]}
        for t in topics]


async def _offset_fetch(handler: Handler, core: BrokerCore, request: Request) -> Response:
    body = request.body
    if not _ok(core, request, Operation.DESCRIBE, GROUP, body.group_id):
        return {"throttle_time": 0, "error_code": GROUP_AUTHORIZATION_FAILED, "topics": []}
    topics = field(body, "topics")
    if topics is None:
        result = await handler(core, request)
        assert isinstance(result, dict)
        result["topics"] = [t for t in result["topics"]
                            if _ok(core, request, Operation.DESCRIBE, TOPIC, t["name"])]
        return result
    return await _offset_fetch_topics(handler, core, request, topics)


async def _offset_fetch_topics(handler: Handler, core: BrokerCore, request: Request,
                               topics: Any) -> Response:
    denied = [t for t in topics if not _ok(core, request, Operation.DESCRIBE, TOPIC, t.name)]
    if not denied:
        return await handler(core, request)
    kept = tuple(t for t in topics if t not in denied)
    result: Response = await handler(core, _without(request, topics=kept)) if kept else \
        {"throttle_time": 0, "error_code": 0, "topics": []}
    assert isinstance(result, dict)
    result["topics"] = [*result["topics"], *(
        {"name": t.name, "partitions": [
            {"partition_index": p, "committed_offset": -1, "committed_leader_epoch": -1,
             "metadata": "", "error_code": TOPIC_AUTHORIZATION_FAILED}
            for p in t.partition_indexes]} for t in denied)]
    return result


async def _describe_groups(handler: Handler, core: BrokerCore, request: Request) -> Response:
    groups = request.body.groups
    denied = [g for g in groups if not _ok(core, request, Operation.DESCRIBE, GROUP, g)]
    if not denied:
        return await handler(core, request)
    kept = tuple(g for g in groups if g not in denied)
    result: Response = await handler(core, _without(request, groups=kept)) if kept else \
        {"throttle_time": 0, "groups": []}
    assert isinstance(result, dict)
    result["groups"] = [*result["groups"], *(
        {"error_code": GROUP_AUTHORIZATION_FAILED, "group_id": g, "group_state": "",
         "protocol_type": "", "protocol_data": "", "members": [],
         "authorized_operations": -2147483648} for g in denied)]
    return result


async def _delete_groups(handler: Handler, core: BrokerCore, request: Request) -> Response:
    groups = request.body.groups_names
    denied = [g for g in groups if not _ok(core, request, Operation.DELETE, GROUP, g)]
    if not denied:
        return await handler(core, request)
    kept = tuple(g for g in groups if g not in denied)
    result: Response = await handler(core, _without(request, groups_names=kept)) if kept else \
        {"throttle_time": 0, "results": []}
    assert isinstance(result, dict)
    result["results"] = [*result["results"], *(
        {"group_id": g, "error_code": GROUP_AUTHORIZATION_FAILED} for g in denied)]
    return result


async def _offset_delete(handler: Handler, core: BrokerCore, request: Request) -> Response:
    """DELETE on the group (else nothing: the top-level code), READ on each topic."""
    body = request.body
    if not _ok(core, request, Operation.DELETE, GROUP, body.group_id):
        return {"error_code": GROUP_AUTHORIZATION_FAILED, "throttle_time": 0, "topics": []}
    denied = [t for t in body.topics if not _ok(core, request, Operation.READ, TOPIC, t.name)]
    if not denied:
        return await handler(core, request)
    kept = tuple(t for t in body.topics if t not in denied)
    result: Response = await handler(core, _without(request, topics=kept)) if kept else \
        {"error_code": 0, "throttle_time": 0, "topics": []}
    assert isinstance(result, dict)
    if result["error_code"]:
        return result  # a group-level error (NOT_COORDINATOR, ...) answers for everything
    result["topics"] = [*result["topics"], *_all_partitions(denied, TOPIC_AUTHORIZATION_FAILED)]
    return result


async def _list_groups(handler: Handler, core: BrokerCore, request: Request) -> Response:
    result = await handler(core, request)
    if _cluster_ok(core, request, Operation.DESCRIBE):
        return result
    assert isinstance(result, dict)
    result["groups"] = [g for g in result["groups"]
                        if _ok(core, request, Operation.DESCRIBE, GROUP, g["group_id"])]
    return result


async def _open(handler: Handler, core: BrokerCore, request: Request) -> Response:
    """APIs every authenticated caller may use (ApiVersions, SASL, DescribeCluster), and the
    security APIs, whose handlers check the cluster permission themselves."""
    return await handler(core, request)


GUARDS: dict[int, Guard] = {
    0: _produce, 1: _fetch, 2: _list_offsets, 3: _metadata, 8: _offset_commit,
    9: _offset_fetch, 10: _find_coordinator, 11: _join_group, 12: _heartbeat,
    13: _leave_group, 14: _sync_group, 15: _describe_groups, 16: _list_groups,
    17: _open, 18: _open, 19: _create_topics, 20: _delete_topics, 22: _init_producer_id,
    23: _offset_for_leader_epoch, 29: _open, 30: _open, 31: _open, 32: _describe_configs,
    36: _open, 50: _open, 51: _open, 60: _open,
    # the admin operations (broker/kafka/admin_ops_handlers.py)
    21: _delete_records, 33: _alter_configs, 35: _describe_log_dirs, 37: _create_partitions,
    42: _delete_groups, 44: _alter_configs, 47: _offset_delete,
}


def guarded(api_key: int, handler: Handler) -> Handler:
    """`handler` behind its API's guard (fail closed when it has none)."""
    guard = GUARDS.get(api_key)

    async def run(core: BrokerCore, request: Request) -> Response:
        if not core.security.settings.enabled:
            return await handler(core, request)
        if guard is not None:
            return await guard(handler, core, request)
        if _cluster_ok(core, request, Operation.ALTER):
            return await handler(core, request)
        raise UnguardedApiError(
            f"api {api_key} has no authorization rule and {request.principal} may not ALTER "
            "the cluster; closing the connection")

    return run
