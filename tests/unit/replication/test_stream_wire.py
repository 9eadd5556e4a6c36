"""The replication stream's pure parts: framing round trips, every bound, and the
handshake's proof (bound to both nonces and the broker id, so it cannot be replayed)."""

from __future__ import annotations

import pytest

from raftka.broker.internal_auth import InternalAuth
from raftka.broker.replication import stream_wire as wire
from raftka.cluster.cluster_auth import ClusterCredentials

SECRET = b"s" * 32
OTHER = b"o" * 32
F, L = b"f" * wire.NONCE_BYTES, b"l" * wire.NONCE_BYTES


def test_handshake_messages_round_trip():
    assert wire.parse_hello(wire.hello(7, F)) == (7, F)
    assert wire.parse_challenge(wire.challenge(L)) == L
    assert wire.parse_verdict(wire.VERDICT.pack(wire.ACCEPTED)) is True
    assert wire.parse_verdict(wire.VERDICT.pack(wire.REFUSED)) is False


def test_handshake_garbage_is_refused_with_a_reason():
    with pytest.raises(wire.WireError, match="not a replication handshake"):
        wire.parse_hello(b"GET / HTTP/1.1\r\n".ljust(wire.HELLO.size, b"x"))
    with pytest.raises(wire.WireError, match="ids >= 0"):
        wire.parse_hello(wire.HELLO.pack(wire.MAGIC, -1, F))
    with pytest.raises(wire.WireError, match="not a replication listener"):
        wire.parse_challenge(b"HTTP" + L)
    with pytest.raises(wire.WireError, match="neither accepted nor refused"):
        wire.parse_verdict(b"\x07")
    with pytest.raises(ValueError, match="16 bytes"):
        wire.hello(1, b"short")


def test_request_length_is_bounded():
    frame = wire.request_frame(b"abc")
    assert wire.request_length(frame[:4]) == 3 and frame[4:] == b"abc"
    assert wire.request_length(wire.REQUEST_PREFIX.pack(wire.FETCH_REQUEST_MAX_BYTES)) > 0
    with pytest.raises(wire.WireError, match="at most"):
        wire.request_length(wire.REQUEST_PREFIX.pack(wire.FETCH_REQUEST_MAX_BYTES + 1))


def test_response_head_round_trips():
    head = wire.response_head(b"HEADER", [(0, 10), (3, 5)])
    header_length, count = wire.response_sizes(head[:8])
    assert (header_length, count) == (6, 2)
    rest = head[8:]
    assert rest[:header_length] == b"HEADER"
    assert wire.parse_table(rest, header_length, count, 4) == [(0, 10), (3, 5)]


def test_response_bounds_and_table_garbage():
    with pytest.raises(wire.WireError, match="at most"):
        wire.response_sizes(wire.RESPONSE_PREFIX.pack(wire.RESPONSE_MAX_BYTES, 1))
    table = lambda *entries: b"".join(wire.TABLE_ENTRY.pack(i, n) for i, n in entries)  # noqa: E731
    with pytest.raises(wire.WireError, match="partition index 4"):
        wire.parse_table(table((4, 1)), 0, 1, 4)  # past the response's partitions
    with pytest.raises(wire.WireError, match="after 2"):
        wire.parse_table(table((2, 1), (2, 1)), 0, 2, 4)  # not ascending
    with pytest.raises(wire.WireError, match="0 bytes"):
        wire.parse_table(table((0, 0)), 0, 1, 4)
    with pytest.raises(wire.WireError, match="past"):
        wire.parse_table(b"h" * 100 + table((0, wire.RESPONSE_MAX_BYTES - 99)), 100, 1, 4)


def test_the_proof_binds_both_nonces_and_the_broker_id():
    follower = InternalAuth(ClusterCredentials(SECRET), broker_id=2)
    leader = InternalAuth(ClusterCredentials(SECRET), broker_id=1)
    proof = follower.handshake_proof(F, L)
    assert len(proof) == wire.PROOF_BYTES
    assert leader.handshake_proven(proof, F, L, 2)
    assert not leader.handshake_proven(proof, F, b"n" * 16, 2), "replayed on a new challenge"
    assert not leader.handshake_proven(proof, b"g" * 16, L, 2)
    assert not leader.handshake_proven(proof, F, L, 3), "claimed as another broker"


def test_another_secret_or_none_is_refused_and_rotation_is_accepted():
    leader = InternalAuth(ClusterCredentials(SECRET), broker_id=1)
    stranger = InternalAuth(ClusterCredentials(OTHER), broker_id=2)
    assert not leader.handshake_proven(stranger.handshake_proof(F, L), F, L, 2)
    unsecured = InternalAuth(None, broker_id=2)
    assert not leader.handshake_proven(unsecured.handshake_proof(F, L), F, L, 2)
    rotating = InternalAuth(ClusterCredentials(SECRET, also_accepted=[OTHER]), broker_id=1)
    assert rotating.handshake_proven(stranger.handshake_proof(F, L), F, L, 2)
    # A broker without a secret (allow_no_cluster_secret) accepts any proof.
    assert InternalAuth(None, broker_id=1).handshake_proven(b"\0" * 32, F, L, 2)
