"""Short fuzz run of the Kafka request decoder (broker/kafka/frame_guard.py checked_frame,
broker/kafka/codec.py peek_header and decode_request): valid requests of every served API
version, mutated (bit flips, insertions, deletions, truncation, length and count fields
overwritten with boundary values), and random bytes. Each must decode, or be refused with
MalformedRequestError / UnsupportedVersionError naming the problem (tests/fuzz/targets.py).
The long run is bench/fuzz_long.py."""

from __future__ import annotations

import collections
import random
import struct

from hypothesis import given
from hypothesis import strategies as st

from raftka.broker.kafka.api_table import SUPPORTED
from tests.fuzz.inputs import KafkaInputs
from tests.fuzz.mutators import OPERATIONS, apply_operations, kafka_length_fields
from tests.fuzz.seeds import FOCUS_APIS, kafka_seeds
from tests.fuzz.short_run import bounded, fuzz_settings
from tests.fuzz.targets import check_kafka_frame

SEEDS = kafka_seeds()
FOCUS = [s for s in SEEDS if struct.unpack_from(">h", s)[0] in FOCUS_APIS]
FIELDS = {s: kafka_length_fields(s) for s in SEEDS}
operations = st.lists(st.tuples(st.sampled_from(OPERATIONS), st.integers(0, 2**16),
                                st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=4)


def check(frame: bytes) -> str:
    return bounded("kafka", frame, check_kafka_frame, frame)


def test_the_seeds_are_valid_requests_of_every_served_version() -> None:
    assert {check(s) for s in SEEDS} == {"decoded"}
    served = {struct.unpack_from(">hh", s) for s in SEEDS}
    assert served == {(k, v) for k, (low, high) in SUPPORTED.items()
                      for v in range(low, high + 1)}
    assert all(FIELDS[s] for s in SEEDS)  # the length map found the fields to corrupt


@fuzz_settings(2500)
@given(st.sampled_from(FOCUS), operations)
def test_mutated_requests_of_the_main_apis(seed: bytes, ops: list) -> None:
    check(apply_operations(seed, ops, FIELDS[seed]))


@fuzz_settings(1500)
@given(st.sampled_from(SEEDS), operations)
def test_mutated_requests_of_every_served_version(seed: bytes, ops: list) -> None:
    check(apply_operations(seed, ops, FIELDS[seed]))


@fuzz_settings(800)
@given(st.sampled_from(sorted(SUPPORTED)), st.integers(-2, 20), st.binary(max_size=120))
def test_a_served_header_then_random_bytes(api_key: int, version: int, body: bytes) -> None:
    check(struct.pack(">hhi", api_key, version, 1) + body)


@fuzz_settings(500)
@given(st.binary(max_size=200))
def test_random_bytes(frame: bytes) -> None:
    check(frame)


def test_the_long_runs_mutators_for_20000_inputs() -> None:
    inputs = KafkaInputs(random.Random(20260601))
    outcomes = collections.Counter(check(inputs.next()) for _ in range(20_000))
    # The mix reaches every outcome, decoded requests included.
    assert set(outcomes) == {"decoded", "malformed", "unsupported", "no-header"}, outcomes
    assert outcomes["decoded"] > 1000, outcomes
