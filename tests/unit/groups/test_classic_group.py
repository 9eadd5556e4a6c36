"""Kafka's classic group protocol as a pure state machine: joins, KIP-394 member ids, the
initial delay, syncing assignments, rebalances on joins, leaves and expiries, and the checks
on commits and heartbeats. Times are plain integers (milliseconds)."""

from __future__ import annotations

import itertools
import struct

from raftka.broker.groups.classic import (
    COMPLETING,
    EMPTY,
    PREPARING,
    STABLE,
    ClassicGroup,
    assigned_partitions,
    subscribed_topics,
)

SESSION_MS = 10_000
REBALANCE_MS = 30_000
DELAY_MS = 300


class Replies:
    """Collects the replies a member's requests got (the runtime would send them)."""

    def __init__(self) -> None:
        self.items: list[dict] = []

    def __call__(self, reply: dict) -> None:
        self.items.append(reply)

    @property
    def last(self) -> dict:
        return self.items[-1]


_NEW_IDS = itertools.count(1)


def join(group: ClassicGroup, member_id: str, now_ms: int, *, protocols: list[str] | None = None,
         protocol_type: str = "consumer", require_known: bool = False,
         rebalance_ms: int = REBALANCE_MS) -> Replies:
    replies = Replies()
    group.join(member_id=member_id, client_id="app", protocol_type=protocol_type,
               protocols=[(name, f"meta-{name}".encode()) for name in protocols or ["range"]],
               session_timeout_ms=SESSION_MS, rebalance_timeout_ms=rebalance_ms,
               require_known_member_id=require_known, now_ms=now_ms,
               new_member_id=f"app-{next(_NEW_IDS)}", reply=replies)
    return replies


def sync(group: ClassicGroup, member_id: str, now_ms: int,
         assignments: dict[str, bytes] | None = None,
         generation: int | None = None) -> Replies:
    replies = Replies()
    group.sync(member_id=member_id,
               generation=group.generation if generation is None else generation,
               assignments=assignments or {}, now_ms=now_ms, reply=replies)
    return replies


def known_id(group: ClassicGroup, now_ms: int) -> str:
    """The KIP-394 round trip: an empty id gets MEMBER_ID_REQUIRED and a generated id."""
    first = join(group, "", now_ms, require_known=True)
    assert first.last["error_code"] == "MEMBER_ID_REQUIRED"
    return first.last["member_id"]


def stable_group_of(*member_ids: str) -> ClassicGroup:
    """A group whose members all joined at t=0 and whose leader sent the assignment."""
    group = ClassicGroup("g", initial_delay_ms=DELAY_MS)
    group.pending_ids.update({member_id: 0 for member_id in member_ids})
    joins = [join(group, member_id, 0) for member_id in member_ids]
    group.tick(DELAY_MS)
    assert all(j.last["error_code"] == 0 for j in joins)
    syncs = [sync(group, member_id, DELAY_MS,
                  {m: m.encode() for m in member_ids} if member_id == group.leader else None)
             for member_id in member_ids]
    assert group.state == STABLE
    assert all(s.last["error_code"] == 0 for s in syncs)
    return group


def test_member_id_round_trip_of_kip_394() -> None:
    group = ClassicGroup("g", initial_delay_ms=0)
    member_id = known_id(group, 0)
    assert member_id.startswith("app-")
    assert group.members == {}  # not a member until it comes back with the id

    second = join(group, member_id, 1)
    assert second.last["error_code"] == 0
    assert second.last["member_id"] == member_id
    assert second.last["leader"] == member_id
    assert group.generation == 1


def test_old_clients_without_kip_394_get_an_id_and_join_at_once() -> None:
    group = ClassicGroup("g", initial_delay_ms=0)
    replies = join(group, "", 0, require_known=False)
    assert replies.last["error_code"] == 0
    assert replies.last["member_id"] in group.members


def test_a_made_up_member_id_is_refused() -> None:
    group = ClassicGroup("g")
    assert join(group, "nobody", 0).last["error_code"] == "UNKNOWN_MEMBER_ID"
    assert group.members == {}


