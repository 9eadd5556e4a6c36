"""KIP-345 static membership in the classic group state machine: a static member that comes
back within its session timeout takes over its entry and assignment with no rebalance (the
others keep their generation and partitions: librdkafka's test 0102); a replaced member id
is fenced; one that stays away past its session is removed and the group rebalances."""

from __future__ import annotations

import itertools

from raftka.broker.groups.classic import PREPARING, STABLE, ClassicGroup
from tests.unit.groups.test_classic_group import DELAY_MS, REBALANCE_MS, SESSION_MS, Replies

_IDS = itertools.count(1)


def join(group: ClassicGroup, member_id: str, now_ms: int, instance: str | None,
         protocols: list[str] | None = None) -> Replies:
    replies = Replies()
    group.join(member_id=member_id, client_id="app", protocol_type="consumer",
               protocols=[(name, f"meta-{name}".encode()) for name in protocols or ["range"]],
               session_timeout_ms=SESSION_MS, rebalance_timeout_ms=REBALANCE_MS,
               require_known_member_id=True, now_ms=now_ms,
               new_member_id=f"app-{next(_IDS)}", reply=replies, group_instance_id=instance)
    return replies


def sync(group: ClassicGroup, member_id: str, now_ms: int, instance: str | None,
         assignments: dict[str, bytes] | None = None) -> Replies:
    replies = Replies()
    group.sync(member_id=member_id, generation=group.generation,
               assignments=assignments or {}, now_ms=now_ms, reply=replies,
               group_instance_id=instance)
    return replies


def stable_static_group() -> tuple[ClassicGroup, dict[str, str]]:
    """Instances a and b joined statically (no MEMBER_ID_REQUIRED round) and synced."""
    group = ClassicGroup("g", initial_delay_ms=DELAY_MS)
    joins = {instance: join(group, "", 0, instance) for instance in ("a", "b")}
    group.tick(DELAY_MS)
    ids = {instance: replies.last["member_id"] for instance, replies in joins.items()}
    assert all(r.last["error_code"] == 0 for r in joins.values())
    assert group.static_members == {"a": ids["a"], "b": ids["b"]}
    leader_instance = next(i for i, m in ids.items() if m == group.leader)
    for instance, member_id in ids.items():
        assignments = ({ids["a"]: b"part-0", ids["b"]: b"part-1"}
                       if instance == leader_instance else None)
        sync(group, member_id, DELAY_MS, instance, assignments)
    assert group.state == STABLE
    return group, ids


def test_a_returning_static_member_keeps_its_assignment_without_a_rebalance():
    group, ids = stable_static_group()
    generation = group.generation
    follower = next(i for i, m in ids.items() if m != group.leader)
    back = join(group, "", 1_000, follower)  # restarted: no member id, same instance id
    answer = back.last
    assert answer["error_code"] == 0 and answer["generation_id"] == generation
    new_id = answer["member_id"]
    assert new_id != ids[follower] and answer["leader"] != new_id
    assert group.state == STABLE and group.generation == generation
    synced = sync(group, new_id, 1_001, follower).last
    expected = b"part-0" if follower == "a" else b"part-1"
    assert synced["error_code"] == 0 and synced["assignment"] == expected
    other = next(i for i in ids if i != follower)
    assert group.heartbeat(ids[other], generation, 1_002, other) == "NONE"
    # the replaced member id is fenced everywhere
    assert group.heartbeat(ids[follower], generation, 1_003, follower) == "FENCED_INSTANCE_ID"
    assert group.check_commit(ids[follower], generation, follower) == "FENCED_INSTANCE_ID"
    assert join(group, ids[follower], 1_004, follower).last["error_code"] == \
        "FENCED_INSTANCE_ID"
    assert sync(group, ids[follower], 1_005, follower).last["error_code"] == \
        "FENCED_INSTANCE_ID"


def test_a_returning_leader_stays_leader_without_computing_a_new_assignment():
    group, ids = stable_static_group()
    leader_instance = next(i for i, m in ids.items() if m == group.leader)
    back = join(group, "", 500, leader_instance).last
    assert back["error_code"] == 0 and back["leader"] == ids[leader_instance]
    assert back["members"] == [] and group.leader == back["member_id"]
    assert group.state == STABLE


def test_a_changed_subscription_on_return_rebalances_an_added_protocol_does_not():
    group, ids = stable_static_group()
    generation = group.generation
    join(group, "", 500, "a", protocols=["roundrobin", "range"])  # range metadata the same
    assert group.state == STABLE and group.generation == generation
    replies = Replies()
    group.join(member_id="", client_id="app", protocol_type="consumer",
               protocols=[("range", b"other-topics")], session_timeout_ms=SESSION_MS,
               rebalance_timeout_ms=REBALANCE_MS, require_known_member_id=True, now_ms=600,
               new_member_id="app-x", reply=replies, group_instance_id="a")
    assert group.state == PREPARING and replies.items == []
    assert group.heartbeat(ids["b"], generation, 700, "b") == "REBALANCE_IN_PROGRESS"


def test_a_static_member_away_past_its_session_is_removed_and_the_group_rebalances():
    group, ids = stable_static_group()
    group.heartbeat(ids["b"], group.generation, SESSION_MS, "b")
    group.tick(DELAY_MS + SESSION_MS + 1)
    assert ids["a"] not in group.members and "a" not in group.static_members
    assert group.state == PREPARING
    # coming back later is a new member, which joins the next generation
    back = join(group, "", DELAY_MS + SESSION_MS + 2, "a")
    assert back.items == [] and group.static_members["a"] in group.members


def test_leave_by_instance_id():
    group, ids = stable_static_group()
    assert group.leave("", "a", 100) == "NONE"
    assert "a" not in group.static_members and ids["a"] not in group.members
    assert group.leave("", "zzz", 100) == "UNKNOWN_MEMBER_ID"
    assert group.leave("someone-else", "b", 100) == "FENCED_INSTANCE_ID"


def test_dynamic_members_are_unchanged():
    group = ClassicGroup("g", initial_delay_ms=0)
    first = join(group, "", 0, None)
    assert first.last["error_code"] == "MEMBER_ID_REQUIRED"
    assert group.static_members == {}
    assert not group.fenced("x", None)
