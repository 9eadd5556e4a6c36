"""The house keeps its shape: which part of raftka may import which, no import circles, and
a pure core that does no I/O of its own.

Read from the source (every import, also inside functions and under TYPE_CHECKING), so a
change that breaks a rule fails here before review. The last test proves the checker can
fail: it adds a forbidden import to a copy of the tree and expects it to be caught.
"""

from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINGS = ("broker", "cluster", "client", "proto")

# Modules that decide things and take time, randomness and ids as inputs. Each imports
# none of FORBIDDEN. Every module whose docstring calls it pure must be listed here.
PURE_MODULES = {
    "raftka.records",
    "raftka.cluster.image",
    "raftka.cluster.delta",
    "raftka.cluster.controller",
    "raftka.cluster.placement",
    "raftka.cluster.partition_change",
    "raftka.cluster.local_changes",
    "raftka.cluster.heartbeats",
    "raftka.cluster.liveness",
    "raftka.cluster.topic_config",
    "raftka.cluster.naming",
    "raftka.cluster.records",
    "raftka.cluster.cluster_auth",
    "raftka.cluster.topic_alterations",
    "raftka.cluster.scram",
    "raftka.cluster.acl",
    "raftka.cluster.security_controller",
    "raftka.broker.sasl",
    "raftka.broker.listeners",
    "raftka.broker.metadata_view",
    "raftka.broker.log.epoch_cache",
    "raftka.broker.log.retention",
    "raftka.broker.replication.leader_state",
    "raftka.broker.replication.follower_state",
    "raftka.broker.replication.fetch_session",
    "raftka.broker.replication.stream_wire",
    "raftka.broker.producer_state",
    "raftka.broker.groups.assignors",
    "raftka.broker.groups.classic",
    "raftka.broker.groups.offsets_log",
    "raftka.broker.groups.deletion",
    "raftka.broker.groups.state",
    "raftka.broker.groups.topic_regex",
    "raftka.broker.groups.lag",
    "raftka.client.accumulator",
    "raftka.client.subscription",
    "raftka.client.partitioner",
    "raftka.client.backoff",
    "raftka.client.cluster_view",
    "raftka.client.console.views",
    "raftka.client.console.throughput",
}
FORBIDDEN = {
    "grpc", "pysyncobj", "asyncio", "socket", "time", "uuid", "os", "random", "threading",
    "subprocess", "concurrent",
}
# (module, import): the accumulator's Condition guards it for the sender thread; the
# cluster view formats timestamps it is given; the partitioner takes a random.Random from
# its caller (the type only).
ALLOWED = {
    ("raftka.client.accumulator", "threading"),
    ("raftka.client.cluster_view", "time"),
    ("raftka.client.partitioner", "random"),
}
_CALLS_ITSELF_PURE = re.compile(
    r"(^|[.:] )Pure\b|\bpure (decisions|diff|parsing|functions)\b|here is pure",
    re.M,
)


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    imports: frozenset[str]  # raftka modules and external top-level names it imports
    docstring: str


def _module_name(relative: Path) -> str:
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["raftka", *parts])


def _sources(root: Path) -> Iterator[tuple[str, Path]]:
    package = root / "raftka"
    for path in sorted(package.glob("*.py")):
        yield _module_name(path.relative_to(package)), path
    for wing in WINGS:
        for path in sorted((root / wing).rglob("*.py")):
            if "_pb2" in path.name:
                continue  # generated
            yield _module_name(path.relative_to(root)), path


def _resolve(name: str, known: set[str]) -> str:
    """`raftka.a.b.C` -> the longest known module prefix (`raftka.a.b`)."""
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def read_house(root: Path = ROOT) -> dict[str, Module]:
    found = list(_sources(root))
    known = {name for name, _ in found} | {
        _module_name(p.relative_to(root)) for p in (root / "proto").rglob("*_pb2*.py")
    }
    modules = {}
    for name, path in found:
        tree = ast.parse(path.read_text())
        imports: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for imported in names:
                if imported.startswith("raftka.") or imported == "raftka":
                    imports.add(_resolve(imported, known))
                else:
                    imports.add(imported.split(".")[0])
        modules[name] = Module(name, path, frozenset(imports), ast.get_docstring(tree) or "")
    return modules


