"""pysyncobj's file journal, made durable: an entry is on disk before Raft counts it.

Why: pysyncobj 0.3.17 keeps its journal in an mmap it never syncs, and writes the current
term and vote with a rename but no fsync. Raft's safety needs both on stable storage before
a node answers for them (a follower acknowledging an entry, a leader counting its own copy,
a node granting a vote): otherwise power loss on a majority can undo a committed metadata
change, or let a node vote twice in one term and two leaders share a leader epoch.

How: each journal mutation (add, truncation, clear) is followed by msync of the mapping and
fsync of the file (the file may have grown); the term/vote file is written to a temporary
file, fsynced, renamed over, and the directory fsynced. pysyncobj creates its journal through
`pysyncobj.syncobj.createJournal`; `install()` points that name at `durable_journal` for the
process (cluster/raft.py calls it). It reads pysyncobj's private attributes; the version is
pinned in pyproject.toml.
"""

from __future__ import annotations

import os
from typing import Any

import pysyncobj.syncobj
from pysyncobj.journal import FileJournal, MemoryJournal
from pysyncobj.pickle import dumps


def _fsync_directory(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableFileJournal(FileJournal):  # type: ignore[misc]
    """FileJournal whose every change is synced before the call returns."""

    def __init__(self, journal_file: str) -> None:
        super().__init__(journal_file)
        self._meta_path = journal_file + ".meta"
        self.syncs = 0  # how many times the journal was synced (tests, figures)
        self._sync()

    # ------------------------------------------------------------- the entries
    def add(self, command: Any, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self._sync()

    def clear(self) -> None:
        super().clear()
        self._sync()

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        super().deleteEntriesFrom(entryFrom)
        self._sync()

    def deleteEntriesTo(self, entryTo: int) -> None:
        # FileJournal rewrites the kept entries through add(): sync once, at the end.
        journal = list(self._FileJournal__journal[entryTo:])
        FileJournal.clear(self)
        for entry in journal:
            FileJournal.add(self, *entry)
        self._sync()

    # ------------------------------------------------------------- term and vote
    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        meta = self._FileJournal__meta
        meta["currentTerm"] = term
        meta["votedForNodeId"] = votedForNodeId
        self._store_meta(meta)
        self._FileJournal__metaSaved = True

    def onOneSecondTimer(self) -> None:
        # The commit index can be learnt again from the leader: a plain write is enough.
        super().onOneSecondTimer()

    def _store_meta(self, meta: dict[str, Any]) -> None:
        temporary = self._meta_path + ".tmp"
        with open(temporary, "wb") as handle:
            handle.write(dumps(meta))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._meta_path)
        _fsync_directory(self._meta_path)

    # ----------------------------------------------------------------- syncing
    def _sync(self) -> None:
        resizable = self._FileJournal__journalFile
        resizable.flush()  # msync(MS_SYNC) of the mapping
        os.fsync(resizable._ResizableFile__f.fileno())  # and the file's size, if it grew
        self.syncs += 1


def durable_journal(journalFile: str | None = None) -> Any:
    if journalFile is None:
        return MemoryJournal()
    return DurableFileJournal(journalFile)


def install() -> None:
    """Make every SyncObj created from now on in this process use the durable journal."""
    pysyncobj.syncobj.createJournal = durable_journal
