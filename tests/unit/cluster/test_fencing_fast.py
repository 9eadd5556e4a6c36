"""Fencing on proof of death and controlled shutdown, as records (controller.py), what the
controller watches and what a probe proves (liveness.py), and the runtime rules around them
(quorum.py): only a confirmed controller fences, a broker in controlled shutdown stays
fenced, a new controller does not move leaders back at once."""

from __future__ import annotations

import asyncio

from raftka.cluster import controller, records
from raftka.cluster.controller import ControllerSettings
from raftka.cluster.image import NO_LEADER
from raftka.cluster.liveness import (
    ProbeOutcome,
    WatchTarget,
    proves_death,
    watch_changes,
    watch_targets,
)
from raftka.cluster.metadata_log import InMemoryMetadataLog
from raftka.cluster.quorum import QuorumController
from raftka.proto.raftka.v1 import common_pb2, controller_pb2
from tests.unit.cluster.helpers import apply_records, create, image_with_brokers

Code = common_pb2.ErrorCode
SETTINGS = ControllerSettings()


# ------------------------------------------------------------------ fence_dead_brokers
def test_a_proven_death_fences_that_registration_and_moves_its_leaderships():
    _, image = create(image_with_brokers(1, 2, 3), "t", partitions=3, rf=3)
    epoch = image.brokers[1].epoch
    image = apply_records(image, controller.fence_dead_brokers(image, {1: epoch}, SETTINGS))
    assert image.brokers[1].fenced
    for p in image.topics["t"].partitions:
        assert p.leader != 1 and 1 not in p.isr


def test_a_proof_about_an_older_incarnation_fences_nothing():
    # The probe found the port refused, but meanwhile the broker registered again (its new
    # process may be the one starting on that port): that registration is not the dead one.
    image = image_with_brokers(1, 2, 3)
    stale_epoch = image.brokers[2].epoch
    image = apply_records(image, [records.register_broker(
        2, "inc-2-new", "127.0.0.1", 9002, 0, voter=True, pid=7, fenced=False)])
    assert image.brokers[2].epoch != stale_epoch
    assert controller.fence_dead_brokers(image, {2: stale_epoch}, SETTINGS) == ()


def test_a_broker_already_fenced_is_not_fenced_again():
    image = image_with_brokers(1, 2, fenced=(2,))
    assert controller.fence_dead_brokers(image, {2: image.brokers[2].epoch}, SETTINGS) == ()
    assert controller.fence_dead_brokers(image, {9: 1}, SETTINGS) == ()  # unknown broker


# ----------------------------------------------------------------- controlled_shutdown
def shutdown(image, broker_id, epoch=None):
    request = controller_pb2.ControlledShutdownRequest(
        broker_id=broker_id,
        broker_epoch=image.brokers[broker_id].epoch if epoch is None else epoch,
    )
    return controller.controlled_shutdown(image, request, SETTINGS)


def test_controlled_shutdown_hands_every_leadership_to_another_isr_member():
    _, image = create(image_with_brokers(1, 2, 3), "t", partitions=6, rf=3)
    led_by_2 = [i for i, p in enumerate(image.topics["t"].partitions) if p.leader == 2]
    assert led_by_2
    result = shutdown(image, 2)
    after = apply_records(image, result.records)
    assert result.response.error_code == Code.NONE
    assert result.response.metadata_offset == after.offset
    assert result.response.partitions_without_leader == 0
    assert after.brokers[2].fenced
    for index, p in enumerate(after.topics["t"].partitions):
        assert p.leader in (1, 3) and 2 not in p.isr
        before = image.topics["t"].partitions[index]
        assert p.leader_epoch == before.leader_epoch + (1 if index in led_by_2 else 0)


def test_controlled_shutdown_keeps_the_last_in_sync_replica_and_says_so():
    _, image = create(image_with_brokers(1, 2), "solo", partitions=1, rf=1)
    owner = image.topics["solo"].partitions[0].leader
    result = shutdown(image, owner)
    after = apply_records(image, result.records)
    p = after.topics["solo"].partitions[0]
    assert p.leader == NO_LEADER and p.isr == (owner,)  # no one else has its records
    assert result.response.partitions_without_leader == 1


def test_controlled_shutdown_is_answered_the_same_when_retried_and_refuses_stale_epochs():
    _, image = create(image_with_brokers(1, 2, 3), "t", partitions=3, rf=3)
    first = shutdown(image, 3)
    after = apply_records(image, first.records)
    again = shutdown(after, 3)
    assert again.records == () and again.response.metadata_offset == after.offset
    stale = shutdown(after, 3, epoch=after.brokers[3].epoch + 100)
    assert stale.records == () and stale.response.error_code == Code.STALE_BROKER_EPOCH


# -------------------------------------------------------------------------- liveness
def test_only_a_refused_connection_proves_death():
    assert proves_death(ProbeOutcome.REFUSED)
    for outcome in (ProbeOutcome.ANSWERED, ProbeOutcome.SILENT, ProbeOutcome.UNREACHABLE):
        assert not proves_death(outcome)  # a paused or cut-off broker looks like these


