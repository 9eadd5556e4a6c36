"""Input streams for the three fuzz targets, each driven by one random.Random: mostly
mutated valid inputs, some random bytes. The long run (bench/fuzz_long.py) draws millions
from these; the short runs draw a few thousand.
"""

from __future__ import annotations

import random
import struct

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from google.protobuf.message import Message

from raftka.broker.kafka.api_table import SUPPORTED
from raftka.records import HEADER_SIZE, LOG_OVERHEAD, crc_of
from tests.fuzz.mutators import Mutator, batch_fields, fix_batch, kafka_length_fields
from tests.fuzz.protobuf_gen import (
    REQUEST_TYPES,
    MessageGenerator,
    Pool,
    junk_field,
    nested_junk,
)
from tests.fuzz.seeds import FOCUS_APIS, NOW_MS, batch_seeds, kafka_seeds
from tests.fuzz.targets import GrpcTarget


class KafkaInputs:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.mutator = Mutator(rng)
        self.seeds = list(kafka_seeds())
        self.focus = [s for s in self.seeds
                      if struct.unpack_from(">h", s)[0] in FOCUS_APIS]
        self.fields = {s: kafka_length_fields(s) for s in self.seeds}

    def next(self) -> bytes:
        rng = self.rng
        choice = rng.random()
        if choice < 0.85:
            seed = rng.choice(self.focus if rng.random() < 0.5 else self.seeds)
            return self.mutator.mutate(seed, fields=self.fields[seed], others=self.seeds)
        if choice < 0.93:  # a served header, then random bytes
            api_key = rng.choice(list(SUPPORTED))
            low, high = SUPPORTED[api_key]
            version = rng.randrange(low - 1, high + 2)
            head = struct.pack(">hhi", api_key, version, rng.randrange(-(2**31), 2**31))
            return head + self.mutator.random_bytes(64)
        return self.mutator.random_bytes(96)


def compressed_seed() -> bytes:
    """A gzip batch (the only codec this environment's aiokafka has the library for)."""
    builder = DefaultRecordBatchBuilder(2, 1, 0, -1, -1, -1, 2**31 - 1)
    for delta in range(3):
        builder.append(delta, NOW_MS, b"k", b"value" * 20, [("h", b"v")])
    return bytes(builder.build())


class RecordInputs:
    """(batch bytes, acks) pairs."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.mutator = Mutator(rng)
        self.seeds = [*batch_seeds(), compressed_seed()]
        self.fields = {s: batch_fields(s) for s in self.seeds}

    def _one(self) -> bytes:
        rng = self.rng
        seed = rng.choice(self.seeds)
        data = seed
        if rng.random() < 0.9:
            data = self.mutator.mutate(seed, fields=self.fields[seed], others=self.seeds)
        if rng.random() < 0.15 and len(data) >= HEADER_SIZE:  # codec, control, transactional
            attributes = rng.randrange(8) | rng.choice((0, 0, 0x08, 0x10, 0x20, 0x30))
            data = data[:21] + struct.pack(">h", attributes) + data[23:]
        if rng.random() < 0.6:
            data = fix_batch(data, rng)
        return data

    def random_batch(self) -> bytes:
        """A header with random fields and a right CRC over random records bytes."""
        rng = self.rng
        body = self.mutator.random_bytes(80)
        out = bytearray(struct.pack(
            ">qiibIhiqqqhii", rng.choice((0, -1, 2**62)), HEADER_SIZE - LOG_OVERHEAD + len(body),
            -1, 2, 0, rng.randrange(64), rng.choice((0, 1, 5, -1, 2**31 - 1)), NOW_MS, NOW_MS,
            rng.choice((-1, 7, 0)), rng.choice((-1, 0)), rng.choice((-1, 0, 2**31 - 1)),
            rng.choice((0, 1, 2, 5, -1, 2**31 - 1))) + body)
        struct.pack_into(">I", out, 17, crc_of(out, 0, len(out)))
        return bytes(out)

    def next(self) -> tuple[bytes, int]:
        rng = self.rng
        acks = rng.choice((1, 1, 1, -1, 0))
        choice = rng.random()
        if choice < 0.8:
            return self._one(), acks
        if choice < 0.9:
            return self._one() + self._one(), acks
        if choice < 0.96:
            return self.random_batch(), acks
        return self.mutator.random_bytes(128), acks


class GrpcInputs:
    """(request type, serialized bytes) pairs, for the request types of every service;
    types that reach a pure handler are drawn three times as often."""

    POOL_REFRESH = 64

    def __init__(self, rng: random.Random, target: GrpcTarget) -> None:
        self.rng = rng
        self.target = target
        self.mutator = Mutator(rng)
        self.pool = Pool()
        self.generator = MessageGenerator(rng, self.pool)
        self.types: list[type[Message]] = []
        for name, cls in sorted(REQUEST_TYPES.items()):
            self.types += [cls] * (3 if target.has_handler(name) else 1)
        self.batches = batch_seeds()
        self._count = 0

    def message(self, cls: type[Message]) -> Message:
        message = self.generator.message(cls)
        if cls.DESCRIPTOR.full_name == "raftka.v1.ProduceRequest":
            for item in message.partitions:  # type: ignore[attr-defined]
                if item.record_batches and self.rng.random() < 0.7:
                    batch = self.rng.choice(self.batches)
                    if self.rng.random() < 0.5:
                        batch = fix_batch(self.mutator.mutate(batch), self.rng)
                    item.record_batches = batch
        return message

    def next(self) -> tuple[type[Message], bytes]:
        rng = self.rng
        self._count += 1
        if self._count % self.POOL_REFRESH == 1:
            self.pool.extend(*self.target.pool_values())
        cls = rng.choice(self.types)
        choice = rng.random()
        if choice < 0.85:
            data = self.message(cls).SerializeToString()
            if choice < 0.45:
                return cls, data
            if choice < 0.7:
                return cls, self.mutator.mutate(data, rounds=rng.choice((1, 1, 2)))
            junk = junk_field(rng, cls.DESCRIPTOR) if rng.random() < 0.6 else nested_junk(
                rng, cls)
            return cls, (junk + data) if rng.random() < 0.3 else (data + junk)
        return cls, self.mutator.random_bytes(64)

