"""Leader epoch -> first offset written in that epoch (Kafka's LeaderEpochFileCache, KIP-101).

How it works: every batch a leader appends carries its leader epoch. The first time an epoch
appears in the log, (epoch, offset) is recorded. A follower that starts following a new leader
asks the leader for the end offset of the follower's latest epoch; the leader answers with the
start offset of the next epoch it knows (or its log end offset for its current epoch), and
the follower truncates everything at or after that offset: those records diverged.

Pure: no I/O. The owning log persists `entries()` through a checkpoint file.
"""

from __future__ import annotations

import bisect

UNDEFINED_EPOCH = -1
UNDEFINED_OFFSET = -1


class LeaderEpochCache:
    # Invariant: epochs strictly increase and start offsets never decrease along the list.
    def __init__(self, entries: list[tuple[int, int]] | None = None) -> None:
        self._epochs: list[int] = []
        self._starts: list[int] = []
        for epoch, start in entries or []:
            self.assign(epoch, start)

    def entries(self) -> list[tuple[int, int]]:
        return list(zip(self._epochs, self._starts, strict=True))

    @property
    def latest_epoch(self) -> int:
        # One read of the list (a slice is taken under the GIL): the event loop asks this
        # while the writer thread may be changing the cache (Partition.appends_keep_the_epoch),
        # and a check-then-index could see the list emptied in between (IndexError).
        tail = self._epochs[-1:]
        return tail[0] if tail else UNDEFINED_EPOCH

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that `epoch` starts at `start_offset`; True when the cache changed.

        An epoch older than the latest is ignored (Kafka logs and skips it too); a start
        offset below the latest one replaces entries that it contradicts.
        """
        if epoch < 0:
            return False
        if self._epochs and epoch <= self._epochs[-1]:
            return False
        while self._starts and self._starts[-1] > start_offset:
            self._epochs.pop()
            self._starts.pop()
        self._epochs.append(epoch)
        self._starts.append(start_offset)
        return True

    def end_offset_for(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        """(largest known epoch <= requested, offset where it ends) as KIP-279 defines it."""
        if not self._epochs or requested_epoch < self._epochs[0]:
            return UNDEFINED_EPOCH, UNDEFINED_OFFSET
        if requested_epoch >= self._epochs[-1]:
            return self._epochs[-1], log_end_offset
        i = bisect.bisect_right(self._epochs, requested_epoch)
        return self._epochs[i - 1], self._starts[i]

    def epoch_for_offset(self, offset: int) -> int:
        """Epoch in which `offset` was written, or UNDEFINED_EPOCH."""
        i = bisect.bisect_right(self._starts, offset)
        return self._epochs[i - 1] if i else UNDEFINED_EPOCH

    def truncate_from_end(self, end_offset: int) -> bool:
        """Forget epochs that start at or after `end_offset` (the log was truncated there)."""
        keep = bisect.bisect_left(self._starts, end_offset)
        changed = keep < len(self._starts)
        del self._epochs[keep:]
        del self._starts[keep:]
        return changed

    def truncate_from_start(self, start_offset: int) -> bool:
        """Retention moved the log start: epochs ending before it go; the one covering it
        now starts there."""
        i = bisect.bisect_right(self._starts, start_offset)
        if i == 0:
            return False
        changed = i > 1 or self._starts[0] != start_offset
        del self._epochs[: i - 1]
        del self._starts[: i - 1]
        self._starts[0] = start_offset
        return changed

    def clear(self) -> None:
        self._epochs.clear()
        self._starts.clear()
