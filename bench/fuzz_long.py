"""The long fuzz run: millions of generated and mutated inputs against the three targets of
tests/fuzz (the short runs there are part of the test suite; this is the same code, longer).

    python bench/fuzz_long.py [--inputs 1000000] [--seed 1] [--targets kafka,records,grpc]
                              [--jobs 1] [--minutes 0] [--hang-seconds 60] [--memory-gb 3]

kafka    Kafka request frames (frame guard + decode_request): decoded, or
         MalformedRequestError / UnsupportedVersionError with a message
records  RecordBatch v2 decoders, parse_produce_data and Partition.append_as_leader on a
         real log: results or CorruptBatchError / BrokerError; every refused input leaves
         the log's files byte-identical
grpc     every gRPC request type: FromString parses or raises DecodeError; the pure
         handlers answer with known error codes, their records apply to the image

--inputs is per target (split over --jobs processes per target). Each worker process runs
one target with random.Random(f"{seed}:{target}:{shard}"), so a run is reproducible from its
seed. Each worker's address space is capped (--memory-gb above what it uses at the start) so
that an input making a decoder allocate gigabytes fails (MemoryError, or the process dies)
instead of swapping the machine. The parent watches: a worker whose count stands still for
--hang-seconds is killed and its current input reported as a hang; a worker that dies (a
signal: a native crash or abort) has its current input reported from shared memory.
--minutes > 0 stops every worker after that long (the summary says how many inputs ran).

Progress (inputs, inputs/s) goes to stderr every ~10 s; the summary to stdout: per target the
inputs tried, outcomes, rate, peak memory, and each distinct unexpected failure with up to
three inputs in hex. Exit status 1 on any unexpected failure, 0 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import faulthandler
import mmap
import multiprocessing
import os
import resource
import signal
import struct
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz.short_run import SLOW_SECONDS  # noqa: E402
from tests.fuzz.targets import Unexpected  # noqa: E402

TARGETS = ("kafka", "records", "grpc")
PROGRESS_SECONDS = 10.0
# Shared memory per worker: inputs done, stop flag, length of the current input, its bytes.
_SLOT_HEAD = struct.Struct("<qqq")
SLOT_INPUT_MAX = 1 << 16
SLOT_SIZE = _SLOT_HEAD.size + SLOT_INPUT_MAX
EXAMPLES_KEPT = 3


# ------------------------------------------------------------------------- worker side
class _Slot:
    def __init__(self, memory: mmap.mmap, index: int) -> None:
        self.memory, self.base = memory, index * SLOT_SIZE

    def publish_input(self, data: bytes) -> None:
        size = min(len(data), SLOT_INPUT_MAX)
        start = self.base + _SLOT_HEAD.size
        self.memory[start:start + size] = data[:size]
        struct.pack_into("<q", self.memory, self.base + 16, len(data))

    def publish_count(self, count: int) -> None:
        struct.pack_into("<q", self.memory, self.base, count)

    def stop_requested(self) -> bool:
        return bool(struct.unpack_from("<q", self.memory, self.base + 8)[0])

    # parent side
    def read(self) -> tuple[int, bytes, int]:
        count, _, size = _SLOT_HEAD.unpack_from(self.memory, self.base)
        start = self.base + _SLOT_HEAD.size
        return count, bytes(self.memory[start:start + min(size, SLOT_INPUT_MAX)]), size

    def request_stop(self) -> None:
        struct.pack_into("<q", self.memory, self.base + 8, 1)


def _cap_memory(headroom_gb: float) -> None:
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * resource.getpagesize()
    limit = used + int(headroom_gb * 2**30)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _make_target(name: str, rng: Any) -> tuple[Any, Any, Any]:
    """(next input -> args, check(*args) -> outcome, close) for one target."""
    from tests.fuzz.inputs import GrpcInputs, KafkaInputs, RecordInputs
    from tests.fuzz.targets import GrpcTarget, RecordsTarget, check_kafka_frame

    if name == "kafka":
        kafka = KafkaInputs(rng)
        return (lambda: (kafka.next(),)), check_kafka_frame, (lambda: None)
    if name == "records":
        records = RecordInputs(rng)
        store = RecordsTarget()
        return records.next, store.check, store.close
    grpc_target = GrpcTarget()
    grpc = GrpcInputs(rng, grpc_target)
    return grpc.next, grpc_target.check, (lambda: None)


def _input_bytes(args: tuple[Any, ...]) -> bytes:
    return next(a for a in args if isinstance(a, bytes))


def worker(name: str, shard: int, count: int, seed: int, memory: mmap.mmap, slot_index: int,
           memory_gb: float, results: Connection) -> None:
    import random

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash is reported, not dumped
    faulthandler.enable()  # and where it happened goes to stderr
    slot = _Slot(memory, slot_index)
    _cap_memory(memory_gb)
    rng = random.Random(f"{seed}:{name}:{shard}")
    next_input, check, close = _make_target(name, rng)
    outcomes: collections.Counter[str] = collections.Counter()
    failures: dict[str, list[Any]] = {}  # signature -> [count, [(hex, message)...]]
    started = time.perf_counter()
    done = 0
    try:
        while done < count:
            args = next_input()
            data = _input_bytes(args)
            slot.publish_input(data)
            begun = time.perf_counter()
            try:
                outcomes[check(*args)] += 1
                took = time.perf_counter() - begun
                if took > SLOW_SECONDS:
                    raise Unexpected(name, data, f"took {took:.1f} s (bound {SLOW_SECONDS} s)")
            except Unexpected as failure:
                outcomes["UNEXPECTED"] += 1
                entry = failures.setdefault(failure.signature, [0, []])
                entry[0] += 1
                if len(entry[1]) < EXAMPLES_KEPT:
                    entry[1].append((data.hex(), str(failure)))
            done += 1
            if done % 64 == 0:
                slot.publish_count(done)
                if slot.stop_requested():
                    break
    finally:
        close()
    slot.publish_count(done)
    results.send({"target": name, "shard": shard, "inputs": done,
                  "seconds": time.perf_counter() - started, "outcomes": dict(outcomes),
                  "failures": failures,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    results.close()


# ------------------------------------------------------------------------- parent side
@dataclass
class _Worker:
    name: str
    shard: int
    count: int
    slot: _Slot
    process: Any
    results: Connection
    last_count: int = 0
    last_change: float = field(default_factory=time.monotonic)
    report: dict[str, Any] | None = None
    death: tuple[str, bytes, int] | None = None  # (what happened, current input, its size)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--jobs", type=int, default=1, help="processes per target")
    parser.add_argument("--minutes", type=float, default=0.0, help="stop after (0: never)")
    parser.add_argument("--hang-seconds", type=float, default=60.0)
    parser.add_argument("--memory-gb", type=float, default=3.0,
                        help="address space each worker may add to its start size")
    args = parser.parse_args(argv)
    unknown = set(args.targets.split(",")) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {TARGETS}")
    return args


def _progress(workers: list[_Worker], started: float, previous: dict[str, int],
              previous_at: float) -> tuple[dict[str, int], float]:
    now = time.monotonic()
    totals: dict[str, int] = collections.Counter()
    planned: dict[str, int] = collections.Counter()
    for w in workers:
        totals[w.name] += w.slot.read()[0]
        planned[w.name] += w.count
    parts = []
    for name in totals:
        recent = (totals[name] - previous.get(name, 0)) / max(now - previous_at, 1e-9)
        parts.append(f"{name} {totals[name]:,}/{planned[name]:,} ({recent:,.0f}/s)")
    print(f"[{now - started:7.0f} s] " + "  ".join(parts), file=sys.stderr, flush=True)
    return dict(totals), now


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    targets = args.targets.split(",")
    context = multiprocessing.get_context("fork")
    memory = mmap.mmap(-1, SLOT_SIZE * len(targets) * args.jobs)  # shared across fork
    workers: list[_Worker] = []
    for name in targets:
        for shard in range(args.jobs):
            count = args.inputs // args.jobs + (shard < args.inputs % args.jobs)
            slot = _Slot(memory, len(workers))
            receive, send = context.Pipe(duplex=False)
            process = context.Process(
                target=worker, name=f"fuzz-{name}-{shard}",
                args=(name, shard, count, args.seed, memory, len(workers), args.memory_gb,
                      send))
            workers.append(_Worker(name, shard, count, slot, process, receive))
    print(f"fuzz_long: {' '.join(sys.argv)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    for w in workers:
        w.process.start()
    previous: dict[str, int] = {}
    previous_at = started
    next_progress = started + PROGRESS_SECONDS
    stopping = False
    try:
        while any(w.report is None and w.death is None for w in workers):
            time.sleep(0.2)
            now = time.monotonic()
            if args.minutes and not stopping and now - started > args.minutes * 60:
                stopping = True
                print(f"fuzz_long: {args.minutes} min are up; stopping", file=sys.stderr)
                for w in workers:
                    w.slot.request_stop()
            for w in workers:
                _watch(w, now, args.hang_seconds)
            if now >= next_progress:
                previous, previous_at = _progress(workers, started, previous, previous_at)
                next_progress = now + PROGRESS_SECONDS
    except KeyboardInterrupt:
        print("fuzz_long: interrupted; stopping the workers", file=sys.stderr)
        for w in workers:
            w.slot.request_stop()
        for w in workers:
            _collect(w, timeout=30)
    wall = time.monotonic() - started
    return _summary(args, workers, wall)


def _watch(w: _Worker, now: float, hang_seconds: float) -> None:
    if w.report is not None or w.death is not None:
        return
    if w.results.poll():
        _collect(w, timeout=10)
        return
    count, current, size = w.slot.read()
    if count != w.last_count:
        w.last_count, w.last_change = count, now
    if not w.process.is_alive():
        w.process.join()
        if w.results.poll():  # it reported just before exiting
            _collect(w, timeout=1)
            return
        code = w.process.exitcode
        what = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        w.death = (f"worker {what} (a native crash or abort?)", current, size)
    elif now - w.last_change > hang_seconds:
        os.kill(w.process.pid, signal.SIGKILL)
        w.process.join()
        w.death = (f"no progress for {hang_seconds:.0f} s: hang", current, size)


def _collect(w: _Worker, timeout: float) -> None:
    if w.report is not None or w.death is not None:
        return
    if w.results.poll(timeout):
        with contextlib.suppress(EOFError):
            w.report = w.results.recv()
    w.process.join(timeout)
    if w.report is None and w.death is None:
        _, current, size = w.slot.read()
        w.death = ("worker ended without a report", current, size)


def _summary(args: argparse.Namespace, workers: list[_Worker], wall: float) -> int:
    print(f"fuzz_long summary: seed {args.seed}, {args.jobs} process(es) per target, "
          f"{wall / 60:.1f} min wall time")
    unexpected = 0
    for name in args.targets.split(","):
        mine = [w for w in workers if w.name == name]
        reports = [w.report for w in mine if w.report is not None]
        inputs = sum(r["inputs"] for r in reports) + sum(
            w.slot.read()[0] for w in mine if w.report is None)
        seconds = max((r["seconds"] for r in reports), default=wall)
        outcomes: collections.Counter[str] = collections.Counter()
        failures: dict[str, list[Any]] = {}
        for report in reports:
            outcomes.update(report["outcomes"])
            for signature, (count, examples) in report["failures"].items():
                entry = failures.setdefault(signature, [0, []])
                entry[0] += count
                entry[1] = (entry[1] + examples)[:EXAMPLES_KEPT]
        for w in mine:
            if w.death is not None:
                what, current, size = w.death
                clipped = "" if size <= len(current) else f" (first {len(current)} of {size})"
                failures[f"{name}: {what}"] = [1, [(current.hex(), f"current input{clipped}")]]
        rss = max((r["max_rss_mb"] for r in reports), default=0.0)
        rate = sum(r["inputs"] / max(r["seconds"], 1e-9) for r in reports)
        print(f"\n{name}: {inputs:,} inputs in {seconds / 60:.1f} min ({rate:,.0f} inputs/s), "
              f"peak RSS {rss:.0f} MB")
        print("  outcomes: " + ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items())))
        if not failures:
            print("  unexpected failures: none")
        for signature, (count, examples) in sorted(failures.items()):
            unexpected += count
            print(f"  UNEXPECTED x{count}: {signature}")
            for hexed, message in examples:
                print(f"    input (hex): {hexed}")
                detail = message.splitlines()
                tail = [line for line in detail[2:] if line.strip()][-3:]
                for line in tail:
                    print(f"      {line}")
    print(f"\nunexpected failures: {unexpected}")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
