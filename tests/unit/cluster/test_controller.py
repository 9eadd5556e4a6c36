"""Controller handlers: validation, placement, fencing and elections, as records."""

from __future__ import annotations

from collections import Counter

import pytest

from raftka.cluster import controller
from raftka.cluster.controller import ControllerSettings
from raftka.cluster.image import NO_LEADER
from raftka.proto.raftka.v1 import admin_pb2, common_pb2, controller_pb2
from tests.unit.cluster.helpers import apply_records, create, image_with_brokers

Code = common_pb2.ErrorCode


def test_create_topic_spreads_replicas_and_preferred_leaders_evenly():
    image = image_with_brokers(1, 2, 3)
    result, image = create(image, "orders", partitions=6, rf=3)
    assert result.response.topics[0].error_code == Code.NONE
    topic = image.topics["orders"]
    leaders = Counter(p.leader for p in topic.partitions)
    assert leaders == {1: 2, 2: 2, 3: 2}
    for p in topic.partitions:
        assert len(set(p.replicas)) == 3 and p.isr == p.replicas and p.leader == p.replicas[0]
    # a second topic keeps the balance
    _, image = create(image, "more", partitions=3, rf=2)
    assert Counter(p.leader for p in image.topics["more"].partitions) == {1: 1, 2: 1, 3: 1}


@pytest.mark.parametrize(
    ("name", "partitions", "rf", "configs", "code", "fragment"),
    [
        ("bad name!", 1, 1, {}, Code.INVALID_TOPIC_EXCEPTION, "illegal characters"),
        ("x" * 250, 1, 1, {}, Code.INVALID_TOPIC_EXCEPTION, "maximum is 249"),
        ("..", 1, 1, {}, Code.INVALID_TOPIC_EXCEPTION, "cannot be"),
        ("ok", 1, 4, {}, Code.INVALID_REPLICATION_FACTOR, "larger than the number of live"),
        ("ok", 20_000, 1, {}, Code.INVALID_PARTITIONS, "above the limit"),
        ("ok", 1, 1, {"retention.ms": "soon"}, Code.INVALID_CONFIG, "retention.ms"),
        ("ok", 1, 1, {"no.such": "1"}, Code.INVALID_CONFIG, "unknown topic config 'no.such'"),
        ("__consumer_offsets", 1, 1, {}, Code.INVALID_REQUEST, "internal"),
    ],
)
def test_create_topic_refusals_name_the_problem(name, partitions, rf, configs, code, fragment):
    result, _ = create(image_with_brokers(1, 2, 3), name, partitions, rf, configs)
    assert result.response.topics[0].error_code == code
    assert fragment in result.response.topics[0].error_message
    assert result.records == ()


def test_existing_and_colliding_names_are_refused():
    _, image = create(image_with_brokers(1), "a.b")
    again, _ = create(image, "a.b")
    assert again.response.topics[0].error_code == Code.TOPIC_ALREADY_EXISTS
    clash, _ = create(image, "a_b")
    assert clash.response.topics[0].error_code == Code.INVALID_TOPIC_EXCEPTION


def test_default_replication_factor_is_capped_at_the_cluster_size():
    """A cluster smaller than default.replication.factor (a 2-broker lab) still creates
    topics with the default: every broker holds a replica."""
    settings = ControllerSettings(default_replication_factor=3, num_partitions=2)
    result, _ = create(image_with_brokers(1, 2), "t", partitions=0, rf=0, settings=settings)
    assert (
        result.response.topics[0].num_partitions,
        result.response.topics[0].replication_factor,
    ) == (2, 2)


@pytest.mark.parametrize(
    ("brokers", "fenced", "voters"),
    [
        ((1, 2, 3), (3,), 3),  # a broker of three is down
        ((1,), (), 3),  # start-up: one of three voters registered so far
    ],
)
def test_default_replication_factor_is_refused_when_brokers_are_missing(brokers, fenced, voters):
    """Kafka refuses (INVALID_REPLICATION_FACTOR) rather than create a topic with fewer
    replicas than default.replication.factor: a topic made with RF 2 while one of three
    brokers was down would stay under-replicated for ever, silently."""
    settings = ControllerSettings(default_replication_factor=3, cluster_size_min=voters)
    image = image_with_brokers(*brokers, fenced=fenced)
    result, _ = create(image, "t", partitions=1, rf=0, settings=settings)
    topic = result.response.topics[0]
    assert topic.error_code == Code.INVALID_REPLICATION_FACTOR
    assert "replication factor 3" in topic.error_message
    assert "default.replication.factor" in topic.error_message
    assert result.records == ()


def test_validate_only_writes_nothing():
    request = admin_pb2.CreateTopicsRequest(
        topics=[admin_pb2.NewTopic(name="t", num_partitions=2)], validate_only=True
    )
    result = controller.create_topics(
        image_with_brokers(1), request, ControllerSettings(), lambda: "id"
    )
    assert result.records == () and result.response.topics[0].error_code == Code.NONE


def test_delete_topic_and_unknown_topic():
    _, image = create(image_with_brokers(1), "t")
    result = controller.delete_topics(image, admin_pb2.DeleteTopicsRequest(names=["t", "u"]))
    codes = [t.error_code for t in result.response.topics]
    assert codes == [Code.NONE, Code.UNKNOWN_TOPIC_OR_PARTITION]
    assert "t" not in apply_records(image, result.records).topics


