"""Kafka RecordBatch v2: the one record format on disk, on the gRPC wire and on Kafka's wire.

Why a shared module in `client/`: as in Kafka (whose record classes live in the clients jar),
producers build and checksum batches and the broker only validates and patches them, so both
sides need the same framing. The broker imports this module; it never imports the broker.

Layout of a batch (big-endian), from Kafka's documentation:

    baseOffset int64 | batchLength int32 | partitionLeaderEpoch int32 | magic int8 (=2)
    | crc uint32 | attributes int16 | lastOffsetDelta int32 | baseTimestamp int64
    | maxTimestamp int64 | producerId int64 | producerEpoch int16 | baseSequence int32
    | recordsCount int32 | records...

The CRC32C covers everything from `attributes` to the end, so `baseOffset` and
`partitionLeaderEpoch` can be patched by the broker without recomputing it. Encoding and
decoding of the records themselves use aiokafka's compiled codec (see BENCHMARKS.md for why).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import crc32c
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

MAGIC_V2 = 2
# Bytes before `batchLength` counts: baseOffset (8) + batchLength (4).
LOG_OVERHEAD = 12
HEADER_SIZE = 61
# Smallest legal value of the batchLength field (a header with zero records).
BATCH_LENGTH_MIN = HEADER_SIZE - LOG_OVERHEAD

_HEADER = struct.Struct(">qiibIhiqqqhii")
_BASE_OFFSET = struct.Struct(">q")
_LEADER_EPOCH = struct.Struct(">i")
_LENGTH = struct.Struct(">i")
_LEADER_EPOCH_AT = 12
_CRC_AT = 17
_CRC_COVERED_FROM = 21

ATTR_COMPRESSION_MASK = 0x07
ATTR_TIMESTAMP_LOG_APPEND = 0x08
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20

COMPRESSION_NONE = 0
COMPRESSION_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_PARTITION_LEADER_EPOCH = -1


class CorruptBatchError(ValueError):
    """Bytes that are not a valid RecordBatch v2 (bad magic, CRC, lengths, offsets)."""


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The fixed 61-byte header of one batch. `size_bytes` includes the 12-byte overhead."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size_bytes(self) -> int:
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.last_offset + 1

    @property
    def compression(self) -> int:
        return self.attributes & ATTR_COMPRESSION_MASK

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & ATTR_CONTROL)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & ATTR_TRANSACTIONAL)

    @property
    def last_sequence(self) -> int:
        if self.base_sequence == NO_SEQUENCE:
            return NO_SEQUENCE
        return (self.base_sequence + self.last_offset_delta) & 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class Record:
    """A decoded record. Headers keep Kafka's model: str key, nullable bytes value."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def read_header(buffer: bytes | bytearray | memoryview, position: int = 0) -> BatchHeader:
    """Parse the header at `position` without checking the CRC. Raises on short input."""
    if len(buffer) - position < HEADER_SIZE:
        raise CorruptBatchError(
            f"truncated batch header: {len(buffer) - position} bytes, need {HEADER_SIZE}"
        )
    return BatchHeader(*_HEADER.unpack_from(buffer, position))


def read_batch_size(buffer: bytes | bytearray | memoryview, position: int = 0) -> int:
    """Total size of the batch at `position` (header included), from its length field."""
    (batch_length,) = _LENGTH.unpack_from(buffer, position + 8)
    return int(batch_length) + LOG_OVERHEAD


def validate_header(header: BatchHeader, available_bytes: int) -> None:
    """Check what the header alone can tell: magic, length bounds, offset delta, count."""
    if header.magic != MAGIC_V2:
        raise CorruptBatchError(f"unsupported magic {header.magic}: only RecordBatch v2 (2)")
    if header.batch_length < BATCH_LENGTH_MIN:
        raise CorruptBatchError(
            f"batch length {header.batch_length} is below the minimum {BATCH_LENGTH_MIN}"
        )
    if header.size_bytes > available_bytes:
        raise CorruptBatchError(
            f"batch declares {header.size_bytes} bytes but only {available_bytes} are present"
        )
    if header.records_count < 0 or header.last_offset_delta < 0:
        raise CorruptBatchError(
            f"negative record count {header.records_count} or offset delta "
            f"{header.last_offset_delta}"
        )


def crc_of(buffer: bytes | bytearray | memoryview, position: int, size_bytes: int) -> int:
    view = memoryview(buffer)[position + _CRC_COVERED_FROM : position + size_bytes]
    return int(crc32c.crc32c(view))


def check_crc(buffer: bytes | bytearray | memoryview, position: int, header: BatchHeader) -> None:
    actual = crc_of(buffer, position, header.size_bytes)
    if actual != header.crc:
        raise CorruptBatchError(
            f"CRC32C mismatch in batch at base offset {header.base_offset}: "
            f"stored {header.crc:#010x}, computed {actual:#010x}"
        )


def validate_batch(buffer: bytes | bytearray | memoryview, position: int = 0) -> BatchHeader:
    """Validate the header and CRC of the batch at `position`; return its header."""
    header = read_header(buffer, position)
    validate_header(header, len(buffer) - position)
    check_crc(buffer, position, header)
    return header


