"""Kafka's classic consumer group protocol (JoinGroup / SyncGroup / Heartbeat / LeaveGroup),
for unmodified Kafka clients. Pure: time is passed in; replies go to callbacks the runtime
gives, so the state machine is tested without sockets.

How it works (Kafka's GroupCoordinator, simplified): members join; when membership changes
the group enters PreparingRebalance and every known member must join again (their heartbeats
answer REBALANCE_IN_PROGRESS). The join completes when all of them have rejoined — or when
the rebalance timeout passes, dropping the ones that did not — after a short initial delay
for a new group (renewed by each member joining in it, up to the rebalance timeout) so that a
batch of starting members lands in one generation. Then the
generation grows, a protocol (assignor) every member supports is chosen, and the leader
(the first member) receives everyone's subscription metadata; it computes the assignment on
the client side and sends it with SyncGroup, which hands each member its part. A member that
stops heartbeating for its session timeout is removed, which starts another rebalance.
A member joining with an empty id first gets a generated one back (KIP-394).

Static members (KIP-345, `group.instance.id`): a member that names an instance id keeps its
place across restarts. It sends no LeaveGroup when it closes; when it joins again (with an
empty member id) within its session timeout, it takes over its old entry under a new member
id, with its old assignment, and a Stable group does not rebalance: the other members never
notice. Requests under the replaced member id answer FENCED_INSTANCE_ID. A static member
that does not come back within its session timeout is removed like any other.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

JoinReply = Callable[[dict], None]
SyncReply = Callable[[dict], None]

EMPTY = "Empty"
PREPARING = "PreparingRebalance"
COMPLETING = "CompletingRebalance"
STABLE = "Stable"


@dataclass(slots=True)
class ClassicMember:
    member_id: str
    client_id: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    last_heartbeat_ms: int
    assignment: bytes = b""
    join_reply: JoinReply | None = None
    sync_reply: SyncReply | None = None
    group_instance_id: str | None = None  # KIP-345: set for static members


@dataclass(slots=True)
class ClassicGroup:
    group_id: str
    initial_delay_ms: int = 300
    state: str = EMPTY
    generation: int = 0
    protocol_type: str = ""
    protocol_name: str = ""
    leader: str = ""
    members: dict[str, ClassicMember] = field(default_factory=dict)
    # Ids handed out with MEMBER_ID_REQUIRED, waiting for the member's second join.
    pending_ids: dict[str, int] = field(default_factory=dict)
    rebalance_deadline_ms: int = 0
    join_not_before_ms: int = 0
    # KIP-345: group.instance.id -> the member id that holds it now.
    static_members: dict[str, str] = field(default_factory=dict)

    # ---------------------------------------------------------------------- joining
    def join(self, *, member_id: str, client_id: str, protocol_type: str,
             protocols: list[tuple[str, bytes]], session_timeout_ms: int,
             rebalance_timeout_ms: int, require_known_member_id: bool, now_ms: int,
             new_member_id: str, reply: JoinReply,
             group_instance_id: str | None = None) -> None:
        """Handle JoinGroup; `reply` is called with the response fields, now or later.
        `new_member_id` is the id a member joining without one gets (the caller makes ids).
        `group_instance_id`: the member's static identity (KIP-345), if any."""
        if self.members and protocol_type != self.protocol_type:
            reply(_join_error("INCONSISTENT_GROUP_PROTOCOL", member_id))
            return
        if not self._compatible(protocols):
            reply(_join_error("INCONSISTENT_GROUP_PROTOCOL", member_id))
            return
        if group_instance_id:
            holder = self.static_members.get(group_instance_id)
            if not member_id and holder is not None and holder in self.members:
                self._replace_static(holder, new_member_id, protocols, session_timeout_ms,
                                     rebalance_timeout_ms, now_ms, reply)
                return
            if member_id and holder is not None and holder != member_id:
                reply(_join_error("FENCED_INSTANCE_ID", member_id))
                return
            if not member_id:  # a new static member: no MEMBER_ID_REQUIRED round (KIP-345)
                member_id = new_member_id
                self.pending_ids[member_id] = now_ms
        if not member_id:
            new_id = new_member_id
            if require_known_member_id:
                self.pending_ids[new_id] = now_ms
                reply(_join_error("MEMBER_ID_REQUIRED", new_id))
                return
            member_id = new_id
        elif member_id not in self.members and member_id not in self.pending_ids:
            reply(_join_error("UNKNOWN_MEMBER_ID", member_id))
            return
        self.pending_ids.pop(member_id, None)
        member = self.members.get(member_id)
        if member is not None and member.protocols == protocols and member.join_reply is None \
                and (self.state == COMPLETING
                     or (self.state == STABLE and member_id != self.leader)):
            # As Kafka: a member that rejoins with unchanged metadata while nothing changed
            # (it may have missed the answer) gets the current generation, no rebalance.
            member.last_heartbeat_ms = now_ms
            reply(self._join_answer(member))
            return
        if member is None:
            member = ClassicMember(member_id, client_id, session_timeout_ms,
                                   rebalance_timeout_ms, protocol_type, protocols, now_ms,
                                   group_instance_id=group_instance_id or None)
            self.members[member_id] = member
            if group_instance_id:
                self.static_members[group_instance_id] = member_id
            self.protocol_type = protocol_type
            if self.state == PREPARING and self.join_not_before_ms > now_ms:
                # as Kafka's delayed initial join: each newcomer extends the wait a little
                self.join_not_before_ms = min(now_ms + self.initial_delay_ms,
                                              self.rebalance_deadline_ms)
            self._prepare_rebalance(now_ms, new_group=len(self.members) == 1)
        elif member.protocols != protocols or self.state in (STABLE, COMPLETING):
            member.protocols = protocols
            self._prepare_rebalance(now_ms, new_group=False)
        if member.join_reply is not None:  # a duplicate join replaces the older one
            member.join_reply(_join_error("REBALANCE_IN_PROGRESS", member_id))
        member.join_reply = reply
        member.last_heartbeat_ms = now_ms
        member.session_timeout_ms = session_timeout_ms
        member.rebalance_timeout_ms = rebalance_timeout_ms
        self.tick(now_ms)

    def _replace_static(self, old_id: str, new_id: str, protocols: list[tuple[str, bytes]],
                        session_timeout_ms: int, rebalance_timeout_ms: int, now_ms: int,
                        reply: JoinReply) -> None:
        """A static member came back (Kafka's updateStaticMemberAndRebalance): its entry,
        assignment included, moves to `new_id`. In a Stable group whose protocol choice
        stays and whose subscription (the chosen protocol's metadata) is unchanged, it gets
        the current generation at once, no rebalance; the answer names the
        old leader id, so a returning leader does not compute a new assignment that a
        Stable group would never hand out. Otherwise the group rebalances as for a change."""
        member = self.members[old_id]
        if member.join_reply is not None:
            member.join_reply(_join_error("FENCED_INSTANCE_ID", old_id))
        if member.sync_reply is not None:
            member.sync_reply(_sync_error("FENCED_INSTANCE_ID"))
        member.join_reply = member.sync_reply = None
        self.members = {(new_id if key == old_id else key): value
                        for key, value in self.members.items()}
        member.member_id = new_id
        assert member.group_instance_id is not None
        self.static_members[member.group_instance_id] = new_id
        leader_before = self.leader
        if self.leader == old_id:
            self.leader = new_id
        same_subscription = (dict(member.protocols).get(self.protocol_name)
                             == dict(protocols).get(self.protocol_name))
        member.protocols = protocols
        member.last_heartbeat_ms = now_ms
        member.session_timeout_ms = session_timeout_ms
        member.rebalance_timeout_ms = rebalance_timeout_ms
        if self.state == STABLE and same_subscription \
                and self._choose_protocol() == self.protocol_name:
            reply({**self._join_answer(member), "leader": leader_before, "members": []})
            return
        member.join_reply = reply
        self._prepare_rebalance(now_ms, new_group=False)
        self.tick(now_ms)

    def fenced(self, member_id: str, group_instance_id: str | None) -> bool:
        """Whether a request naming this instance id comes from a replaced member."""
        if not group_instance_id:
            return False
        holder = self.static_members.get(group_instance_id)
        return holder is not None and holder != member_id

    def _compatible(self, protocols: list[tuple[str, bytes]]) -> bool:
        if not self.members:
            return bool(protocols)
        names = {name for name, _ in protocols}
        common = set.intersection(*({n for n, _ in m.protocols} for m in self.members.values()))
        return bool(names & common)

    def _prepare_rebalance(self, now_ms: int, new_group: bool) -> None:
        if self.state != PREPARING:
            self.state = PREPARING
            timeout = max((m.rebalance_timeout_ms for m in self.members.values()), default=0)
            self.rebalance_deadline_ms = now_ms + timeout
            self.join_not_before_ms = now_ms + (self.initial_delay_ms if new_group else 0)
            for member in self.members.values():  # waiting syncs of the old generation end
                if member.sync_reply is not None:
                    member.sync_reply(_sync_error("REBALANCE_IN_PROGRESS"))
                    member.sync_reply = None

    def tick(self, now_ms: int) -> list[str]:
        """Advance time: complete a join that is ready, expire sessions. Returns removed
        member ids."""
        removed = self._expire(now_ms)
        if self.state == PREPARING:
            waiting = [m for m in self.members.values() if m.join_reply is None]
            if now_ms >= self.rebalance_deadline_ms and waiting:
                for member in waiting:
                    del self.members[member.member_id]
                    removed.append(member.member_id)
                waiting = []
            if not waiting and now_ms >= self.join_not_before_ms:
                self._complete_join(now_ms)
        if self.state == COMPLETING and now_ms >= self.rebalance_deadline_ms:
            # the leader never sent the assignment: start over
            self._prepare_rebalance(now_ms, new_group=False)
        for pending, since in list(self.pending_ids.items()):
            if now_ms - since > 5 * 60_000:
                del self.pending_ids[pending]
        return removed

    def _expire(self, now_ms: int) -> list[str]:
        gone = [m.member_id for m in self.members.values()
                if m.join_reply is None and m.sync_reply is None
                and now_ms - m.last_heartbeat_ms > m.session_timeout_ms]
        for member_id in gone:
            self.remove(member_id, now_ms)
        return gone

    def _complete_join(self, now_ms: int) -> None:
        if not self.members:
            self.state = EMPTY
            self.generation += 1
            return
        self.generation += 1
        self.protocol_name = self._choose_protocol()
        if self.leader not in self.members:
            self.leader = next(iter(self.members))
        self.state = COMPLETING
        # the leader gets a whole rebalance timeout to sync, however long the joins took
        timeout = max(m.rebalance_timeout_ms for m in self.members.values())
        self.rebalance_deadline_ms = now_ms + timeout
        for member in self.members.values():
            reply, member.join_reply = member.join_reply, None
            member.assignment = b""
            if reply is not None:
                reply(self._join_answer(member))

    def _join_answer(self, member: ClassicMember) -> dict:
        """The JoinGroup answer of the current generation for `member` (the leader also gets
        everyone's subscription metadata)."""
        metadata = [{"member_id": m.member_id, "group_instance_id": m.group_instance_id,
                     "metadata": dict(m.protocols)[self.protocol_name]}
                    for m in self.members.values()] if member.member_id == self.leader else []
        return {"error_code": 0, "generation_id": self.generation,
                "protocol_type": self.protocol_type, "protocol_name": self.protocol_name,
                "leader": self.leader, "member_id": member.member_id,
                "skip_assignment": False, "members": metadata}

    def _choose_protocol(self) -> str:
        candidates = set.intersection(*({n for n, _ in m.protocols}
                                        for m in self.members.values()))
        votes: dict[str, int] = {}
        for member in self.members.values():
            preferred = next(n for n, _ in member.protocols if n in candidates)
            votes[preferred] = votes.get(preferred, 0) + 1
        return max(sorted(votes), key=lambda name: votes[name])

    # ---------------------------------------------------------------------- syncing
    def sync(self, *, member_id: str, generation: int,
             assignments: dict[str, bytes], now_ms: int, reply: SyncReply,
             group_instance_id: str | None = None) -> None:
        if self.fenced(member_id, group_instance_id):
            reply(_sync_error("FENCED_INSTANCE_ID"))
            return
        member = self.members.get(member_id)
        if member is None:
            reply(_sync_error("UNKNOWN_MEMBER_ID"))
            return
        if generation != self.generation:
            reply(_sync_error("ILLEGAL_GENERATION"))
            return
        if self.state == PREPARING:
            reply(_sync_error("REBALANCE_IN_PROGRESS"))
            return
        member.last_heartbeat_ms = now_ms
        if self.state == STABLE:
            reply({"error_code": 0, "assignment": member.assignment,
                   "protocol_type": self.protocol_type, "protocol_name": self.protocol_name})
            return
        member.sync_reply = reply
        if member_id == self.leader:
            for target in self.members.values():
                target.assignment = assignments.get(target.member_id, b"")
            self.state = STABLE
            for target in self.members.values():
                waiting, target.sync_reply = target.sync_reply, None
                if waiting is not None:
                    waiting({"error_code": 0, "assignment": target.assignment,
                             "protocol_type": self.protocol_type,
                             "protocol_name": self.protocol_name})

    # ------------------------------------------------------------- staying, leaving
    def heartbeat(self, member_id: str, generation: int, now_ms: int,
                  group_instance_id: str | None = None) -> str:
        """The error name for a Heartbeat ("NONE" when all is well)."""
        if self.fenced(member_id, group_instance_id):
            return "FENCED_INSTANCE_ID"
        member = self.members.get(member_id)
        if member is None:
            return "UNKNOWN_MEMBER_ID"
        member.last_heartbeat_ms = now_ms
        if generation != self.generation:
            return "ILLEGAL_GENERATION"
        if self.state == PREPARING:
            return "REBALANCE_IN_PROGRESS"
        return "NONE"

    def leave(self, member_id: str, group_instance_id: str | None, now_ms: int) -> str:
        """LeaveGroup of one member, named by member id and/or (v3+) instance id."""
        if group_instance_id:
            holder = self.static_members.get(group_instance_id)
            if holder is None:
                return "UNKNOWN_MEMBER_ID"
            if member_id and holder != member_id:
                return "FENCED_INSTANCE_ID"
            member_id = holder
        return "NONE" if self.remove(member_id, now_ms) else "UNKNOWN_MEMBER_ID"

    def remove(self, member_id: str, now_ms: int) -> bool:
        member = self.members.pop(member_id, None)
        self.pending_ids.pop(member_id, None)
        if member is None:
            return False
        if member.group_instance_id and \
                self.static_members.get(member.group_instance_id) == member_id:
            del self.static_members[member.group_instance_id]
        if member.join_reply is not None:
            member.join_reply(_join_error("UNKNOWN_MEMBER_ID", member_id))
        if member.sync_reply is not None:
            member.sync_reply(_sync_error("UNKNOWN_MEMBER_ID"))
        if self.members:
            self._prepare_rebalance(now_ms, new_group=False)
            self.tick(now_ms)
        else:
            self.state = EMPTY
            self.generation += 1
            self.leader = ""
        return True

    def resign(self) -> None:
        """This broker no longer coordinates the group (its __consumer_offsets partition moved):
        every JoinGroup and SyncGroup still waiting is answered NOT_COORDINATOR now, as Kafka's
        onResignation does, so the client finds the new coordinator instead of waiting out its
        rebalance timeout (librdkafka's is max.poll.interval.ms, 300 s)."""
        for member in self.members.values():
            join, sync = member.join_reply, member.sync_reply
            member.join_reply = member.sync_reply = None
            if join is not None:
                join(_join_error("NOT_COORDINATOR", member.member_id))
            if sync is not None:
                sync(_sync_error("NOT_COORDINATOR"))

    def check_commit(self, member_id: str, generation: int,
                     group_instance_id: str | None = None) -> str:
        """The error name for an OffsetCommit from this member at this generation."""
        if self.fenced(member_id, group_instance_id):
            return "FENCED_INSTANCE_ID"
        if generation < 0 and not member_id:
            return "NONE" if not self.members else "UNKNOWN_MEMBER_ID"
        if member_id not in self.members:
            return "UNKNOWN_MEMBER_ID"
        if generation != self.generation:
            return "ILLEGAL_GENERATION"
        # Only the completing step refuses: while the group prepares, the current generation's
        # owners still own their partitions and commit what they processed before rejoining.
        if self.state == COMPLETING:
            return "REBALANCE_IN_PROGRESS"
        return "NONE"