def test_the_controller_watches_every_live_broker_but_itself():
    image = image_with_brokers(1, 2, 3, 4, fenced=(4,))
    targets = watch_targets(image, self_id=1)
    assert sorted(targets) == [2, 3]
    assert targets[2] == WatchTarget(2, image.brokers[2].epoch, "inc-2", "127.0.0.1", 9002)


def test_a_watch_is_replaced_when_the_registration_changes_and_dropped_when_fenced():
    image = image_with_brokers(1, 2, 3)
    watching = watch_targets(image, 1)
    assert watch_changes(watching, watching) == ([], [])
    stop, start = watch_changes({}, watching)
    assert stop == [] and [t.broker_id for t in start] == [2, 3]
    moved = apply_records(image, [records.register_broker(
        2, "inc-2-new", "127.0.0.1", 9102, 0, voter=True, pid=7, fenced=False)])
    stop, start = watch_changes(watching, watch_targets(moved, 1))
    assert stop == [2] and [(t.broker_id, t.port) for t in start] == [(2, 9102)]
    fenced = apply_records(image, controller.fence_brokers(image, [3], SETTINGS))
    assert watch_changes(watching, watch_targets(fenced, 1)) == ([3], [])


# ---------------------------------------------------------------------------- quorum
class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_000

    def __call__(self) -> int:
        return self.now_ms


async def active_controller(brokers=(1, 2, 3)):
    log = InMemoryMetadataLog(1)
    clock = Clock()
    quorum = QuorumController(
        1, log, SETTINGS, clock, session_timeout_ms=3_000, leader_rebalance_interval_ms=30_000
    )
    await quorum.tick()
    for _ in range(10):
        await asyncio.sleep(0)
    assert quorum.active
    epochs = {}
    for broker_id in brokers:
        registered = await quorum.register_broker(controller_pb2.RegisterBrokerRequest(
            broker_id=broker_id, incarnation_id=f"i{broker_id}",
            endpoint=common_pb2.BrokerEndpoint(broker_id=broker_id, host="h", port=broker_id)))
        await quorum.broker_heartbeat(controller_pb2.BrokerHeartbeatRequest(
            broker_id=broker_id, broker_epoch=registered.broker_epoch,
            metadata_offset=log.image.offset))
        epochs[broker_id] = registered.broker_epoch
    return quorum, log, clock, epochs


def test_a_proven_death_is_fenced_at_once_but_only_by_a_confirmed_controller():
    async def scenario() -> None:
        quorum, log, _, epochs = await active_controller()
        log.quorum_contact = False  # paused or cut off: it may have been replaced
        assert not await quorum.fence_proven_dead(2, epochs[2], "test")
        assert not log.image.brokers[2].fenced
        log.quorum_contact = True
        assert await quorum.fence_proven_dead(2, epochs[2], "test")
        assert log.image.brokers[2].fenced
        assert not await quorum.fence_proven_dead(2, epochs[2], "test")  # already done

    asyncio.run(scenario())


def test_a_broker_in_controlled_shutdown_is_not_unfenced_by_a_late_heartbeat():
    # Regression guard: its last heartbeat can reach the controller after the fence; a
    # caught-up heartbeat unfences a fenced broker, which would undo the hand-over.
    async def scenario() -> None:
        quorum, log, _, epochs = await active_controller()
        response = await quorum.controlled_shutdown(controller_pb2.ControlledShutdownRequest(
            broker_id=3, broker_epoch=epochs[3]))
        assert response.error_code == Code.NONE and log.image.brokers[3].fenced
        late = await quorum.broker_heartbeat(controller_pb2.BrokerHeartbeatRequest(
            broker_id=3, broker_epoch=epochs[3], metadata_offset=log.image.offset))
        assert late.fenced and log.image.brokers[3].fenced
        # Its next incarnation registers anew and is unfenced as usual.
        registered = await quorum.register_broker(controller_pb2.RegisterBrokerRequest(
            broker_id=3, incarnation_id="i3-again",
            endpoint=common_pb2.BrokerEndpoint(broker_id=3, host="h", port=3)))
        back = await quorum.broker_heartbeat(controller_pb2.BrokerHeartbeatRequest(
            broker_id=3, broker_epoch=registered.broker_epoch, metadata_offset=log.image.offset))
        assert not back.fenced and not log.image.brokers[3].fenced

    asyncio.run(scenario())


def test_a_new_controller_waits_an_interval_before_moving_leaders_back():
    # Right after a failover clients are still finding the new leaders; a preferred-leader
    # election at activation moved some partitions a second time in the same second.
    async def scenario() -> None:
        quorum, log, clock, _ = await active_controller()
        log.apply(records.encode_batch(
            [records.topic("t", "t-id", {}), records.partition("t-id", 0, (1, 2, 3), (1, 2, 3), 2)],
            timestamp_ms=1, controller_id=1))
        successor = QuorumController(
            1, log, SETTINGS, clock, session_timeout_ms=3_000, leader_rebalance_interval_ms=1_000
        )
        await successor.tick()
        for _ in range(10):
            await asyncio.sleep(0)
        assert successor.active
        await successor.tick()
        assert log.image.partition("t", 0).leader == 2  # not moved at takeover
        clock.now_ms += 1_001  # within everyone's session
        await successor.tick()
        assert log.image.partition("t", 0).leader == 1  # one interval later, as before
        del quorum

    asyncio.run(scenario())
