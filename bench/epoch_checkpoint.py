"""What a leader change costs each partition's log: a new leader epoch, then the first append
in it, then a flush — the steps where the leader-epoch checkpoint is written.

    python bench/epoch_checkpoint.py [--partitions 500] [--json]

Run from the tree to measure (its `raftka` is imported from the current directory), e.g.
alternately from two worktrees. Real files in a temporary directory on the disk /tmp is on;
wall time per partition of: assign_epoch + append_as_leader (what a produce after a leader
change waits for on the writer thread), then flush (periodic, or at a segment roll), then
both. Why: with 3,000 partitions on 3 brokers, py-spy put 17% of the brokers' samples during
a produce spread over every partition in the epoch checkpoint's two fsyncs per new epoch
(BENCHMARKS.md, "Leader-epoch checkpoint": deferring them to the flush was tried and
reverted, since a SIGTERM at 10,000 partitions then took over 120 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.getcwd())

from raftka.broker.log.config import LogConfig
from raftka.broker.log.log import PartitionLog
from raftka.records import encode_batch, split_batches

NOW_MS = 1_700_000_000_000
RECORD = b"x" * 100


def measure(partitions: int) -> dict[str, float]:
    root = tempfile.mkdtemp(prefix="raftka-epoch-bench-", dir="/tmp")
    logs: list[PartitionLog] = []
    try:
        for index in range(partitions):
            directory = os.path.join(root, f"t-{index}")
            os.mkdir(directory)
            logs.append(PartitionLog.open(directory, LogConfig(), NOW_MS))
        started = time.perf_counter()
        for log in logs:
            log.assign_epoch(1, log.log_end_offset)
            data = bytearray(encode_batch([(None, RECORD, [], NOW_MS)]))
            log.append_as_leader(data, split_batches(data), 1, NOW_MS)
        appended = time.perf_counter()
        for log in logs:
            log.flush(NOW_MS)
        flushed = time.perf_counter()
    finally:
        for log in logs:
            log.close(NOW_MS)
        shutil.rmtree(root)
    return {
        "tree": os.getcwd(),
        "partitions": partitions,
        "epoch_and_first_append_ms": round(1000 * (appended - started) / partitions, 3),
        "flush_ms": round(1000 * (flushed - appended) / partitions, 3),
        "total_ms": round(1000 * (flushed - started) / partitions, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partitions", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.partitions < 1:
        parser.error(f"--partitions must be at least 1, got {args.partitions}")
    result = measure(args.partitions)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['tree']}: {result['partitions']} partitions; per partition: new epoch "
              f"+ first append {result['epoch_and_first_append_ms']} ms, flush "
              f"{result['flush_ms']} ms, total {result['total_ms']} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
