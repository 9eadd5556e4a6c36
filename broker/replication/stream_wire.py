"""The replication stream's wire format: framing, bounds and the handshake's messages. Pure:
nonces come from the caller, keys stay in cluster/cluster_auth.py.

Why a transport of its own: a follower's Fetch over gRPC costs the leader call creation,
HTTP/2 framing, a protobuf copy of every batch and the copies gRPC's C core makes, all on the
event loop, twice per acks=all round. The stored batches already are the wire format
(RecordBatch v2), so here the leader writes its answer's small protobuf header and then the
batches straight from the segment files (sendfile), and the follower reads them into the
same FetchResponse the gRPC path gives it; everything the fetch decides (positions,
divergence, the high watermark, the ISR) stays in broker/fetch_path.py and fetcher.py.

One TCP connection (TLS when the brokers' gRPC is) per follower and leader, integers
big-endian:

    handshake, once per connection
      follower -> leader  HELLO      magic "RKR1" | i32 follower broker id | 16-byte nonce F
      leader -> follower  CHALLENGE  magic "RKR1" | 16-byte nonce L
      follower -> leader  PROOF      32 bytes: HMAC-SHA256(key from the cluster secret,
                                     "raftka-replication-v1" | F | L | broker id)
      leader -> follower  VERDICT    1 byte: 0 accepted, 1 refused (then the leader closes)

    then requests and responses, one at a time
      follower -> leader  u32 n | n bytes: broker_pb2.FetchRequest (replica_id = the id of
                                     the handshake; consumer fetches are refused here)
      leader -> follower  u32 h | u32 k | h bytes: broker_pb2.FetchResponse in which the k
                                     partitions below have empty record_batches
                                     | k x (u32 partition index, u32 byte length), indices
                                     ascending | the k partitions' batches, raw, in order

Both nonces are fresh per connection, so a recorded handshake cannot be replayed; a leader
without a cluster secret (allow_no_cluster_secret) accepts any proof. Every length read is
bounded below; anything else, and a refused handshake, closes the connection.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from raftka.cluster.cluster_auth import HANDSHAKE_PROOF_BYTES

MAGIC = b"RKR1"
NONCE_BYTES = 16
PROOF_BYTES = HANDSHAKE_PROOF_BYTES
ACCEPTED, REFUSED = 0, 1
HELLO = struct.Struct(">4si16s")
CHALLENGE = struct.Struct(">4s16s")
VERDICT = struct.Struct(">B")
REQUEST_PREFIX = struct.Struct(">I")
RESPONSE_PREFIX = struct.Struct(">II")
TABLE_ENTRY = struct.Struct(">II")

# A FetchRequest larger than this closes the connection (a follower's request names each
# partition it follows on the leader: ~100 bytes each, so this is ~40,000 partitions).
FETCH_REQUEST_MAX_BYTES = 4 * 1024 * 1024
# One response, header and raw batches together. The follower asks for 16 MiB
# (fetcher.FETCH_BYTES_MAX); a leader may go past that by one first batch (up to a topic's
# max.message.bytes), so this leaves room for that and refuses only garbage.
RESPONSE_MAX_BYTES = 64 * 1024 * 1024


class WireError(ValueError):
    """The peer sent something this format does not allow; the message says what."""


def hello(broker_id: int, nonce: bytes) -> bytes:
    _check_nonce(nonce)
    return HELLO.pack(MAGIC, broker_id, nonce)


def parse_hello(data: bytes) -> tuple[int, bytes]:
    """(follower broker id, its nonce)."""
    magic, broker_id, nonce = HELLO.unpack(data)
    if magic != MAGIC:
        raise WireError(f"not a replication handshake (starts with {magic!r})")
    if broker_id < 0:
        raise WireError(f"broker id {broker_id} in the handshake: replicas have ids >= 0")
    return broker_id, nonce


def challenge(nonce: bytes) -> bytes:
    _check_nonce(nonce)
    return CHALLENGE.pack(MAGIC, nonce)


def parse_challenge(data: bytes) -> bytes:
    magic, nonce = CHALLENGE.unpack(data)
    if magic != MAGIC:
        raise WireError(f"not a replication listener (answered {magic!r})")
    return bytes(nonce)


def parse_verdict(data: bytes) -> bool:
    (verdict,) = VERDICT.unpack(data)
    if verdict not in (ACCEPTED, REFUSED):
        raise WireError(f"handshake verdict {verdict} is neither accepted nor refused")
    return verdict == ACCEPTED


def request_frame(body: bytes) -> bytes:
    return REQUEST_PREFIX.pack(len(body)) + body


def request_length(prefix: bytes) -> int:
    (length,) = REQUEST_PREFIX.unpack(prefix)
    if length > FETCH_REQUEST_MAX_BYTES:
        raise WireError(
            f"fetch request of {length} bytes; at most {FETCH_REQUEST_MAX_BYTES} are allowed")
    return length


def response_head(header: bytes, raw: Sequence[tuple[int, int]]) -> bytes:
    """What precedes the raw batches: prefix, header, table of (partition index, length)."""
    table = b"".join([TABLE_ENTRY.pack(index, length) for index, length in raw])
    return RESPONSE_PREFIX.pack(len(header), len(raw)) + header + table


def response_sizes(prefix: bytes) -> tuple[int, int]:
    """(header length, raw partition count) from a response's 8-byte prefix, bounded."""
    header_length, count = RESPONSE_PREFIX.unpack(prefix)
    if header_length + count * TABLE_ENTRY.size > RESPONSE_MAX_BYTES:
        raise WireError(
            f"fetch response header of {header_length} bytes with {count} raw partitions; "
            f"at most {RESPONSE_MAX_BYTES} bytes are allowed")
    return header_length, count


def parse_table(data: bytes | memoryview, offset: int, count: int,
                partitions: int) -> list[tuple[int, int]]:
    """The raw partitions' (index, length), checked: indices ascending and within the
    response's `partitions`, lengths positive, header and batches within RESPONSE_MAX_BYTES
    (`offset`, the header's length, counts towards that)."""
    entries = []
    total = offset
    previous = -1
    for position in range(offset, offset + count * TABLE_ENTRY.size, TABLE_ENTRY.size):
        index, length = TABLE_ENTRY.unpack_from(data, position)
        if not previous < index < partitions:
            raise WireError(
                f"raw batches for partition index {index} (after {previous}) of a response "
                f"with {partitions} partitions")
        if length == 0:
            raise WireError(f"raw batches of 0 bytes for partition index {index}")
        total += length
        if total > RESPONSE_MAX_BYTES:
            raise WireError(
                f"fetch response past {RESPONSE_MAX_BYTES} bytes (at partition index {index})")
        entries.append((index, length))
        previous = index
    return entries


def _check_nonce(nonce: bytes) -> None:
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"a nonce is {NONCE_BYTES} bytes, got {len(nonce)}")
