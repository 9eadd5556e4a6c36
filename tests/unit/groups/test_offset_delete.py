"""OffsetDelete's rules (deletion.py) and its record in __consumer_offsets: the offsets of
unsubscribed topics go, durably (replay and snapshots agree); subscribed topics stay."""

from __future__ import annotations

import struct

from raftka.broker.groups import offsets_log
from raftka.broker.groups.classic import ClassicGroup, ClassicMember
from raftka.broker.groups.deletion import plan_offset_delete, subscribed_by_members
from raftka.broker.groups.state import CommittedOffset, ConsumerGroup, Member


def _consumer_metadata(topics: list[str]) -> bytes:
    """A Kafka ConsumerProtocolSubscription v0: version, topics, user data."""
    out = struct.pack(">hi", 0, len(topics))
    for topic in topics:
        out += struct.pack(">h", len(topic)) + topic.encode()
    return out + struct.pack(">i", -1)


def _offsets(*tps: tuple[str, int]) -> dict[tuple[str, int], CommittedOffset]:
    return {tp: CommittedOffset(5, "", 1) for tp in tps}


def test_plan_deletes_only_unsubscribed_topics_and_the_asked_partitions():
    offsets = _offsets(("a", 0), ("a", 1), ("b", 0), ("c", 0))
    plan = plan_offset_delete(offsets, {"a": {1}, "b": set(), "c": set(), "none": set()},
                              frozenset({"c"}))
    assert plan.outcome == {"a": "", "b": "", "c": "GROUP_SUBSCRIBED_TO_TOPIC", "none": ""}
    assert plan.partitions == (("a", 1), ("b", 0))


def test_subscriptions_of_both_protocols_count():
    group = ConsumerGroup("g")
    group.members["m"] = Member("m", "c", 1000, 0, subscribed_topics=frozenset({"x"}))
    classic = ClassicGroup("g", protocol_type="consumer", protocol_name="range")
    classic.members["k"] = ClassicMember("k", "c", 1000, 1000, "consumer",
                                         [("range", _consumer_metadata(["y"]))], 0)
    assert subscribed_by_members(group, classic, ["x", "y", "z"]) == {"x", "y"}
    assert subscribed_by_members(ConsumerGroup("e"), None, ["x"]) == frozenset()


def test_a_classic_group_of_another_protocol_type_has_unknown_subscriptions():
    classic = ClassicGroup("g", protocol_type="connect", protocol_name="v1")
    classic.members["k"] = ClassicMember("k", "c", 1000, 1000, "connect", [("v1", b"")], 0)
    assert subscribed_by_members(None, classic, ["x"]) is None


def test_offsets_deleted_record_replays_and_later_snapshots_leave_them_out():
    commits = [offsets_log.commit_record("g", t, p, CommittedOffset(9, "", 1))
               for t, p in (("a", 0), ("a", 1), ("b", 0))]
    deleted = offsets_log.offsets_deleted_record("g", [("a", 1), ("a", 0)])
    groups: dict[str, ConsumerGroup] = {}
    for _, record in offsets_log.decode(offsets_log.encode([*commits, deleted], 1)):
        offsets_log.replay(groups, record)
    assert set(groups["g"].offsets) == {("b", 0)}
    snapshot = offsets_log.snapshot_record(groups, ["a", "b"])
    again: dict[str, ConsumerGroup] = {}
    offsets_log.replay(again, snapshot)
    assert set(again["g"].offsets) == {("b", 0)}


def test_an_offsets_deleted_record_of_an_unknown_group_is_skipped():
    groups: dict[str, ConsumerGroup] = {}
    offsets_log.replay(groups, offsets_log.offsets_deleted_record("ghost", [("a", 0)]))
    assert groups == {}