def _join_error(code: str, member_id: str) -> dict:
    return {"error_code": code, "generation_id": -1, "protocol_name": "", "leader": "",
            "member_id": member_id, "members": []}


def _sync_error(code: str) -> dict:
    return {"error_code": code, "assignment": b""}


def _read_string(data: bytes, position: int) -> tuple[str, int]:
    (length,) = struct.unpack_from(">h", data, position)
    position += 2
    if length < 0:
        return "", position
    return data[position:position + length].decode(), position + length


def subscribed_topics(metadata: bytes) -> list[str]:
    """Topic names in a consumer's subscription metadata (ConsumerProtocolSubscription);
    empty when the bytes are not of that format."""
    try:
        position = 2  # version
        (count,) = struct.unpack_from(">i", metadata, position)
        position += 4
        topics = []
        for _ in range(max(count, 0)):
            topic, position = _read_string(metadata, position)
            topics.append(topic)
        return topics
    except (struct.error, UnicodeDecodeError):
        return []


def assigned_partitions(assignment: bytes) -> list[tuple[str, int]]:
    """(topic, partition) pairs in a consumer's assignment (ConsumerProtocolAssignment)."""
    try:
        position = 2  # version
        (count,) = struct.unpack_from(">i", assignment, position)
        position += 4
        out = []
        for _ in range(max(count, 0)):
            topic, position = _read_string(assignment, position)
            (partitions,) = struct.unpack_from(">i", assignment, position)
            position += 4
            for _ in range(max(partitions, 0)):
                (partition,) = struct.unpack_from(">i", assignment, position)
                position += 4
                out.append((topic, partition))
        return out
    except (struct.error, UnicodeDecodeError):
        return []
