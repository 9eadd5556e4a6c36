"""Brokers register how many replicas their file-descriptor budget holds; the controller
refuses a create that would place more on one, whole and before anything is committed."""

from __future__ import annotations

from raftka.cluster import records
from raftka.cluster.delta import image_to_records
from raftka.cluster.image import EMPTY_IMAGE
from raftka.proto.raftka.v1 import common_pb2
from tests.unit.cluster.helpers import apply_records, create

Code = common_pb2.ErrorCode


def image_with_capacities(capacities: dict[int, int]):
    recs = [records.cluster_id("test-cluster")]
    for b, capacity in capacities.items():
        recs.append(records.register_broker(b, f"inc-{b}", "127.0.0.1", 9000 + b, 0, voter=True,
                                            pid=100 + b, max_replicas=capacity))
        recs.append(records.unfence_broker(b))
    return apply_records(EMPTY_IMAGE, recs)


def test_capacity_is_kept_in_the_image_and_its_snapshot():
    image = image_with_capacities({1: 10, 2: 0})
    assert image.brokers[1].max_replicas == 10 and image.brokers[2].max_replicas == 0
    again = apply_records(EMPTY_IMAGE, image_to_records(image))
    assert again.brokers[1].max_replicas == 10


def test_create_up_to_capacity_succeeds_and_past_it_is_refused_with_the_reason():
    image = image_with_capacities({1: 10, 2: 10, 3: 10})
    result, image = create(image, "fits", partitions=10, rf=3)
    assert result.response.topics[0].error_code == Code.NONE
    refused, after = create(image, "one-more", partitions=1, rf=3)
    topic = refused.response.topics[0]
    assert topic.error_code == Code.POLICY_VIOLATION
    assert "would put 11 replicas on broker 1, which can host 10" in topic.error_message
    assert "file-descriptor budget" in topic.error_message
    assert refused.records == () and "one-more" not in after.topics


def test_a_refused_topic_does_not_use_up_capacity_for_the_next_in_the_request():
    from raftka.cluster import controller
    from raftka.cluster.controller import ControllerSettings
    from raftka.proto.raftka.v1 import admin_pb2
    from tests.unit.cluster.helpers import id_sequence

    image = image_with_capacities({1: 4, 2: 4})
    request = admin_pb2.CreateTopicsRequest(topics=[
        admin_pb2.NewTopic(name="big", num_partitions=5, replication_factor=2),
        admin_pb2.NewTopic(name="small", num_partitions=4, replication_factor=2),
    ])
    result = controller.create_topics(image, request, ControllerSettings(), id_sequence())
    codes = [t.error_code for t in result.response.topics]
    assert codes == [Code.POLICY_VIOLATION, Code.NONE]


def test_brokers_without_a_stated_capacity_take_any_number():
    image = image_with_capacities({1: 0, 2: 0})
    result, _ = create(image, "many", partitions=500, rf=2)
    assert result.response.topics[0].error_code == Code.NONE
