"""The one writer thread of a log directory: every log mutation (append, truncate, roll,
retention, delete, role change) runs on it, in submission order, so mutations never race and
the event loop never waits on the disk. Replicas, produce path and follower fetchers share it.

One exception, `run_small`: a small append that cannot fsync, submitted while the thread has
nothing queued or running, runs on the event loop at once. The order holds (everything
submitted before it has finished, and the loop submits nothing while it runs), and the
write only reaches the page cache. Why: the hand-off (an executor submit, the thread's
wake-up and GIL hand-over, its answer through the loop's self-pipe) cost more than the
pwrite of a latency-bound round's few KiB — 12-19% of the leader's and 25-40% of each
follower's CPU per synchronous acks=all round, in two sittings (BENCHMARKS.md, "Small
appends on the event loop").
Large appends (throughput rounds) still go to the thread. A small write can still wait in
the kernel now and then (dirty-page throttling with gigabytes unwritten, a file-system
journal commit, a segment roll's three new files), as any write on the loop would; it never
fsyncs, and waits for no lock the thread holds, since the thread is idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# The largest append (bytes of record batches, all partitions of one job) run_small may write
# on the event loop; above it the job goes to the writer thread.
INLINE_APPEND_MAX_BYTES = 64 * 1024


class LogWriter:
    def __init__(self, inline_max_bytes: int = INLINE_APPEND_MAX_BYTES) -> None:
        if inline_max_bytes < 0:
            raise ValueError(f"inline_max_bytes must be >= 0 bytes, got {inline_max_bytes}")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raftka-log-writer")
        self.inline_max_bytes = inline_max_bytes
        # Jobs handed to the thread; jobs it has finished; jobs cancelled before they started
        # (their caller was cancelled while they waited in the queue: they never run). Each
        # has one writer (the event loop; the thread; the loop, which is where asyncio cancels
        # the executor's future), so none needs a lock; a stale read of `_finished` can only
        # send a job to the thread, never run one inline too early.
        self._submitted = 0
        self._finished = 0
        self._dropped = 0
        self.inline_jobs = 0  # how many ran on the event loop (tests, benchmarks)

    @property
    def idle(self) -> bool:
        """Nothing queued on or running in the writer thread."""
        return self._submitted == self._finished + self._dropped

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """`function(*args)` on the writer thread, after everything submitted before it."""
        self._submitted += 1
        job = self._executor.submit(self._job, function, args)
        job.add_done_callback(self._count_dropped)
        return await asyncio.wrap_future(job)

    def _count_dropped(self, job: Future[Any]) -> None:
        # A job that started cannot be cancelled (it counts in _finished instead); a
        # cancelled one calls back in the cancelling thread, the event loop's.
        if job.cancelled():
            self._dropped += 1

    async def run_small(self, size_bytes: int, function: Callable[..., T], *args: object) -> T:
        """`function(*args)` — an append of `size_bytes` that only writes (no fsync: the
        caller knows) — on this event loop thread when it is at most `inline_max_bytes` and
        the writer is idle; else on the writer thread, as `run`."""
        if size_bytes <= self.inline_max_bytes and self.idle:
            self.inline_jobs += 1
            return function(*args)
        return await self.run(function, *args)

    def _job(self, function: Callable[..., T], args: tuple[object, ...]) -> T:
        try:
            return function(*args)
        finally:
            self._finished += 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)
