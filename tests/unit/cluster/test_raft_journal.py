"""The Raft journal is on disk before Raft counts on it (cluster/raft_journal.py)."""

from __future__ import annotations

import os

import pytest

from raftka.cluster import raft_journal
from raftka.cluster.raft_journal import DurableFileJournal


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(raft_journal.os, "fsync", counting)
    return calls


def test_every_entry_is_synced_and_survives_a_reopen(tmp_path, fsyncs):
    path = str(tmp_path / "raft.journal")
    journal = DurableFileJournal(path)
    before = len(fsyncs)
    for index in range(1, 201):  # grows the file past its first size, too
        journal.add(b"x" * 100, index, 1)
        assert len(fsyncs) == before + index  # synced before add() returned
    journal.deleteEntriesFrom(150)
    assert len(fsyncs) == before + 201
    journal._destroy()
    reopened = DurableFileJournal(path)
    assert len(reopened) == 150 and reopened[149] == (b"x" * 100, 150, 1)


def test_the_term_and_vote_are_synced_with_their_directory(tmp_path, fsyncs):
    path = str(tmp_path / "raft.journal")
    journal = DurableFileJournal(path)
    before = len(fsyncs)
    journal.setCurrentTerm(7, "127.0.0.1:9091")
    assert len(fsyncs) == before + 2  # the file, then the directory holding its new name
    assert not os.path.exists(path + ".meta.tmp")
    journal._destroy()
    reopened = DurableFileJournal(path)
    assert reopened.getCurrentTerm() == 7
    assert reopened.getVotedForNodeId() == "127.0.0.1:9091"


def test_compaction_keeps_the_tail_and_syncs_once(tmp_path, fsyncs):
    journal = DurableFileJournal(str(tmp_path / "raft.journal"))
    for index in range(1, 11):
        journal.add(f"e{index}".encode(), index, 2)
    before = len(fsyncs)
    journal.deleteEntriesTo(6)
    assert len(fsyncs) == before + 1
    assert [entry[1] for entry in (journal[i] for i in range(len(journal)))] == [7, 8, 9, 10]


def test_install_makes_pysyncobj_create_durable_journals(tmp_path):
    import pysyncobj.syncobj

    raft_journal.install()
    made = pysyncobj.syncobj.createJournal(str(tmp_path / "j"))
    assert isinstance(made, DurableFileJournal)
    made._destroy()
