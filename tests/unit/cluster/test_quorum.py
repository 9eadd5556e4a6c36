"""The controller over a metadata log: what it may do while it still believes it leads but
has lost touch with the majority (a paused or cut-off controller)."""

from __future__ import annotations

import asyncio

import pytest

from raftka.cluster.controller import ControllerSettings
from raftka.cluster.metadata_log import InMemoryMetadataLog
from raftka.cluster.quorum import NotControllerError, QuorumController
from raftka.proto.raftka.v1 import common_pb2, controller_pb2


class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_000

    def __call__(self) -> int:
        return self.now_ms


async def running_controller() -> tuple[QuorumController, InMemoryMetadataLog, Clock]:
    log = InMemoryMetadataLog(1)
    clock = Clock()
    quorum = QuorumController(1, log, ControllerSettings(), clock, session_timeout_ms=2_000)
    await quorum.tick()
    for _ in range(10):
        await asyncio.sleep(0)
        if quorum.active:
            break
    assert quorum.active
    for broker_id in (1, 2):
        response = await quorum.register_broker(controller_pb2.RegisterBrokerRequest(
            broker_id=broker_id, incarnation_id=f"i{broker_id}",
            endpoint=common_pb2.BrokerEndpoint(broker_id=broker_id, host="h", port=broker_id)))
        heartbeat = await quorum.broker_heartbeat(controller_pb2.BrokerHeartbeatRequest(
            broker_id=broker_id, broker_epoch=response.broker_epoch,
            metadata_offset=log.image.offset))
        assert not heartbeat.fenced
    return quorum, log, clock


def test_a_controller_without_its_majority_renews_no_lease_and_fences_no_one() -> None:
    async def scenario() -> None:
        quorum, log, clock = await running_controller()
        epoch = log.image.brokers[2].epoch
        log.quorum_contact = False  # e.g. it was paused and the others elected a new leader
        clock.now_ms += 10_000      # every heartbeat looks long overdue
        with pytest.raises(NotControllerError):
            await quorum.broker_heartbeat(controller_pb2.BrokerHeartbeatRequest(
                broker_id=2, broker_epoch=epoch, metadata_offset=log.image.offset))
        await quorum.tick()
        assert not log.image.brokers[1].fenced and not log.image.brokers[2].fenced

        log.quorum_contact = True  # back in touch: silent brokers are fenced again
        await quorum.tick()
        assert log.image.brokers[1].fenced and log.image.brokers[2].fenced

    asyncio.run(scenario())


def test_the_pysyncobj_internals_has_quorum_contact_reads_exist() -> None:
    """cluster/raft.py reads two private attributes of pysyncobj (pinned in pyproject); an
    upgrade that renames them must fail here, not in the controller's tick."""
    from pysyncobj import SyncObj, SyncObjConf

    node = SyncObj("127.0.0.1:0", [], conf=SyncObjConf(autoTick=False))
    try:
        assert isinstance(node._SyncObj__lastResponseTime, dict)
        assert isinstance(node._SyncObj__otherNodes, set)
    finally:
        node.destroy()


def test_importing_the_raft_module_leaves_socket_inet_ntop_working():
    # pysyncobj's win_inet_pton replaces socket.inet_ntop with a Windows-only version on
    # every platform; cluster/raft.py puts the real one back.
    import socket

    import raftka.cluster.raft  # noqa: F401

    assert socket.inet_ntop(socket.AF_INET, b"\x7f\x00\x00\x01") == "127.0.0.1"


def test_a_heartbeat_answer_says_how_old_the_controllers_majority_contact_is() -> None:
    # A controller cut off from the majority still answers heartbeats until the Raft
    # fallback timeout, while the others can elect a new controller sooner: the lease it
    # grants must count from when it last heard the majority.
    async def scenario() -> None:
        quorum, log, _ = await running_controller()
        log.contact_age_s = 0.75
        response = await quorum.broker_heartbeat(controller_pb2.BrokerHeartbeatRequest(
            broker_id=2, broker_epoch=log.image.brokers[2].epoch,
            metadata_offset=log.image.offset))
        assert not response.fenced and 750 <= response.quorum_contact_age_ms <= 760

    asyncio.run(scenario())


