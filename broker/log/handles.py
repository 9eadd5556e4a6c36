"""A bounded pool of open segment and index files: file descriptors are a budget, not free.

Why: every segment holds three files (log, offset index, time index). Kept open for as long
as the broker runs, 10,000 replicas needed 30,000 descriptors, above this machine's
RLIMIT_NOFILE of 20,000, and the broker then failed wherever it next needed one — the Raft
journal, a checkpoint, a socket. So segment files are opened lazily and the least recently
used ones are closed when the pool is full, as Kafka opens its time indexes lazily; the rest of
the limit (the reserve, broker/fd_budget.py) stays free for everything else.

How it works: `LruHandles` is the bookkeeping (which files are open, which are in use right
now, which to close next) with no I/O, so it can be tested alone; `FilePool` carries it out.
A `PooledFile` never hands its descriptor out: each operation (pread, pwrite, ftruncate,
fstat, dup) pins it for the length of the system call, so a descriptor is never closed under
a caller, nor reused by another file while a caller still holds the number.

Durability: closing a descriptor does not drop written data (it stays in the page cache) and
fsync on a descriptor opened later flushes every dirty page of the file, so flush() — which
fsyncs duplicates taken through `dup` — covers writes made through an evicted descriptor.
On Linux (4.13+, errseq) a writeback error not yet reported to anyone is reported to the next
fsync, also through a new descriptor.

One pool per process, because RLIMIT_NOFILE is per process: `shared_pool()`; the broker sets
its capacity at start-up (`FilePool.set_capacity`). Thread-safe: one lock, held only for
bookkeeping and open/close (never for a read or write).
"""

from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# Capacity until the broker sizes the pool (tests and tools that open logs directly).
UNBOUNDED_CAPACITY = 1 << 30


class HandleBudgetExhaustedError(OSError):
    """Every pooled descriptor is in use at this instant, so none can be closed to open
    another; the message says how many."""


