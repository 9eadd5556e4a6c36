"""Layering rules, checked on the source: the pure core does no I/O of its own.

The modules below decide things (metadata, elections, placement, offsets, replication state,
producer sequences); the shell around them does the I/O. Keeping grpc, pysyncobj, asyncio,
sockets and clocks out of them is what lets them be tested in microseconds."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE_MODULES = [
    "cluster/image.py",
    "cluster/delta.py",
    "cluster/controller.py",
    "cluster/placement.py",
    "cluster/partition_change.py",
    "cluster/local_changes.py",
    "cluster/heartbeats.py",
    "cluster/topic_config.py",
    "cluster/naming.py",
    "cluster/records.py",
    "broker/log/epoch_cache.py",
    "broker/replication/leader_state.py",
    "broker/replication/follower_state.py",
    "broker/producer_state.py",
    "client/accumulator.py",
    "client/partitioner.py",
    "client/cluster_view.py",
    "client/subscription.py",
]
FORBIDDEN = {"grpc", "pysyncobj", "asyncio", "socket", "time", "random", "threading", "subprocess"}
# accumulator: a Condition guards it for the sender thread; cluster_view formats timestamps
# it is given; partitioner takes a random.Random from its caller (the type only).
ALLOWED = {
    ("client/accumulator.py", "threading"),
    ("client/cluster_view.py", "time"),
    ("client/partitioner.py", "random"),
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_import_no_io(module):
    bad = {
        name for name in imported_roots(ROOT / module) & FORBIDDEN if (module, name) not in ALLOWED
    }
    assert not bad, f"{module} imports {sorted(bad)}; keep I/O in the shell around it"


def test_pysyncobj_stays_in_one_module():
    users = [
        str(p.relative_to(ROOT))
        for folder in ("cluster", "broker", "client")
        for p in (ROOT / folder).rglob("*.py")
        if "pysyncobj" in imported_roots(p)
    ]
    assert users == ["cluster/raft.py"]


def test_no_print_in_the_broker():
    for path in (ROOT / "broker").rglob("*.py"):
        tree = ast.parse(path.read_text())
        calls = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
        ]
        assert not calls, f"{path.relative_to(ROOT)} prints; use logging"
