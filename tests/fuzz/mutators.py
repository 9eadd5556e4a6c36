"""Byte mutators for the fuzzers, driven by one random.Random so a run is reproducible from
its seed (the long run, bench/fuzz_long.py, and the plain loops of the short runs).

Generic mutations (bit flips, interesting bytes, insertions, deletions, duplicated ranges,
truncation, splices, random bytes) are mixed with structure-aware ones: the length and
count fields of a Kafka frame (found by walking it the way the frame guard does) and the
header fields and record varints of a RecordBatch are overwritten with boundary values, and a
mutated batch often gets its CRC32C (and length) fixed, so the record decoder behind the CRC
check is reached too.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

from raftka.records import HEADER_SIZE, LOG_OVERHEAD, crc_of, read_header

INTERESTING_8 = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE, 0x40, 0x20)
INTERESTING_16 = (0, 1, -1, -2, 0x7F, 0x80, 0xFF, 0x7FFF, -0x8000, 0x100, 0x3FFF)
INTERESTING_32 = (0, 1, -1, -2, 2, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, -0x80000000,
                  0x10000, 1_000_000, 61, 49)
INTERESTING_64 = (0, 1, -1, 2**63 - 1, -(2**63), 2**31, 2**32, 1_700_000_000_000)
INTERESTING_VARINT = (0, 1, 2, 3, 0x7F, 0x80, 0x3FFF, 0x4000, 2**21, 2**28 - 1, 2**31 - 1,
                      2**31, 2**32 - 1, 2**35 - 1)


def uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def varint_size(data: bytes | bytearray, position: int) -> int:
    """Bytes taken by the (unsigned) varint at `position`; at most up to the end."""
    size = 0
    while position + size < len(data):
        size += 1
        if not data[position + size - 1] & 0x80:
            break
    return max(size, 1)


# ------------------------------------------------------------------ structure maps
Field = tuple[int, int | str]  # (position, width in bytes | "varint" | "zigzag")


def kafka_length_fields(frame: bytes) -> list[Field]:
    """Where the frame guard reads a length, count or marker in `frame` (a valid frame).
    Uses the guard's private walker; an empty list if it has changed shape."""
    try:
        from raftka.broker.kafka import frame_guard

        class Recording(frame_guard._Cursor):
            __slots__ = ("seen",)
            seen: list[Field]

            def uvarint(self, what: str) -> int:
                self.seen.append((self.pos, "varint"))
                return super().uvarint(what)

            def signed(self, size: int, what: str) -> int:
                self.seen.append((self.pos, size))
                return super().signed(size, what)

        from raftka.broker.kafka import codec

        api_key, version, _ = codec.peek_header(frame)
        schema = codec.request_schema(api_key, version)
        cursor = Recording(frame, 0, len(frame))
        cursor.seen = []
        frame_guard._entity_step(schema.__header_schema__, in_header=True)(cursor, [])
        frame_guard._entity_step(schema)(cursor, [])
        return list(cursor.seen)
    except Exception:
        return []


# Header fields of a RecordBatch: (position, width).
BATCH_HEADER_FIELDS: tuple[Field, ...] = (
    (0, 8), (8, 4), (12, 4), (16, 1), (17, 4), (21, 2), (23, 4), (27, 8), (35, 8), (43, 8),
    (51, 2), (53, 4), (57, 4))


def batch_fields(batch: bytes) -> list[Field]:
    """Header fields and the varints of every record of the valid batches in `batch`."""
    fields: list[Field] = []
    position = 0
    while len(batch) - position >= HEADER_SIZE:
        header = read_header(batch, position)
        end = position + header.size_bytes
        fields += [(position + at, width) for at, width in BATCH_HEADER_FIELDS]
        at = position + HEADER_SIZE
        try:
            for _ in range(header.records_count):
                at = _record_fields(batch, at, fields)
        except (IndexError, ValueError):
            pass
        position = end
    return fields


def _read_zigzag(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), position
        shift += 7