class LruHandles(Generic[K]):
    """Which keys hold an open handle, least recently used first, and how many callers are
    using each right now (pins). Deciding only: the caller opens and closes."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"handle capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._pins: OrderedDict[K, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pins)

    def __contains__(self, key: object) -> bool:
        return key in self._pins

    def is_pinned(self, key: K) -> bool:
        return self._pins.get(key, 0) > 0

    def pin(self, key: K) -> bool:
        """Mark `key` in use and most recently used; True when the caller must open it now
        (make room first with `victims`)."""
        pins = self._pins.get(key)
        if pins is None:
            self._pins[key] = 1
            return True
        self._pins[key] = pins + 1
        self._pins.move_to_end(key)
        return False

    def victims(self, room_for: int = 1) -> list[K]:
        """Unpinned keys to close, least recently used first, so that `room_for` more fit;
        they are forgotten here (the caller closes them). Raises when too many are pinned."""
        excess = len(self._pins) + room_for - self.capacity
        if excess <= 0:
            return []
        chosen: list[K] = []
        for key, pins in self._pins.items():
            if pins == 0:
                chosen.append(key)
                if len(chosen) == excess:
                    break
        if len(chosen) < excess:
            raise HandleBudgetExhaustedError(
                errno.EMFILE,
                f"all {len(self._pins)} pooled file handles are in use (capacity "
                f"{self.capacity}); none can be closed to open another",
            )
        for key in chosen:
            del self._pins[key]
        return chosen

    def unpin(self, key: K) -> None:
        pins = self._pins[key]
        assert pins > 0, "unpin without pin"
        self._pins[key] = pins - 1

    def forget(self, key: K) -> None:
        """`key` was closed by its owner (or its open failed)."""
        self._pins.pop(key, None)

    def least_recent_unpinned(self, count: int) -> list[K]:
        """Up to `count` unpinned keys, least recently used first, forgotten here (for
        shedding descriptors when the process as a whole ran out)."""
        chosen = [key for key, pins in self._pins.items() if pins == 0][:count]
        for key in chosen:
            del self._pins[key]
        return chosen


class PooledFile:
    """One file opened through the pool: read, write, truncate, stat and dup as with a
    descriptor, but the descriptor may be closed between calls and reopened on the next."""

    __slots__ = ("_closed", "_fd", "_pool", "path")

    def __init__(self, pool: FilePool, path: str, create: bool = True) -> None:
        self.path = path
        self._pool = pool
        self._fd = -1
        self._closed = False
        if create:
            # Create it now (an empty index or segment file is part of the layout), and keep
            # it open: a new file is about to be used.
            self._pool.release(self, self._pool.acquire(self))

    @property
    def is_open(self) -> bool:
        """Whether a descriptor is open right now (for tests and metrics)."""
        return self._fd >= 0

    def pread(self, length: int, offset: int) -> bytes:
        fd = self._pool.acquire(self)
        try:
            return os.pread(fd, length, offset)
        finally:
            self._pool.release(self, fd)

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> int:
        fd = self._pool.acquire(self)
        try:
            return os.pwrite(fd, data, offset)
        finally:
            self._pool.release(self, fd)

    def ftruncate(self, length: int) -> None:
        fd = self._pool.acquire(self)
        try:
            os.ftruncate(fd, length)
        finally:
            self._pool.release(self, fd)

    def fstat(self) -> os.stat_result:
        fd = self._pool.acquire(self)
        try:
            return os.fstat(fd)
        finally:
            self._pool.release(self, fd)

    def dup(self) -> int:
        """A descriptor of the caller's own (for fsync or sendfile outside any lock): valid
        whatever the pool does next; the caller closes it."""
        fd = self._pool.acquire(self)
        try:
            return os.dup(fd)
        finally:
            self._pool.release(self, fd)

    def close(self) -> None:
        self._pool.close(self)


class FilePool:
    def __init__(self, capacity: int = UNBOUNDED_CAPACITY) -> None:
        self._lock = threading.Lock()
        self._lru: LruHandles[PooledFile] = LruHandles(capacity)
        self.opens = 0  # how many times a file was (re)opened
        self.evictions = 0  # how many idle descriptors were closed to make room

    @property
    def capacity(self) -> int:
        return self._lru.capacity

    def set_capacity(self, capacity: int) -> None:
        """Resize (at broker start-up); closes idle files now if more are open."""
        with self._lock:
            self._lru.capacity = max(1, capacity)
            for victim in self._lru.victims(room_for=0):
                self._close_fd(victim)

    def open_count(self) -> int:
        with self._lock:
            return len(self._lru)

    def open(self, path: str) -> PooledFile:
        return PooledFile(self, path)

    def acquire(self, file: PooledFile) -> int:
        """The file's descriptor, pinned until `release` (opened now if it was closed)."""
        with self._lock:
            if file._closed:
                raise OSError(errno.EBADF, f"{file.path} is closed")
            if not self._lru.pin(file):
                return file._fd
            try:
                for victim in self._lru.victims(room_for=0):
                    self._close_fd(victim)
                file._fd = self._open_fd(file.path)
            except BaseException:
                self._lru.forget(file)
                raise
            return file._fd

    def release(self, file: PooledFile, fd: int) -> None:
        with self._lock:
            if file in self._lru:
                self._lru.unpin(file)
                if file._closed and not self._lru.is_pinned(file):
                    self._lru.forget(file)
                    self._close_fd(file)

    def close(self, file: PooledFile) -> None:
        """Close for good; if a call is using it right now, its release closes it."""
        with self._lock:
            file._closed = True
            if self._lru.is_pinned(file):
                return
            self._lru.forget(file)
            self._close_fd(file)

    def _open_fd(self, path: str) -> int:
        """Open, and when the process as a whole is out of descriptors (sockets took the
        reserve), shed idle pooled ones and try again once."""
        self.opens += 1
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            shed = self._lru.least_recent_unpinned(max(16, len(self._lru) // 8))
            if not shed:
                raise
            for victim in shed:
                self._close_fd(victim)
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def _close_fd(self, file: PooledFile) -> None:
        if file._fd >= 0:
            os.close(file._fd)
            file._fd = -1
            self.evictions += 0 if file._closed else 1


_SHARED = FilePool()


def shared_pool() -> FilePool:
    """The process's pool (descriptors are a per-process resource)."""
    return _SHARED
