"""Raftka: a replicated commit log in the spirit of Kafka (KRaft mode), and its Python SDK.

    from raftka import Producer, Consumer, Admin

The package is one house with four wings, each a folder at the repository root:
raftka.proto (the gRPC API, generated), raftka.cluster (metadata image, controller, Raft),
raftka.broker (the broker process) and raftka.client (this SDK and the `raftka` command);
raftka.records is the RecordBatch v2 format that the SDK and the broker share.
"""

from __future__ import annotations

from raftka.client.accumulator import RecordFuture, RecordMetadata
from raftka.client.admin import Admin, NewTopic
from raftka.client.consumer import Consumer, ConsumerRecord, TopicPartition
from raftka.client.errors import RaftkaError, error_for
from raftka.client.producer import Producer

__all__ = [
    "Admin",
    "Consumer",
    "ConsumerRecord",
    "NewTopic",
    "Producer",
    "RaftkaError",
    "RecordFuture",
    "RecordMetadata",
    "TopicPartition",
    "error_for",
]
