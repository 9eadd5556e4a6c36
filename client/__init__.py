"""Raftka's Python SDK: Producer, Consumer, Admin, and the errors they raise.

    from client import Producer, Consumer, Admin

Names load on first use, so the broker, which shares client.records (the record format, as
Kafka's broker shares the clients jar), does not import the SDK's gRPC client machinery.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Admin": "client.admin",
    "NewTopic": "client.admin",
    "Consumer": "client.consumer",
    "ConsumerRecord": "client.consumer",
    "TopicPartition": "client.consumer",
    "Producer": "client.producer",
    "RecordFuture": "client.accumulator",
    "RecordMetadata": "client.accumulator",
    "RaftkaError": "client.errors",
    "error_for": "client.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
