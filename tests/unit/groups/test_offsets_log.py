"""What the coordinator stores in __consumer_offsets and how replay rebuilds it."""

from __future__ import annotations

from raftka.broker.groups import offsets_log
from raftka.broker.groups.state import CommittedOffset, ConsumerGroup


def test_group_to_partition_follows_java_string_hash_code():
    # String.hashCode() of these strings, as Java computes them
    assert offsets_log.java_string_hash("test") == 3556498
    assert offsets_log.java_string_hash("hello") == 99162322
    assert offsets_log.java_string_hash("a-much-longer-group-name") == -1917502871
    assert offsets_log.partition_for_group("test", 50) == 3556498 % 50
    assert offsets_log.partition_for_group("a-much-longer-group-name", 50) == 1917502871 % 50

NOW = 1_700_000_000_000


def replay_all(data: bytes) -> dict[str, ConsumerGroup]:
    groups: dict[str, ConsumerGroup] = {}
    for _, record in offsets_log.decode(data):
        offsets_log.replay(groups, record)
    return groups


def test_commits_tombstones_and_snapshots_replay_to_the_same_state():
    first = offsets_log.encode(
        [
            offsets_log.commit_record("g", "t", 0, CommittedOffset(10, "m", 1)),
            offsets_log.commit_record("h", "t", 1, CommittedOffset(5, "", 2)),
            offsets_log.commit_record("g", "gone", 0, CommittedOffset(3, "", 3)),
        ],
        NOW,
    )
    groups = replay_all(first)
    assert groups["g"].offsets[("t", 0)].offset == 10
    snapshot = offsets_log.encode([offsets_log.snapshot_record(groups, ["t"])], NOW)
    after = offsets_log.encode(
        [
            offsets_log.tombstone_record("h"),
            offsets_log.commit_record("g", "t", 0, CommittedOffset(12, "", 4)),
        ],
        NOW,
    )
    # replaying from the snapshot alone (older log dropped) gives the full state
    rebuilt = replay_all(snapshot + after)
    assert set(rebuilt) == {"g"}
    assert rebuilt["g"].offsets == {("t", 0): CommittedOffset(12, "", 4)}
    # and replaying everything gives the same (the snapshot supersedes what came before)
    assert replay_all(first + snapshot + after)["g"].offsets == rebuilt["g"].offsets
