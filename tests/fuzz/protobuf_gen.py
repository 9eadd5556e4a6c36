"""Protobuf inputs for the gRPC fuzzer: every request type of every service, random messages
built from their descriptors (values drawn from a pool that includes what the current
metadata image holds, so handlers get past their first check), and wire-level junk: fields
of random numbers and wire types, wrong wire types for known fields, bad UTF-8, overlong and
truncated varints, deep group nesting.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from raftka.proto.raftka.v1 import (
    admin_pb2,
    broker_pb2,
    controller_pb2,
    group_pb2,
    security_pb2,
)
from tests.fuzz.mutators import uvarint


def request_types() -> dict[str, type[Message]]:
    """Input type of every RPC of every service, by full name (services listed from the
    generated descriptors, so a new RPC is fuzzed without editing this file)."""
    found: dict[str, type[Message]] = {}
    modules = (admin_pb2, broker_pb2, controller_pb2, group_pb2, security_pb2)
    owners = {module.DESCRIPTOR.name: module for module in modules}
    for module in modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                descriptor = method.input_type
                owner = owners[descriptor.file.name]
                found[descriptor.full_name] = getattr(owner, descriptor.name)
    return found


REQUEST_TYPES = request_types()

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
BASE_STRINGS = ("", "orders", "pay", "a", "a.b", "a_b", "__consumer_offsets", "..", ".",
                "x" * 249, "x" * 250, "bad name!", "\u00e9t\u00e9", "\x00", "range", "uniform",
                "retention.ms", "cleanup.policy", "compact", "-1", "127.0.0.1", "inc-1", "m1",
                "orders|pay", "or.*", "(", "[a-", "*", ".*", "a{2,1}", "\\", "(?P<x>a)(?P=y)",
                "unclean.leader.election.enable", "true", "max.message.bytes", "1e9")
BASE_INTS = (0, 1, -1, 2, 3, -2, 7, 10, 100, 1000, 10_000, 10_001, 2**31 - 1, -(2**31),
             2**63 - 1, -(2**63), 45_000, 30_000)


class Pool:
    """Values the generator draws from; `extend` adds what the current state holds (topic
    names, broker ids and epochs, member ids) so that some requests are valid."""

    def __init__(self) -> None:
        self.strings: list[str] = list(BASE_STRINGS)
        self.ints: list[int] = list(BASE_INTS)
        self._base = (len(self.strings), len(self.ints))

    def extend(self, strings: Sequence[str], ints: Sequence[int]) -> None:
        del self.strings[self._base[0]:]
        del self.ints[self._base[1]:]
        self.strings += strings
        self.ints += ints


class MessageGenerator:
    def __init__(self, rng: random.Random, pool: Pool) -> None:
        self.rng = rng
        self.pool = pool

    def message(self, cls: type[Message], depth: int = 0) -> Message:
        out = cls()
        self.fill(out, depth)
        return out

    def fill(self, message: Message, depth: int) -> None:
        rng = self.rng
        for field in message.DESCRIPTOR.fields:
            if rng.random() < 0.25:
                continue  # left at its default
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                target = getattr(message, field.name)
                key_field, value_field = field.message_type.fields
                for _ in range(rng.choice((0, 1, 1, 2, 3))):
                    key = self.scalar(key_field)
                    if value_field.message_type is not None:
                        self.fill(target[key], depth + 1)
                    else:
                        target[key] = self.scalar(value_field)
                continue
            if field.is_repeated:
                count = rng.choice((0, 1, 1, 2, 3, 5)) if depth < 3 else rng.choice((0, 1))
                target = getattr(message, field.name)
                for _ in range(count):
                    if field.message_type is not None:
                        self.fill(target.add(), depth + 1)
                    else:
                        target.append(self.scalar(field))
            elif field.message_type is not None:
                if depth < 4:
                    self.fill(getattr(message, field.name), depth + 1)
            else:
                setattr(message, field.name, self.scalar(field))

    def scalar(self, field: FieldDescriptor) -> Any:
        rng = self.rng
        kind = field.type
        if kind == FieldDescriptor.TYPE_BOOL:
            return rng.random() < 0.5
        if kind == FieldDescriptor.TYPE_STRING:
            if rng.random() < 0.85:
                return rng.choice(self.pool.strings)
            return "".join(chr(rng.choice((rng.randrange(32, 127), rng.randrange(0x80, 0xD7FF))))
                           for _ in range(rng.randrange(12)))
        if kind == FieldDescriptor.TYPE_BYTES:
            return rng.randbytes(rng.randrange(24))
        if kind == FieldDescriptor.TYPE_ENUM:
            values = [v.number for v in field.enum_type.values]
            return rng.choice(values) if rng.random() < 0.9 else rng.randrange(-5, 1000)
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return rng.choice((0.0, -1.0, 1e300, float("inf"), float("nan")))
        low, high = _INT_RANGES[kind]
        value = rng.choice(self.pool.ints) if rng.random() < 0.8 else rng.randrange(low, high + 1)
        return min(max(value, low), high)


# ----------------------------------------------------------------- wire mutations
WIRE_VARINT, WIRE_I64, WIRE_LEN, WIRE_SGROUP, WIRE_EGROUP, WIRE_I32 = 0, 1, 2, 3, 4, 5


def tag(number: int, wire: int) -> bytes:
    return uvarint((number << 3) | wire)


def junk_field(rng: random.Random, descriptor: Descriptor) -> bytes:
    """One field of a random number (often a known one) and a random wire type."""
    known = [f.number for f in descriptor.fields]
    number = rng.choice(known) if known and rng.random() < 0.6 else rng.choice(
        (0, 1, 2, 15, 16, 19000, 19999, 2**29 - 1, 2**29, rng.randrange(1, 2**29)))
    wire = rng.randrange(8)  # 6 and 7 do not exist
    if wire == WIRE_VARINT:
        body = rng.choice((uvarint(rng.randrange(2**64)), b"\xff" * 10 + b"\x01",
                           b"\x80" * rng.randrange(1, 12), b"\x00"))
    elif wire == WIRE_I64:
        body = rng.randbytes(rng.choice((8, 8, 3)))
    elif wire == WIRE_I32:
        body = rng.randbytes(rng.choice((4, 4, 1)))
    elif wire == WIRE_LEN:
        payload = rng.choice((b"\xff\xfe", b"\xc0\x80", b"\xed\xa0\x80", b"ok", b"",
                              rng.randbytes(rng.randrange(16))))
        length = rng.choice((len(payload), len(payload), len(payload) + 5, 2**31, 2**32 + 1))
        body = uvarint(length) + payload
    elif wire == WIRE_SGROUP:
        depth = rng.choice((1, 2, 50, 101, 1000))
        body = b"".join(tag(number, WIRE_SGROUP) for _ in range(depth - 1))
        body += b"".join(tag(number, WIRE_EGROUP) for _ in range(rng.choice((depth, 0))))
    else:
        body = rng.randbytes(rng.randrange(4))
    return tag(number, wire) + body


def nested_junk(rng: random.Random, cls: type[Message]) -> bytes:
    """A known message-typed field holding junk (length-delimited), possibly nested deep."""
    fields = [f for f in cls.DESCRIPTOR.fields if f.message_type is not None]
    if not fields:
        return junk_field(rng, cls.DESCRIPTOR)
    field = rng.choice(fields)
    inner = junk_field(rng, field.message_type)
    for _ in range(rng.choice((0, 1, 3, 120))):  # self-nesting through an unknown field
        inner = tag(field.number, WIRE_LEN) + uvarint(len(inner)) + inner
    return tag(field.number, WIRE_LEN) + uvarint(len(inner)) + inner

