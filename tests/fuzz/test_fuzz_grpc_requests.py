"""Short fuzz run of every gRPC request type (the input of every RPC of every service in
proto/raftka/v1): random and mutated bytes must parse or raise DecodeError; what parses goes
to the pure handler behind the RPC where there is one (cluster/controller.py,
broker/metadata_view.py, parse_produce_data, ConsumerGroup.heartbeat / check_commit), which
must answer with a known error code or raise only its documented error, and whose records
must apply to the metadata image without breaking its invariants (tests/fuzz/targets.py).
The long run is bench/fuzz_long.py."""

from __future__ import annotations

import collections
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftka.broker.groups.state import ConsumerGroup, GroupError
from tests.fuzz.inputs import GrpcInputs
from tests.fuzz.mutators import Mutator
from tests.fuzz.protobuf_gen import REQUEST_TYPES, junk_field, nested_junk
from tests.fuzz.short_run import bounded, fuzz_settings
from tests.fuzz.targets import GrpcTarget, Unexpected, parse_request

NAMES = sorted(REQUEST_TYPES)
HANDLED = [n for n in NAMES if GrpcTarget().has_handler(n)]


def test_every_rpc_of_every_service_is_fuzzed() -> None:
    # 34 RPCs in admin, broker, controller, group and security.proto (the admin operations
    # and the security service added 12); 13 reach a pure handler here (the others need a
    # running broker: their bytes are fuzzed up to parsing).
    assert len(NAMES) == 34, NAMES
    assert len(HANDLED) == 13, HANDLED


@pytest.mark.parametrize("name", NAMES)
@fuzz_settings(120)
@given(data=st.binary(max_size=120))
def test_random_bytes_parse_or_raise_decode_error(name: str, data: bytes) -> None:
    bounded("grpc", data, lambda: str(parse_request(REQUEST_TYPES[name], data) is not None))


@pytest.mark.parametrize("name", NAMES)
@fuzz_settings(120)
@given(rng=st.randoms(use_true_random=False), how=st.sampled_from(("as-is", "mutated",
                                                                   "junk", "nested")))
def test_generated_and_mutated_messages(name: str, rng: random.Random, how: str) -> None:
    target = GrpcTarget()
    inputs = GrpcInputs(rng, target)
    inputs.pool.extend(*target.pool_values())
    cls = REQUEST_TYPES[name]
    data = inputs.message(cls).SerializeToString()
    if how == "mutated":
        data = Mutator(rng).mutate(data)
    elif how == "junk":
        data += junk_field(rng, cls.DESCRIPTOR)
    elif how == "nested":
        data += nested_junk(rng, cls)
    bounded("grpc", data, target.check, cls, data)


@fuzz_settings(300)
@given(rng=st.randoms(use_true_random=False), length=st.integers(1, 40))
def test_sequences_of_requests_against_an_evolving_image(rng: random.Random,
                                                         length: int) -> None:
    target = GrpcTarget()
    inputs = GrpcInputs(rng, target)
    for _ in range(length):
        cls, data = inputs.next()
        bounded("grpc", data, target.check, cls, data)


member_ids = st.sampled_from(("", "m1", "m2", "member-1", "member-2", "member-3"))
topic_names = st.sampled_from(("orders", "pay", "nope", "", "__consumer_offsets"))
heartbeats = st.fixed_dictionaries({
    "member_id": member_ids,
    "member_epoch": st.one_of(st.sampled_from((-1, 0, 1, 2, 3)), st.integers(-(2**31),
                                                                             2**31 - 1)),
    "subscribed_topics": st.one_of(st.none(), st.lists(topic_names, max_size=3)),
    "subscribed_regex": st.one_of(st.sampled_from(("", "or.*", "pay|orders", ".*", "(", "[",
                                                   "a{2,1}", "*")), st.text(max_size=6)),
    "assignor": st.sampled_from(("", "range", "uniform", "nope")),
    "owned": st.lists(st.tuples(topic_names, st.integers(-1, 4)), max_size=4),
    "session_timeout_ms": st.sampled_from((1, 100, 45_000, 2**31 - 1)),
    "client_id": st.sampled_from(("c", "")),
    "hold_until_ms": st.sampled_from((0, 50_000)),
    "advance_ms": st.integers(0, 100_000),
})


@fuzz_settings(400)
@given(calls=st.lists(heartbeats, min_size=1, max_size=25))
def test_consumer_group_heartbeats_with_fuzzed_values(calls: list[dict]) -> None:
    """ConsumerGroup.heartbeat answers or raises GroupError, and never gives a partition to
    two members at once (broker/groups/state.py's promise), whatever the values."""
    group = ConsumerGroup("g")
    counts = {"orders": 3, "pay": 2}
    now = 0
    for number, call in enumerate(calls):
        values = dict(call)
        now += values.pop("advance_ms")
        try:
            group.heartbeat(**values, partition_counts=counts, now_ms=now,
                            new_member_id=f"member-{number}")
        except GroupError as exc:
            assert str(exc), "a GroupError without a message"
        group.expire(now, counts)
        owners: dict[tuple[str, int], str] = {}
        for member in group.members.values():
            assert member.epoch <= group.group_epoch
            for tp in member.assigned:
                assert tp not in owners, f"{tp} given to {owners[tp]} and {member.member_id}"
                owners[tp] = member.member_id


def test_the_long_runs_generators_for_20000_inputs() -> None:
    target = GrpcTarget()
    inputs = GrpcInputs(random.Random(20260603), target)
    outcomes: collections.Counter[str] = collections.Counter()
    types: collections.Counter[str] = collections.Counter()
    for _ in range(20_000):
        cls, data = inputs.next()
        outcome = bounded("grpc", data, target.check, cls, data)
        outcomes[outcome] += 1
        if outcome == "handled":
            types[cls.DESCRIPTOR.full_name] += 1
    assert set(outcomes) == {"refused", "parsed", "handled"}, outcomes
    assert set(types) == set(HANDLED), types  # every handler got inputs


def test_a_failure_names_the_input_in_hex() -> None:
    failure = Unexpected("grpc", b"\x0a\x01", "something broke")
    assert "0a01" in str(failure) and failure.signature == "grpc: something broke"


def test_a_group_id_ending_in_a_colon_is_a_reason_not_a_missing_one() -> None:
    # The long run once took "member  is not in group :" for a message without a reason.
    data = bytes.fromhex("0a02223a")  # OffsetCommitRequest(group_id='":')
    assert GrpcTarget().check(REQUEST_TYPES["raftka.v1.OffsetCommitRequest"], data) == "handled"
