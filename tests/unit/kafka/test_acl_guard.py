"""The Kafka ACL guards without sockets: what the handler is given and what the refused parts
are answered with. The decisions come from the real authorizer over real ACLs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftka.broker.kafka import acl_guard, codec
from raftka.broker.kafka.codec import Request, build, request_schema
from raftka.broker.kafka.responder import DeferredValues
from raftka.cluster import acl
from raftka.cluster.acl import (
    AclBinding,
    AclIndex,
    AuthorizerSettings,
    Operation,
    PatternType,
    Permission,
    ResourceType,
)
from raftka.cluster.image import EMPTY_IMAGE


class FakeSecurity:
    def __init__(self, rules: list[AclBinding], enabled: bool = True) -> None:
        self.settings = AuthorizerSettings(enabled=enabled)
        self._index = AclIndex(rules)

    def allowed(self, principal: str, host: str, op: Operation, kind: ResourceType,
                name: str) -> bool:
        return acl.authorize(self._index, self.settings, principal, host, op, kind, name)

    def may_write_some_topic(self, principal: str, host: str) -> bool:
        return acl.may_somewhere(self._index, self.settings, principal, host, Operation.WRITE,
                                 ResourceType.TOPIC)


class FakeCore:
    def __init__(self, rules: list[AclBinding], enabled: bool = True) -> None:
        self.security = FakeSecurity(rules, enabled)
        self.metadata_image = EMPTY_IMAGE


def allow(kind: ResourceType, name: str, op: Operation) -> AclBinding:
    return AclBinding(kind, name, PatternType.LITERAL, "User:bob", "*", op, Permission.ALLOW)


def request(api_key: int, version: int, values: dict[str, Any]) -> Request:
    body = build(request_schema(api_key, version), values)
    return Request(api_key, version, 1, "test", body, principal="User:bob", host="10.0.0.1")


class Recorder:
    def __init__(self, answer: Any) -> None:
        self.seen: list[Request] = []
        self._answer = answer

    async def __call__(self, core: Any, req: Request) -> Any:
        self.seen.append(req)
        return self._answer(req) if callable(self._answer) else self._answer


def run(api_key: int, handler: Recorder, core: FakeCore, req: Request) -> Any:
    return asyncio.run(acl_guard.guarded(api_key, handler)(core, req))  # type: ignore[arg-type]


def produce_request(acks: int, *topics: str) -> Request:
    return request(0, 9, {"acks": acks, "timeout": 1000, "topic_data": [
        {"name": t, "partition_data": [{"index": 0, "records": b""}]} for t in topics]})


def produced(req: Request) -> dict[str, Any]:
    return {"throttle_time": 0, "responses": [
        {"name": t.name, "partition_responses": [{"index": 0, "error_code": 0}]}
        for t in req.body.topic_data], "node_endpoints": []}


def test_produce_handler_sees_only_allowed_topics() -> None:
    core = FakeCore([allow(ResourceType.TOPIC, "ok", Operation.WRITE)])
    handler = Recorder(produced)
    result = run(0, handler, core, produce_request(-1, "ok", "secret"))
    assert [t.name for t in handler.seen[0].body.topic_data] == ["ok"]
    codes = {r["name"]: r["partition_responses"][0]["error_code"] for r in result["responses"]}
    assert codes == {"ok": 0, "secret": acl_guard.TOPIC_AUTHORIZATION_FAILED}


def test_a_deferred_produce_answer_gets_the_refused_topics_when_it_completes() -> None:
    """The handler's answer waits for acks (DeferredValues): the refused topics join it."""
    core = FakeCore([allow(ResourceType.TOPIC, "ok", Operation.WRITE)])

    async def later(req: Request) -> dict[str, Any]:
        return produced(req)

    handler = Recorder(lambda req: DeferredValues(later(req)))

    async def scenario() -> Any:
        guarded = acl_guard.guarded(0, handler)  # type: ignore[arg-type]
        deferred = await guarded(core, produce_request(-1, "ok", "secret"))  # type: ignore[arg-type]
        assert isinstance(deferred, DeferredValues)
        return await deferred.values

    result = asyncio.run(scenario())
    codes = {r["name"]: r["partition_responses"][0]["error_code"] for r in result["responses"]}
    assert codes == {"ok": 0, "secret": acl_guard.TOPIC_AUTHORIZATION_FAILED}