def _wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in WINGS else "raftka"


def layering_violations(modules: dict[str, Module]) -> list[str]:
    problems = []
    for module in modules.values():
        wing = _wing(module.name)
        for target in sorted(module.imports):
            if not target.startswith("raftka"):
                continue
            to = _wing(target)
            if wing == "broker" and to == "client":
                problems.append(f"{module.name} imports {target}: the broker never uses the SDK")
            if (wing == "client" and to == "broker"
                    and module.name != "raftka.client.cli_broker"):
                problems.append(f"{module.name} imports {target}: the SDK never uses the broker "
                                "(only `raftka broker`, client/cli_broker.py, runs one)")
            if (target.startswith("raftka.client.console")
                    and not module.name.startswith("raftka.client.console")
                    and module.name != "raftka.client.cli_console"):
                problems.append(f"{module.name} imports {target}: only `raftka console` "
                                "(client/cli_console.py) runs the console; the SDK stays "
                                "free of its web server")
            if wing == "cluster" and to in ("broker", "client"):
                problems.append(f"{module.name} imports {target}: cluster/ is below the broker")
            if wing == "proto" and to != "proto":
                problems.append(f"{module.name} imports {target}: the API imports nothing")
            if module.name == "raftka.records" and target != "raftka.records":
                problems.append(f"raftka.records imports {target}: the record format stands "
                                "alone")
        if module.name in PURE_MODULES:
            bad = {
                name for name in module.imports & FORBIDDEN
                if (module.name, name) not in ALLOWED
            }
            if bad:
                problems.append(f"{module.name} is pure but imports {sorted(bad)}")
        elif (_CALLS_ITSELF_PURE.search(module.docstring)
              and module.path.name != "__init__.py"):
            problems.append(f"{module.name} calls itself pure but is not in PURE_MODULES")
    return problems


def import_circles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), and self-imports."""
    graph = {
        name: sorted(t for t in m.imports if t in modules and t != name)
        for name, m in modules.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return circles


def test_the_house_reads_completely():
    modules = read_house()
    assert "raftka.broker.server" in modules and "raftka.client.consumer" in modules
    assert "raftka.records" in modules and "raftka.cluster.raft" in modules
    assert len(modules) > 80


def test_no_import_circles():
    circles = import_circles(read_house())
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_every_part_imports_only_what_it_may():
    problems = layering_violations(read_house())
    assert not problems, "\n".join(problems)


def test_pysyncobj_stays_in_one_module():
    users = sorted(m.name for m in read_house().values() if "pysyncobj" in m.imports)
    assert users == ["raftka.cluster.raft", "raftka.cluster.raft_journal"]


def test_no_print_in_the_broker():
    for module in read_house().values():
        if _wing(module.name) != "broker":
            continue
        tree = ast.parse(module.path.read_text())
        calls = [
            n for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
        ]
        assert not calls, f"{module.name} prints; use logging"


def test_the_checker_catches_a_forbidden_import_and_a_circle(tmp_path: Path):
    copy = tmp_path / "house"
    (copy / "raftka").mkdir(parents=True)
    for path in (ROOT / "raftka").glob("*.py"):
        shutil.copy(path, copy / "raftka" / path.name)
    for wing in WINGS:
        shutil.copytree(ROOT / wing, copy / wing,
                        ignore=shutil.ignore_patterns("__pycache__", "*.proto", "*.pyi"))
    assert layering_violations(read_house(copy)) == []
    assert import_circles(read_house(copy)) == []
    produce_path = copy / "broker" / "produce_path.py"
    produce_path.write_text(
        produce_path.read_text() + "\nfrom raftka.client.producer import Producer\n"
    )
    state = copy / "broker" / "groups" / "state.py"
    state.write_text(state.read_text() + "\nimport time\n")
    image = copy / "cluster" / "image.py"
    image.write_text(image.read_text() + "\nfrom raftka.cluster import delta\n")
    problems = "\n".join(layering_violations(read_house(copy)))
    assert "raftka.broker.produce_path imports raftka.client.producer" in problems
    assert "raftka.broker.groups.state is pure but imports ['time']" in problems
    assert ["raftka.cluster.delta", "raftka.cluster.image"] in import_circles(read_house(copy))
