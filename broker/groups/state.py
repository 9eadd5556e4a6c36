"""One consumer group's membership, assignment and committed offsets. Pure: time is passed
in, nothing here does I/O.

How it works (Kafka's KIP-848 consumer protocol, simplified):
- Any change that matters — a member joins or leaves, a subscription changes, a subscribed
  topic gains partitions — bumps the *group epoch* and recomputes the *target assignment*
  with the group's assignor.
- Each heartbeat moves that member toward its target. Partitions it should no longer have are
  taken away at once (the reply lists fewer partitions: it must stop, commit and drop them).
  Partitions it should gain are handed over only when nobody else still holds them — not in
  another member's current assignment and not in the partitions another member last reported
  owning. So a partition never has two owners at once: revoke first, then assign.
- When a member's assignment equals its target, its *member epoch* becomes the group epoch.
  Offset commits must carry the member's current (or immediately previous) epoch; a member
  that was removed — it left, or missed its session timeout — is unknown and cannot commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from raftka.broker.groups.assignors import ASSIGNORS, assign
from raftka.broker.groups.topic_regex import TopicRegexError, compile_topic_regex, matching_topics

TopicPartition = tuple[str, int]
JOIN_EPOCH = 0
LEAVE_EPOCH = -1


class GroupError(Exception):
    """A heartbeat or commit the group refuses; `code` is the ErrorCode name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class Member:
    member_id: str
    client_id: str
    session_timeout_ms: int
    last_heartbeat_ms: int
    subscribed_topics: frozenset[str] = frozenset()
    subscribed_regex: str = ""
    # Invariant: epoch <= the group epoch; previous_epoch < epoch once it moved.
    epoch: int = 0
    previous_epoch: int = -1
    # What the coordinator currently gives the member.
    assigned: frozenset[TopicPartition] = frozenset()
    # What the member last said it owns (may still include revoked partitions).
    owned: frozenset[TopicPartition] = frozenset()
    # When partitions were taken away: they must be released before this time.
    revoke_deadline_ms: int | None = None


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    member_id: str
    member_epoch: int
    session_timeout_ms: int
    # What the member should own now (sent on every heartbeat: small, and simple for
    # clients in any language).
    assignment: frozenset[TopicPartition]


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    metadata: str
    commit_timestamp_ms: int