def test_fully_refused_produce_never_reaches_the_handler() -> None:
    handler = Recorder(produced)
    assert run(0, handler, FakeCore([]), produce_request(0, "secret")) is None
    result = run(0, handler, FakeCore([]), produce_request(1, "secret"))
    assert handler.seen == []
    assert result["responses"][0]["partition_responses"][0]["error_code"] == 29


def test_without_an_authorizer_the_request_goes_through_untouched() -> None:
    handler = Recorder(produced)
    original = produce_request(1, "secret")
    run(0, handler, FakeCore([], enabled=False), original)
    assert handler.seen == [original]


def test_delete_topics_by_name() -> None:
    core = FakeCore([allow(ResourceType.TOPIC, "old", Operation.DELETE)])
    handler = Recorder(lambda req: {"throttle_time": 0, "responses": [
        {"name": n, "error_code": 0} for n in req.body.topic_names]})
    result = run(20, handler, core, request(20, 4, {"topic_names": ["old", "keep"],
                                                   "timeout": 1000}))
    assert list(handler.seen[0].body.topic_names) == ["old"]
    assert {r["name"]: r["error_code"] for r in result["responses"]} == \
        {"old": 0, "keep": acl_guard.TOPIC_AUTHORIZATION_FAILED}


def test_create_topics_with_cluster_create_needs_no_topic_acl() -> None:
    core = FakeCore([allow(ResourceType.CLUSTER, acl.CLUSTER_RESOURCE, Operation.CREATE)])
    handler = Recorder({"throttle_time": 0, "topics": []})
    req = request(19, 5, {"topics": [{"name": "new", "num_partitions": 1,
                                      "replication_factor": 1, "assignments": [],
                                      "configs": []}], "timeout": 1000})
    run(19, handler, core, req)
    assert handler.seen == [req]


def test_group_apis_refuse_with_group_authorization_failed() -> None:
    handler = Recorder({"throttle_time": 0, "error_code": 0})
    result = run(12, handler, FakeCore([]), request(12, 4, {
        "group_id": "g", "generation_id": 1, "member_id": "m"}))
    assert handler.seen == [] and result["error_code"] == acl_guard.GROUP_AUTHORIZATION_FAILED


def test_init_producer_id_needs_idempotent_write_or_some_topic_write() -> None:
    answer = {"throttle_time": 0, "error_code": 0, "producer_id": 7, "producer_epoch": 0}
    req = request(22, 4, {"transactional_id": None, "transaction_timeout": 1000,
                          "producer_id": -1, "producer_epoch": -1})
    refused = run(22, Recorder(answer), FakeCore([]), req)
    assert refused["error_code"] == acl_guard.CLUSTER_AUTHORIZATION_FAILED
    writer = FakeCore([allow(ResourceType.TOPIC, "any", Operation.WRITE)])
    assert run(22, Recorder(answer), writer, req)["producer_id"] == 7


def test_an_api_without_a_rule_fails_closed() -> None:
    handler = Recorder({"throttle_time": 0})
    req = request(12, 4, {"group_id": "g", "generation_id": 1, "member_id": "m"})
    with pytest.raises(acl_guard.UnguardedApiError):
        run(9999, handler, FakeCore([]), req)
    admin = FakeCore([allow(ResourceType.CLUSTER, acl.CLUSTER_RESOURCE, Operation.ALTER)])
    run(9999, handler, admin, req)
    assert handler.seen == [req]


# ------------------------------------------------------------------ admin operations
T, G, C = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER


def config_resources(*resources: tuple[int, str]) -> list[dict[str, Any]]:
    return [{"resource_type": kind, "resource_name": name, "configs": []}
            for kind, name in resources]


def altered(req: Request) -> dict[str, Any]:
    return {"throttle_time": 0, "responses": [
        {"error_code": 0, "error_message": None, "resource_type": r.resource_type,
         "resource_name": r.resource_name} for r in req.body.resources]}