def test_a_brokers_lease_counts_from_the_controllers_majority_contact() -> None:
    import time

    from raftka.broker.controller_client import BrokerLifecycle

    class Client:
        async def broker_heartbeat(self, request, timeout_s):
            return controller_pb2.BrokerHeartbeatResponse(fenced=False, quorum_contact_age_ms=800)

    async def unfenced() -> None:
        return None

    lifecycle = BrokerLifecycle(
        Client(),  # type: ignore[arg-type]
        BrokerLifecycle.registration(2, "i2", "h", 2, True),
        lambda: 0, 0.5, 3.0, unfenced,
    )
    lifecycle.broker_epoch = 5
    before = time.monotonic()
    asyncio.run(lifecycle._heartbeat())
    after = time.monotonic()
    assert lifecycle.lease_problem() is None
    assert before - 0.8 + 3.0 <= lifecycle._lease_until <= after - 0.8 + 3.0


def test_a_batch_built_on_an_image_that_moved_on_changes_nothing() -> None:
    # Seen in test_a_stale_controller_cannot_write: a controller paused for less than the
    # Raft fallback timeout wakes, still believes it leads, and builds a batch on its old
    # image; pysyncobj hands a non-leader's proposal to the new leader, which committed it
    # (a second "contested" topic record, and a created "sneaky" topic).
    from raftka.cluster import records
    from raftka.cluster.delta import apply_encoded_batch
    from raftka.proto.raftka.v1 import admin_pb2

    async def scenario() -> None:
        quorum, log, _ = await running_controller()
        real = log.propose

        async def another_controller_first(batch: bytes, timeout_s: float) -> int:
            log.apply(records.encode_batch(
                [records.cluster_id("other")], timestamp_ms=1, controller_id=9,
                base_offset=log.image.offset + 1))
            return await real(batch, timeout_s)

        log.propose = another_controller_first  # type: ignore[method-assign]
        with pytest.raises(NotControllerError):
            await quorum.create_topics(
                admin_pb2.CreateTopicsRequest(topics=[admin_pb2.NewTopic(name="late")])
            )
        assert "late" not in log.image.topics
        assert not quorum.active

    asyncio.run(scenario())
    image = InMemoryMetadataLog(1).image
    stale = records.encode_batch([records.cluster_id("x")], timestamp_ms=1, controller_id=1,
                                 base_offset=image.offset + 2)
    assert apply_encoded_batch(image, stale) is image
    unconditional = records.encode_batch([records.cluster_id("x")], timestamp_ms=1,
                                         controller_id=1)
    assert apply_encoded_batch(image, unconditional).cluster_id == "x"


def test_a_write_replay_skipped_is_not_answered_as_done() -> None:
    """Seen with 1,000 partitions under load: an ISR change whose wait timed out on the
    controller landed later, so the next write, built on the image before it, was skipped
    on replay — and answered NONE, because the offset after the earlier batch of the same
    length looked like its own. The leader then waited for an ISR change that never came,
    with its partition out of the ISR for minutes."""
    from raftka.cluster import records
    from raftka.proto.raftka.v1 import admin_pb2

    async def scenario() -> None:
        quorum, log, clock = await running_controller()
        created = await quorum.create_topics(admin_pb2.CreateTopicsRequest(
            topics=[admin_pb2.NewTopic(name="t", num_partitions=1, replication_factor=2)]))
        assert created.topics[0].error_code == common_pb2.ErrorCode.NONE
        registration = log.image.partition("t", 0)
        leader, topic_id = registration.leader, log.image.topics["t"].topic_id
        broker_epoch = log.image.brokers[leader].epoch
        # An earlier write built on this same image lands first (its wait timed out).
        earlier = records.encode_batch(
            (records.partition_change(topic_id, 0, isr=(leader,)),),
            timestamp_ms=clock(), controller_id=1, base_offset=log.image.offset + 1)
        proposing = log.propose

        async def racing(batch: bytes, timeout_s: float) -> int:
            log.apply(earlier)
            return await proposing(batch, timeout_s)

        log.propose = racing  # type: ignore[method-assign]
        follower = next(r for r in registration.replicas if r != leader)
        with pytest.raises(NotControllerError):
            await quorum.alter_partition(controller_pb2.AlterPartitionRequest(
                broker_id=leader, broker_epoch=broker_epoch, topic="t", partition=0,
                leader_epoch=registration.leader_epoch,
                partition_epoch=registration.partition_epoch,
                new_isr=sorted({leader, follower}) if follower not in registration.isr
                else [leader]))
        assert log.image.partition("t", 0).isr == (leader,)  # only the earlier write
        assert not quorum.active  # stepped down until caught up ...
        log.propose = proposing  # type: ignore[method-assign]
        for _ in range(20):  # ... and back at the next ticks: Raft still says it leads
            await quorum.tick()
            await asyncio.sleep(0)
            if quorum.active:
                break
        assert quorum.active

    asyncio.run(scenario())
