"""AlterPartition: each partition of a batched request is judged on its own, and every
accepted change lands in one batch of records (one metadata commit)."""

from __future__ import annotations

from raftka.cluster import controller, records
from raftka.proto.raftka.v1 import common_pb2, controller_pb2
from tests.unit.cluster.helpers import apply_records, create, image_with_brokers

Code = common_pb2.ErrorCode


def three_brokers_with(partitions: int):
    _, image = create(image_with_brokers(1, 2, 3), "t", partitions=partitions, rf=3)
    return image


def item(image, index: int, new_isr, **overrides) -> controller_pb2.AlterPartitionItem:
    registration = image.partition("t", index)
    fields = dict(topic="t", partition=index, leader_epoch=registration.leader_epoch,
                  partition_epoch=registration.partition_epoch, new_isr=sorted(new_isr))
    fields.update(overrides)
    return controller_pb2.AlterPartitionItem(**fields)


def batch(image, broker_id: int, items) -> controller_pb2.AlterPartitionRequest:
    return controller_pb2.AlterPartitionRequest(
        broker_id=broker_id, broker_epoch=image.brokers[broker_id].epoch, partitions=items)


def led_by(image, broker_id: int) -> list[int]:
    return [i for i, p in enumerate(image.topics["t"].partitions) if p.leader == broker_id]


def test_every_accepted_change_of_a_batch_is_one_batch_of_records():
    image = three_brokers_with(30)
    mine = led_by(image, 1)
    shrink = [item(image, i, set(image.partition("t", i).isr) - {3}) for i in mine]
    result = controller.alter_partition(image, batch(image, 1, shrink))
    assert [r.error_code for r in result.response.partitions] == [Code.NONE] * len(mine)
    assert len(result.records) == len(mine) and result.response.error_code == Code.NONE
    after = apply_records(image, result.records)  # one batch: one metadata commit
    for i, answer in zip(mine, result.response.partitions, strict=True):
        registration = after.partition("t", i)
        assert 3 not in registration.isr
        assert (answer.topic, answer.partition) == ("t", i)
        assert list(answer.isr) == list(registration.isr)
        assert answer.partition_epoch == registration.partition_epoch
        assert answer.partition_epoch == image.partition("t", i).partition_epoch + 1


def test_each_partition_is_judged_on_its_own():
    image = three_brokers_with(18)
    a, b, c, d, e, f = [*led_by(image, 1)[:4], led_by(image, 2)[0], led_by(image, 1)[4]]
    items = [
        item(image, a, {1, 2}),  # fine
        item(image, b, {1, 2}, partition_epoch=image.partition("t", b).partition_epoch - 1),
        item(image, c, {1, 2}, leader_epoch=image.partition("t", c).leader_epoch + 1),
        item(image, d, {2, 3}),  # the leader must stay in
        item(image, e, {1, 2, 3}),  # broker 1 does not lead it
        item(image, f, {1, 2, 4}),  # 4 is not a replica
        controller_pb2.AlterPartitionItem(topic="nope", partition=0, new_isr=[1]),
        item(image, a, {1, 3}),  # the same partition twice
    ]
    result = controller.alter_partition(image, batch(image, 1, items))
    codes = [r.error_code for r in result.response.partitions]
    assert codes == [
        Code.NONE, Code.INVALID_UPDATE_VERSION, Code.FENCED_LEADER_EPOCH, Code.INVALID_REQUEST,
        Code.NOT_LEADER_OR_FOLLOWER, Code.INELIGIBLE_REPLICA, Code.UNKNOWN_TOPIC_OR_PARTITION,
        Code.INVALID_REQUEST,
    ]
    assert "appears more than once" in result.response.partitions[-1].error_message
    assert len(result.records) == 1
    after = apply_records(image, result.records)
    assert after.partition("t", a).isr == tuple(r for r in image.partition("t", a).replicas
                                                if r in (1, 2))
    # A refused partition is answered with its current registration.
    refused = result.response.partitions[1]
    assert refused.partition_epoch == image.partition("t", b).partition_epoch
    assert sorted(refused.isr) == [1, 2, 3]


def test_a_fenced_joiner_and_a_stale_broker_epoch_are_refused_per_partition():
    image = three_brokers_with(6)
    mine = led_by(image, 1)
    shrunk = controller.alter_partition(
        image, batch(image, 1, [item(image, i, {1, 2}) for i in mine]))
    image = apply_records(image, shrunk.records)
    image = apply_records(image, [records.fence_broker(3)])
    back = controller.alter_partition(
        image, batch(image, 1, [item(image, i, {1, 2, 3}) for i in mine]))
    assert {r.error_code for r in back.response.partitions} == {Code.INELIGIBLE_REPLICA}
    assert back.records == ()
    stale = controller_pb2.AlterPartitionRequest(
        broker_id=1, broker_epoch=image.brokers[1].epoch - 1,
        partitions=[item(image, i, {1}) for i in mine])
    answer = controller.alter_partition(image, stale)
    assert {r.error_code for r in answer.response.partitions} == {Code.STALE_BROKER_EPOCH}
    assert answer.records == ()


def test_asking_for_the_current_isr_writes_nothing():
    image = three_brokers_with(3)
    i = led_by(image, 1)[0]
    result = controller.alter_partition(image, batch(image, 1, [item(image, i, {1, 2, 3})]))
    assert result.records == () and result.response.partitions[0].error_code == Code.NONE
    assert result.response.partitions[0].partition_epoch == image.partition("t", i).partition_epoch


def test_the_single_partition_form_is_still_answered_in_the_top_level_fields():
    image = three_brokers_with(3)
    i = led_by(image, 1)[0]
    registration = image.partition("t", i)
    request = controller_pb2.AlterPartitionRequest(
        broker_id=1, broker_epoch=image.brokers[1].epoch, topic="t", partition=i,
        leader_epoch=registration.leader_epoch, partition_epoch=registration.partition_epoch,
        new_isr=[1, 2])
    result = controller.alter_partition(image, request)
    assert result.response.error_code == Code.NONE and not result.response.partitions
    assert sorted(result.response.isr) == [1, 2]
    assert result.response.partition_epoch == registration.partition_epoch + 1
    assert len(result.records) == 1
    stale = controller_pb2.AlterPartitionRequest(
        broker_id=1, broker_epoch=-1, topic="t", partition=i, new_isr=[1])
    refused = controller.alter_partition(image, stale)
    assert refused.response.error_code == Code.STALE_BROKER_EPOCH and refused.records == ()
    assert sorted(refused.response.isr) == [1, 2, 3]
