"""The metadata image and its deltas: image + records == next image, at every prefix."""

from __future__ import annotations

from raftka.cluster import records
from raftka.cluster.delta import MetadataDelta, decode_snapshot, encode_snapshot
from raftka.cluster.image import EMPTY_IMAGE
from tests.unit.cluster.helpers import apply_records, create, image_with_brokers


def scenario_records():
    return [
        records.cluster_id("c1"),
        records.register_broker(1, "a", "h", 1, 0, voter=True, pid=1),
        records.register_broker(2, "b", "h", 2, 0, voter=True, pid=2),
        records.unfence_broker(1),
        records.unfence_broker(2),
        records.topic("orders", "tid-1", {"retention.ms": "1000"}),
        records.partition("tid-1", 0, [1, 2], [1, 2], 1),
        records.partition("tid-1", 1, [2, 1], [2, 1], 2),
        records.fence_broker(1),
        records.partition_change("tid-1", 0, leader=2, isr=[2]),
        records.topic("logs", "tid-2", {}),
        records.partition("tid-2", 0, [2], [2], 2),
        records.remove_topic("tid-2"),
        records.producer_ids(2000),
    ]


def test_applying_every_prefix_one_by_one_equals_applying_all_at_once():
    recs = scenario_records()
    all_at_once = apply_records(EMPTY_IMAGE, recs)
    image = EMPTY_IMAGE
    for i, record in enumerate(recs):
        image = apply_records(image, [record])
        assert image.offset == i + 1
        assert image == apply_records(EMPTY_IMAGE, recs[: i + 1])
    assert image == all_at_once


def test_final_image_has_the_expected_facts():
    image = apply_records(EMPTY_IMAGE, scenario_records())
    assert image.cluster_id == "c1"
    assert image.brokers[1].fenced and not image.brokers[2].fenced
    assert image.brokers[2].epoch == 3  # offset of its registration record
    assert list(image.topics) == ["orders"]
    p0 = image.partition("orders", 0)
    assert (p0.leader, p0.isr, p0.leader_epoch, p0.partition_epoch) == (2, (2,), 1, 1)
    assert image.topic_by_id("tid-2") is None
    assert image.next_producer_id == 2000


def test_unchanged_parts_of_the_image_are_reused():
    image = apply_records(EMPTY_IMAGE, scenario_records())
    after = apply_records(image, [records.fence_broker(2)])
    assert after.topics is image.topics
    assert after.brokers is not image.brokers
    assert after.brokers[1] is image.brokers[1]


def test_isr_change_alone_keeps_the_leader_epoch():
    image = apply_records(EMPTY_IMAGE, scenario_records())
    after = apply_records(image, [records.partition_change("tid-1", 1, isr=[2])])
    p1 = after.partition("orders", 1)
    assert (p1.leader_epoch, p1.partition_epoch, p1.isr) == (0, 1, (2,))


def test_snapshot_round_trip_keeps_offsets_and_epochs():
    image = apply_records(EMPTY_IMAGE, scenario_records())
    assert decode_snapshot(encode_snapshot(image)) == image


def test_records_for_unknown_things_are_skipped_deterministically():
    image = image_with_brokers(1)
    after = apply_records(
        image, [records.partition_change("nope", 0, leader=1), records.fence_broker(99)]
    )
    assert after.topics == image.topics and after.offset == image.offset + 2


def test_delta_sees_its_own_earlier_records():
    delta = MetadataDelta(image_with_brokers(1))
    delta.replay(records.topic("t", "id", {}))
    delta.replay(records.partition("id", 0, [1], [1], 1))
    assert delta.apply().partition("t", 0).leader == 1


def test_created_topic_can_be_found_by_id():
    _, image = create(image_with_brokers(1), "events", partitions=3)
    topic = image.topics["events"]
    assert image.topic_by_id(topic.topic_id) is topic
    assert len(topic.partitions) == 3
