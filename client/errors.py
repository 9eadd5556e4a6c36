"""Exceptions the SDK raises, one class per broker ErrorCode that a caller may act on.

    RaftkaError                      (.code: the ErrorCode, .retriable)
    ├── BrokerNotAvailableError      no broker reachable at the bootstrap/leader address
    ├── RequestTimedOutError         retriable
    ├── NotLeaderError               retriable: metadata is refreshed and the call retried
    ├── LeaderNotAvailableError      retriable
    ├── NotEnoughReplicasError       retriable (acks=all, ISR below min.insync.replicas)
    ├── NotControllerError           retriable
    ├── UnknownTopicOrPartitionError
    ├── InvalidTopicError
    ├── TopicAlreadyExistsError
    ├── InvalidPartitionsError / InvalidReplicationFactorError / InvalidConfigError
    ├── MessageTooLargeError         a batch above max.message.bytes
    ├── CorruptMessageError          a batch failed its CRC or framing checks
    ├── OffsetOutOfRangeError
    └── InvalidRequestError          ... and RaftkaError itself for any other code

Retriable errors are retried inside the SDK until its timeout; the caller sees them only when
time ran out.
"""

from __future__ import annotations

from raftka.proto.raftka.v1 import common_pb2

Code = common_pb2.ErrorCode

RETRIABLE_CODES = frozenset(
    {
        Code.LEADER_NOT_AVAILABLE,
        Code.NOT_LEADER_OR_FOLLOWER,
        Code.REQUEST_TIMED_OUT,
        Code.BROKER_NOT_AVAILABLE,
        Code.COORDINATOR_NOT_AVAILABLE,
        Code.COORDINATOR_LOAD_IN_PROGRESS,
        Code.NOT_COORDINATOR,
        Code.NOT_ENOUGH_REPLICAS,
        Code.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        Code.NOT_CONTROLLER,
        Code.KAFKA_STORAGE_ERROR,
        Code.FENCED_LEADER_EPOCH,
        Code.UNKNOWN_LEADER_EPOCH,
    }
)


class RaftkaError(Exception):
    code: int = Code.UNKNOWN_SERVER_ERROR

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def retriable(self) -> bool:
        return self.code in RETRIABLE_CODES

    @property
    def code_name(self) -> str:
        return common_pb2.ErrorCode.Name(self.code)


class BrokerNotAvailableError(RaftkaError):
    code = Code.BROKER_NOT_AVAILABLE


class RequestTimedOutError(RaftkaError):
    code = Code.REQUEST_TIMED_OUT


class NotLeaderError(RaftkaError):
    code = Code.NOT_LEADER_OR_FOLLOWER


class LeaderNotAvailableError(RaftkaError):
    code = Code.LEADER_NOT_AVAILABLE


class NotEnoughReplicasError(RaftkaError):
    code = Code.NOT_ENOUGH_REPLICAS


class NotControllerError(RaftkaError):
    code = Code.NOT_CONTROLLER


class UnknownTopicOrPartitionError(RaftkaError):
    code = Code.UNKNOWN_TOPIC_OR_PARTITION


class InvalidTopicError(RaftkaError):
    code = Code.INVALID_TOPIC_EXCEPTION


class TopicAlreadyExistsError(RaftkaError):
    code = Code.TOPIC_ALREADY_EXISTS


class InvalidPartitionsError(RaftkaError):
    code = Code.INVALID_PARTITIONS


class InvalidReplicationFactorError(RaftkaError):
    code = Code.INVALID_REPLICATION_FACTOR


class InvalidConfigError(RaftkaError):
    code = Code.INVALID_CONFIG


class MessageTooLargeError(RaftkaError):
    code = Code.MESSAGE_TOO_LARGE


class CorruptMessageError(RaftkaError):
    code = Code.CORRUPT_MESSAGE


class OffsetOutOfRangeError(RaftkaError):
    code = Code.OFFSET_OUT_OF_RANGE


class InvalidRequestError(RaftkaError):
    code = Code.INVALID_REQUEST


class AuthenticationError(RaftkaError):
    """The broker did not accept the credentials (or wanted some): SASL_AUTHENTICATION_FAILED."""


class AuthorizationError(RaftkaError):
    """An ACL refused the call (TOPIC/GROUP/CLUSTER_AUTHORIZATION_FAILED in the message);
    nothing was done."""


_BY_CODE: dict[int, type[RaftkaError]] = {
    cls.code: cls
    for cls in (
        BrokerNotAvailableError,
        RequestTimedOutError,
        NotLeaderError,
        LeaderNotAvailableError,
        NotEnoughReplicasError,
        NotControllerError,
        UnknownTopicOrPartitionError,
        InvalidTopicError,
        TopicAlreadyExistsError,
        InvalidPartitionsError,
        InvalidReplicationFactorError,
        InvalidConfigError,
        MessageTooLargeError,
        CorruptMessageError,
        OffsetOutOfRangeError,
        InvalidRequestError,
    )
}


# Kafka's TOPIC_/GROUP_/CLUSTER_AUTHORIZATION_FAILED and SASL_AUTHENTICATION_FAILED.
_BY_CODE.update({29: AuthorizationError, 30: AuthorizationError, 31: AuthorizationError,
                 58: AuthenticationError})


def error_for(code: int, message: str) -> RaftkaError:
    """The exception for an ErrorCode from a reply; the message names the code."""
    cls = _BY_CODE.get(code, RaftkaError)
    try:
        name = common_pb2.ErrorCode.Name(code)
    except ValueError:
        name = str(code)
    return cls(f"{name}: {message}" if message else name, code)