@pytest.mark.parametrize("api_key", [33, 44])
def test_alter_configs_needs_alter_configs_on_the_topic_or_the_cluster(api_key: int) -> None:
    core = FakeCore([allow(T, "mine", Operation.ALTER_CONFIGS),
                     allow(T, "other", Operation.ALTER)])  # ALTER is not ALTER_CONFIGS
    handler = Recorder(altered)
    req = request(api_key, 1, {"resources": config_resources(
        (acl_guard.RESOURCE_TOPIC, "mine"), (acl_guard.RESOURCE_TOPIC, "other"),
        (acl_guard.RESOURCE_BROKER, "1")), "validate_only": False})
    result = run(api_key, handler, core, req)
    assert [r.resource_name for r in handler.seen[0].body.resources] == ["mine"]
    codes = {r["resource_name"]: r["error_code"] for r in result["responses"]}
    assert codes == {"mine": 0, "other": acl_guard.TOPIC_AUTHORIZATION_FAILED,
                     "1": acl_guard.CLUSTER_AUTHORIZATION_FAILED}
    messages = {r["resource_name"]: r["error_message"] for r in result["responses"]}
    assert messages["other"] == "User:bob may not ALTER_CONFIGS topic 'other'"
    assert messages["1"] == "User:bob may not ALTER_CONFIGS the cluster"
    # ALTER_CONFIGS on the cluster lets broker resources through to the handler
    cluster = FakeCore([allow(C, acl.CLUSTER_RESOURCE, Operation.ALTER_CONFIGS)])
    broker_only = request(api_key, 1, {"resources": config_resources(
        (acl_guard.RESOURCE_BROKER, "1")), "validate_only": False})
    handler = Recorder(altered)
    run(api_key, handler, cluster, broker_only)
    assert handler.seen == [broker_only]


def test_fully_refused_alter_configs_never_reaches_the_handler() -> None:
    handler = Recorder(altered)
    result = run(44, handler, FakeCore([]), request(44, 1, {"resources": config_resources(
        (acl_guard.RESOURCE_TOPIC, "t")), "validate_only": False}))
    assert handler.seen == []
    assert [r["error_code"] for r in result["responses"]] == [29]


def test_create_partitions_needs_alter_on_each_topic() -> None:
    core = FakeCore([allow(T, "grow", Operation.ALTER)])
    handler = Recorder(lambda req: {"throttle_time": 0, "results": [
        {"name": t.name, "error_code": 0, "error_message": None} for t in req.body.topics]})
    req = request(37, 3, {"topics": [{"name": n, "count": 4, "assignments": None}
                                     for n in ("grow", "fixed")],
                          "timeout": 1000, "validate_only": False})
    result = run(37, handler, core, req)
    assert [t.name for t in handler.seen[0].body.topics] == ["grow"]
    assert {r["name"]: r["error_code"] for r in result["results"]} == \
        {"grow": 0, "fixed": acl_guard.TOPIC_AUTHORIZATION_FAILED}
    assert result["results"][1]["error_message"] == "User:bob may not ALTER topic 'fixed'"


def test_delete_records_needs_delete_on_each_topic() -> None:
    core = FakeCore([allow(T, "trim", Operation.DELETE)])
    handler = Recorder(lambda req: {"throttle_time": 0, "topics": [
        {"name": t.name, "partitions": [
            {"partition_index": p.partition_index, "low_watermark": p.offset, "error_code": 0}
            for p in t.partitions]} for t in req.body.topics]})
    req = request(21, 2, {"topics": [
        {"name": n, "partitions": [{"partition_index": 0, "offset": 5},
                                   {"partition_index": 1, "offset": 5}]}
        for n in ("trim", "keep")], "timeout": 1000})
    result = run(21, handler, core, req)
    assert [t.name for t in handler.seen[0].body.topics] == ["trim"]
    by_topic = {t["name"]: t["partitions"] for t in result["topics"]}
    assert [(p["error_code"], p["low_watermark"]) for p in by_topic["trim"]] == [(0, 5)] * 2
    assert [(p["partition_index"], p["error_code"], p["low_watermark"])
            for p in by_topic["keep"]] == [(0, 29, -1), (1, 29, -1)]


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_describe_log_dirs_needs_describe_on_the_cluster(version: int) -> None:
    answer = {"throttle_time": 0, "error_code": 0, "results": [{"error_code": 0,
                                                                 "log_dir": "/d"}]}
    req = request(35, version, {"topics": None})
    handler = Recorder(answer)
    refused = run(35, handler, FakeCore([allow(T, "t", Operation.DESCRIBE)]), req)
    assert handler.seen == [] and refused["results"] == []
    assert refused["error_code"] == acl_guard.CLUSTER_AUTHORIZATION_FAILED
    codec.encode_response(35, version, 1, refused)  # older versions drop the field
    core = FakeCore([allow(C, acl.CLUSTER_RESOURCE, Operation.DESCRIBE)])
    assert run(35, handler, core, req) is answer and handler.seen == [req]