def test_the_initial_delay_lets_starting_members_land_in_one_generation() -> None:
    group = ClassicGroup("g", initial_delay_ms=DELAY_MS)
    first_id, second_id = known_id(group, 0), known_id(group, 0)
    first = join(group, first_id, 0)
    group.tick(100)
    assert first.items == []  # still waiting for others
    assert group.state == PREPARING
    second = join(group, second_id, 150)
    group.tick(150 + DELAY_MS)

    assert group.generation == 1
    assert group.state == COMPLETING
    leader_reply = first.last if group.leader == first_id else second.last
    follower_reply = second.last if group.leader == first_id else first.last
    assert {m["member_id"] for m in leader_reply["members"]} == {first_id, second_id}
    assert all(m["metadata"] == b"meta-range" for m in leader_reply["members"])
    assert follower_reply["members"] == []  # only the leader computes the assignment
    assert first.last["generation_id"] == second.last["generation_id"] == 1


def test_each_member_joining_a_new_group_extends_the_initial_delay() -> None:
    group = ClassicGroup("g", initial_delay_ms=DELAY_MS)
    group.pending_ids.update({"a": 0, "b": 0, "c": 0})
    first = join(group, "a", 0)
    join(group, "b", 250)
    group.tick(DELAY_MS)
    assert first.items == []  # b's arrival moved the end of the wait to 550
    join(group, "c", 500)
    group.tick(799)
    assert first.items == []
    group.tick(800)
    assert first.last["generation_id"] == 1
    assert {m["member_id"] for m in first.last["members"]} == {"a", "b", "c"}


def test_followers_wait_for_the_leaders_assignment() -> None:
    group = ClassicGroup("g", initial_delay_ms=DELAY_MS)
    group.pending_ids.update({"a": 0, "b": 0})
    join(group, "a", 0)
    join(group, "b", 0)
    group.tick(DELAY_MS)
    assert group.state == COMPLETING and group.leader == "a"  # the first to join leads

    follower = sync(group, "b", 1)
    assert follower.items == []
    leader = sync(group, "a", 2, {"a": b"part-a", "b": b"part-b"})
    assert leader.last == {"error_code": 0, "assignment": b"part-a",
                           "protocol_type": "consumer", "protocol_name": "range"}
    assert follower.last["assignment"] == b"part-b"
    assert group.state == STABLE
    # a late sync in the stable generation gets the stored assignment
    assert sync(group, "b", 3).last["assignment"] == b"part-b"


def test_a_new_member_makes_everyone_rejoin_and_the_generation_grow() -> None:
    group = stable_group_of("a", "b")
    generation = group.generation
    group.pending_ids["c"] = DELAY_MS
    newcomer = join(group, "c", 1_000)
    assert group.state == PREPARING
    assert group.heartbeat("a", generation, 1_001) == "REBALANCE_IN_PROGRESS"
    # Kafka takes commits of the current generation while the group prepares: a member
    # commits what it processed before it rejoins (or as it closes), and nobody else owns
    # its partitions until the next generation.
    assert group.check_commit("a", generation) == "NONE"

    join(group, "a", 1_100)
    group.tick(1_200)
    assert newcomer.items == []  # "b" has not rejoined yet
    join(group, "b", 1_300)
    assert newcomer.last["error_code"] == 0
    assert group.generation == generation + 1
    assert set(group.members) == {"a", "b", "c"}
    assert group.heartbeat("a", generation, 1_400) == "ILLEGAL_GENERATION"
    assert group.heartbeat("a", generation + 1, 1_400) == "NONE"


def test_a_follower_rejoining_with_the_same_metadata_gets_the_current_generation() -> None:
    group = stable_group_of("a", "b")
    generation = group.generation
    again = join(group, "b", 1_000)  # e.g. it missed the answer
    assert again.last["error_code"] == 0
    assert again.last["generation_id"] == generation and again.last["members"] == []
    assert group.state == STABLE
    assert group.heartbeat("a", generation, 1_001) == "NONE"  # no rebalance for the others
    assert sync(group, "b", 1_002).last["assignment"] == b"b"


def test_the_leader_rejoining_in_a_stable_group_starts_a_rebalance() -> None:
    group = stable_group_of("a", "b")
    join(group, "a", 1_000)  # the leader may want to reassign (e.g. new topics matched)
    assert group.state == PREPARING


