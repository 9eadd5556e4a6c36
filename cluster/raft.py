"""The metadata log over Raft (pysyncobj). The only module that imports pysyncobj.

Why this shape:
- One replicated method, `apply(batch: bytes)`. pysyncobj numbers replicated methods by their
  sorted names, so adding or renaming one would break replay of an existing journal; all
  evolution happens inside the protobuf batch instead.
- pysyncobj calls `apply` on its own tick thread. The new image is stored there (immutable, so
  a reference swap is safe) and then handed to the event loop with call_soon_threadsafe, in
  commit order, before the proposer's own callback: a proposer that wakes up always finds its
  batch in the image.
- Settings chosen from what was measured here (../shared/DESIGN.md): appendEntriesUseBatch off
  (a commit takes ~1 ms instead of 50-200 ms); short election timeouts and a low
  leaderFallbackTimeout so a leader cut off from the majority steps down within ~1 s; log
  compaction only after many entries (the controller writes few, batched entries) and without
  fork() (the broker process has gRPC threads); compaction snapshots are the image written as
  metadata records, not pickled objects.
- Elections: on silence, pysyncobj's timers (0.4-0.8 s without a heartbeat from the leader).
  On proof of death, at once: when a follower's connection to the leader drops and a probe of
  the leader's Raft port is refused (its process is gone), it starts an election without
  waiting out the timer, staggered by voter rank so that the survivors do not split the vote
  (cluster/raft_elections.py). A stopping controller hands leadership over first
  (`transfer_leadership`, Raft's TimeoutNow).
- Durability: the journal and the term/vote are synced to disk before Raft counts on them
  (cluster/raft_journal.py); pysyncobj alone never syncs its mmap'd journal.
- Voters are the first brokers (`voters`); any other broker runs as a pysyncobj read-only node:
  it receives and applies the log (an observer, in KRaft's words) but never votes.
- Trust: pysyncobj unpickles every frame it reads, so a stranger who reaches the port could run
  code. With a `password` (derived from the cluster secret, cluster/cluster_auth.py) every
  frame is a Fernet token whose HMAC is checked before anything is decrypted or unpickled; a
  forged frame is dropped, logged and its connection closed. Each connection also exchanges
  random keys first, so frames cannot be replayed into another connection. The listener binds
  `bind_address` (never pysyncobj's default 0.0.0.0), and pysyncobj's unauthenticated
  "utility" commands (add/remove/set_version/transfer/status) are not served at all.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import InvalidToken
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.encryptor import getEncryptor
from pysyncobj.monotonic import monotonic as raft_clock_s
from pysyncobj.transport import TCPTransport

from raftka.cluster import raft_journal
from raftka.cluster.cluster_auth import ReportThrottle
from raftka.cluster.delta import apply_encoded_batch, decode_snapshot, encode_snapshot
from raftka.cluster.image import EMPTY_IMAGE, MetadataImage
from raftka.cluster.metadata_log import SKIPPED_OFFSET, ImageListener, ProposeError
from raftka.cluster.raft_elections import LeaderLossDetector, LostLeaderSettings
from raftka.cluster.records import MetadataFormatError

log = logging.getLogger("raftka.raft")

# pysyncobj's win_inet_pton module replaces socket.inet_ntop with a Windows-only version on
# every platform (it raises SystemError elsewhere); put the real one back for the process.
socket.inet_ntop = _socket.inet_ntop

_FAIL_REASONS = {
    getattr(FAIL_REASON, name): name for name in dir(FAIL_REASON) if not name.startswith("_")
}
_NOT_LEADER_REASONS = {
    FAIL_REASON.MISSING_LEADER,
    FAIL_REASON.NOT_LEADER,
    FAIL_REASON.LEADER_CHANGED,
    FAIL_REASON.DISCARDED,
}


@dataclass(frozen=True, slots=True)
class RaftSettings:
    node_id: int
    # Voter id -> "host:port" of its Raft listener. Observers list the voters too.
    voters: Mapping[int, str]
    data_dir: str
    election_timeout_min_s: float = 0.4
    election_timeout_max_s: float = 0.8
    heartbeat_interval_s: float = 0.05
    leader_fallback_timeout_s: float = 1.0
    connection_timeout_s: float = 1.0
    connection_retry_s: float = 0.3
    # After proof that the leader is gone, the voter ranked k-th among the survivors (by id)
    # starts its election k * stagger later: the first one usually wins alone (the others
    # vote for it, which puts their own elections off), and a later one only stands if it
    # did not (its log was behind, say). Ranks differ, so no two survivors split the vote.
    lost_leader_election_stagger_s: float = 0.15
    # A probe of the leader's Raft port that has not connected by then proves nothing.
    lost_leader_probe_timeout_s: float = 0.3
    # Compact the Raft journal into a snapshot only past this many entries.
    compaction_entries_min: int = 20_000
    commands_queue_max: int = 10_000
    # Sync every journal change and the term/vote to disk before Raft relies on it
    # (cluster/raft_journal.py); off only for benchmarks of what it costs.
    journal_fsync: bool = True
    # Derived from the cluster secret; None runs Raft unauthenticated (labs only).
    password: str | None = None
    # Passwords also accepted on incoming frames (never used to send): a secret rotation.
    accepted_passwords: tuple[str, ...] = ()
    # HOST:PORT the listener binds; default: this voter's own address in `voters`.
    bind_address: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_voter(self) -> bool:
        return self.node_id in self.voters

    def validate(self) -> None:
        if not self.voters:
            raise ValueError("at least one voter is needed")
        if not 3 * self.heartbeat_interval_s < self.election_timeout_min_s:
            raise ValueError("election_timeout_min_s must exceed 3 heartbeat intervals")
        if self.election_timeout_max_s <= self.election_timeout_min_s:
            raise ValueError("election_timeout_max_s must exceed election_timeout_min_s")
        if self.connection_timeout_s < self.election_timeout_max_s:
            raise ValueError("connection_timeout_s must be >= election_timeout_max_s")
        if self.compaction_entries_min < 2:
            raise ValueError("compaction_entries_min must be >= 2")
        if not 0 < self.lost_leader_election_stagger_s < self.election_timeout_min_s:
            # Longer, and the second survivor would stand no sooner than the timer has it.
            raise ValueError("lost_leader_election_stagger_s must be in (0, "
                             "election_timeout_min_s)")
        if not 0 < self.lost_leader_probe_timeout_s <= self.election_timeout_min_s:
            raise ValueError("lost_leader_probe_timeout_s must be in (0, election_timeout_min_s]")


class _AuditedFernet:
    """pysyncobj's Fernet, except that a frame failing authentication is logged (pysyncobj
    drops it silently) before pysyncobj closes the connection, and that frames made with an
    `accepted` key (a secret being rotated) are taken too. Sending always uses the primary."""

    _throttle = ReportThrottle()  # one for the process: every connection shares it

    def __init__(self, fernet: Any, peer: str, accepted: Sequence[Any] = ()) -> None:
        self._fernet = fernet
        self._keys = [fernet, *accepted]
        self._peer = peer

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        return bytes(self._fernet.encrypt_at_time(data, current_time))

    def extract_timestamp(self, token: bytes) -> int:
        for key in self._keys:  # each checks the HMAC before reading anything
            with contextlib.suppress(Exception):
                return int(key.extract_timestamp(token))
        self._log_rejected(len(token))
        raise InvalidToken

    def decrypt(self, token: bytes) -> bytes:
        for key in self._keys[:-1]:
            with contextlib.suppress(Exception):
                return bytes(key.decrypt(token))
        return bytes(self._keys[-1].decrypt(token))

    def _log_rejected(self, size: int) -> None:
        left_out = _AuditedFernet._throttle.report(time.monotonic())
        if left_out is None:
            return
        more = f" ({left_out} more since the last report)" if left_out else ""
        log.warning(
            "rejected a Raft frame of %d bytes from %s: it failed authentication (a stranger, "
            "or a broker with another cluster secret); connection closed%s", size, self._peer, more
        )


class _AuthenticatedTransport(TCPTransport):  # type: ignore[misc]
    """pysyncobj's TCP transport without its utility commands, with rejected frames logged.
    `accepted` is set per RaftMetadataLog (see _transport_class); `node_lost`, called on
    pysyncobj's thread when a voter's connection drops, once the SyncObj exists."""

    accepted: tuple[Any, ...] = ()
    node_lost: Callable[[Any], None] | None = None

    def _onNodeDisconnected(self, node: Any) -> None:
        super()._onNodeDisconnected(node)
        if self.node_lost is not None:
            self.node_lost(node)

    def setOnUtilityMessageCallback(self, message: str, callback: Any) -> None:
        # 'add', 'remove', 'set_version', 'transfer' and 'status' are pysyncobj's admin
        # commands; Raftka never uses them, so no connection, authenticated or not, gets them.
        return None

    def _onUtilityMessage(self, conn: Any, message: Any) -> bool:
        """A utility command (only an authenticated peer gets this far): dropped with its
        connection. (pysyncobj would go on to use the list as a dict key and fail its tick.)"""
        log.warning("refused a pysyncobj utility command %r from %s: not served",
                    str(message[0])[:20] if message else "", _peer_of(conn))
        conn.disconnect()
        self._unknownConnections.discard(conn)
        return True

    def _onNewIncomingConnection(self, conn: Any) -> None:
        super()._onNewIncomingConnection(conn)
        if conn.encryptor is not None:
            conn.encryptor = _AuditedFernet(conn.encryptor, _peer_of(conn), self.accepted)

    def addNode(self, node: Any) -> None:
        super().addNode(node)
        conn = self._connections.get(node)
        if conn is not None and conn.encryptor is not None:
            conn.encryptor = _AuditedFernet(
                conn.encryptor, str(getattr(node, "address", node)), self.accepted
            )


def _transport_class(accepted_passwords: Sequence[str]) -> type[_AuthenticatedTransport]:
    """The transport, knowing the extra keys this node accepts (derived once, here)."""
    accepted = tuple(getEncryptor(password) for password in accepted_passwords)
    return type("RaftkaTransport", (_AuthenticatedTransport,), {"accepted": accepted})


def _peer_of(conn: Any) -> str:
    sock = getattr(conn, "_TcpConnection__socket", None)
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("?", 0)
    except OSError:
        return "an unknown peer"
    return f"{host}:{port}"


class _MetadataStateMachine(SyncObjConsumer):
    """Holds the current image; pysyncobj drives `apply` in commit order on its thread."""

    def __init__(self, on_image: ImageListener) -> None:
        super().__init__()
        self.image: MetadataImage = EMPTY_IMAGE
        self._on_image = on_image

    @replicated
    def apply(self, batch: bytes) -> int:
        old = self.image
        try:
            self.image = apply_encoded_batch(old, batch)
        except MetadataFormatError:
            log.critical(
                "cannot apply a committed metadata batch; this broker is too old", exc_info=True
            )
            raise
        if self.image is old:
            log.warning("skipped a metadata batch built on an older image (by a controller "
                        "that had been replaced, or after a write whose wait timed out); "
                        "offset stays %d", old.offset)
            self._on_image(old, self.image)
            return SKIPPED_OFFSET
        self._on_image(old, self.image)
        return self.image.offset

    def _serialize(self) -> dict[str, bytes]:
        return {"snapshot": encode_snapshot(self.image)}

    def _deserialize(self, data: dict[str, bytes]) -> None:
        old = self.image
        self.image = decode_snapshot(data["snapshot"])
        log.info("loaded metadata snapshot at offset %d", self.image.offset)
        self._on_image(old, self.image)


class RaftMetadataLog:
    """MetadataLog over pysyncobj; create and use it on the broker's event loop."""

    def __init__(self, settings: RaftSettings, loop: asyncio.AbstractEventLoop) -> None:
        settings.validate()
        self.settings = settings
        self._loop = loop
        self._listeners: list[ImageListener] = []
        self._machine = _MetadataStateMachine(self._on_image_from_raft_thread)
        self._addresses_to_ids = {address: node for node, address in settings.voters.items()}
        self._syncobj: SyncObj | None = None
        self._leader_loss = LeaderLossDetector(
            LostLeaderSettings(
                node_id=settings.node_id,
                voters=settings.voters,
                stagger_s=settings.lost_leader_election_stagger_s,
                probe_timeout_s=settings.lost_leader_probe_timeout_s,
            ),
            loop,
            raft_clock_s,
        )

    # ----------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        os.makedirs(self.settings.data_dir, exist_ok=True)
        if self.settings.journal_fsync:
            raft_journal.install()
        conf = SyncObjConf(
            appendEntriesUseBatch=False,
            appendEntriesPeriod=self.settings.heartbeat_interval_s,
            raftMinTimeout=self.settings.election_timeout_min_s,
            raftMaxTimeout=self.settings.election_timeout_max_s,
            leaderFallbackTimeout=self.settings.leader_fallback_timeout_s,
            connectionTimeout=self.settings.connection_timeout_s,
            connectionRetryTime=self.settings.connection_retry_s,
            commandsQueueSize=self.settings.commands_queue_max,
            logCompactionMinEntries=self.settings.compaction_entries_min,
            # Compaction by entry count only: 100 years is "never by time".
            logCompactionMinTime=100 * 365 * 24 * 3600,
            useFork=False,
            journalFile=os.path.join(self.settings.data_dir, "raft.journal"),
            fullDumpFile=os.path.join(self.settings.data_dir, "raft.snapshot"),
            dynamicMembershipChange=False,
            # Containers start in any order: do not remember "no such host" for 30 s.
            dnsFailCacheTime=1.0,
            dnsCacheTime=30.0,
            password=self.settings.password,
            bindAddress=self._bind_address(),
            **dict(self.settings.extra),
        )
        voters = list(self.settings.voters.values())
        transport = _transport_class(self.settings.accepted_passwords)
        if self.settings.is_voter:
            own = self.settings.voters[self.settings.node_id]
            others = [address for address in voters if address != own]
            self._syncobj = SyncObj(
                own, others, conf=conf, consumers=[self._machine],
                transportClass=transport,
            )
        else:
            self._syncobj = SyncObj(
                None, voters, conf=conf, consumers=[self._machine],
                transportClass=transport,
            )
        if self.settings.is_voter:
            self._leader_loss.attach(self._syncobj)
        if self.settings.password is None:
            log.warning("Raft runs WITHOUT a cluster secret: anyone who reaches %s can run "
                        "code in this broker", self._bind_address() or "its port")

    def _bind_address(self) -> str | None:
        """Where the listener binds: as configured, else the voter's own address (pysyncobj
        would bind 0.0.0.0). Observers do not listen."""
        if self.settings.bind_address:
            return self.settings.bind_address
        return self.settings.voters.get(self.settings.node_id)

    def close(self) -> None:
        self._leader_loss.detach()
        if self._syncobj is not None:
            self._syncobj.destroy()
            self._syncobj = None

    def transfer_leadership(self) -> None:
        """Ask this leader's Raft node to hand leadership to its most caught-up voter
        (Raft's TimeoutNow), so a stopping controller is replaced without an election
        timeout. Best effort and asynchronous: pysyncobj refuses if no voter is fully caught
        up; watch leader_id() to see it happen."""
        syncobj = self._syncobj
        if syncobj is None or not self.settings.is_voter:
            return

        def transfer() -> None:  # pysyncobj's thread: its state is not locked
            if syncobj._isLeader():
                syncobj.transferLeadership()

        self._leader_loss.call_on_raft_thread(transfer)

    # --------------------------------------------------------------------------- state
    @property
    def image(self) -> MetadataImage:
        return self._machine.image

    def subscribe(self, listener: ImageListener) -> None:
        self._listeners.append(listener)

    def is_leader(self) -> bool:
        return self._syncobj is not None and bool(self._syncobj._isLeader())

    def has_quorum_contact(self) -> bool:
        """pysyncobj applies its leaderFallbackTimeout only on its own tick, so a leader that
        was paused (SIGSTOP, a stalled VM) still calls itself leader for a moment after it
        wakes, while the others have elected someone else. This checks the same condition at
        call time: a majority of the voters answered within the timeout. (It reads
        pysyncobj's private response times; the version is pinned.)"""
        syncobj = self._syncobj
        if syncobj is None or not syncobj._isLeader():
            return False
        return self.quorum_contact_age_s() < self.settings.leader_fallback_timeout_s

    def quorum_contact_age_s(self) -> float:
        """Seconds since a majority (this leader included) last answered: the age of the
        answer that completed the majority. Infinite when not the leader."""
        syncobj = self._syncobj
        if syncobj is None or not syncobj._isLeader():
            return float("inf")
        answered = dict(syncobj._SyncObj__lastResponseTime)
        others = list(syncobj._SyncObj__otherNodes)
        needed = (len(others) + 1) // 2  # answers from others that make a majority with us
        if needed == 0:
            return 0.0
        newest_first = sorted((answered.get(node, 0.0) for node in others), reverse=True)
        # pysyncobj's own clock (CLOCK_MONOTONIC_RAW), not time.monotonic(): the two drift
        # apart by the NTP rate correction since boot (0.26 s after 3.5 h on the build
        # machine), which would skew every lease by that much, either way.
        return max(0.0, raft_clock_s() - newest_first[needed - 1])

    def leader_id(self) -> int | None:
        if self._syncobj is None:
            return None
        leader = self._syncobj._getLeader()
        if leader is None:
            return None
        return self._addresses_to_ids.get(getattr(leader, "id", str(leader)))

    def term(self) -> int:
        return int(self._syncobj._getTerm()) if self._syncobj is not None else 0

    def status(self) -> dict[str, object]:
        if self._syncobj is None:
            return {"state": "stopped"}
        raw = self._syncobj.getStatus()
        return {
            "leader_id": self.leader_id(),
            "is_leader": self.is_leader(),
            "term": raw.get("raft_term"),
            "commit_index": raw.get("commit_idx"),
            "last_applied": raw.get("last_applied"),
            "log_entries": raw.get("log_len"),
            "metadata_offset": self.image.offset,
        }

    # -------------------------------------------------------------------------- writes
    async def propose(self, batch: bytes, timeout_s: float) -> int:
        """Replicate `batch` and wait until it is applied here; ProposeError otherwise."""
        if self._syncobj is None:
            raise ProposeError("the Raft node is not running", not_leader=True)
        future: asyncio.Future[int] = self._loop.create_future()

        def on_result(result: Any, error: int) -> None:  # pysyncobj's thread
            self._loop.call_soon_threadsafe(_settle, future, result, error)

        self._machine.apply(batch, callback=on_result)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise ProposeError(
                f"metadata write not committed within {timeout_s:.1f}s (outcome unknown)"
            ) from None

    # ---------------------------------------------------------------------- internals
    def _on_image_from_raft_thread(self, old: MetadataImage, new: MetadataImage) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing during shutdown
            self._loop.call_soon_threadsafe(self._publish, old, new)

    def _publish(self, old: MetadataImage, new: MetadataImage) -> None:
        for listener in self._listeners:
            try:
                listener(old, new)
            except Exception:
                log.exception("metadata listener failed at offset %d", new.offset)


def _settle(future: asyncio.Future[int], result: Any, error: int) -> None:
    if future.done():
        return
    if error == FAIL_REASON.SUCCESS:
        future.set_result(int(result))
        return
    reason = _FAIL_REASONS.get(error, str(error))
    future.set_exception(
        ProposeError(f"metadata write failed: {reason}", not_leader=error in _NOT_LEADER_REASONS)
    )
