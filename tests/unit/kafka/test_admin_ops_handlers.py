"""The Kafka admin-operation handlers' own decisions (which requests are refused before the
core, how IncrementalAlterConfigs operations map), and that each answer they build encodes
at every version this broker serves. The core they call is a recording stand-in here; the
integration tests (tests/integration/test_kafka_admin_ops.py) run them against brokers."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from raftka.broker.kafka import admin_ops_handlers as ops
from raftka.broker.kafka import codec
from raftka.broker.kafka.api_table import API_NAMES, SUPPORTED
from raftka.broker.kafka.dispatch import HANDLERS
from raftka.cluster.acl import AuthorizerSettings
from raftka.proto.raftka.v1 import admin_pb2, common_pb2, group_pb2

Code = common_pb2.ErrorCode
KEYS = (21, 33, 35, 37, 42, 44, 47)


def test_every_admin_key_is_served_and_named():
    for key in KEYS:
        assert key in SUPPORTED and key in API_NAMES and key in HANDLERS


def test_incremental_operations():
    alteration = ops.incremental_alteration(
        "t", [("retention.ms", ops.OP_SET, "5"), ("segment.ms", ops.OP_DELETE, None)])
    assert isinstance(alteration, admin_pb2.TopicConfigAlteration)
    assert dict(alteration.set) == {"retention.ms": "5"} and list(alteration.delete) == [
        "segment.ms"]
    refusal = ops.incremental_alteration("t", [("cleanup.policy", ops.OP_APPEND, "compact")])
    assert isinstance(refusal, ops.Refusal) and refusal.code == Code.INVALID_CONFIG
    assert "cleanup.policy" in refusal.message
    twice = ops.incremental_alteration("t", [("a", 0, "1"), ("a", 1, None)])
    assert isinstance(twice, ops.Refusal) and twice.code == Code.INVALID_REQUEST
    assert isinstance(ops.incremental_alteration("t", [("a", 9, "1")]), ops.Refusal)
    assert isinstance(ops.incremental_alteration("t", [("a", ops.OP_SET, None)]), ops.Refusal)


def test_full_alteration_replaces_and_drops_null_values():
    alteration = ops.full_alteration("t", [("retention.ms", "5"), ("segment.ms", None)])
    assert isinstance(alteration, admin_pb2.TopicConfigAlteration)
    assert alteration.replace_all and dict(alteration.set) == {"retention.ms": "5"}


def test_broker_configs_are_refused_as_static():
    refusal = ops.resource_refusal(ops.RESOURCE_BROKER, "1")
    assert refusal is not None and "static" in refusal.message
    assert ops.resource_refusal(ops.RESOURCE_TOPIC, "t") is None


class _Core:
    """Records what the handlers asked the core, answers like it would."""

    def __init__(self) -> None:
        self.asked: list[Any] = []
        # no authorizer, as a broker without one: the ACL guards let everything through
        # (tests/unit/kafka/test_acl_guard.py tests them)
        self.security = SimpleNamespace(settings=AuthorizerSettings(enabled=False))
        self.topics = SimpleNamespace(alter_configs=self._alter,
                                      create_partitions=self._partitions)
        self.log_admin = SimpleNamespace(delete_records=self._delete_records,
                                         describe_log_dirs=self._log_dirs)
        self.group_coordinator = SimpleNamespace(delete=self._delete_group,
                                                 delete_offsets=self._delete_offsets)

    async def _alter(self, request, **_):
        self.asked.append(request)
        return admin_pb2.AlterConfigsResponse(topics=[
            admin_pb2.AlterConfigsResult(topic=t.topic) for t in request.topics])

    async def _partitions(self, request, **_):
        self.asked.append(request)
        return admin_pb2.CreatePartitionsResponse(topics=[
            admin_pb2.CreatePartitionsResult(topic=t.topic, error_code=Code.INVALID_PARTITIONS,
                                             error_message="no") for t in request.topics])

    async def _delete_records(self, request):
        return admin_pb2.DeleteRecordsResponse(partitions=[
            admin_pb2.DeleteRecordsResult(topic=p.topic, partition=p.partition,
                                          low_watermark=p.offset) for p in request.partitions])

    def _log_dirs(self):
        return admin_pb2.DescribeLogDirsResponse(
            broker_id=1, log_dir="/d", total_bytes=10, usable_bytes=5,
            partitions=[admin_pb2.LogDirPartition(topic="t", partition=0, size_bytes=7,
                                                  offset_lag=-1)])

    async def _delete_group(self, group_id):
        if group_id == "busy":
            from raftka.broker.groups.coordinator import CoordinatorError
            error = CoordinatorError("has members")
            error.code = Code.NON_EMPTY_GROUP
            raise error

    async def _delete_offsets(self, request):
        return group_pb2.DeleteOffsetsResponse(topics=[
            group_pb2.DeleteOffsetsTopicResult(topic=t.topic,
                                               error_code=Code.GROUP_SUBSCRIBED_TO_TOPIC)
            for t in request.topics])


def _request(key: int, version: int, values: dict[str, Any]) -> codec.Request:
    schema = codec.request_schema(key, version)
    return codec.Request(key, version, 1, "test", codec.build(schema, values))


BODIES: dict[int, dict[str, Any]] = {
    44: {"resources": [{"resource_type": 2, "resource_name": "t", "configs": [
        {"name": "retention.ms", "config_operation": 0, "value": "5"}]},
        {"resource_type": 4, "resource_name": "1", "configs": []}], "validate_only": False},
    33: {"resources": [{"resource_type": 2, "resource_name": "t", "configs": [
        {"name": "retention.ms", "value": "5"}]}], "validate_only": False},
    37: {"topics": [{"name": "t", "count": 2, "assignments": None}], "timeout": 1000,
         "validate_only": False},
    21: {"topics": [{"name": "t", "partitions": [{"partition_index": 0, "offset": 3}]}],
         "timeout": 1000},
    42: {"groups_names": ["idle", "busy"]},
    47: {"group_id": "g", "topics": [{"name": "t", "partitions": [{"partition_index": 0}]}]},
    35: {"topics": None},
}


@pytest.mark.parametrize("key", KEYS)
def test_answers_encode_at_every_served_version(key):
    low, high = SUPPORTED[key]
    for version in range(low, high + 1):
        core = _Core()
        answer = asyncio.run(HANDLERS[key](core, _request(key, version, BODIES[key])))
        assert isinstance(answer, dict)
        frame = codec.encode_response(key, version, 7, answer)
        assert len(frame) > 8


def test_answers_carry_the_cores_results():
    core = _Core()
    answer = asyncio.run(ops.incremental_alter_configs(core, _request(44, 1, BODIES[44])))
    codes = [r["error_code"] for r in answer["responses"]]
    assert codes == [0, Code.INVALID_REQUEST]  # the broker resource never reached the core
    (asked,) = core.asked
    assert [t.topic for t in asked.topics] == ["t"]
    answer = asyncio.run(ops.delete_groups(core, _request(42, 2, BODIES[42])))
    assert [r["error_code"] for r in answer["results"]] == [0, Code.NON_EMPTY_GROUP]
    answer = asyncio.run(ops.offset_delete(core, _request(47, 0, BODIES[47])))
    assert answer["topics"][0]["partitions"][0]["error_code"] == Code.GROUP_SUBSCRIBED_TO_TOPIC
    answer = asyncio.run(ops.describe_log_dirs(core, _request(35, 4, BODIES[35])))
    assert answer["results"][0]["topics"][0]["partitions"][0]["partition_size"] == 7