def validate_records(batch: bytes) -> None:
    """Walk the records of an uncompressed batch: count and offset deltas must match the header.

    Costs one pass of the compiled decoder (millions of records/s). Compressed batches are
    checked by their CRC only: decompressing them on the broker is the per-record work the
    design avoids.
    """
    header = read_header(batch)
    if header.compression != COMPRESSION_NONE or header.is_control:
        return
    count = 0
    try:
        for expected_delta, record in enumerate(DefaultRecordBatch(bytes(batch))):
            if record.offset - header.base_offset != expected_delta:
                raise CorruptBatchError(
                    f"record {expected_delta} has offset delta "
                    f"{record.offset - header.base_offset}; deltas must run 0..n-1"
                )
            count += 1
    except CorruptBatchError:
        raise
    except Exception as exc:  # the compiled decoder raises several types on bad bytes
        raise CorruptBatchError(f"malformed records in batch: {_reason(exc)}") from exc
    if count != header.records_count or count - 1 != header.last_offset_delta:
        raise CorruptBatchError(
            f"batch header says {header.records_count} records (last delta "
            f"{header.last_offset_delta}) but {count} were found"
        )


def _reason(exc: Exception) -> str:
    """What the decoder said; its kind when it said nothing (a bare MemoryError: an overlong
    length varint overflows the compiled decoder's bounds check into a ~2**63-byte request)."""
    return str(exc) or type(exc).__name__


def split_batches(buffer: bytes | bytearray | memoryview) -> list[tuple[int, BatchHeader]]:
    """Validate every batch of a concatenation; return (position, header) of each.

    Raises CorruptBatchError on the first invalid one: a request is all or nothing.
    """
    found: list[tuple[int, BatchHeader]] = []
    position = 0
    total = len(buffer)
    while position < total:
        header = validate_batch(buffer, position)
        found.append((position, header))
        position += header.size_bytes
    return found


def iter_headers(buffer: bytes | bytearray | memoryview) -> Iterator[tuple[int, BatchHeader]]:
    """Headers of complete batches in `buffer`, without CRC checks; stops at a partial tail."""
    position = 0
    total = len(buffer)
    while total - position >= HEADER_SIZE:
        header = read_header(buffer, position)
        if header.batch_length < BATCH_LENGTH_MIN or position + header.size_bytes > total:
            return
        yield position, header
        position += header.size_bytes


def patch_offsets(
    buffer: bytearray, position: int, base_offset: int, partition_leader_epoch: int
) -> None:
    """Set baseOffset and partitionLeaderEpoch in place. Both lie outside the CRC."""
    _BASE_OFFSET.pack_into(buffer, position, base_offset)
    _LEADER_EPOCH.pack_into(buffer, position + _LEADER_EPOCH_AT, partition_leader_epoch)


_PRODUCER_STATE = struct.Struct(">qhi")
_PRODUCER_STATE_AT = 43


def restamp_producer(
    buffer: bytearray, producer_id: int, producer_epoch: int, base_sequence: int
) -> None:
    """Set producerId, producerEpoch and baseSequence of the batch at the start of `buffer`
    and recompute its CRC (they lie inside it): for a batch built before its producer id was
    known, without rebuilding its records."""
    _PRODUCER_STATE.pack_into(
        buffer, _PRODUCER_STATE_AT, producer_id, producer_epoch, base_sequence
    )
    size = read_batch_size(buffer)
    struct.pack_into(">I", buffer, _CRC_AT, crc_of(buffer, 0, size))


def encode_batch(
    records: Sequence[tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes | None]], int]],
    *,
    now_ms: int | None = None,
    base_offset: int = 0,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
) -> bytes:
    """Build one uncompressed batch from (key, value, headers, timestamp_ms) tuples.

    A record timestamp of 0 or less takes `now_ms`, the caller's clock (this module reads
    none); such a record without `now_ms` is a ValueError. Offsets are deltas 0..n-1 from
    `base_offset`.
    """
    if not records:
        raise ValueError("a record batch needs at least one record")
    builder = DefaultRecordBatchBuilder(
        MAGIC_V2, COMPRESSION_NONE, 0, producer_id, producer_epoch, base_sequence, 2**31 - 1
    )
    for delta, (key, value, headers, timestamp_ms) in enumerate(records):
        if timestamp_ms <= 0:
            if now_ms is None:
                raise ValueError(f"record {delta} has no timestamp and no now_ms was given")
            timestamp_ms = now_ms
        builder.append(delta, timestamp_ms, key, value, list(headers))
    encoded = builder.build()
    if base_offset:
        patch_offsets(encoded, 0, base_offset, NO_PARTITION_LEADER_EPOCH)
    return bytes(encoded)


def decode_batches(
    buffer: bytes | bytearray | memoryview, *, from_offset: int = 0, verify_crc: bool = True
) -> list[Record]:
    """Decode every record with offset >= from_offset in concatenated batches.

    Control batches (transaction markers) carry no user records and are skipped. A partial
    batch at the end (a fetch cut at max_bytes) is ignored.
    """
    records: list[Record] = []
    data = bytes(buffer)
    for position, header in iter_headers(data):
        if header.last_offset < from_offset or header.is_control:
            continue
        chunk = data[position : position + header.size_bytes]
        if verify_crc:
            check_crc(chunk, 0, header)
        try:
            for record in DefaultRecordBatch(chunk):
                if record.offset < from_offset:
                    continue
                records.append(
                    Record(
                        offset=record.offset,
                        timestamp_ms=record.timestamp,
                        key=record.key,
                        value=record.value,
                        headers=tuple(record.headers),
                    )
                )
        except CorruptBatchError:
            raise
        except Exception as exc:
            raise CorruptBatchError(
                f"cannot decode batch at {header.base_offset}: {_reason(exc)}"
            ) from exc
    return records
