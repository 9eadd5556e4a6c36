"""The broker's file-descriptor budget: how many segment and index files it may hold open,
and how many partition replicas it can host within that.

Why: RLIMIT_NOFILE bounds every descriptor of the process — sockets, the Raft journal,
checkpoint files being written, duplicates for sendfile and fsync, segment files. When
segment files took them all (10,000 replicas x 3 files on a limit of 20,000), the broker
failed wherever it next needed one, the Raft journal included. So the limit is split:

    limit  = RLIMIT_NOFILE (raised to its hard limit at start-up, or `max_open_files`)
    reserve = fd_reserve: never used for segment files (sockets, Raft, checkpoints, dups)
    pool   = limit - reserve: segment and index files, least recently used closed first
             (broker/log/handles.py)

A hosted replica needs DESCRIPTORS_PER_REPLICA of the pool to run without reopening files
on every write (its active segment's log file; its indexes and older segments are opened
when used). `max_replicas` is how many fit; the broker registers it with the controller,
which refuses to place replicas beyond it (cluster/controller.py), so a create that cannot
be served fails with a clear error instead of succeeding and then failing on EMFILE.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

# Descriptors of the pool a replica needs to append without reopening a file each time.
DESCRIPTORS_PER_REPLICA = 1
# Below this many pooled descriptors the broker could not run even a handful of partitions.
MIN_POOL_DESCRIPTORS = 64


class FdBudgetError(ValueError):
    """The descriptor limit cannot hold the reserve plus a working pool; says which."""


@dataclass(frozen=True, slots=True)
class FdBudget:
    limit: int  # RLIMIT_NOFILE in effect (descriptors)
    reserve: int  # kept free of segment files (descriptors)

    @property
    def pool_capacity(self) -> int:
        """Segment and index files that may be open at once (descriptors)."""
        return self.limit - self.reserve

    @property
    def max_replicas(self) -> int:
        """Partition replicas this broker can host."""
        return self.pool_capacity // DESCRIPTORS_PER_REPLICA

    def validate(self) -> FdBudget:
        if self.reserve <= 0:
            raise FdBudgetError(f"fd_reserve must be positive, got {self.reserve}")
        if self.pool_capacity < MIN_POOL_DESCRIPTORS:
            raise FdBudgetError(
                f"RLIMIT_NOFILE {self.limit} minus fd_reserve {self.reserve} leaves "
                f"{self.pool_capacity} descriptors for segment files; at least "
                f"{MIN_POOL_DESCRIPTORS} are needed (raise `ulimit -n` or max_open_files, "
                "or lower fd_reserve)"
            )
        return self

    def describe(self) -> str:
        return (
            f"RLIMIT_NOFILE {self.limit}, reserve {self.reserve}, {self.pool_capacity} for "
            f"segment files: at most {self.max_replicas} replicas"
        )


def effective_limit(soft: int, hard: int, wanted: int) -> int:
    """The soft limit to run with: `wanted` (0: as high as allowed), never above `hard`."""
    ceiling = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    return min(wanted, ceiling) if wanted > 0 else ceiling


def apply_limit(max_open_files: int, reserve: int) -> FdBudget:
    """Set this process's RLIMIT_NOFILE (raising the soft limit to the hard one unless
    `max_open_files` says otherwise) and return the budget it gives."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = effective_limit(soft, hard, max_open_files)
    if limit != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    return FdBudget(limit=limit, reserve=reserve).validate()
