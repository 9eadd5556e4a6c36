"""Checks a request frame against its kio schema before kio's native reader sees it.

Why: kio 0.6.5's compiled reader trusts the lengths a client sends. A compact array whose
count is a 5-byte varint makes it reserve hundreds of GB and the allocation failure aborts
the whole broker process (SIGABRT, not an exception) — a 21-byte request could kill a
broker. It also refuses tagged fields it does not know, where Kafka's rule (KIP-482) is to
skip them, so newer clients would be cut off. This walk, in plain Python over kio's own
field metadata, refuses any length that exceeds the bytes left (every array element takes
at least one byte) and a null array that the schema does not allow (kio would read it as
None, and handlers iterate those fields), and drops unknown tagged fields from the frame it
hands on.

It reads the layout the way kio's writer writes it: compact (varint) lengths in flexible
versions, int16/int32 lengths otherwise, the request header's client_id always a legacy
string, nullable structs behind an int8 marker (KIP-893).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import cache
from typing import Any

from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    classify_field,
    get_field_tag,
    get_schema_field_type,
    is_optional,
)

_FIXED_SIZES = {
    "int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint8": 1, "uint16": 2, "uint32": 4,
    "uint64": 8, "float64": 8, "bool": 1, "uuid": 16, "error_code": 2, "timedelta_i32": 4,
    "timedelta_i64": 8, "datetime_i64": 8,
}
_VARIABLE = ("string", "bytes", "records")
KNOWN_TYPES = frozenset(_FIXED_SIZES) | frozenset(_VARIABLE)


class FrameError(ValueError):
    """The frame does not fit its schema; the message says where."""


class _Cursor:
    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    @property
    def left(self) -> int:
        return self.end - self.pos

    def skip(self, count: int, what: str) -> None:
        if count > self.left:
            raise FrameError(f"{what}: {count} bytes announced, {self.left} left")
        self.pos += count

    def signed(self, size: int, what: str) -> int:
        start = self.pos
        self.skip(size, what)
        return int.from_bytes(self.data[start:self.pos], "big", signed=True)

    def uvarint(self, what: str) -> int:
        value = shift = 0
        for _ in range(5):
            if self.pos >= self.end:
                raise FrameError(f"{what}: truncated varint")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise FrameError(f"{what}: varint longer than 5 bytes")


def _uvarint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


Edit = tuple[int, int, bytes]  # replace data[start:end] with bytes


Step = Callable[[_Cursor, list[Edit]], None]


def _primitive_step(kafka_type: str, flexible: bool, what: str) -> Step:
    size = _FIXED_SIZES.get(kafka_type)
    if size is not None:
        def fixed(cursor: _Cursor, edits: list[Edit]) -> None:
            cursor.skip(size, what)
        return fixed
    if kafka_type not in _VARIABLE:
        raise FrameError(f"{what}: no reader for kafka type {kafka_type!r}")
    width = 2 if kafka_type == "string" else 4

    def variable(cursor: _Cursor, edits: list[Edit]) -> None:
        length = cursor.uvarint(what) - 1 if flexible else cursor.signed(width, what)
        if length < -1:
            raise FrameError(f"{what}: negative length {length}")
        if length > 0:
            cursor.skip(length, what)
    return variable


def _array_count(flexible: bool, cursor: _Cursor, what: str, nullable: bool) -> int:
    count = cursor.uvarint(what) - 1 if flexible else cursor.signed(4, what)
    if count < -1:
        raise FrameError(f"{what}: negative array length {count}")
    if count == -1 and not nullable:  # kio would hand the handler None (Kafka refuses too)
        raise FrameError(f"{what}: null, but the array is not nullable")
    if count > cursor.left:  # every element takes at least one byte
        raise FrameError(f"{what}: {count} elements announced, {cursor.left} bytes left")
    return count


def _field_step(field: dataclasses.Field[Any], flexible: bool, *, in_header: bool,
                tagged: bool) -> Step:
    what = field.name
    if in_header and what == "client_id":  # always a legacy string (Kafka's rule)
        return _primitive_step("string", False, what)
    kind = classify_field(field)
    element: Step
    if isinstance(kind, EntityField | EntityTupleField):
        nullable = not kind.is_array and not tagged and is_optional(field)
        element = _entity_step(kind.type_, nullable)
    else:
        element = _primitive_step(get_schema_field_type(field), flexible, what)
    if not kind.is_array:
        return element
    nullable = is_optional(field)

    def array(cursor: _Cursor, edits: list[Edit]) -> None:
        for _ in range(_array_count(flexible, cursor, what, nullable)):
            element(cursor, edits)
    return array


@cache
def _entity_step(entity_type: type, nullable: bool = False, in_header: bool = False) -> Step:
    """A walker for one struct of `entity_type`, built once per type from kio's metadata
    (the introspection is the slow part; walking a Produce request takes microseconds)."""
    flexible = bool(entity_type.__flexible__)  # type: ignore[attr-defined]
    name = entity_type.__name__
    steps: list[Step | int] = []  # an int: that many bytes of fixed-size fields in a row
    tagged: dict[int, Step] = {}
    for field in dataclasses.fields(entity_type):
        tag = get_field_tag(field)
        if tag is not None:
            tagged[int(tag)] = _field_step(field, True, in_header=False, tagged=True)
            continue
        fixed = _FIXED_SIZES.get(field.metadata.get("kafka_type", ""))
        if fixed is not None and not classify_field(field).is_array:
            if steps and isinstance(steps[-1], int):
                steps[-1] += fixed
            else:
                steps.append(fixed)
        else:
            steps.append(_field_step(field, flexible, in_header=in_header, tagged=False))

    def walk(cursor: _Cursor, edits: list[Edit]) -> None:
        if nullable and cursor.signed(1, name) == -1:
            return
        for step in steps:
            if isinstance(step, int):
                cursor.skip(step, name)
            else:
                step(cursor, edits)
        if flexible:
            _tagged_section(name, tagged, cursor, edits)
    return walk


def _tagged_section(owner: str, known: dict[int, Step], cursor: _Cursor,
                    edits: list[Edit]) -> None:
    start = cursor.pos
    what = f"{owner} tagged fields"
    count = cursor.uvarint(what)
    if count > cursor.left:
        raise FrameError(f"{what}: {count} announced, {cursor.left} bytes left")
    kept: list[tuple[int, int]] = []
    for _ in range(count):
        entry = cursor.pos
        tag = cursor.uvarint(what)
        size = cursor.uvarint(what)
        body = cursor.pos
        cursor.skip(size, f"{what} (tag {tag})")
        step = known.get(tag)
        if step is None:
            continue  # unknown: dropped below, as KIP-482 says receivers must skip them
        # Nested tagged fields inside a tagged field are checked but not edited.
        step(_Cursor(cursor.data, body, cursor.pos), [])
        kept.append((entry, cursor.pos))
    if len(kept) < count:
        data = cursor.data
        edits.append((start, cursor.pos,
                      _uvarint_bytes(len(kept)) + b"".join(data[s:e] for s, e in kept)))


def checked_frame(header_type: type, body_type: type, frame: bytes) -> bytes:
    """The frame, safe for kio's reader: raises FrameError when a length does not fit; drops
    unknown tagged fields. Bytes after the body are left alone (Kafka ignores them too)."""
    cursor = _Cursor(frame, 0, len(frame))
    edits: list[Edit] = []
    _entity_step(header_type, in_header=True)(cursor, edits)
    _entity_step(body_type)(cursor, edits)
    if not edits:
        return frame
    pieces, position = [], 0
    for start, end, replacement in sorted(edits):
        pieces += [frame[position:start], replacement]
        position = end
    pieces.append(frame[position:])
    return b"".join(pieces)
