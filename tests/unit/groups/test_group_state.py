"""Consumer group membership: join, rebalance with revoke-before-assign, expiry, commits."""

from __future__ import annotations

import itertools

import pytest

from raftka.broker.groups.state import ConsumerGroup, GroupError

COUNTS = {"orders": 6, "audit": 2}
_ids = itertools.count(1)


def beat(
    group: ConsumerGroup,
    member_id: str = "",
    epoch: int = 0,
    owned=(),
    now: int = 0,
    topics=("orders",),
    session: int = 3000,
    regex: str = "",
):
    return group.heartbeat(
        member_id=member_id,
        member_epoch=epoch,
        client_id="c",
        subscribed_topics=topics,
        subscribed_regex=regex,
        assignor="range",
        owned=owned,
        session_timeout_ms=session,
        partition_counts=COUNTS,
        now_ms=now,
        new_member_id=f"m{next(_ids)}",
    )


def settle(group: ConsumerGroup, results: dict, now: int = 0, rounds: int = 5) -> dict:
    """Heartbeat every member a few rounds, each reporting what it was last given."""
    for _ in range(rounds):
        for member_id, result in list(results.items()):
            results[member_id] = beat(group, member_id, result.member_epoch, result.assignment, now)
    return results


def test_first_member_gets_everything_then_a_second_one_shares_without_overlap():
    group = ConsumerGroup("g")
    a = beat(group)
    assert a.assignment == {("orders", p) for p in range(6)} and a.member_epoch == 1
    b = beat(group, now=10)
    assert b.assignment == frozenset()  # a still owns everything: nothing to give yet
    a2 = beat(group, a.member_id, a.member_epoch, a.assignment, now=20)
    assert a2.assignment == {("orders", p) for p in range(3)}  # revoke first
    b2 = beat(group, b.member_id, b.member_epoch, (), now=30)
    assert b2.assignment == frozenset()  # a has not confirmed the revocation yet
    a3 = beat(group, a.member_id, a2.member_epoch, a2.assignment, now=40)
    b3 = beat(group, b.member_id, b2.member_epoch, (), now=50)
    assert b3.assignment == {("orders", p) for p in range(3, 6)}
    assert a3.member_epoch == b3.member_epoch == group.group_epoch
    assert group.state == "Stable"


def test_three_members_six_partitions_two_each_disjoint():
    group = ConsumerGroup("g")
    results = {}
    for _ in range(3):
        result = beat(group)
        results[result.member_id] = result
    results = settle(group, results)
    owned = [set(r.assignment) for r in results.values()]
    assert [len(o) for o in owned] == [2, 2, 2]
    assert set().union(*owned) == {("orders", p) for p in range(6)}


def test_a_member_that_misses_its_session_is_removed_and_its_partitions_move():
    group = ConsumerGroup("g")
    a = beat(group, session=1000)
    results = {a.member_id: a, beat(group, session=1000).member_id: None}
    results = {m: r for m, r in results.items() if r is not None}
    b_id = next(m for m in group.members if m != a.member_id)
    assert group.expire(now_ms=500, partition_counts=COUNTS) == []
    beat(group, b_id, group.members[b_id].epoch, (), now=900, session=1000)
    assert group.expire(now_ms=1500, partition_counts=COUNTS) == [a.member_id]
    b = beat(group, b_id, group.members[b_id].epoch, (), now=1600, session=1000)
    assert b.assignment == {("orders", p) for p in range(6)}
    with pytest.raises(GroupError) as gone:
        beat(group, a.member_id, a.member_epoch, a.assignment, now=1700)
    assert gone.value.code == "UNKNOWN_MEMBER_ID"


def test_commits_need_a_live_member_with_its_current_epoch():
    group = ConsumerGroup("g")
    a = beat(group)
    group.check_commit(a.member_id, a.member_epoch)
    with pytest.raises(GroupError) as stale:
        group.check_commit(a.member_id, a.member_epoch + 5)
    assert stale.value.code == "FENCED_MEMBER_EPOCH"
    with pytest.raises(GroupError) as unknown:
        group.check_commit("zombie", 1)
    assert unknown.value.code == "UNKNOWN_MEMBER_ID"
    with pytest.raises(GroupError) as busy:
        group.check_commit("", -1)
    assert busy.value.code == "NON_EMPTY_GROUP"
    beat(group, a.member_id, -1)
    group.check_commit("", -1)  # an empty group may be reset by an administrator


def test_regex_subscription_and_new_partitions_trigger_a_new_target():
    group = ConsumerGroup("g")
    a = beat(group, topics=None, regex="au.*")
    assert a.assignment == {("audit", 0), ("audit", 1)}
    epoch = group.group_epoch
    more = dict(COUNTS, audit=3)
    result = group.heartbeat(
        member_id=a.member_id,
        member_epoch=a.member_epoch,
        client_id="c",
        subscribed_topics=None,
        subscribed_regex="au.*",
        assignor="",
        owned=a.assignment,
        session_timeout_ms=3000,
        partition_counts=more,
        now_ms=5,
        new_member_id="x",
    )
    assert group.group_epoch == epoch + 1 and ("audit", 2) in result.assignment


def test_unknown_assignor_is_refused():
    with pytest.raises(GroupError) as refused:
        ConsumerGroup("g").heartbeat(
            member_id="",
            member_epoch=0,
            client_id="c",
            subscribed_topics=["orders"],
            subscribed_regex="",
            assignor="magic",
            owned=(),
            session_timeout_ms=3000,
            partition_counts=COUNTS,
            now_ms=0,
            new_member_id="m",
        )
    assert refused.value.code == "UNSUPPORTED_ASSIGNOR"
