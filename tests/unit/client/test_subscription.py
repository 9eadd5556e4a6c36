"""SubscriptionState: assignment, positions, pauses, resets and the buffer, with no broker."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from raftka.client.errors import OffsetOutOfRangeError
from raftka.client.subscription import EARLIEST, LATEST, SubscriptionState
from raftka.client.types import TopicPartition

ROOT = Path(__file__).resolve().parents[3]
A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)


@dataclass(frozen=True)
class Rec:
    offset: int


def recs(*offsets: int) -> list[Rec]:
    return [Rec(o) for o in offsets]


def state(*assigned: TopicPartition, reset: str = "latest") -> SubscriptionState[Rec]:
    s: SubscriptionState[Rec] = SubscriptionState(reset)
    s.assign_from_user(assigned)
    return s


def test_a_bad_reset_policy_is_refused():
    with pytest.raises(ValueError, match="auto_offset_reset"):
        SubscriptionState("smallest")


def test_new_partitions_have_no_position_and_wait_for_a_reset():
    s = state(A0, A1)
    assert s.assigned() == [A0, A1] and s.assignment() == {A0, A1}
    assert s.position(A0) is None and s.next_fetch_offset(A0) is None
    assert s.needing_reset() == [A0, A1]
    assert s.fetch_offsets() == {}
    s.seek(A0, 5)
    assert s.needing_reset() == [A1]
    assert s.fetch_offsets() == {A0: 5}


@pytest.mark.parametrize(("policy", "spec"), [("earliest", EARLIEST), ("latest", LATEST)])
def test_the_reset_policy_picks_the_list_offsets_spec(policy, spec):
    assert state(A0, reset=policy).reset_spec([A0]) == spec


def test_no_reset_policy_raises_offset_out_of_range():
    with pytest.raises(OffsetOutOfRangeError, match="auto_offset_reset is 'none'"):
        state(A0, reset="none").reset_spec([A0])


def test_paused_partitions_are_neither_fetched_nor_reset():
    s = state(A0, A1)
    s.seek(A0, 1)
    s.pause(A0, A1)
    assert s.is_paused(A0)
    assert s.fetchable() == [] and s.fetch_offsets() == {} and s.needing_reset() == []
    s.resume(A0)
    assert s.fetchable() == [A0] and s.fetch_offsets() == {A0: 1}


def test_a_pause_outlives_reassignment():
    s = state(A0)
    s.pause(A0)
    s.assign_from_user([B0])
    s.assign_from_user([A0, B0])
    assert s.fetchable() == [B0]


def test_drain_hands_out_in_fetch_order_and_moves_positions():
    s = state(A0, B0)
    s.seek(A0, 0)
    s.seek(B0, 10)
    s.add_fetched(A0, recs(0, 1), 2)
    s.add_fetched(B0, recs(10), 11)
    s.add_fetched(A0, recs(2), 3)
    assert s.has_buffered()
    assert s.drain(2) == {A0: recs(0, 1)}
    assert s.position(A0) == 2 and s.position(B0) == 10
    assert s.next_fetch_offset(A0) == 3  # fetching runs ahead of what poll() handed out
    assert s.drain(10) == {B0: recs(10), A0: recs(2)}
    assert not s.has_buffered()
    assert (s.position(A0), s.position(B0)) == (3, 11)


def test_a_fetch_of_control_batches_only_moves_the_position_on():
    s = state(A0)
    s.seek(A0, 4)
    s.add_fetched(A0, [], 7)  # a transaction marker and a compacted gap, no user records
    assert s.drain(10) == {}
    assert s.position(A0) == 7 and s.fetch_offsets() == {A0: 7}


def test_the_position_catches_up_only_once_the_buffer_is_empty():
    s = state(A0)
    s.seek(A0, 0)
    s.add_fetched(A0, recs(0, 1, 2), 5)
    s.drain(1)
    assert s.position(A0) == 1  # records 1 and 2 still wait
    s.drain(5)
    assert s.position(A0) == 5


def test_seek_drops_the_partitions_buffered_records_only():
    s = state(A0, B0)
    s.seek(A0, 0)
    s.seek(B0, 0)
    s.add_fetched(A0, recs(0, 1), 2)
    s.add_fetched(B0, recs(0), 1)
    s.seek(A0, 0)
    assert s.fetch_offsets() == {A0: 0, B0: 1}
    assert s.drain(10) == {B0: recs(0)}
    assert s.position(A0) == 0


def test_reassignment_keeps_kept_partitions_and_forgets_the_rest():
    s = state(A0, A1)
    s.seek(A0, 3)
    s.seek(A1, 8)
    s.add_fetched(A0, recs(3), 4)
    s.add_fetched(A1, recs(8), 9)
    s.assign_from_subscription([A1, B0])
    assert s.assigned() == [A1, B0]
    assert s.position(A0) is None and s.next_fetch_offset(A0) is None
    assert s.position(A1) == 8 and s.position(B0) is None
    assert s.drain(10) == {A1: recs(8)}
    s.assign_from_subscription([A0, A1])
    assert s.position(A0) is None  # coming back starts over from a reset (or a commit)


def test_a_late_reply_for_a_partition_being_reset_is_not_wanted():
    s = state(A0)
    s.seek(A0, 3)
    s.assign_from_subscription([])
    s.assign_from_subscription([A0])
    assert s.next_fetch_offset(A0) is None


def test_topics_are_kept_until_a_manual_assignment():
    s: SubscriptionState[Rec] = SubscriptionState()
    s.subscribe(["a", "b"])
    s.assign_from_subscription([A0, B0])
    assert s.topics == ["a", "b"]
    s.topics.append("c")  # a copy
    assert s.topics == ["a", "b"]
    s.assign_from_user([A1])
    assert s.topics == [] and s.assigned() == [A1]


def test_consumed_offsets_are_the_known_positions():
    s = state(A0, A1, B0)
    s.seek(A0, 4)
    s.seek(B0, 0)
    assert s.consumed_offsets() == {A0: 4, B0: 0}
    assert s.consumed_offsets([B0, A1]) == {B0: 0}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_state_does_no_io():
    roots = {name.split(".")[0] for name in imported_modules(ROOT / "client/subscription.py")}
    bad = roots & {"grpc", "asyncio", "socket", "time", "threading", "uuid", "os", "random"}
    assert not bad, f"client/subscription.py imports {sorted(bad)}"


@pytest.mark.parametrize("module", ["client/subscription.py", "client/fetcher.py"])
def test_the_consumers_parts_do_not_import_the_consumer(module):
    assert "raftka.client.consumer" not in imported_modules(ROOT / module)
