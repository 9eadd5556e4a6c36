"""Controller handlers that change existing topics: alter configs, add partitions. Pure.

Same shape as controller.py's handlers: (image, request, settings) -> the records that carry
the change out plus the reply. A topic whose request is refused gets no record at all, so a
refused request changes nothing; topics of one request are judged independently (as Kafka
does), and the records of the accepted ones commit together in one batch.

Why records and not a broker-local change: configs and partition counts are cluster
metadata; through the Raft log every broker (and every restart, from the log or a snapshot)
sees the same values, and each broker's local_changes() reconfigures or opens its replicas.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from raftka.cluster import records, topic_config
from raftka.cluster.controller import ControllerResult, ControllerSettings
from raftka.cluster.image import MetadataImage
from raftka.cluster.placement import PlacementError, ReplicaPlacer
from raftka.proto.raftka.v1 import admin_pb2, common_pb2, metadata_pb2

Code = common_pb2.ErrorCode


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def topic_config_record(topic_id: str, configs: Mapping[str, str]) -> metadata_pb2.MetadataRecord:
    return metadata_pb2.MetadataRecord(
        topic_config=metadata_pb2.TopicConfigRecord(topic_id=topic_id, configs=dict(configs))
    )


def altered_configs(
    current: Mapping[str, str],
    set_: Mapping[str, str],
    delete: Iterable[str],
    *,
    replace_all: bool,
) -> dict[str, str]:
    """The topic's explicit configs after an alteration, validated and normalised.

    Raises InvalidConfigError naming the key: unknown names (also among deletions, as Kafka
    refuses deleting a config it does not know), bad values, or a key both set and deleted.
    """
    deleted = list(delete)
    both = sorted(set(deleted) & set(set_))
    if both:
        raise topic_config.InvalidConfigError(
            f"config '{both[0]}' is both set and deleted in one request"
        )
    for name in deleted:
        if name not in topic_config.CONFIG_DEFS:
            topic_config.validate_value(name, "")  # raises, naming the unknown key
    result = {} if replace_all else dict(current)
    for name in deleted:
        result.pop(name, None)
    result.update(topic_config.validate(dict(set_)))
    return result


def alter_configs(
    image: MetadataImage, request: admin_pb2.AlterConfigsRequest
) -> ControllerResult[admin_pb2.AlterConfigsResponse]:
    response = admin_pb2.AlterConfigsResponse()
    out: list[metadata_pb2.MetadataRecord] = []
    seen: set[str] = set()
    for alteration in request.topics:
        result = response.topics.add(topic=alteration.topic)
        try:
            if alteration.topic in seen:
                raise _Refused(Code.INVALID_REQUEST,
                               f"topic '{alteration.topic}' appears twice in the request")
            seen.add(alteration.topic)
            topic = image.topics.get(alteration.topic)
            if topic is None:
                raise _Refused(Code.UNKNOWN_TOPIC_OR_PARTITION,
                               f"topic '{alteration.topic}' does not exist")
            try:
                configs = altered_configs(topic.configs, alteration.set, alteration.delete,
                                          replace_all=alteration.replace_all)
            except topic_config.InvalidConfigError as exc:
                raise _Refused(Code.INVALID_CONFIG, str(exc)) from None
        except _Refused as refused:
            result.error_code = refused.code  # type: ignore[assignment]
            result.error_message = str(refused)
            continue
        if not request.validate_only and configs != dict(topic.configs):
            out.append(topic_config_record(topic.topic_id, configs))
    return ControllerResult(tuple(out), response)


def create_partitions(
    image: MetadataImage,
    request: admin_pb2.CreatePartitionsRequest,
    settings: ControllerSettings,
) -> ControllerResult[admin_pb2.CreatePartitionsResponse]:
    """New partitions get the topic's replication factor and are placed like creation
    (placement.py), counting the partitions placed earlier in the same request."""
    response = admin_pb2.CreatePartitionsResponse()
    out: list[metadata_pb2.MetadataRecord] = []
    placer = ReplicaPlacer(image, image.unfenced_broker_ids())
    seen: set[str] = set()
    for change in request.topics:
        result = response.topics.add(topic=change.topic)
        topic = image.topics.get(change.topic)
        try:
            if change.topic in seen:
                raise _Refused(Code.INVALID_REQUEST,
                               f"topic '{change.topic}' appears twice in the request")
            seen.add(change.topic)
            if topic is None:
                raise _Refused(Code.UNKNOWN_TOPIC_OR_PARTITION,
                               f"topic '{change.topic}' does not exist")
            if topic.internal:
                raise _Refused(Code.INVALID_REQUEST,
                               f"'{change.topic}' is an internal topic; its partition count "
                               "is fixed (offsets.topic.num.partitions)")
            current = len(topic.partitions)
            if change.count <= current:
                raise _Refused(
                    Code.INVALID_PARTITIONS,
                    f"topic '{change.topic}' has {current} partition(s); the new count "
                    f"{change.count} must be larger (partitions can only be added)",
                )
            if change.count > settings.partitions_max:
                raise _Refused(
                    Code.INVALID_PARTITIONS,
                    f"{change.count} partitions is above the limit of {settings.partitions_max}",
                )
            try:
                placed = placer.place(change.count - current, topic.replication_factor)
            except PlacementError as exc:
                raise _Refused(Code.INVALID_REPLICATION_FACTOR, str(exc)) from None
        except _Refused as refused:
            result.error_code = refused.code  # type: ignore[assignment]
            result.error_message = str(refused)
            continue
        if request.validate_only:
            continue
        assert topic is not None
        for offset, replicas in enumerate(placed):
            out.append(records.partition(topic.topic_id, current + offset, replicas, replicas,
                                         replicas[0]))
    return ControllerResult(tuple(out), response)
