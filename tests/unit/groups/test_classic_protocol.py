"""The classic protocol driver against a stand-in coordinator that offers only the public API
it is meant to use (now_ms, partition_counts, classic_group, find_classic_group,
store_offsets): joins and syncs resolve through the state machine's callbacks, commits are
checked against the generation before anything is stored, and coordinator errors pass
through unchanged."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

from raftka.broker.groups.classic import STABLE, ClassicGroup
from raftka.broker.groups.classic_protocol import ClassicProtocol
from raftka.broker.groups.coordinator import CoordinatorError
from raftka.broker.groups.state import CommittedOffset


class PublicApiOnly:
    """Just the coordinator methods ClassicProtocol may call (slots: nothing else exists)."""

    __slots__ = ("classic", "clock", "counts", "refuse", "stored")

    def __init__(self) -> None:
        self.clock = 1_000
        self.counts = {"orders": 2}
        self.classic: dict[str, ClassicGroup] = {}
        self.stored: list[tuple[str, dict[tuple[str, int], CommittedOffset]]] = []
        self.refuse = False

    def now_ms(self) -> int:
        return self.clock

    def partition_counts(self) -> dict[str, int]:
        return dict(self.counts)

    def classic_group(self, group_id: str) -> ClassicGroup:
        if self.refuse:
            raise CoordinatorError(f"not the coordinator of {group_id}")
        return self.classic.setdefault(group_id, ClassicGroup(group_id, initial_delay_ms=0))

    def find_classic_group(self, group_id: str) -> ClassicGroup | None:
        if self.refuse:
            raise CoordinatorError(f"not the coordinator of {group_id}")
        return self.classic.get(group_id)

    async def store_offsets(self, group_id: str,
                            offsets: dict[tuple[str, int], CommittedOffset]) -> None:
        self.stored.append((group_id, dict(offsets)))


def joined(protocol: ClassicProtocol) -> tuple[str, int]:
    reply = asyncio.run(protocol.join("g", "", "app", "consumer", [("range", b"meta")],
                                      10_000, 30_000, False))
    assert reply["error_code"] == 0
    return reply["member_id"], reply["generation_id"]


def test_join_sync_heartbeat_leave_through_the_public_api():
    coordinator = PublicApiOnly()
    protocol = ClassicProtocol(coordinator)  # type: ignore[arg-type]
    member, generation = joined(protocol)
    synced = asyncio.run(protocol.sync("g", member, generation, {member: b"mine"}))
    assert synced["error_code"] == 0 and synced["assignment"] == b"mine"
    assert coordinator.classic["g"].state == STABLE
    assert protocol.heartbeat("g", member, generation) == "NONE"
    assert protocol.heartbeat("g", member, generation + 1) == "ILLEGAL_GENERATION"
    described = protocol.describe("g")
    assert described is not None and described["generation"] == generation
    assert [m["member_id"] for m in described["members"]] == [member]
    assert protocol.leave("g", [(member, None), ("stranger", None)]) == [
        (member, None, "NONE"), ("stranger", None, "UNKNOWN_MEMBER_ID")]
    assert protocol.describe("unknown") is None


def test_commit_checks_the_generation_and_stores_only_known_partitions():
    coordinator = PublicApiOnly()
    protocol = ClassicProtocol(coordinator)  # type: ignore[arg-type]
    member, generation = joined(protocol)
    asyncio.run(protocol.sync("g", member, generation, {member: b""}))
    offsets = {("orders", 1): (42, "m"), ("orders", 7): (1, ""), ("gone", 0): (3, "")}
    stale = asyncio.run(protocol.commit("g", member, generation - 1, offsets))
    assert set(stale.values()) == {"ILLEGAL_GENERATION"} and coordinator.stored == []
    result = asyncio.run(protocol.commit("g", member, generation, offsets))
    assert result == {("orders", 1): "NONE", ("orders", 7): "UNKNOWN_TOPIC_OR_PARTITION",
                      ("gone", 0): "UNKNOWN_TOPIC_OR_PARTITION"}
    assert coordinator.stored == [("g", {("orders", 1): CommittedOffset(42, "m", 1_000)})]


def test_nothing_valid_stores_nothing():
    coordinator = PublicApiOnly()
    protocol = ClassicProtocol(coordinator)  # type: ignore[arg-type]
    result = asyncio.run(protocol.commit("g", "", -1, {("gone", 0): (3, "")}))
    assert result == {("gone", 0): "UNKNOWN_TOPIC_OR_PARTITION"} and coordinator.stored == []


def test_coordinator_errors_pass_through():
    coordinator = PublicApiOnly()
    coordinator.refuse = True
    protocol = ClassicProtocol(coordinator)  # type: ignore[arg-type]
    with pytest.raises(CoordinatorError):
        protocol.heartbeat("g", "m", 1)
    with pytest.raises(CoordinatorError):
        protocol.describe("g")
    with pytest.raises(CoordinatorError):
        asyncio.run(protocol.join("g", "", "app", "consumer", [("range", b"")], 10_000,
                                  30_000, False))


def test_the_driver_uses_no_private_name_of_the_coordinator():
    """Only `self._coordinator` (its own attribute) may be underscored; the coordinator never
    imports the driver (no import circle)."""
    root = Path(__file__).resolve().parents[3] / "broker" / "groups"
    tree = ast.parse((root / "classic_protocol.py").read_text())
    private = [
        ast.unparse(node) for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ] + [
        alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        for alias in node.names if alias.name.startswith("_")
    ]
    assert private == []
    coordinator = ast.parse((root / "coordinator.py").read_text())
    imported = {node.module for node in ast.walk(coordinator) if isinstance(node, ast.ImportFrom)}
    assert "raftka.broker.groups.classic_protocol" not in imported
