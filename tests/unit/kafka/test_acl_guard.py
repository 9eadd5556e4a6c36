"""The Kafka ACL guards without sockets: what the handler is given and what the refused parts
are answered with. The decisions come from the real authorizer over real ACLs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftka.broker.kafka import acl_guard
from raftka.broker.kafka.codec import Request, build, request_schema
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
