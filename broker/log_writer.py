"""The one writer thread of a log directory: every log mutation (append, truncate, roll,
retention, delete, role change) runs on it, in submission order, so mutations never race and
the event loop never waits on the disk. Replicas, produce path and follower fetchers share it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class LogWriter:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raftka-log-writer")

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """`function(*args)` on the writer thread, after everything submitted before it."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)
