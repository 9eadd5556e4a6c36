"""Builders shared by the log tests."""

from __future__ import annotations

from raftka.broker.log.config import LogConfig
from raftka.broker.log.log import AppendResult, PartitionLog
from raftka.records import encode_batch, split_batches


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
