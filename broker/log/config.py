"""The typed settings one partition log runs with, resolved from its topic's configs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from raftka.cluster import topic_config


@dataclass(frozen=True, slots=True)
class LogConfig:
    segment_bytes: int = 1024**3
    segment_ms: int = 7 * 24 * 3600 * 1000
    retention_ms: int = 7 * 24 * 3600 * 1000
    retention_bytes: int = -1
    index_interval_bytes: int = 4096
    max_message_bytes: int = 1048588
    flush_messages: int = topic_config.LONG_MAX
    flush_ms: int = topic_config.LONG_MAX
    log_append_time: bool = False

    @classmethod
    def from_topic_configs(cls, configs: Mapping[str, str]) -> LogConfig:
        """`configs` as returned by topic_config.resolve (every key present)."""

        def number(name: str) -> int:
            return topic_config.as_int(configs, name)

        return cls(
            segment_bytes=number("segment.bytes"),
            segment_ms=number("segment.ms"),
            retention_ms=number("retention.ms"),
            retention_bytes=number("retention.bytes"),
            index_interval_bytes=number("index.interval.bytes"),
            max_message_bytes=number("max.message.bytes"),
            flush_messages=number("flush.messages"),
            flush_ms=number("flush.ms"),
            log_append_time=configs["message.timestamp.type"] == "LogAppendTime",
        )
