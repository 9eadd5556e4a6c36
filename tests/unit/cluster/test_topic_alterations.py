"""Altering topics through the controller: configs and partition counts, as records.

A refused topic yields no record, so a refused request changes nothing; the records replay
to the same image on every broker and survive a snapshot."""

from __future__ import annotations

from collections import Counter

import pytest

from raftka.cluster import controller, records, topic_alterations, topic_config
from raftka.cluster.controller import ControllerSettings
from raftka.cluster.delta import decode_snapshot, encode_snapshot
from raftka.cluster.local_changes import local_changes
from raftka.proto.raftka.v1 import admin_pb2, common_pb2
from tests.unit.cluster.helpers import apply_records, create, id_sequence, image_with_brokers

Code = common_pb2.ErrorCode


def _alter(image, topic, set_=None, delete=(), replace_all=False, validate_only=False):
    request = admin_pb2.AlterConfigsRequest(validate_only=validate_only, topics=[
        admin_pb2.TopicConfigAlteration(topic=topic, set=set_ or {}, delete=list(delete),
                                        replace_all=replace_all)])
    result = topic_alterations.alter_configs(image, request)
    return result, apply_records(image, result.records)


def _grow(image, topic, count, validate_only=False, settings=None):
    request = admin_pb2.CreatePartitionsRequest(
        validate_only=validate_only,
        topics=[admin_pb2.PartitionCountChange(topic=topic, count=count)])
    result = topic_alterations.create_partitions(image, request, settings or ControllerSettings())
    return result, apply_records(image, result.records)


@pytest.fixture
def image():
    _, image = create(image_with_brokers(1, 2, 3), "orders", partitions=3, rf=2,
                      configs={"retention.ms": "1000", "segment.bytes": "4096"})
    return image


def test_incremental_alter_sets_and_deletes_keeping_the_rest(image):
    result, after = _alter(image, "orders", {"retention.bytes": "5000"}, ["segment.bytes"])
    assert result.response.topics[0].error_code == Code.NONE
    assert dict(after.topics["orders"].configs) == {"retention.ms": "1000",
                                                    "retention.bytes": "5000"}


def test_replace_all_makes_the_set_the_whole_config(image):
    _, after = _alter(image, "orders", {"retention.bytes": "5000"}, replace_all=True)
    assert dict(after.topics["orders"].configs) == {"retention.bytes": "5000"}


@pytest.mark.parametrize(("set_", "delete", "fragment"), [
    ({"retention.msx": "1"}, [], "retention.msx"),
    ({"retention.ms": "soon"}, [], "retention.ms"),
    ({"min.insync.replicas": "0"}, [], "min.insync.replicas"),
    ({"unclean.leader.election.enable": "maybe"}, [], "unclean.leader.election.enable"),
    ({}, ["no.such.config"], "no.such.config"),
    ({"retention.ms": "5"}, ["retention.ms"], "retention.ms"),
])
def test_bad_keys_and_values_are_invalid_config_naming_the_key_and_change_nothing(
        image, set_, delete, fragment):
    result, after = _alter(image, "orders", set_, delete)
    (topic,) = result.response.topics
    assert topic.error_code == Code.INVALID_CONFIG
    assert fragment in topic.error_message
    assert result.records == ()
    assert after.topics["orders"].configs == image.topics["orders"].configs


def test_one_refused_topic_does_not_stop_another(image):
    _, image = create(image, "other")
    request = admin_pb2.AlterConfigsRequest(topics=[
        admin_pb2.TopicConfigAlteration(topic="orders", set={"retention.ms": "bad"}),
        admin_pb2.TopicConfigAlteration(topic="other", set={"retention.ms": "77"}),
        admin_pb2.TopicConfigAlteration(topic="missing", set={"retention.ms": "77"}),
    ])
    result = topic_alterations.alter_configs(image, request)
    codes = [t.error_code for t in result.response.topics]
    assert codes == [Code.INVALID_CONFIG, Code.NONE, Code.UNKNOWN_TOPIC_OR_PARTITION]
    after = apply_records(image, result.records)
    assert after.topics["orders"].configs == image.topics["orders"].configs
    assert after.topics["other"].configs["retention.ms"] == "77"


