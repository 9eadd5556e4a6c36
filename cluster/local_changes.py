"""What a metadata change means for one broker: partitions to (re)configure or to delete.

Pure diff of two images (Kafka's TopicDelta.localChanges). Topics whose image object did not
change are skipped by identity, so a broker's work per metadata change is proportional to what
changed, not to the cluster's size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from raftka.cluster.image import MetadataImage, PartitionRegistration


@dataclass(frozen=True, slots=True)
class HostedPartition:
    topic: str
    partition: int
    topic_id: str
    registration: PartitionRegistration
    configs: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class RemovedPartition:
    topic: str
    partition: int
    topic_id: str


@dataclass(frozen=True, slots=True)
class LocalChanges:
    # Hosted here, new or with a changed registration or configs.
    changed: list[HostedPartition] = field(default_factory=list)
    # No longer hosted here (topic deleted, or replaced by a new topic of the same name).
    removed: list[RemovedPartition] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.removed)


def local_changes(old: MetadataImage, new: MetadataImage, broker_id: int) -> LocalChanges:
    changes = LocalChanges()
    for name, topic in old.topics.items():
        current = new.topics.get(name)
        if current is topic:
            continue
        same_topic = current is not None and current.topic_id == topic.topic_id
        for index, registration in enumerate(topic.partitions):
            if broker_id not in registration.replicas:
                continue
            still_hosted = (
                same_topic
                and current is not None
                and index < len(current.partitions)
                and broker_id in current.partitions[index].replicas
            )
            if not still_hosted:
                changes.removed.append(RemovedPartition(name, index, topic.topic_id))
    for name, topic in new.topics.items():
        previous = old.topics.get(name)
        if previous is topic:
            continue
        same_topic = previous is not None and previous.topic_id == topic.topic_id
        for index, registration in enumerate(topic.partitions):
            if broker_id not in registration.replicas:
                continue
            unchanged = (
                same_topic
                and previous is not None
                and index < len(previous.partitions)
                and previous.partitions[index] == registration
                and previous.configs == topic.configs
            )
            if not unchanged:
                changes.changed.append(
                    HostedPartition(name, index, topic.topic_id, registration, topic.configs)
                )
    return changes


def hosted_partitions(image: MetadataImage, broker_id: int) -> list[HostedPartition]:
    """Every partition `broker_id` hosts in `image` (used at start-up and by tests)."""
    return local_changes(MetadataImage(), image, broker_id).changed
