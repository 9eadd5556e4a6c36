"""Short fuzz run of the RecordBatch v2 decoders (raftka/records.py), the produce-side parsing
(broker/produce_path.py parse_produce_data) and the store behind it (Partition.append_as_leader
on a real log in a temporary directory): valid batches mutated (header fields and record
varints overwritten with boundary values, CRC32C and length often fixed so the record decoder
is reached), random batches with a right CRC, random bytes. Every decoder answers or raises
CorruptBatchError; parsing answers or raises a BrokerError / CorruptBatchError; every refused
input leaves each byte of the log directory as it was (tests/fuzz/targets.py). The long run
is bench/fuzz_long.py."""

from __future__ import annotations

import collections
import random
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.inputs import RecordInputs, compressed_seed
from tests.fuzz.mutators import OPERATIONS, apply_operations, batch_fields, fix_batch
from tests.fuzz.seeds import batch_seeds
from tests.fuzz.short_run import bounded, fuzz_settings
from tests.fuzz.targets import RecordsTarget, check_batch_bytes, parse_produced

SEEDS = [*batch_seeds(), compressed_seed()]
FIELDS = {s: batch_fields(s) for s in SEEDS}
operations = st.lists(st.tuples(st.sampled_from(OPERATIONS), st.integers(0, 2**16),
                                st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=4)


@pytest.fixture(scope="module")
def target() -> Iterator[RecordsTarget]:
    made = RecordsTarget()
    yield made
    made.close()


def test_the_seeds_are_valid_batches(target: RecordsTarget) -> None:
    assert {check_batch_bytes(s) for s in SEEDS} == {"split"}
    assert all(parse_produced(s) is not None for s in SEEDS)
    # The idempotent seed is a retry of what the store was set up with: a duplicate.
    assert [target.check(s) for s in SEEDS].count("appended") == len(SEEDS) - 1
    assert all(len(FIELDS[s]) > 13 for s in SEEDS)  # header fields and record varints


@fuzz_settings(2500)
@given(st.sampled_from(SEEDS), operations, st.booleans(), st.sampled_from((1, -1, 0)))
def test_mutated_batches(target: RecordsTarget, seed: bytes, ops: list, fix_crc: bool,
                         acks: int) -> None:
    data = apply_operations(seed, ops, FIELDS[seed])
    if fix_crc:
        data = fix_batch(data, random.Random(len(ops)))
    bounded("records", data, target.check, data, acks)


@fuzz_settings(400)
@given(st.binary(max_size=160))
def test_random_bytes(target: RecordsTarget, data: bytes) -> None:
    bounded("records", data, target.check, data)


def test_the_long_runs_mutators_for_5000_inputs(target: RecordsTarget) -> None:
    inputs = RecordInputs(random.Random(20260602))
    outcomes: collections.Counter[str] = collections.Counter()
    for _ in range(5000):
        data, acks = inputs.next()
        outcomes[bounded("records", data, target.check, data, acks)] += 1
    # Refusals at both stages, and appends (the store check is not vacuous).
    assert set(outcomes) == {"refused-parse", "refused-append", "appended"}, outcomes
    assert outcomes["appended"] > 200 and outcomes["refused-append"] > 50, outcomes
