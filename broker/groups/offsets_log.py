"""What the group coordinator stores in __consumer_offsets, and how it is replayed. Pure.

Each record's key is the group id and its value one GroupLogRecord: an offset commit, a
group deletion (tombstone), deleted offsets of some topics (OffsetDelete), or a snapshot
of every live offset of the partition. Replaying
from a snapshot forward rebuilds the state exactly, which is what lets the coordinator drop
the log before its latest snapshot (so the topic does not grow without bound).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from raftka.broker.groups.state import CommittedOffset, ConsumerGroup
from raftka.proto.raftka.v1 import group_pb2
from raftka.records import decode_batches, encode_batch

OFFSETS_TOPIC = "__consumer_offsets"


def java_string_hash(text: str) -> int:
    """Java's String.hashCode (over UTF-16 code units), as a signed 32-bit int."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_group(group_id: str, partitions: int) -> int:
    """Kafka's rule (Utils.abs(groupId.hashCode) % partitions), so a group maps to the same
    __consumer_offsets partition Kafka would use."""
    h = java_string_hash(group_id)
    return (0 if h == -(2**31) else abs(h)) % partitions


def commit_record(
    group_id: str, topic: str, partition: int, offset: CommittedOffset
) -> group_pb2.GroupLogRecord:
    return group_pb2.GroupLogRecord(
        offset_commit=group_pb2.OffsetCommitValue(
            group_id=group_id,
            topic=topic,
            partition=partition,
            offset=offset.offset,
            metadata=offset.metadata,
            commit_timestamp_ms=offset.commit_timestamp_ms,
        )
    )


def tombstone_record(group_id: str) -> group_pb2.GroupLogRecord:
    return group_pb2.GroupLogRecord(group_deleted=group_pb2.GroupTombstone(group_id=group_id))


def offsets_deleted_record(
    group_id: str, partitions: Iterable[tuple[str, int]]
) -> group_pb2.GroupLogRecord:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(partitions):
        by_topic.setdefault(topic, []).append(partition)
    return group_pb2.GroupLogRecord(offsets_deleted=group_pb2.OffsetsDeleted(
        group_id=group_id,
        partitions=[group_pb2.TopicPartitions(topic=t, partitions=ps)
                    for t, ps in by_topic.items()],
    ))


def snapshot_record(
    groups: Mapping[str, ConsumerGroup], live_topics: Iterable[str]
) -> group_pb2.GroupLogRecord:
    """Every offset worth keeping: of groups that exist, for topics that still exist."""
    topics = set(live_topics)
    snapshot = group_pb2.GroupSnapshot()
    for group_id in sorted(groups):
        group = groups[group_id]
        for (topic, partition), offset in sorted(group.offsets.items()):
            if topic in topics:
                snapshot.offsets.append(
                    commit_record(group_id, topic, partition, offset).offset_commit
                )
    return group_pb2.GroupLogRecord(snapshot=snapshot)


def encode(records: Iterable[group_pb2.GroupLogRecord], now_ms: int) -> bytes:
    items: list[tuple[bytes, bytes, list[tuple[str, bytes | None]], int]] = []
    for record in records:
        kind = record.WhichOneof("record")
        key = getattr(record, kind).group_id.encode() if kind != "snapshot" else b""
        items.append((key, record.SerializeToString(), [], 0))
    return encode_batch(items, now_ms=now_ms)


def decode(data: bytes, from_offset: int = 0) -> Iterator[tuple[int, group_pb2.GroupLogRecord]]:
    for stored in decode_batches(data, from_offset=from_offset):
        record = group_pb2.GroupLogRecord()
        record.ParseFromString(stored.value or b"")
        yield stored.offset, record


def replay(groups: dict[str, ConsumerGroup], record: group_pb2.GroupLogRecord) -> None:
    """Apply one stored record to the coordinator's groups."""
    kind = record.WhichOneof("record")
    if kind == "offset_commit":
        value = record.offset_commit
        group = groups.setdefault(value.group_id, ConsumerGroup(value.group_id))
        group.offsets[(value.topic, value.partition)] = CommittedOffset(
            value.offset, value.metadata, value.commit_timestamp_ms
        )
    elif kind == "offsets_deleted":
        deleted = record.offsets_deleted
        found = groups.get(deleted.group_id)
        if found is not None:
            drop_offsets(found, [(tps.topic, p) for tps in deleted.partitions
                                 for p in tps.partitions])
    elif kind == "group_deleted":
        groups.pop(record.group_deleted.group_id, None)
    elif kind == "snapshot":
        for group in groups.values():
            group.offsets.clear()
        for group_id in [g for g, group in groups.items() if not group.members]:
            del groups[group_id]
        for value in record.snapshot.offsets:
            group = groups.setdefault(value.group_id, ConsumerGroup(value.group_id))
            group.offsets[(value.topic, value.partition)] = CommittedOffset(
                value.offset, value.metadata, value.commit_timestamp_ms
            )


def drop_offsets(group: ConsumerGroup, partitions: Iterable[tuple[str, int]]) -> None:
    """Forget the group's committed offsets of `partitions` (OffsetDelete)."""
    for tp in partitions:
        group.offsets.pop(tp, None)