def test_a_rejoin_while_the_assignment_is_pending_repeats_the_answer() -> None:
    group = ClassicGroup("g", initial_delay_ms=DELAY_MS)
    group.pending_ids.update({"a": 0, "b": 0})
    join(group, "a", 0)
    join(group, "b", 0)
    group.tick(DELAY_MS)
    assert group.state == COMPLETING
    again = join(group, "a", DELAY_MS + 5)
    assert again.last["generation_id"] == group.generation == 1
    assert {m["member_id"] for m in again.last["members"]} == {"a", "b"}  # a leads
    assert group.state == COMPLETING


def test_members_that_do_not_rejoin_within_the_rebalance_timeout_are_dropped() -> None:
    group = stable_group_of("a", "b")
    rejoin = join(group, "a", 1_000, protocols=["range", "roundrobin"])  # new metadata
    assert group.state == PREPARING
    for now_ms in range(1_000, 1_000 + REBALANCE_MS, 3_000):  # alive, but never rejoins
        assert group.heartbeat("b", group.generation, now_ms) == "REBALANCE_IN_PROGRESS"
    removed = group.tick(1_000 + REBALANCE_MS - 1)
    assert removed == [] and rejoin.items == []

    removed = group.tick(1_000 + REBALANCE_MS)
    assert removed == ["b"]
    assert rejoin.last["error_code"] == 0
    assert set(group.members) == {"a"}
    assert group.leader == "a"


def test_a_silent_member_expires_after_its_session_timeout() -> None:
    group = stable_group_of("a", "b")
    group.heartbeat("a", group.generation, DELAY_MS + SESSION_MS)
    assert group.tick(DELAY_MS + SESSION_MS) == []
    removed = group.tick(DELAY_MS + SESSION_MS + 1)
    assert removed == ["b"]
    assert group.state == PREPARING  # "a" must rejoin to get "b"'s partitions
    assert group.heartbeat("b", group.generation, DELAY_MS + SESSION_MS + 2) == (
        "UNKNOWN_MEMBER_ID")


def test_the_leader_leaving_hands_leadership_to_a_remaining_member() -> None:
    group = stable_group_of("a", "b")
    assert group.leader == "a"
    assert group.remove("a", 1_000)
    assert not group.remove("a", 1_001)
    rejoin = join(group, "b", 1_002)
    assert rejoin.last["error_code"] == 0
    assert rejoin.last["leader"] == "b"
    assert [m["member_id"] for m in rejoin.last["members"]] == ["b"]


def test_the_last_member_leaving_empties_the_group() -> None:
    group = stable_group_of("a")
    generation = group.generation
    group.remove("a", 1_000)
    assert group.state == EMPTY
    assert group.leader == ""
    assert group.generation == generation + 1
    # standalone commits (no member, generation -1) are allowed on an empty group only
    assert group.check_commit("", -1) == "NONE"


def test_commit_checks() -> None:
    group = stable_group_of("a")
    assert group.check_commit("a", group.generation) == "NONE"
    assert group.check_commit("a", group.generation - 1) == "ILLEGAL_GENERATION"
    assert group.check_commit("ghost", group.generation) == "UNKNOWN_MEMBER_ID"
    assert group.check_commit("", -1) == "UNKNOWN_MEMBER_ID"  # the group is in use


def test_sync_errors() -> None:
    group = stable_group_of("a")
    assert sync(group, "ghost", 1_000).last["error_code"] == "UNKNOWN_MEMBER_ID"
    stale = sync(group, "a", 1_000, generation=group.generation - 1)
    assert stale.last["error_code"] == "ILLEGAL_GENERATION"


def test_a_second_member_rejoins_a_group_that_completed_without_it() -> None:
    group = ClassicGroup("g", initial_delay_ms=0)
    group.pending_ids.update({"a": 0, "b": 0})
    first = join(group, "a", 0)
    assert first.last["generation_id"] == 1 and group.state == COMPLETING
    second = join(group, "b", 5)
    assert group.state == PREPARING and second.items == []
    assert sync(group, "a", 6).last["error_code"] == "REBALANCE_IN_PROGRESS"
    again = join(group, "a", 7)
    assert second.last["generation_id"] == again.last["generation_id"] == 2