def test_fencing_the_leader_elects_the_next_isr_member_and_bumps_the_epoch():
    _, image = create(image_with_brokers(1, 2, 3), "t", partitions=3, rf=3)
    before = {i: p for i, p in enumerate(image.topics["t"].partitions)}
    image = apply_records(image, controller.fence_brokers(image, [1], ControllerSettings()))
    for i, p in enumerate(image.topics["t"].partitions):
        assert 1 not in p.isr and p.leader != 1
        if before[i].leader == 1:
            assert p.leader_epoch == before[i].leader_epoch + 1
            assert p.leader == next(r for r in before[i].replicas if r != 1)
        else:
            assert p.leader_epoch == before[i].leader_epoch


def test_last_isr_member_is_kept_and_partition_goes_leaderless():
    _, image = create(image_with_brokers(1, 2), "t", partitions=1, rf=2)
    image = apply_records(image, controller.fence_brokers(image, [1, 2], ControllerSettings()))
    p = image.partition("t", 0)
    assert p.leader == NO_LEADER and len(p.isr) == 1


def test_unclean_election_picks_a_live_replica_outside_the_isr():
    _, image = create(
        image_with_brokers(1, 2), "t", rf=2, configs={"unclean.leader.election.enable": "true"}
    )
    p = image.partition("t", 0)
    first, second = p.replicas
    image = apply_records(image, controller.fence_brokers(image, [second], ControllerSettings()))
    image = apply_records(image, controller.fence_brokers(image, [first], ControllerSettings()))
    # the ISR kept only `first`; now `second` comes back while `first` stays away
    hb = controller_pb2.BrokerHeartbeatRequest(
        broker_id=second, broker_epoch=image.brokers[second].epoch, metadata_offset=image.offset
    )
    result = controller.broker_heartbeat(image, hb, ControllerSettings())
    image = apply_records(image, result.records)
    assert image.partition("t", 0).leader == second
    assert image.partition("t", 0).isr == (second,)


def test_registration_then_caught_up_heartbeat_unfences_and_restores_leadership():
    _, image = create(image_with_brokers(1), "t")
    settings = ControllerSettings()
    request = controller_pb2.RegisterBrokerRequest(
        broker_id=1,
        incarnation_id="restarted",
        voter=True,
        endpoint=common_pb2.BrokerEndpoint(broker_id=1, host="h", port=1),
    )
    result = controller.register_broker(image, request, settings)
    image = apply_records(image, result.records)
    assert image.brokers[1].fenced and image.partition("t", 0).leader == NO_LEADER
    assert result.response.broker_epoch == image.brokers[1].epoch
    behind = controller_pb2.BrokerHeartbeatRequest(
        broker_id=1, broker_epoch=image.brokers[1].epoch, metadata_offset=0
    )
    assert controller.broker_heartbeat(image, behind, settings).records == ()
    caught_up = controller_pb2.BrokerHeartbeatRequest(
        broker_id=1, broker_epoch=image.brokers[1].epoch, metadata_offset=image.offset
    )
    image = apply_records(image, controller.broker_heartbeat(image, caught_up, settings).records)
    assert not image.brokers[1].fenced
    assert image.partition("t", 0).leader == 1 and image.partition("t", 0).leader_epoch == 2


def test_a_fenced_leader_waking_with_old_metadata_stays_fenced_until_caught_up():
    # Regression: a paused leader was unfenced by its first heartbeat after waking (its
    # metadata offset was past its registration), renewed its lease and took acks=1 writes
    # for a partition that had a new leader.
    _, image = create(image_with_brokers(1, 2), "t", rf=2)
    old_leader = image.partition("t", 0).leader
    offset_before_pause = image.offset
    settings = ControllerSettings()
    image = apply_records(image, controller.fence_brokers(image, [old_leader], settings))
    assert image.partition("t", 0).leader != old_leader
    waking = controller_pb2.BrokerHeartbeatRequest(
        broker_id=old_leader, broker_epoch=image.brokers[old_leader].epoch,
        metadata_offset=offset_before_pause,
    )
    result = controller.broker_heartbeat(image, waking, settings)
    assert result.response.fenced and result.records == ()
    caught_up = controller_pb2.BrokerHeartbeatRequest(
        broker_id=old_leader, broker_epoch=image.brokers[old_leader].epoch,
        metadata_offset=image.offset,
    )
    result = controller.broker_heartbeat(image, caught_up, settings)
    assert not result.response.fenced
    assert not apply_records(image, result.records).brokers[old_leader].fenced


def test_same_incarnation_registers_idempotently_and_stale_epochs_are_refused():
    image = image_with_brokers(1)
    request = controller_pb2.RegisterBrokerRequest(
        broker_id=1,
        incarnation_id="inc-1",
        endpoint=common_pb2.BrokerEndpoint(broker_id=1, host="h", port=1),
    )
    result = controller.register_broker(image, request, ControllerSettings())
    assert result.records == () and result.response.broker_epoch == image.brokers[1].epoch
    stale = controller_pb2.BrokerHeartbeatRequest(broker_id=1, broker_epoch=999)
    response = controller.broker_heartbeat(image, stale, ControllerSettings()).response
    assert response.error_code == Code.STALE_BROKER_EPOCH


def test_bootstrap_writes_a_cluster_id_once():
    from raftka.cluster.image import EMPTY_IMAGE

    first = controller.bootstrap(EMPTY_IMAGE, lambda: "cid")
    image = apply_records(EMPTY_IMAGE, first)
    assert image.cluster_id == "cid"
    assert len(controller.bootstrap(image, lambda: "other")) == 1
