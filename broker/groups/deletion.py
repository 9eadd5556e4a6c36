"""Which committed offsets an OffsetDelete may remove. Pure.

Kafka's rules (GroupMetadataManager.deleteOffsets): a group with members may lose the
offsets of topics none of its members subscribe to; a subscribed topic answers
GROUP_SUBSCRIBED_TO_TOPIC (its consumers would jump to auto.offset.reset on their next
fetch). An empty group may lose any. A classic group whose members do not use the consumer
protocol (so their subscriptions are unknown) refuses the whole request with NON_EMPTY_GROUP.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from raftka.broker.groups.classic import ClassicGroup, subscribed_topics
from raftka.broker.groups.state import ConsumerGroup

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class OffsetDeletePlan:
    # Topic -> ErrorCode name ("" when its offsets go).
    outcome: dict[str, str] = field(default_factory=dict)
    # Committed partitions that go.
    partitions: tuple[TopicPartition, ...] = ()


def subscribed_by_members(group: ConsumerGroup | None, classic: ClassicGroup | None,
                          all_topics: Collection[str]) -> frozenset[str] | None:
    """Topics the group's current members consume; None when unknown (a classic group of
    another protocol type, e.g. Kafka Connect)."""
    topics: set[str] = set()
    if group is not None:
        for member in group.members.values():
            topics |= group.subscribed_topics(member, all_topics)
    if classic is not None and classic.members:
        if classic.protocol_type != "consumer":
            return None
        for kafka_member in classic.members.values():
            metadata = dict(kafka_member.protocols).get(classic.protocol_name, b"")
            topics |= set(subscribed_topics(metadata))
    return frozenset(topics)


def plan_offset_delete(offsets: Mapping[TopicPartition, object],
                       wanted: Mapping[str, Collection[int]],
                       subscribed: frozenset[str]) -> OffsetDeletePlan:
    """`wanted`: topic -> partitions whose offsets should go (empty: every committed one)."""
    outcome: dict[str, str] = {}
    gone: list[TopicPartition] = []
    for topic, partitions in wanted.items():
        if topic in subscribed:
            outcome[topic] = "GROUP_SUBSCRIBED_TO_TOPIC"
            continue
        outcome[topic] = ""
        gone.extend(tp for tp in sorted(offsets)
                    if tp[0] == topic and (not partitions or tp[1] in partitions))
    return OffsetDeletePlan(outcome, tuple(gone))