def _record_fields(data: bytes, at: int, fields: list[Field]) -> int:
    fields.append((at, "zigzag"))  # length
    length, body = _read_zigzag(data, at)
    end = body + length
    at = body + 1  # attributes int8
    fields.append((body, 1))
    for _ in range(2):  # timestampDelta, offsetDelta
        fields.append((at, "zigzag"))
        _, at = _read_zigzag(data, at)
    for _ in range(2):  # key, value
        fields.append((at, "zigzag"))
        size, at = _read_zigzag(data, at)
        at += max(size, 0)
    fields.append((at, "zigzag"))  # header count
    count, at = _read_zigzag(data, at)
    for _ in range(max(count, 0)):
        for _ in range(2):
            fields.append((at, "zigzag"))
            size, at = _read_zigzag(data, at)
            at += max(size, 0)
    if at != end:
        raise ValueError("record walk lost its place")
    return end


# ------------------------------------------------------------------------ mutator


class Mutator:
    """Mutations of bytes; one random.Random drives them all."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def random_bytes(self, max_size: int = 96) -> bytes:
        rng = self.rng
        return rng.randbytes(rng.randrange(max_size + 1))

    def mutate(self, data: bytes, *, fields: Sequence[Field] = (),
               others: Sequence[bytes] = (), rounds: int | None = None) -> bytes:
        """1-4 stacked mutations of `data`; `fields` are known length/field positions,
        `others` inputs to splice with."""
        rng = self.rng
        out = bytearray(data)
        for _ in range(rounds if rounds is not None else rng.choice((1, 1, 1, 2, 2, 3, 4))):
            choice = rng.randrange(100)
            if fields and choice < 30:
                self._overwrite_field(out, rng.choice(fields))
            elif choice < 42:
                self._flip(out)
            elif choice < 52:
                self._interesting(out)
            elif choice < 60:
                self._insert(out)
            elif choice < 68:
                self._delete(out)
            elif choice < 73:
                self._duplicate(out)
            elif choice < 80:
                del out[rng.randrange(len(out) + 1):]
            elif choice < 85:
                out += rng.randbytes(rng.randrange(1, 16))
            elif choice < 90 and others:
                other = rng.choice(others)
                cut = rng.randrange(len(out) + 1)
                out[cut:] = other[rng.randrange(len(other) + 1):]
            elif choice < 95:
                self._write_int(out, rng.randrange(len(out) + 1))
            else:
                self._write_varint(out, rng.randrange(len(out) + 1), rng.choice(("varint",
                                                                                   "zigzag")))
        return bytes(out)

    # -- single mutations
    def _flip(self, out: bytearray) -> None:
        if out:
            position = self.rng.randrange(len(out))
            out[position] ^= 1 << self.rng.randrange(8)

    def _interesting(self, out: bytearray) -> None:
        if out:
            out[self.rng.randrange(len(out))] = self.rng.choice(INTERESTING_8)

    def _insert(self, out: bytearray) -> None:
        position = self.rng.randrange(len(out) + 1)
        out[position:position] = self.rng.randbytes(self.rng.choice((1, 1, 2, 4, 8, 33)))

    def _delete(self, out: bytearray) -> None:
        if out:
            start = self.rng.randrange(len(out))
            del out[start:start + self.rng.choice((1, 1, 2, 4, 8, 64))]

    def _duplicate(self, out: bytearray) -> None:
        if out:
            start = self.rng.randrange(len(out))
            piece = out[start:start + self.rng.randrange(1, 64)]
            at = self.rng.randrange(len(out) + 1)
            out[at:at] = piece * self.rng.choice((1, 2, 16))

    def _write_int(self, out: bytearray, position: int, width: int | None = None) -> None:
        rng = self.rng
        width = width or rng.choice((1, 2, 4, 8))
        if width == 1:
            piece = bytes([rng.choice(INTERESTING_8)])
        elif width == 2:
            piece = struct.pack(">h", rng.choice(INTERESTING_16))
        elif width == 4:
            value = rng.choice((*INTERESTING_32, len(out) - position, len(out) - position + 1))
            piece = struct.pack(">i", max(-(2**31), min(value, 2**31 - 1)))
        else:
            piece = struct.pack(">q", rng.choice(INTERESTING_64))
        out[position:position + width] = piece

    def _write_varint(self, out: bytearray, position: int, kind: str) -> None:
        rng = self.rng
        left = len(out) - position
        if kind == "zigzag":
            value = rng.choice((-1, -2, 0, 1, 2, 63, 64, left, left + 1, 2**31 - 1, -(2**31),
                                2**63 - 1, -(2**63)))
            encoded = uvarint(zigzag(value) & (2**64 - 1))
        else:
            value = rng.choice((*INTERESTING_VARINT, left, left + 1, left + 2))
            encoded = uvarint(value)
        old = varint_size(out, position) if position < len(out) else 0
        out[position:position + old] = encoded

    def _overwrite_field(self, out: bytearray, field: Field) -> None:
        position, width = field
        if position > len(out):
            return
        if isinstance(width, int):
            self._write_int(out, position, width)
        else:
            self._write_varint(out, position, width)


def fix_batch(data: bytes, rng: random.Random) -> bytes:
    """Make the first batch in `data` pass the CRC check again after a mutation, and
    sometimes its length field too (so the record decoder, not the framing, meets the
    damage). Leaves `data` alone when it is shorter than a header."""
    if len(data) < HEADER_SIZE:
        return data
    out = bytearray(data)
    if rng.random() < 0.5:
        struct.pack_into(">i", out, 8, len(out) - LOG_OVERHEAD)
    (length,) = struct.unpack_from(">i", out, 8)
    size = length + LOG_OVERHEAD
    if HEADER_SIZE <= size <= len(out):
        struct.pack_into(">I", out, 17, crc_of(out, 0, size))
    return bytes(out)


# ------------------------------------------------------------- explicit operations
# The short runs let hypothesis choose mutations as data, (name, position, value), so that a
# failing input shrinks to the fewest, smallest mutations of the smallest seed.
OPERATIONS = ("flip", "byte", "insert", "delete", "truncate", "int16", "int32", "int64",
              "varint", "field", "append", "duplicate")
Operation = tuple[str, int, int]


def apply_operations(data: bytes, operations: Sequence[Operation],
                     fields: Sequence[Field] = ()) -> bytes:
    out = bytearray(data)
    for name, position, value in operations:
        at = position % (len(out) + 1)
        if name == "flip" and out:
            out[at % len(out)] ^= 1 << (value % 8)
        elif name == "byte" and out:
            out[at % len(out)] = value % 256
        elif name == "insert":
            out[at:at] = value.to_bytes(8, "big", signed=True)[: 1 + value % 8]
        elif name == "delete":
            del out[at:at + 1 + value % 64]
        elif name == "truncate":
            del out[at:]
        elif name == "int16":
            out[at:at + 2] = struct.pack(">h", INTERESTING_16[value % len(INTERESTING_16)])
        elif name == "int32":
            out[at:at + 4] = struct.pack(">i", INTERESTING_32[value % len(INTERESTING_32)])
        elif name == "int64":
            out[at:at + 8] = struct.pack(">q", INTERESTING_64[value % len(INTERESTING_64)])
        elif name == "varint":
            old = varint_size(out, at) if at < len(out) else 0
            out[at:at + old] = uvarint(INTERESTING_VARINT[value % len(INTERESTING_VARINT)])
        elif name == "field" and fields:
            field_at, width = fields[position % len(fields)]
            if field_at <= len(out):
                if isinstance(width, int):
                    table = {1: INTERESTING_8, 2: INTERESTING_16, 4: INTERESTING_32,
                             8: INTERESTING_64}[width]
                    number = table[value % len(table)]
                    code = {1: ">B", 2: ">h", 4: ">i", 8: ">q"}[width]
                    out[field_at:field_at + width] = struct.pack(code, number)
                else:
                    old = varint_size(out, field_at) if field_at < len(out) else 0
                    number = INTERESTING_VARINT[value % len(INTERESTING_VARINT)]
                    if width == "zigzag":
                        number = zigzag(number - 2**31 if value % 2 else number) & (2**64 - 1)
                    out[field_at:field_at + old] = uvarint(number)
        elif name == "append":
            out += value.to_bytes(8, "big", signed=True)[: 1 + value % 8]
        elif name == "duplicate" and out:
            start = at % len(out)
            out[start:start] = out[start:start + 1 + value % 32]
    return bytes(out)
