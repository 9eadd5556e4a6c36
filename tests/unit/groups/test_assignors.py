"""Range and uniform assignors."""

from __future__ import annotations

from raftka.broker.groups.assignors import range_assign, uniform_assign

ALL = frozenset({"orders"})


def test_range_gives_consecutive_ranges_in_member_order():
    result = range_assign({"a": ALL, "b": ALL, "c": ALL}, {"orders": 7})
    assert result == {
        "a": {("orders", 0), ("orders", 1), ("orders", 2)},
        "b": {("orders", 3), ("orders", 4)},
        "c": {("orders", 5), ("orders", 6)},
    }


def test_range_respects_subscriptions():
    result = range_assign({"a": frozenset({"x"}), "b": frozenset({"x", "y"})}, {"x": 2, "y": 2})
    assert result["a"] == {("x", 0)}
    assert result["b"] == {("x", 1), ("y", 0), ("y", 1)}


def test_uniform_is_balanced_and_sticky():
    first = uniform_assign({"a": ALL, "b": ALL}, {"orders": 6}, {})
    assert sorted(len(v) for v in first.values()) == [3, 3]
    current = {m: frozenset(v) for m, v in first.items()}
    second = uniform_assign({"a": ALL, "b": ALL, "c": ALL}, {"orders": 6}, current)
    assert sorted(len(v) for v in second.values()) == [2, 2, 2]
    moved = sum(len(second[m] - first[m]) for m in ("a", "b"))
    assert moved == 0  # a and b only gave partitions away, to c
    assert set().union(*second.values()) == {("orders", p) for p in range(6)}


def test_every_partition_exactly_once():
    for assignor in (range_assign,):
        result = assignor({m: ALL for m in "abcd"}, {"orders": 10})
        owned = [tp for tps in result.values() for tp in tps]
        assert sorted(owned) == [("orders", p) for p in range(10)]
    result = uniform_assign({m: ALL for m in "abcd"}, {"orders": 10}, {})
    owned = [tp for tps in result.values() for tp in tps]
    assert sorted(owned) == [("orders", p) for p in range(10)]
