"""Which CPUs a Raftka process runs on: the `cpu.affinity` broker setting and the benches'
`--cpu` option.

Why pin at all: a Python process runs Python on one core at a time (the GIL), but its
threads hand the GIL to each other many times per request (gRPC's threads, the producer's
sender, a broker's request and replication threads). When the thread that should take the
GIL next sits on another core, behind another process in that core's run queue, the thread
that let go waits for it with both cores' time going by. On this project's 2-core machine,
three brokers each pinned to one core sustained 1.11M pre-built records/s against 0.93M
unpinned (5 pairs), with ~15% less broker CPU per record; an SDK producer pinned to one core
sent 0.50-0.56M records/s against 0.39-0.46M (BENCHMARKS.md, "Pinning each Python process
to one core"). Redpanda pins its threads to cores for a related reason (`--cpuset`).

The value is Linux's cpulist format ("0", "0,2", "1-3"), or "auto": one CPU of those the
process may use, chosen by broker id so that brokers on one machine spread over its CPUs.
Parsing and choosing are pure; `apply` is the one system call.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

AUTO = "auto"
# CPU numbers above this are refused as typos rather than looked up (Linux's own limit,
# CONFIG_NR_CPUS, is at most 8192).
MAX_CPU = 8191


class CpuSetError(ValueError):
    """A CPU list that does not parse, or names CPUs this process may not use."""


def parse_cpu_list(text: str, what: str = "cpu list") -> frozenset[int]:
    """'0,2-3' -> {0, 2, 3}; raises CpuSetError naming `what` and the bad part."""
    cpus: set[int] = set()
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise CpuSetError(f"{what} is empty: give CPUs such as 0 or 0,2-3, or {AUTO}")
    for part in parts:
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise CpuSetError(f"{what}: {part!r} is not a CPU number or a range such as 2-3")
        first, last = int(low), int(high) if dash else int(low)
        if first > last:
            raise CpuSetError(f"{what}: the range {part!r} runs backwards")
        if last > MAX_CPU:
            raise CpuSetError(f"{what}: CPU {last} is past {MAX_CPU}")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def check_setting(text: str, what: str) -> None:
    """Validate a setting's syntax at start-up ("" = no pinning, "auto", or a CPU list)."""
    if text and text != AUTO:
        parse_cpu_list(text, what)


def auto_cpu(allowed: Iterable[int], slot: int) -> int:
    """The CPU of `allowed` that process number `slot` (e.g. a broker id) gets: the slots
    take the CPUs in turn, so N brokers on N CPUs get one each."""
    ordered = sorted(allowed)
    if not ordered:
        raise CpuSetError("this process may run on no CPU")
    return ordered[slot % len(ordered)]


def resolve(text: str, allowed: Iterable[int], slot: int, what: str) -> frozenset[int] | None:
    """The CPUs a setting asks for (None: leave the process where it is). Every CPU must be
    one the process may use now (a container's cpuset, a taskset around it)."""
    if not text:
        return None
    permitted = frozenset(allowed)
    if text == AUTO:
        return frozenset({auto_cpu(permitted, slot)})
    wanted = parse_cpu_list(text, what)
    outside = sorted(wanted - permitted)
    if outside:
        raise CpuSetError(
            f"{what}={text}: CPU {', '.join(map(str, outside))} is not one this process may "
            f"use (it may use {format_cpu_list(permitted)})")
    return wanted


def format_cpu_list(cpus: Iterable[int]) -> str:
    """{0, 2, 3} -> '0,2-3' (the inverse of parse_cpu_list)."""
    ordered = sorted(set(cpus))
    spans: list[str] = []
    start = previous = None
    for cpu in ordered:
        if previous is not None and cpu == previous + 1:
            previous = cpu
            continue
        if start is not None:
            spans.append(f"{start}" if start == previous else f"{start}-{previous}")
        start = previous = cpu
    if start is not None:
        spans.append(f"{start}" if start == previous else f"{start}-{previous}")
    return ",".join(spans)


def allowed_cpus() -> frozenset[int]:
    """The CPUs this process may run on now."""
    if not hasattr(os, "sched_getaffinity"):
        raise CpuSetError("CPU pinning needs Linux (os.sched_getaffinity)")
    return frozenset(os.sched_getaffinity(0))


def apply(text: str, slot: int, what: str) -> frozenset[int] | None:
    """Pin the calling thread, and so every thread it starts from now on, to the CPUs
    `text` asks for; call it before the process starts its threads. Returns them (None:
    not pinned)."""
    if not text:
        return None
    cpus = resolve(text, allowed_cpus(), slot, what)
    assert cpus, "resolve() returns a non-empty set or raises"
    os.sched_setaffinity(0, cpus)
    return cpus
