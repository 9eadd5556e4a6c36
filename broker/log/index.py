"""Sparse, append-only index files: (key, value) pairs with non-decreasing keys.

Two uses, one mechanism (as Kafka's OffsetIndex and TimeIndex):
- offset index: key = offset relative to the segment base, value = byte position in the log;
- time index:   key = largest timestamp so far, value = relative offset of that batch.

Entries are kept in memory (two arrays) and appended to the file. The file is only a cache:
when it is missing, torn, or out of order it is rebuilt from the log by the caller.
"""

from __future__ import annotations

import bisect
import struct
from array import array

from raftka.broker.log.handles import PooledFile, shared_pool


class IndexCorruptError(ValueError):
    """An index file that cannot be trusted; the segment rebuilds it from the log."""


class SparseIndex:
    def __init__(self, path: str, key_code: str, value_code: str) -> None:
        self.path = path
        self._entry = struct.Struct(">" + key_code + value_code)
        self._keys = array(key_code)
        self._values = array(value_code)
        self._file: PooledFile = shared_pool().open(path)

    @property
    def entry_size(self) -> int:
        return self._entry.size

    def __len__(self) -> int:
        return len(self._keys)

    def load(self) -> None:
        """Read the file into memory; raise IndexCorruptError if it is torn or unordered."""
        data = self._file.pread(self._file.fstat().st_size, 0)
        if len(data) % self._entry.size:
            raise IndexCorruptError(f"{self.path}: size {len(data)} is not whole entries")
        keys = array(self._keys.typecode)
        values = array(self._values.typecode)
        for key, value in self._entry.iter_unpack(data):
            if keys and (key < keys[-1] or value < values[-1]):
                raise IndexCorruptError(f"{self.path}: entries out of order at {len(keys)}")
            keys.append(key)
            values.append(value)
        self._keys, self._values = keys, values

    def append(self, key: int, value: int) -> None:
        if self._keys:
            assert key >= self._keys[-1] and value >= self._values[-1], "index must not go back"
        self._keys.append(key)
        self._values.append(value)
        self._file.pwrite(self._entry.pack(key, value), (len(self._keys) - 1) * self._entry.size)

    def last(self) -> tuple[int, int] | None:
        if not self._keys:
            return None
        return self._keys[-1], self._values[-1]

    def floor(self, key: int) -> tuple[int, int] | None:
        """The last entry whose key is <= `key`, or None."""
        i = bisect.bisect_right(self._keys, key)
        if i == 0:
            return None
        return self._keys[i - 1], self._values[i - 1]

    def floor_by_value(self, value: int) -> tuple[int, int] | None:
        """The last entry whose value is <= `value`, or None (values are non-decreasing too)."""
        i = bisect.bisect_right(self._values, value)
        if i == 0:
            return None
        return self._keys[i - 1], self._values[i - 1]

    def before_key(self, key: int) -> tuple[int, int] | None:
        """The last entry whose key is strictly < `key`, or None."""
        i = bisect.bisect_left(self._keys, key)
        if i == 0:
            return None
        return self._keys[i - 1], self._values[i - 1]

    def truncate_values_from(self, value: int) -> None:
        """Drop entries whose value is >= `value` (the log was truncated there)."""
        keep = bisect.bisect_left(self._values, value)
        self._truncate_entries(keep)

    def truncate_keys_from(self, key: int) -> None:
        """Drop entries whose key is >= `key`."""
        keep = bisect.bisect_left(self._keys, key)
        self._truncate_entries(keep)

    def reset(self) -> None:
        self._truncate_entries(0)

    def _truncate_entries(self, keep: int) -> None:
        del self._keys[keep:]
        del self._values[keep:]
        self._file.ftruncate(keep * self._entry.size)

    def dup(self) -> int:
        """A descriptor of the caller's own onto the file (to fsync it); the caller closes
        it."""
        return self._file.dup()

    @property
    def is_open(self) -> bool:
        return self._file.is_open

    def close(self) -> None:
        self._file.close()


def open_offset_index(path: str) -> SparseIndex:
    return SparseIndex(path, "i", "i")


def open_time_index(path: str) -> SparseIndex:
    return SparseIndex(path, "q", "i")