def test_delete_groups_needs_delete_on_each_group() -> None:
    core = FakeCore([allow(G, "old", Operation.DELETE), allow(G, "live", Operation.READ)])
    handler = Recorder(lambda req: {"throttle_time": 0, "results": [
        {"group_id": g, "error_code": 0} for g in req.body.groups_names]})
    result = run(42, handler, core, request(42, 2, {"groups_names": ["old", "live"]}))
    assert list(handler.seen[0].body.groups_names) == ["old"]
    assert {r["group_id"]: r["error_code"] for r in result["results"]} == \
        {"old": 0, "live": acl_guard.GROUP_AUTHORIZATION_FAILED}
    handler = Recorder({"throttle_time": 0, "results": []})
    refused = run(42, handler, FakeCore([]), request(42, 2, {"groups_names": ["old"]}))
    assert handler.seen == [] and refused["results"] == [{"group_id": "old",
                                                          "error_code": 30}]


def offset_delete_request(*topics: str) -> Request:
    return request(47, 0, {"group_id": "g", "topics": [
        {"name": t, "partitions": [{"partition_index": 0}, {"partition_index": 1}]}
        for t in topics]})


def offsets_deleted(req: Request) -> dict[str, Any]:
    return {"error_code": 0, "throttle_time": 0, "topics": [
        {"name": t.name, "partitions": [{"partition_index": p.partition_index,
                                         "error_code": 0} for p in t.partitions]}
        for t in req.body.topics]}


def test_offset_delete_needs_delete_on_the_group() -> None:
    handler = Recorder(offsets_deleted)
    core = FakeCore([allow(G, "g", Operation.READ), allow(T, "t", Operation.READ)])
    result = run(47, handler, core, offset_delete_request("t"))
    assert handler.seen == []
    assert result == {"error_code": acl_guard.GROUP_AUTHORIZATION_FAILED, "throttle_time": 0,
                      "topics": []}


def test_offset_delete_needs_read_on_each_topic() -> None:
    core = FakeCore([allow(G, "g", Operation.DELETE), allow(T, "t", Operation.READ)])
    handler = Recorder(offsets_deleted)
    result = run(47, handler, core, offset_delete_request("t", "hidden"))
    assert [t.name for t in handler.seen[0].body.topics] == ["t"]
    codes = {t["name"]: [p["error_code"] for p in t["partitions"]] for t in result["topics"]}
    assert result["error_code"] == 0
    assert codes == {"t": [0, 0], "hidden": [29, 29]}
    # only refused topics: the handler is not asked
    handler = Recorder(offsets_deleted)
    result = run(47, handler, core, offset_delete_request("hidden"))
    assert handler.seen == [] and result["topics"][0]["partitions"][0]["error_code"] == 29


def test_offset_delete_group_error_answers_for_everything() -> None:
    core = FakeCore([allow(G, "g", Operation.DELETE), allow(T, "t", Operation.READ)])
    handler = Recorder({"error_code": 16, "throttle_time": 0, "topics": []})  # NOT_COORDINATOR
    result = run(47, handler, core, offset_delete_request("t", "hidden"))
    assert result == {"error_code": 16, "throttle_time": 0, "topics": []}


@pytest.mark.parametrize("api_key", [21, 33, 35, 37, 42, 44, 47])
def test_every_admin_operation_has_a_guard_and_its_refusals_encode(api_key: int) -> None:
    """A fully refused request is answered (not disconnected) at every served version."""
    from raftka.broker.kafka.api_table import SUPPORTED

    assert api_key in acl_guard.GUARDS
    bodies: dict[int, dict[str, Any]] = {
        21: {"topics": [{"name": "t", "partitions": [{"partition_index": 0, "offset": 1}]}],
             "timeout": 1000},
        33: {"resources": config_resources((2, "t"), (4, "1")), "validate_only": False},
        35: {"topics": None},
        37: {"topics": [{"name": "t", "count": 2, "assignments": None}], "timeout": 1000,
             "validate_only": False},
        42: {"groups_names": ["g"]},
        44: {"resources": config_resources((2, "t"), (4, "1")), "validate_only": False},
        47: {"group_id": "g", "topics": [{"name": "t", "partitions": [
            {"partition_index": 0}]}]},
    }
    low, high = SUPPORTED[api_key]
    for version in range(low, high + 1):
        handler = Recorder({})
        answer = run(api_key, handler, FakeCore([]), request(api_key, version,
                                                             bodies[api_key]))
        assert handler.seen == []
        assert len(codec.encode_response(api_key, version, 1, answer)) > 8
