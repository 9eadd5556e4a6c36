"""Idempotent producer state: duplicates recognised, gaps and fenced epochs refused."""

from __future__ import annotations

import pytest

from raftka.broker.producer_state import (
    OutOfOrderSequenceError,
    ProducerFencedError,
    ProducerStateManager,
)
from raftka.records import encode_batch, patch_offsets, read_header


def header(pid=7, epoch=0, seq=0, count=2, base_offset=0):
    data = bytearray(
        encode_batch(
            [(None, b"x", [], 1)] * count, producer_id=pid, producer_epoch=epoch, base_sequence=seq
        )
    )
    patch_offsets(data, 0, base_offset, 0)
    return read_header(data)


def test_a_retry_of_a_stored_batch_is_a_duplicate_with_its_offsets():
    state = ProducerStateManager()
    assert state.check(header(seq=0)) is None
    state.update(header(seq=0, base_offset=100))
    duplicate = state.check(header(seq=0))
    assert (duplicate.first_offset, duplicate.last_offset) == (100, 101)
    assert state.check(header(seq=2)) is None


def test_a_gap_in_sequences_is_refused():
    state = ProducerStateManager()
    state.update(header(seq=0))
    with pytest.raises(OutOfOrderSequenceError, match="expected 2"):
        state.check(header(seq=5))


def test_an_older_epoch_is_fenced_and_a_newer_one_restarts_at_zero():
    state = ProducerStateManager()
    state.update(header(epoch=3, seq=0))
    with pytest.raises(ProducerFencedError):
        state.check(header(epoch=2, seq=2))
    assert state.check(header(epoch=4, seq=0)) is None
    with pytest.raises(OutOfOrderSequenceError):
        state.check(header(epoch=4, seq=9))


def test_only_the_last_five_batches_are_remembered_and_producers_are_bounded():
    state = ProducerStateManager(producers_max=2)
    for i in range(7):
        state.update(header(seq=2 * i, base_offset=2 * i))
    with pytest.raises(OutOfOrderSequenceError):  # too old to recognise, as in Kafka
        state.check(header(seq=0))
    assert state.check(header(seq=12)).first_offset == 12
    state.update(header(pid=8))
    state.update(header(pid=9))
    assert len(state) == 2


def test_batches_without_a_producer_id_are_not_tracked():
    state = ProducerStateManager()
    state.update(header(pid=-1, seq=-1))
    assert len(state) == 0 and state.check(header(pid=-1, seq=-1)) is None
