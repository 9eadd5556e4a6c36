"""Builders shared by the log tests."""

from __future__ import annotations

import struct

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from raftka.broker.log.config import LogConfig
from raftka.broker.log.log import AppendResult, PartitionLog
from raftka.records import COMPRESSION_NONE, MAGIC_V2, crc_of, encode_batch, split_batches


def make_batch(values: list[bytes], timestamp_ms: int = 1_700_000_000_000) -> bytearray:
    return bytearray(encode_batch([(None, v, [], timestamp_ms) for v in values]))


def append_values(
    log: PartitionLog,
    values: list[bytes],
    *,
    epoch: int = 0,
    now_ms: int = 1_700_000_000_000,
    timestamp_ms: int | None = None,
) -> AppendResult:
    data = make_batch(values, timestamp_ms if timestamp_ms is not None else now_ms)
    return log.append_as_leader(data, split_batches(data), epoch, now_ms)


def small_config(**overrides: int) -> LogConfig:
    settings = {"segment_bytes": 1024, "index_interval_bytes": 256, "retention_ms": -1}
    settings.update(overrides)
    return LogConfig(**settings)  # type: ignore[arg-type]


def batch_without_timestamps(values: list[bytes], *, header_max_timestamp: int) -> bytearray:
    """A batch whose records carry no timestamp (-1), as librdkafka sends messages produced
    with timestamp -1 (librdkafka's tests do): baseTimestamp -1 and maxTimestamp 0, because
    librdkafka's running maximum starts at 0 (rdkafka_msgset_writer.c). With
    `header_max_timestamp=-1` it is the batch as aiokafka builds it, and as Kafka stores
    librdkafka's (its LogValidator rewrites maxTimestamp to the records' maximum)."""
    builder = DefaultRecordBatchBuilder(MAGIC_V2, COMPRESSION_NONE, 0, -1, -1, -1, 2**31 - 1)
    for delta, value in enumerate(values):
        builder.append(delta, -1, None, value, [])
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 35, header_max_timestamp)
    struct.pack_into(">I", data, 17, crc_of(data, 0, len(data)))
    return data


def append_raw(log: PartitionLog, data: bytearray, now_ms: int, epoch: int = 0) -> AppendResult:
    return log.append_as_leader(data, split_batches(data), epoch, now_ms)
