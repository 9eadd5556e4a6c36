"""One table from what can go wrong on a broker to the ErrorCode a client switches on.

Handlers raise the domain exceptions below (or the storage/metadata layers' own); servicers
call `to_error` once, so every path reports the same code and a message that names the
problem.
"""

from __future__ import annotations

import logging
from typing import Any

from raftka.broker.log.log import OffsetOutOfRangeError, RecordTooLargeError
from raftka.broker.producer_state import StoredBatch
from raftka.cluster.naming import InvalidTopicNameError
from raftka.cluster.quorum import ControllerTimeoutError, NotControllerError
from raftka.proto.raftka.v1 import common_pb2
from raftka.records import CorruptBatchError

Code = common_pb2.ErrorCode
log = logging.getLogger("raftka.broker")


class BrokerError(Exception):
    code: int = Code.UNKNOWN_SERVER_ERROR


class UnknownTopicOrPartitionError(BrokerError):
    code = Code.UNKNOWN_TOPIC_OR_PARTITION


class LeaderNotAvailableError(BrokerError):
    code = Code.LEADER_NOT_AVAILABLE


class NotLeaderError(BrokerError):
    code = Code.NOT_LEADER_OR_FOLLOWER

    def __init__(self, message: str, leader_id: int, leader_epoch: int) -> None:
        super().__init__(message)
        self.leader_id = leader_id
        self.leader_epoch = leader_epoch


class FencedLeaderEpochError(BrokerError):
    code = Code.FENCED_LEADER_EPOCH


class UnknownLeaderEpochError(BrokerError):
    code = Code.UNKNOWN_LEADER_EPOCH


class NotEnoughReplicasError(BrokerError):
    code = Code.NOT_ENOUGH_REPLICAS


class NotEnoughReplicasAfterAppendError(BrokerError):
    code = Code.NOT_ENOUGH_REPLICAS_AFTER_APPEND


class RequestTimedOutError(BrokerError):
    code = Code.REQUEST_TIMED_OUT


class InvalidRequestError(BrokerError):
    code = Code.INVALID_REQUEST


class InvalidRequiredAcksError(BrokerError):
    code = Code.INVALID_REQUIRED_ACKS


class InvalidTopicError(BrokerError):
    code = Code.INVALID_TOPIC_EXCEPTION


class UnsupportedCompressionError(BrokerError):
    code = Code.UNSUPPORTED_COMPRESSION_TYPE


class DuplicateSequenceError(BrokerError):
    """An idempotent retry of a batch already stored; `stored` says where. Producers treat it
    as success (the reply carries the original offset)."""

    code = Code.DUPLICATE_SEQUENCE_NUMBER

    def __init__(self, message: str, stored: StoredBatch) -> None:
        super().__init__(message)
        self.stored = stored


class StaleBrokerEpochError(BrokerError):
    """A follower fetched with a broker epoch older than its registration (KIP-903): a
    process from before its last restart, or one not registered yet."""

    code = Code.STALE_BROKER_EPOCH


class BrokerFencedError(BrokerError):
    """This broker lost its lease with the controller: it must not accept writes."""

    code = Code.NOT_LEADER_OR_FOLLOWER


class OutOfOrderSequenceError(BrokerError):
    code = Code.OUT_OF_ORDER_SEQUENCE_NUMBER


class InvalidProducerEpochError(BrokerError):
    code = Code.INVALID_PRODUCER_EPOCH


_FOREIGN: list[tuple[type[BaseException], int]] = [
    (OffsetOutOfRangeError, Code.OFFSET_OUT_OF_RANGE),
    (RecordTooLargeError, Code.MESSAGE_TOO_LARGE),
    (CorruptBatchError, Code.CORRUPT_MESSAGE),
    (InvalidTopicNameError, Code.INVALID_TOPIC_EXCEPTION),
    (NotControllerError, Code.NOT_CONTROLLER),
    (ControllerTimeoutError, Code.REQUEST_TIMED_OUT),
    (TimeoutError, Code.REQUEST_TIMED_OUT),
    (OSError, Code.KAFKA_STORAGE_ERROR),
]


def to_error(exc: BaseException) -> tuple[int, str]:
    """(ErrorCode, message) for an exception raised while serving one item."""
    if isinstance(exc, BrokerError):
        return exc.code, str(exc)
    for kind, code in _FOREIGN:
        if isinstance(exc, kind):
            return code, str(exc) or kind.__name__
    return Code.UNKNOWN_SERVER_ERROR, f"{type(exc).__name__}: {exc}"


def fill_error(reply: Any, exc: BaseException) -> None:
    """Put `exc` into a per-partition reply: error_code, error_message and, for
    NOT_LEADER_OR_FOLLOWER, who the leader is."""
    code, message = to_error(exc)
    if code == Code.UNKNOWN_SERVER_ERROR:
        log.error(
            "unexpected error serving %s-%s",
            getattr(reply, "topic", "?"),
            getattr(reply, "partition", "?"),
            exc_info=exc,
        )
    reply.error_code = code
    reply.error_message = message
    if isinstance(exc, NotLeaderError) and hasattr(reply, "leader_id"):
        reply.leader_id = exc.leader_id
        if hasattr(reply, "leader_epoch"):
            reply.leader_epoch = exc.leader_epoch
