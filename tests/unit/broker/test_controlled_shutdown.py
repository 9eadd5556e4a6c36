"""The stopping broker's side of controlled shutdown (broker/shutdown.py), with fakes: what it
waits for, in which order, and when it does not bother."""

from __future__ import annotations

import asyncio

from raftka.broker.shutdown import ControlledShutdown
from raftka.cluster import controller, records
from raftka.cluster.controller import ControllerSettings
from tests.unit.cluster.helpers import apply_records, create, image_with_brokers


class Cluster:
    """The controller, this broker's Raft node and its applied metadata, all in one."""

    def __init__(self, image, leader: bool = False) -> None:
        self.image = image
        self.leader = leader
        self.transfers = 0
        self.calls: list[str] = []

    async def controlled_shutdown(self, request, timeout_s):
        self.calls.append("controlled_shutdown")
        result = controller.controlled_shutdown(self.image, request, ControllerSettings())
        self.image = apply_records(self.image, result.records)
        return result.response

    def is_leader(self) -> bool:
        return self.leader

    def transfer_leadership(self) -> None:
        self.transfers += 1
        self.leader = False

    async def wait_for_metadata(self, condition, timeout_s) -> bool:
        self.calls.append("applied")
        return bool(condition(self.image))


class Peers:
    def __init__(self, late: int) -> None:
        self.late = late  # answers "not yet" this many times
        self.asked: list[tuple[int, tuple]] = []

    async def leads(self, broker_id, partitions, timeout_s) -> bool:
        self.asked.append((broker_id, tuple(partitions)))
        self.late -= 1
        return self.late < 0


def handover(cluster: Cluster, peers: Peers, broker_id: int = 2) -> ControlledShutdown:
    epoch = cluster.image.brokers[broker_id].epoch
    return ControlledShutdown(broker_id, cluster, cluster, cluster,  # type: ignore[arg-type]
                              lambda: epoch, 5.0, peers)


def test_it_waits_for_the_new_leaders_to_lead_then_hands_the_quorum_over():
    _, image = create(image_with_brokers(1, 2, 3), "t", partitions=3, rf=3)
    cluster, peers = Cluster(image, leader=True), Peers(late=2)
    outcome = asyncio.run(handover(cluster, peers).run())
    assert outcome.startswith("done") and "new leader" in outcome
    assert cluster.calls == ["controlled_shutdown", "applied"]
    assert cluster.image.brokers[2].fenced and cluster.transfers == 1
    new_leader = {b for b, _ in peers.asked}
    assert len(new_leader) == 1 and 2 not in new_leader  # asked the one that took over
    assert len(peers.asked) == 3  # until it said so


def test_nothing_to_hand_over_to_or_nothing_to_hand_over():
    alone = image_with_brokers(1, 2, fenced=(1,))
    cluster = Cluster(alone)
    assert asyncio.run(handover(cluster, Peers(0)).run()).startswith("skipped")
    assert cluster.calls == []
    already = apply_records(image_with_brokers(1, 2, 3), [records.fence_broker(2)])
    assert "already fenced" in asyncio.run(handover(Cluster(already), Peers(0)).run())


def test_a_broker_that_cannot_reach_a_controller_gives_up_and_stops_anyway():
    class NoController(Cluster):
        async def controlled_shutdown(self, request, timeout_s):
            from raftka.cluster.quorum import ControllerTimeoutError

            raise ControllerTimeoutError("no controller elected yet")

    cluster = NoController(image_with_brokers(1, 2, 3))
    assert asyncio.run(handover(cluster, Peers(0)).run()).startswith("gave up")