@dataclass(slots=True)
class ConsumerGroup:
    group_id: str
    assignor: str = "range"
    group_epoch: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    target: dict[str, frozenset[TopicPartition]] = field(default_factory=dict)
    offsets: dict[TopicPartition, CommittedOffset] = field(default_factory=dict)
    # Partition counts the target was computed for.
    _counts_seen: dict[str, int] = field(default_factory=dict)

    # ---------------------------------------------------------------------- queries
    @property
    def state(self) -> str:
        if not self.members:
            return "Empty"
        if all(
            m.epoch == self.group_epoch and m.assigned == self.target.get(m.member_id)
            for m in self.members.values()
        ):
            return "Stable"
        return "Reconciling"

    def subscribed_topics(self, member: Member, all_topics: Iterable[str]) -> frozenset[str]:
        if member.subscribed_regex:
            return matching_topics(member.subscribed_regex, all_topics) | member.subscribed_topics
        return member.subscribed_topics

    # -------------------------------------------------------------------- heartbeats
    def heartbeat(
        self,
        *,
        member_id: str,
        member_epoch: int,
        client_id: str,
        subscribed_topics: Iterable[str] | None,
        subscribed_regex: str,
        assignor: str,
        owned: Iterable[TopicPartition],
        session_timeout_ms: int,
        partition_counts: Mapping[str, int],
        now_ms: int,
        new_member_id: str,
        hold_until_ms: int = 0,
    ) -> HeartbeatResult:
        """One heartbeat. `partition_counts` holds every existing topic (for regexes).

        Until `hold_until_ms` (a coordinator that just took over, and has not heard from
        every member yet) a member only gets back partitions it reports owning: another
        member may still hold the rest without having said so to this coordinator."""
        if member_epoch == LEAVE_EPOCH:
            self.remove(member_id, partition_counts)
            return HeartbeatResult(member_id, LEAVE_EPOCH, session_timeout_ms, frozenset())
        if subscribed_regex:
            # Checked before anything changes: a member kept with a bad regex would make
            # every later heartbeat of every member fail (the target covers all members).
            try:
                compile_topic_regex(subscribed_regex)
            except TopicRegexError as exc:
                raise GroupError(
                    "INVALID_REQUEST",
                    f"subscribed_topic_regex {subscribed_regex[:100]!r} {exc}",
                ) from None
        joining = member_epoch == JOIN_EPOCH and (
            not member_id or member_id not in self.members or self.members[member_id].epoch > 0
        )
        member = self._member_for(
            member_id,
            member_epoch,
            client_id,
            session_timeout_ms,
            now_ms,
            new_member_id,
            assignor,
            joining,
        )
        member.last_heartbeat_ms = now_ms
        member.owned = frozenset(owned)
        changed = bool(joining)
        if subscribed_topics is not None or subscribed_regex != member.subscribed_regex:
            topics = frozenset(subscribed_topics or ())
            if topics != member.subscribed_topics or subscribed_regex != member.subscribed_regex:
                member.subscribed_topics = topics
                member.subscribed_regex = subscribed_regex
                changed = True
        if changed or self._metadata_changed(partition_counts):
            self._new_target(partition_counts)
        assignment = self._reconcile(member, now_ms, holding=now_ms < hold_until_ms)
        return HeartbeatResult(
            member.member_id, member.epoch, member.session_timeout_ms, assignment
        )

    def _member_for(
        self,
        member_id: str,
        member_epoch: int,
        client_id: str,
        session_timeout_ms: int,
        now_ms: int,
        new_member_id: str,
        assignor: str,
        joining: bool,
    ) -> Member:
        """The member a heartbeat is for. A join is epoch 0 from a new (or fenced) member;
        epoch 0 from a member still waiting for its first target is an ordinary heartbeat."""
        if joining:
            if not self.members and assignor:
                if assignor not in ASSIGNORS:
                    raise GroupError(
                        "UNSUPPORTED_ASSIGNOR", f"assignor {assignor!r} is not one of {ASSIGNORS}"
                    )
                self.assignor = assignor
            existing = self.members.get(member_id) if member_id else None
            if existing is not None:  # a member rejoining after being fenced starts over
                existing.epoch, existing.previous_epoch = 0, -1
                existing.assigned = frozenset()
                return existing
            joined = Member(member_id or new_member_id, client_id, session_timeout_ms, now_ms)
            self.members[joined.member_id] = joined
            return joined
        member = self.members.get(member_id)
        if member is None:
            raise GroupError(
                "UNKNOWN_MEMBER_ID",
                f"member {member_id} is not in group {self.group_id} (its session "
                "expired or it left); join again with epoch 0",
            )
        if member_epoch != member.epoch:
            raise GroupError(
                "FENCED_MEMBER_EPOCH",
                f"member epoch {member_epoch} is not the current {member.epoch}; "
                "join again with epoch 0",
            )
        return member

    def _metadata_changed(self, partition_counts: Mapping[str, int]) -> bool:
        topics = {
            t for m in self.members.values() for t in self.subscribed_topics(m, partition_counts)
        }
        counts = {t: partition_counts.get(t, 0) for t in topics}
        return counts != self._counts_seen

    def _new_target(self, partition_counts: Mapping[str, int]) -> None:
        self.group_epoch += 1
        subscriptions = {
            m.member_id: self.subscribed_topics(m, partition_counts) for m in self.members.values()
        }
        current = {m.member_id: m.assigned for m in self.members.values()}
        computed = assign(self.assignor, subscriptions, partition_counts, current)
        self.target = {member: frozenset(tps) for member, tps in computed.items()}
        self._counts_seen = {
            t: partition_counts.get(t, 0) for topics in subscriptions.values() for t in topics
        }

    def _reconcile(
        self, member: Member, now_ms: int, holding: bool = False
    ) -> frozenset[TopicPartition]:
        desired = self.target.get(member.member_id, frozenset())
        keep = member.assigned & desired
        if keep != member.assigned:
            member.revoke_deadline_ms = now_ms + 3 * member.session_timeout_ms
        if not (member.owned - desired):
            member.revoke_deadline_ms = None
        held_elsewhere: set[TopicPartition] = set()
        for other in self.members.values():
            if other is not member:
                held_elsewhere |= other.assigned | other.owned
        member.assigned = keep | frozenset(
            tp
            for tp in desired - keep
            if tp not in held_elsewhere and (not holding or tp in member.owned)
        )
        if member.assigned == desired and member.epoch != self.group_epoch:
            member.previous_epoch, member.epoch = member.epoch, self.group_epoch
        return member.assigned

    # ---------------------------------------------------------------- membership
    def remove(self, member_id: str, partition_counts: Mapping[str, int]) -> bool:
        if self.members.pop(member_id, None) is None:
            return False
        self.target.pop(member_id, None)
        if self.members:
            self._new_target(partition_counts)
        else:
            self.group_epoch += 1
            self.target = {}
        return True

    def expire(self, now_ms: int, partition_counts: Mapping[str, int]) -> list[str]:
        """Remove members whose session ran out, or that kept revoked partitions too long."""
        gone = [
            m.member_id
            for m in self.members.values()
            if now_ms - m.last_heartbeat_ms > m.session_timeout_ms
            or (m.revoke_deadline_ms is not None and now_ms > m.revoke_deadline_ms)
        ]
        for member_id in gone:
            self.remove(member_id, partition_counts)
        return gone

    # ------------------------------------------------------------------- offsets
    def check_commit(self, member_id: str, member_epoch: int) -> None:
        """Raise unless this member may commit now (admin commits need an empty group)."""
        if not member_id and member_epoch < 0:
            if self.members:
                raise GroupError(
                    "NON_EMPTY_GROUP",
                    f"group {self.group_id} has {len(self.members)} member(s); "
                    "stop them before changing its offsets",
                )
            return
        member = self.members.get(member_id)
        if member is None:
            raise GroupError(
                "UNKNOWN_MEMBER_ID", f"member {member_id} is not in group {self.group_id}"
            )
        if member_epoch not in (member.epoch, member.previous_epoch) or member_epoch < 0:
            code = "STALE_MEMBER_EPOCH" if member_epoch < member.epoch else "FENCED_MEMBER_EPOCH"
            raise GroupError(code, f"member epoch {member_epoch} is not the current {member.epoch}")

    def commit(self, offsets: Mapping[TopicPartition, CommittedOffset]) -> None:
        self.offsets.update(offsets)