def test_a_leader_that_never_syncs_starts_the_rebalance_over() -> None:
    group = ClassicGroup("g", initial_delay_ms=DELAY_MS)
    group.pending_ids.update({"a": 0, "b": 0})
    join(group, "a", 0)
    join(group, "b", 0)
    group.tick(DELAY_MS)
    waiting = sync(group, "b", DELAY_MS + 10)
    for now_ms in range(DELAY_MS, DELAY_MS + REBALANCE_MS, 3_000):  # "a" heartbeats only
        assert group.heartbeat("a", group.generation, now_ms) == "NONE"
        group.tick(now_ms)
    group.tick(DELAY_MS + REBALANCE_MS - 1)  # the timeout counts from the join's end
    assert waiting.items == []
    group.tick(DELAY_MS + REBALANCE_MS)
    assert waiting.last["error_code"] == "REBALANCE_IN_PROGRESS"
    assert group.state == PREPARING


def test_a_duplicate_join_answers_the_older_request() -> None:
    group = ClassicGroup("g", initial_delay_ms=DELAY_MS)
    member_id = known_id(group, 0)
    older = join(group, member_id, 0)
    newer = join(group, member_id, 10)
    assert older.last["error_code"] == "REBALANCE_IN_PROGRESS"
    group.tick(DELAY_MS)
    assert newer.last["error_code"] == 0


def test_protocol_type_and_assignors_must_agree() -> None:
    group = stable_group_of("a")
    group.pending_ids.update({"b": 0, "c": 0})
    wrong_type = join(group, "b", 1_000, protocol_type="connect")
    assert wrong_type.last["error_code"] == "INCONSISTENT_GROUP_PROTOCOL"
    no_common = join(group, "c", 1_000, protocols=["sticky"])
    assert no_common.last["error_code"] == "INCONSISTENT_GROUP_PROTOCOL"
    assert set(group.members) == {"a"}


def test_the_protocol_most_members_prefer_among_the_common_ones_is_chosen() -> None:
    group = ClassicGroup("g", initial_delay_ms=DELAY_MS)
    group.pending_ids.update({"a": 0, "b": 0, "c": 0})
    join(group, "a", 0, protocols=["cooperative-sticky", "range"])
    join(group, "b", 0, protocols=["roundrobin", "cooperative-sticky", "range"])
    last = join(group, "c", 0, protocols=["range", "cooperative-sticky"])
    group.tick(DELAY_MS)
    # roundrobin is not common; of the rest a and b put cooperative-sticky first, c range
    assert group.protocol_name == "cooperative-sticky"
    assert last.last["protocol_name"] == "cooperative-sticky"


def consumer_subscription(topics: list[str]) -> bytes:
    body = struct.pack(">hi", 0, len(topics))
    for topic in topics:
        body += struct.pack(">h", len(topic)) + topic.encode()
    return body + struct.pack(">i", -1)  # null user data


def consumer_assignment(parts: dict[str, list[int]]) -> bytes:
    body = struct.pack(">hi", 0, len(parts))
    for topic, partitions in parts.items():
        body += struct.pack(">h", len(topic)) + topic.encode()
        body += struct.pack(f">i{len(partitions)}i", len(partitions), *partitions)
    return body + struct.pack(">i", -1)


def test_consumer_protocol_payloads_are_read_and_garbage_gives_nothing() -> None:
    assert subscribed_topics(consumer_subscription(["orders", "events"])) == ["orders", "events"]
    assert assigned_partitions(consumer_assignment({"orders": [0, 2], "events": [1]})) == [
        ("orders", 0), ("orders", 2), ("events", 1)]
    assert subscribed_topics(b"\x00") == []
    assert assigned_partitions(b"\x00\x00\x00\x00\x00\x05\x00") == []
    assert assigned_partitions(b"") == []


def test_commits_wait_out_only_the_completing_step_of_a_rebalance() -> None:
    """Between JoinGroup answers and the leader's SyncGroup the new generation's assignment
    is not known yet: a commit then answers REBALANCE_IN_PROGRESS (Kafka's
    validateOffsetCommit), a commit of the old generation ILLEGAL_GENERATION."""
    group = stable_group_of("a", "b")
    old_generation = group.generation
    group.pending_ids["c"] = DELAY_MS
    join(group, "c", 1_000)
    join(group, "a", 1_100)
    join(group, "b", 1_200)
    assert group.state == COMPLETING
    assert group.check_commit("a", group.generation) == "REBALANCE_IN_PROGRESS"
    assert group.check_commit("a", old_generation) == "ILLEGAL_GENERATION"
    sync(group, group.leader, 1_300, {m: m.encode() for m in group.members})
    assert group.state == STABLE
    assert group.check_commit("a", group.generation) == "NONE"
