"""The metadata quorum elects a new leader as soon as the old one is provably gone
(cluster/raft_elections.py), and lease ages are read on pysyncobj's own clock (cluster/raft.py).
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pysyncobj.syncobj
import pysyncobj.tcp_connection
import pytest
from pysyncobj import SyncObj, SyncObjConf

from raftka.cluster import raft, raft_elections
from raftka.cluster.raft import RaftMetadataLog, RaftSettings
from raftka.cluster.raft_elections import LeaderLossDetector, LostLeaderSettings
from tests.harness import free_port_block


def voters(base: int, count: int = 3) -> dict[int, str]:
    return {i: f"127.0.0.1:{base + i - 1}" for i in range(1, count + 1)}


def test_default_raft_settings_validate_for_three_and_five_voters(tmp_path):
    # Regression: a default probe timeout longer than the election timeout made every broker
    # refuse to start, and a stagger rule made every 5-voter cluster refuse; no unit test
    # built the defaults.
    for count in (1, 3, 5, 7):
        RaftSettings(node_id=1, voters=voters(9000, count), data_dir=str(tmp_path)).validate()
    with pytest.raises(ValueError, match="stagger"):
        RaftSettings(node_id=1, voters=voters(9000), data_dir=str(tmp_path),
                     lost_leader_election_stagger_s=0.5).validate()


def test_lease_ages_are_read_on_pysyncobj_clock():
    # pysyncobj stamps responses with CLOCK_MONOTONIC_RAW, which drifts from time.monotonic()
    # (0.26 s after 3.5 h of uptime on the build machine): every lease was off by that much.
    assert raft.raft_clock_s is pysyncobj.syncobj.monotonicTime
    log = RaftMetadataLog(
        RaftSettings(node_id=1, voters=voters(9000), data_dir="/nonexistent"),
        asyncio.new_event_loop(),
    )
    now = raft.raft_clock_s()
    log._syncobj = SimpleNamespace(  # type: ignore[assignment]
        _isLeader=lambda: True,
        _SyncObj__lastResponseTime={"a": now - 0.2, "b": now - 5.0},
        _SyncObj__otherNodes={"a", "b"},
    )
    assert 0.2 <= log.quorum_contact_age_s() < 0.25


def test_the_pysyncobj_internals_the_elections_use_exist():
    """raft_elections.py reads and sets private attributes of pinned pysyncobj; an upgrade
    that renames them must fail here."""
    assert raft_elections._FOLLOWER == pysyncobj.syncobj._RAFT_STATE.FOLLOWER
    assert raft_elections._CONNECTED == pysyncobj.tcp_connection.CONNECTION_STATE.CONNECTED
    conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=False)  # as cluster/raft.py runs
    node = SyncObj("127.0.0.1:2", ["127.0.0.1:1"], conf=conf)  # :2 > :1 connects; never bound
    try:
        assert isinstance(node._SyncObj__raftElectionDeadline, float)
        assert node._SyncObj__raftState == raft_elections._FOLLOWER
        assert node._SyncObj__votedForNodeId is None
        assert hasattr(node._SyncObj__pipeNotifier, "notify")
        connections = node._SyncObj__transport._connections
        assert isinstance(connections, dict) and connections
        for connection in connections.values():
            assert isinstance(connection._TcpConnection__lastReadTime, float)
        assert callable(node.transferLeadership) and callable(node.addOnTickCallback)
    finally:
        node.destroy()


class FakeSyncObj:
    def __init__(self, leader: object, term: int = 5, voted_for: str | None = None) -> None:
        self.leader = leader
        self.term = term
        self._SyncObj__votedForNodeId = voted_for
        self._SyncObj__raftElectionDeadline = 100.0

    def _isLeader(self) -> bool:
        return False

    def _getLeader(self) -> object:
        return self.leader

    def _getTerm(self) -> int:
        return self.term


def detector(node_id: int, now: float = 10.0) -> LeaderLossDetector:
    settings = LostLeaderSettings(node_id=node_id, voters=voters(9000), stagger_s=0.15,
                                  probe_timeout_s=0.3)
    return LeaderLossDetector(settings, asyncio.new_event_loop(), lambda: now)


def test_survivors_stand_one_after_the_other_by_rank():
    gone = SimpleNamespace(address="127.0.0.1:9000")  # voter 1
    for node_id, expected in ((2, 10.0), (3, 10.15)):
        fake = FakeSyncObj(leader=gone)
        loss = detector(node_id)
        loss._syncobj = fake
        loss._elect_soon(gone, 5)
        assert fake._SyncObj__raftElectionDeadline == pytest.approx(expected)


def test_no_early_election_once_someone_else_leads_or_a_newer_election_has_our_vote():
    gone = SimpleNamespace(address="127.0.0.1:9000")
    other = SimpleNamespace(address="127.0.0.1:9002")
    for fake in (FakeSyncObj(leader=other), FakeSyncObj(leader=None, term=6, voted_for="x")):
        loss = detector(2)
        loss._syncobj = fake
        loss._elect_soon(gone, 5)
        assert fake._SyncObj__raftElectionDeadline == 100.0
    # A newer term without our vote (a survivor with a shorter log stood and lost): stand.
    fake = FakeSyncObj(leader=None, term=6)
    loss = detector(2)
    loss._syncobj = fake
    loss._elect_soon(gone, 5)
    assert fake._SyncObj__raftElectionDeadline == pytest.approx(10.0)


@pytest.mark.slow
def test_a_closed_leader_is_replaced_long_before_the_election_timer(tmp_path):
    """Three real Raft nodes with election timers of 2-3 s: closing the leader (its port then
    refuses) gets a new leader in well under the timer. The followers first sit idle longer
    than connectionTimeout, which used to drop the first request_vote (two rounds)."""

    async def scenario() -> float:
        base = free_port_block(3)
        addresses = voters(base)
        loop = asyncio.get_running_loop()
        logs = {
            i: RaftMetadataLog(RaftSettings(
                node_id=i, voters=addresses, data_dir=str(tmp_path / str(i)),
                election_timeout_min_s=2.0, election_timeout_max_s=3.0,
                connection_timeout_s=3.0, journal_fsync=False, password="p" * 16,
            ), loop)
            for i in addresses
        }
        for log in logs.values():
            log.start()
        try:
            deadline = time.monotonic() + 30
            while not any(log.is_leader() for log in logs.values()):
                assert time.monotonic() < deadline, "no first leader"
                await asyncio.sleep(0.01)
            leader = next(i for i, log in logs.items() if log.is_leader())
            await asyncio.sleep(3.5)  # followers' link idle for longer than connectionTimeout
            closed = time.monotonic()
            logs[leader].close()
            while not any(log.is_leader() for i, log in logs.items() if i != leader):
                assert time.monotonic() - closed < 10, "no new leader"
                await asyncio.sleep(0.005)
            return time.monotonic() - closed
        finally:
            for log in logs.values():
                log.close()

    elapsed_s = asyncio.run(scenario())
    assert elapsed_s < 1.5  # the timer alone would take 2-3 s, a lost vote request 4-6 s
