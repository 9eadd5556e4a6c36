"""The log directory's writer (broker/log_writer.py): submission order, and small appends run
on the event loop only while the writer thread has nothing queued or running."""

from __future__ import annotations

import asyncio
import threading

import pytest

from raftka.broker.log_writer import INLINE_APPEND_MAX_BYTES, LogWriter


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_small_append_runs_on_the_loop_thread_while_the_writer_is_idle():
    async def main():
        writer = LogWriter()
        try:
            where = await writer.run_small(100, threading.get_ident)
            assert where == threading.get_ident()
            assert writer.inline_jobs == 1
        finally:
            writer.shutdown()

    run(main())


def test_a_large_append_goes_to_the_writer_thread():
    async def main():
        writer = LogWriter()
        try:
            where = await writer.run_small(INLINE_APPEND_MAX_BYTES + 1, threading.get_ident)
            assert where != threading.get_ident()
            assert writer.inline_jobs == 0
        finally:
            writer.shutdown()

    run(main())


def test_a_small_append_waits_behind_a_job_the_thread_is_running():
    """The order of mutations holds: an append submitted while an earlier job still runs
    (a roll, a truncation) goes after it, on the thread, never beside it on the loop."""
    async def main():
        writer = LogWriter()
        release = threading.Event()
        order: list[str] = []

        def slow_truncate() -> None:
            release.wait(5)
            order.append("truncate")

        def append() -> int:
            order.append("append")
            return threading.get_ident()

        try:
            first = asyncio.ensure_future(writer.run(slow_truncate))
            await asyncio.sleep(0.05)  # the thread is inside slow_truncate now
            assert not writer.idle
            second = asyncio.ensure_future(writer.run_small(10, append))
            await asyncio.sleep(0.05)
            assert order == []  # not run inline beside the truncation
            release.set()
            await first
            where = await second
            assert order == ["truncate", "append"]
            assert where != threading.get_ident()
            assert writer.idle
            # with the thread idle again, the next small append is inline
            assert await writer.run_small(10, threading.get_ident) == threading.get_ident()
        finally:
            release.set()
            writer.shutdown()

    run(main())


def test_a_small_append_queued_behind_waiting_jobs_keeps_its_place():
    async def main():
        writer = LogWriter()
        release = threading.Event()
        order: list[int] = []

        def job(n: int) -> None:
            if n == 0:
                release.wait(5)
            order.append(n)

        try:
            jobs = [asyncio.ensure_future(writer.run(job, n)) for n in range(3)]
            await asyncio.sleep(0)
            jobs.append(asyncio.ensure_future(writer.run_small(1, job, 3)))
            await asyncio.sleep(0.02)
            release.set()
            await asyncio.gather(*jobs)
            assert order == [0, 1, 2, 3]
        finally:
            release.set()
            writer.shutdown()

    run(main())


def test_an_inline_append_that_raises_raises_to_its_caller_and_leaves_the_writer_idle():
    async def main():
        writer = LogWriter()

        def broken() -> None:
            raise OSError("disk full")

        try:
            with pytest.raises(OSError, match="disk full"):
                await writer.run_small(1, broken)
            with pytest.raises(OSError, match="disk full"):
                await writer.run(broken)
            assert writer.idle
        finally:
            writer.shutdown()

    run(main())


def test_inline_can_be_turned_off_and_the_limit_is_checked():
    async def main():
        writer = LogWriter(inline_max_bytes=0)
        try:
            assert await writer.run_small(1, threading.get_ident) != threading.get_ident()
        finally:
            writer.shutdown()

    run(main())
    with pytest.raises(ValueError, match="inline_max_bytes"):
        LogWriter(inline_max_bytes=-1)


def test_a_job_cancelled_in_the_queue_does_not_keep_the_writer_busy_for_ever():
    """A Produce cancelled (its stream closed, its deadline passed) while its append waited
    behind a flush: the job never runs. It used to leave the writer counted busy for the
    rest of the process, so no append ran on the loop again."""
    async def main():
        writer = LogWriter()
        release = threading.Event()
        try:
            slow = asyncio.ensure_future(writer.run(release.wait, 5))
            await asyncio.sleep(0.05)  # the thread is inside it
            queued = asyncio.ensure_future(writer.run(threading.get_ident))
            await asyncio.sleep(0.01)
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            release.set()
            await slow
            assert writer.idle
            assert await writer.run_small(10, threading.get_ident) == threading.get_ident()
        finally:
            release.set()
            writer.shutdown()

    run(main())
