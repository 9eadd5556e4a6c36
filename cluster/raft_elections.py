"""Elections on proof of death: a Raft follower stands as soon as its leader is provably gone.

pysyncobj elects a new leader only after its election timer runs out (0.4-0.8 s with no
heartbeat). When the leader's process died that wait is pure loss, and the dead process can
be told from a silent one: its Raft port refuses connections (cluster/liveness.py). This
module drives pysyncobj from outside — it reads and sets private attributes of a SyncObj
(the version is pinned; tests/unit/cluster/test_raft_elections.py checks they exist) and does
not import pysyncobj itself; cluster/raft.py wires it in.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from raftka.cluster.liveness import ProbeOutcome, proves_death
from raftka.cluster.probe import probe

log = logging.getLogger("raftka.raft")
# pysyncobj's _RAFT_STATE.FOLLOWER and CONNECTION_STATE.CONNECTED (pinned version).
_FOLLOWER = 0
_CONNECTED = 2
# A leader whose connection dropped but whose port still answers is probed again this often,
# this many times at most, while the connection stays down (then the timer decides).
ANSWERED_PROBES_MAX = 5
ANSWERED_REPROBE_INTERVAL_S = 0.05


@dataclass(frozen=True, slots=True)
class LostLeaderSettings:
    node_id: int
    voters: Mapping[int, str]  # voter id -> "host:port" of its Raft listener
    stagger_s: float  # between the survivors' elections, by rank (see RaftSettings)
    probe_timeout_s: float


class LeaderLossDetector:
    """Starts an election as soon as the Raft leader is proven gone, not after the timer.

    How it works: pysyncobj reports a dropped connection to a voter on its own thread. If
    that voter is our leader, the event loop probes the leader's Raft port; REFUSED (nothing
    listens: the process died, or its Raft node was closed) queues a job back onto
    pysyncobj's thread, which — unless another leader took over or we voted in a newer
    election meanwhile — moves our election deadline to now plus this voter's stagger (rank
    among the surviving voters).
    Anything else (a timeout, no route: a partition, a pause) changes nothing; the
    election timer handles silence as before.

    Why this cannot elect a second controller while the first still acts: Raft's votes and
    terms allow one leader per term however early an election starts, and an old leader that
    merely lost its majority stops renewing broker leases within the Raft fallback timeout
    and commits nothing. A proof of death deposes a leader that is gone, so no lease or
    write can follow from it. Brokers' leases count from the old controller's last majority
    contact, which precedes any vote for its successor, and the new controller still waits a
    session timeout before fencing a broker that is merely silent (cluster/heartbeats.py);
    so a paused or cut-off partition leader stops writing before it can be replaced, exactly
    as when elections waited for the timer.
    """

    def __init__(
        self,
        settings: LostLeaderSettings,
        loop: asyncio.AbstractEventLoop,
        raft_clock_s: Callable[[], float],
    ) -> None:
        """`raft_clock_s` must be the clock pysyncobj keeps its deadlines in (its own
        CLOCK_MONOTONIC_RAW, which drifts from time.monotonic())."""
        self._settings = settings
        self._raft_clock_s = raft_clock_s
        self._loop = loop
        self._syncobj: Any = None
        self._ids = {address: node for node, address in settings.voters.items()}
        self._probed_term = -1  # one probe per term: pysyncobj reports every failed retry
        self._jobs: collections.deque[Callable[[], None]] = collections.deque()

    def attach(self, syncobj: Any) -> None:
        self._syncobj = syncobj
        syncobj._SyncObj__transport.node_lost = self._on_node_lost
        syncobj.addOnTickCallback(self._on_tick)

    def detach(self) -> None:
        self._syncobj = None

    def call_on_raft_thread(self, job: Callable[[], None]) -> None:
        """Run `job` on pysyncobj's thread, at the end of its next tick (woken for it)."""
        self._jobs.append(job)
        if self._syncobj is not None:
            _wake(self._syncobj)

    def _on_tick(self) -> None:  # pysyncobj's thread, at the end of every tick
        syncobj = self._syncobj
        if syncobj is not None and syncobj._SyncObj__raftState == _FOLLOWER:
            self._keep_links_between_followers(syncobj)
        self._run_jobs()

    def _keep_links_between_followers(self, syncobj: Any) -> None:
        """pysyncobj drops a connection on *send* when nothing was *read* from it for
        connectionTimeout (1 s). Followers never talk to each other, so when one stands for
        election its request_vote to the other follower is the first send in ages: the link
        is dropped, the vote request lost, and the election fails to a second round half a
        second later (measured: ~0.5-0.8 s per controller failover). While this node
        follows, its links to the voters other than the leader carry no traffic by design,
        so their read clock is kept current; the leader's link, whose silence means
        something, is left alone, as is every link while this node leads or stands."""
        transport = syncobj._SyncObj__transport
        leader = syncobj._getLeader()
        now = self._raft_clock_s()
        for node, connection in list(transport._connections.items()):
            if node == leader or str(getattr(node, "address", "")) not in self._ids:
                continue
            if connection.state == _CONNECTED:
                connection._TcpConnection__lastReadTime = now

    def _run_jobs(self) -> None:
        while self._jobs:
            job = self._jobs.popleft()
            try:
                job()
            except Exception:
                log.exception("a job on the Raft thread failed")

    def _on_node_lost(self, node: Any) -> None:  # pysyncobj's thread
        syncobj = self._syncobj
        if syncobj is None or syncobj._isLeader() or syncobj._getLeader() != node:
            return
        term = syncobj._getTerm()
        if term == self._probed_term:
            return
        self._probed_term = term
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._start_probe, node, term)

    def _start_probe(self, node: Any, term: int) -> None:  # event loop
        self._loop.create_task(self._probe(node, term), name="raft-leader-probe")

    async def _probe(self, node: Any, term: int) -> None:
        """Probe until the port refuses (elect), stays silent (the timer decides), or the
        leader is back. An answer right after the drop is looked at again: a process being
        killed closes its connections before its listening socket."""
        host, _, port = str(node.address).rpartition(":")
        for _ in range(ANSWERED_PROBES_MAX):
            outcome = await probe(host, int(port), self._settings.probe_timeout_s)
            if proves_death(outcome):
                self.call_on_raft_thread(lambda: self._elect_soon(node, term))
                return
            if outcome is not ProbeOutcome.ANSWERED:
                log.info("lost the Raft leader's connection; its port is %s (not proof of "
                         "death: the election timer decides)", outcome.value)
                return
            syncobj = self._syncobj
            if syncobj is None or syncobj._getTerm() != term or syncobj.isNodeConnected(node):
                return
            await asyncio.sleep(ANSWERED_REPROBE_INTERVAL_S)

    def _elect_soon(self, node: Any, term: int) -> None:  # pysyncobj's thread
        """Bring our election forward, unless another leader took over meanwhile or we voted
        in a newer election (it is under way). A newer term alone is no reason to wait: a
        survivor whose log was behind may have stood first and lost."""
        syncobj = self._syncobj
        if syncobj is None or syncobj._isLeader():
            return
        leader = syncobj._getLeader()
        if leader is not None and leader != node:
            return
        if syncobj._getTerm() != term and syncobj._SyncObj__votedForNodeId is not None:
            return
        gone = self._ids.get(str(node.address))
        survivors = sorted(v for v in self._settings.voters if v != gone)
        rank = survivors.index(self._settings.node_id)
        delay_s = rank * self._settings.stagger_s
        deadline = self._raft_clock_s() + delay_s
        if deadline < syncobj._SyncObj__raftElectionDeadline:
            syncobj._SyncObj__raftElectionDeadline = deadline
            _wake(syncobj)
            log.info("Raft leader %s is gone (its port refused a connection): standing for "
                     "election in %.0f ms instead of waiting for the timer", gone, delay_s * 1000)


def _wake(syncobj: Any) -> None:
    """End pysyncobj's wait for socket events now, so its next tick comes at once (what it
    does itself when a command is queued); without it a tick can be 50 ms away."""
    notifier = getattr(syncobj, "_SyncObj__pipeNotifier", None)
    if notifier is not None:
        notifier.notify()