def test_validate_only_and_no_op_alterations_write_nothing(image):
    result, _ = _alter(image, "orders", {"retention.ms": "5"}, validate_only=True)
    assert result.response.topics[0].error_code == Code.NONE and result.records == ()
    result, _ = _alter(image, "orders", {"retention.ms": "1000"})
    assert result.records == ()


def test_booleans_are_normalised_like_on_create(image):
    _, after = _alter(image, "orders", {"unclean.leader.election.enable": "TRUE"})
    assert after.topics["orders"].configs["unclean.leader.election.enable"] == "true"


def test_config_change_reaches_each_hosting_broker_and_survives_a_snapshot(image):
    _, after = _alter(image, "orders", {"retention.ms": "42"})
    changed = local_changes(image, after, 1).changed
    assert changed and all(h.configs["retention.ms"] == "42" for h in changed)
    restored = decode_snapshot(encode_snapshot(after))
    assert dict(restored.topics["orders"].configs) == dict(after.topics["orders"].configs)


def test_altered_configs_is_pure_and_checks_deletions():
    with pytest.raises(topic_config.InvalidConfigError, match="nope"):
        topic_alterations.altered_configs({}, {}, ["nope"], replace_all=False)
    assert topic_alterations.altered_configs(
        {"retention.ms": "1"}, {"segment.ms": "5"}, ["retention.ms"], replace_all=False
    ) == {"segment.ms": "5"}


# ------------------------------------------------------------------------- partitions
def test_create_partitions_adds_placed_replicas_with_the_topic_replication_factor(image):
    result, after = _grow(image, "orders", 6)
    assert result.response.topics[0].error_code == Code.NONE
    partitions = after.topics["orders"].partitions
    assert len(partitions) == 6
    assert partitions[:3] == image.topics["orders"].partitions  # old ones untouched
    for p in partitions[3:]:
        assert len(p.replicas) == 2 and p.isr == p.replicas and p.leader == p.replicas[0]
    assert Counter(p.leader for p in partitions) == {1: 2, 2: 2, 3: 2}
    hosted = {h.partition for h in local_changes(image, after, 1).changed}
    assert hosted and hosted <= {3, 4, 5}
    restored = decode_snapshot(encode_snapshot(after))
    assert restored.topics["orders"].partitions == partitions


@pytest.mark.parametrize("count", [1, 3])
def test_create_partitions_never_shrinks(image, count):
    result, after = _grow(image, "orders", count)
    (topic,) = result.response.topics
    assert topic.error_code == Code.INVALID_PARTITIONS
    assert "has 3 partition(s)" in topic.error_message and str(count) in topic.error_message
    assert result.records == () and after.topics["orders"] == image.topics["orders"]


def test_create_partitions_refusals(image):
    assert _grow(image, "missing", 4)[0].response.topics[0].error_code == \
        Code.UNKNOWN_TOPIC_OR_PARTITION
    too_many = _grow(image, "orders", 50, settings=ControllerSettings(partitions_max=10))[0]
    assert too_many.response.topics[0].error_code == Code.INVALID_PARTITIONS
    made = controller.create_topics(
        image, admin_pb2.CreateTopicsRequest(topics=[admin_pb2.NewTopic(
            name="__consumer_offsets", num_partitions=2, replication_factor=1)]),
        ControllerSettings(), id_sequence(), allow_internal=True)
    internal = apply_records(image, made.records)
    refused = _grow(internal, "__consumer_offsets", 4)[0]
    assert refused.response.topics[0].error_code == Code.INVALID_REQUEST
    assert refused.records == ()


def test_create_partitions_validate_only_writes_nothing(image):
    result, _ = _grow(image, "orders", 5, validate_only=True)
    assert result.response.topics[0].error_code == Code.NONE and result.records == ()


def test_create_partitions_needs_enough_live_brokers():
    shrunk = image_with_brokers(1, 2, 3, fenced=(2,))
    # a topic of rf 3 on a cluster where broker 2 is fenced: no third live broker
    recs = [records.topic("t", "tid", {}), records.partition("tid", 0, (1, 2, 3), (1, 3), 1)]
    image = apply_records(shrunk, recs)
    result, _ = _grow(image, "t", 2)
    assert result.response.topics[0].error_code == Code.INVALID_REPLICATION_FACTOR
