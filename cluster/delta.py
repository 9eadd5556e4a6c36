"""Applying metadata records to an image: the one place metadata state changes.

How it works: a MetadataDelta starts from an image, replays records in order (each record sees
the effect of the ones before it), and `apply()` returns the next image, reusing every broker,
topic and mapping that no record touched. Records are facts that the controller validated;
a record that no longer fits (e.g. a change to a topic deleted meanwhile) is skipped, the same
way on every node, so replay stays deterministic.

Snapshots are the image written back as records (`image_to_snapshot`), so one code path
rebuilds state from either the log or a snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from types import MappingProxyType

from raftka.cluster import acl as acl_model
from raftka.cluster.acl import AclBinding
from raftka.cluster.image import (
    EMPTY_IMAGE,
    NO_LEADER,
    BrokerRegistration,
    MetadataImage,
    PartitionRegistration,
    TopicImage,
)
from raftka.cluster.records import (
    SNAPSHOT_FORMAT_VERSION,
    MetadataFormatError,
    access_control_entry,
    decode_batch,
    user_scram_credential,
)
from raftka.cluster.records import partition as partition_record
from raftka.cluster.records import register_broker as register_broker_record
from raftka.cluster.records import topic as topic_record
from raftka.cluster.scram import ScramCredential
from raftka.proto.raftka.v1 import metadata_pb2

log = logging.getLogger("raftka.metadata")


class MetadataDelta:
    def __init__(self, image: MetadataImage) -> None:
        self._image = image
        self._offset = image.offset
        self._cluster_id = image.cluster_id
        self._brokers: dict[int, BrokerRegistration] | None = None
        self._topics: dict[str, TopicImage] | None = None
        self._names_by_id: dict[str, str] | None = None
        self._next_producer_id = image.next_producer_id
        self._timestamp_ms = image.last_timestamp_ms
        self._credentials: dict[tuple[str, str], ScramCredential] | None = None
        self._acls: dict[str, AclBinding] | None = None

    # --------------------------------------------------------------- copy on first write
    def _brokers_w(self) -> dict[int, BrokerRegistration]:
        if self._brokers is None:
            self._brokers = dict(self._image.brokers)
        return self._brokers

    def _topics_w(self) -> dict[str, TopicImage]:
        if self._topics is None:
            self._topics = dict(self._image.topics)
        return self._topics

    def _names_w(self) -> dict[str, str]:
        if self._names_by_id is None:
            self._names_by_id = dict(self._image.topic_names_by_id)
        return self._names_by_id

    def _brokers_r(self) -> dict[int, BrokerRegistration] | MappingProxyType:
        return self._brokers if self._brokers is not None else self._image.brokers  # type: ignore[return-value]

    def _topic_by_id(self, topic_id: str) -> TopicImage | None:
        names = (
            self._names_by_id if self._names_by_id is not None else self._image.topic_names_by_id
        )
        topics = self._topics if self._topics is not None else self._image.topics
        name = names.get(topic_id)
        return topics.get(name) if name is not None else None

    # ------------------------------------------------------------------------- replay
    def replay_batch(self, batch: metadata_pb2.MetadataBatch) -> None:
        self._timestamp_ms = max(self._timestamp_ms, batch.timestamp_ms)
        for record in batch.records:
            self.replay(record)

    def replay(self, record: metadata_pb2.MetadataRecord) -> None:
        self._offset += 1
        kind = record.WhichOneof("record")
        handler = getattr(self, f"_replay_{kind}", None)
        if handler is None:
            raise MetadataFormatError(f"unknown metadata record kind {kind!r}")
        handler(getattr(record, kind))

    def _replay_noop(self, _: metadata_pb2.NoOpRecord) -> None:
        pass

    def _replay_cluster_id(self, record: metadata_pb2.ClusterIdRecord) -> None:
        if not self._cluster_id:
            self._cluster_id = record.cluster_id

    def _replay_register_broker(self, record: metadata_pb2.RegisterBrokerRecord) -> None:
        endpoint = record.endpoint
        self._brokers_w()[record.broker_id] = BrokerRegistration(
            broker_id=record.broker_id,
            incarnation_id=record.incarnation_id,
            host=endpoint.host,
            port=endpoint.port,
            kafka_port=endpoint.kafka_port,
            kafka_listeners=tuple((k.name, k.host, k.port) for k in endpoint.kafka_listeners),
            grpc_listeners=tuple((g.name, g.host, g.port) for g in endpoint.grpc_listeners),
            voter=record.voter,
            pid=record.pid,
            fenced=record.fenced,
            epoch=record.broker_epoch or self._offset,
            max_replicas=record.max_replicas,
            replication_port=endpoint.replication_port,
        )

    def _set_fenced(self, broker_id: int, fenced: bool) -> None:
        current = self._brokers_r().get(broker_id)
        if current is None:
            log.warning("skipping fence change of unknown broker %d", broker_id)
            return
        if current.fenced != fenced:
            self._brokers_w()[broker_id] = replace(current, fenced=fenced)

    def _replay_fence_broker(self, record: metadata_pb2.FenceBrokerRecord) -> None:
        self._set_fenced(record.broker_id, True)

    def _replay_unfence_broker(self, record: metadata_pb2.UnfenceBrokerRecord) -> None:
        self._set_fenced(record.broker_id, False)

    def _replay_topic(self, record: metadata_pb2.TopicRecord) -> None:
        topics = self._topics_w()
        if record.name in topics:
            log.warning("skipping duplicate topic record for %s", record.name)
            return
        topics[record.name] = TopicImage(
            name=record.name,
            topic_id=record.topic_id,
            configs=MappingProxyType(dict(record.configs)),
            internal=record.internal,
            partitions=(),
        )
        self._names_w()[record.topic_id] = record.name

    def _replay_partition(self, record: metadata_pb2.PartitionRecord) -> None:
        topic = self._topic_by_id(record.topic_id)
        if topic is None or record.partition != len(topic.partitions):
            log.warning("skipping partition record %s-%d", record.topic_id, record.partition)
            return
        registration = PartitionRegistration(
            replicas=tuple(record.replicas),
            isr=tuple(record.isr),
            leader=record.leader,
            leader_epoch=record.leader_epoch,
            partition_epoch=record.partition_epoch,
        )
        self._topics_w()[topic.name] = replace(topic, partitions=(*topic.partitions, registration))

    def _replay_partition_change(self, record: metadata_pb2.PartitionChangeRecord) -> None:
        topic = self._topic_by_id(record.topic_id)
        if topic is None or not 0 <= record.partition < len(topic.partitions):
            log.warning(
                "skipping change of unknown partition %s-%d", record.topic_id, record.partition
            )
            return
        current = topic.partitions[record.partition]
        leader = record.leader if record.HasField("leader") else current.leader
        isr = tuple(record.isr) if record.has_isr else current.isr
        changed = PartitionRegistration(
            replicas=current.replicas,
            isr=isr,
            leader=leader,
            leader_epoch=current.leader_epoch + (1 if leader != current.leader else 0),
            partition_epoch=current.partition_epoch + 1,
        )
        partitions = list(topic.partitions)
        partitions[record.partition] = changed
        self._topics_w()[topic.name] = replace(topic, partitions=tuple(partitions))

    def _replay_topic_config(self, record: metadata_pb2.TopicConfigRecord) -> None:
        topic = self._topic_by_id(record.topic_id)
        if topic is None:
            log.warning("skipping config change of unknown topic %s", record.topic_id)
            return
        self._topics_w()[topic.name] = replace(
            topic, configs=MappingProxyType(dict(record.configs))
        )

    def _replay_remove_topic(self, record: metadata_pb2.RemoveTopicRecord) -> None:
        topic = self._topic_by_id(record.topic_id)
        if topic is None:
            return
        del self._topics_w()[topic.name]
        del self._names_w()[record.topic_id]

    def _replay_producer_ids(self, record: metadata_pb2.ProducerIdsRecord) -> None:
        self._next_producer_id = max(self._next_producer_id, record.next_producer_id)

    def _credentials_w(self) -> dict[tuple[str, str], ScramCredential]:
        if self._credentials is None:
            self._credentials = dict(self._image.scram_credentials)
        return self._credentials

    def _acls_w(self) -> dict[str, AclBinding]:
        if self._acls is None:
            self._acls = dict(self._image.acls)
        return self._acls

    def _replay_user_scram_credential(
        self, record: metadata_pb2.UserScramCredentialRecord
    ) -> None:
        self._credentials_w()[(record.name, record.mechanism)] = ScramCredential(
            mechanism=record.mechanism, salt=record.salt, iterations=record.iterations,
            stored_key=record.stored_key, server_key=record.server_key)

    def _replay_remove_user_scram_credential(
        self, record: metadata_pb2.RemoveUserScramCredentialRecord
    ) -> None:
        self._credentials_w().pop((record.name, record.mechanism), None)

    def _replay_access_control_entry(self, record: metadata_pb2.AccessControlEntryRecord) -> None:
        try:
            binding = AclBinding(
                resource_type=acl_model.ResourceType(record.resource_type),
                resource_name=record.resource_name,
                pattern_type=acl_model.PatternType(record.pattern_type),
                principal=record.principal, host=record.host,
                operation=acl_model.Operation(record.operation),
                permission=acl_model.Permission(record.permission))
        except ValueError as exc:
            raise MetadataFormatError(f"ACL record {record.id}: {exc}") from exc
        self._acls_w()[record.id] = binding

    def _replay_remove_access_control_entry(
        self, record: metadata_pb2.RemoveAccessControlEntryRecord
    ) -> None:
        self._acls_w().pop(record.id, None)

    # -------------------------------------------------------------------------- apply
    def apply(self) -> MetadataImage:
        image = self._image
        return MetadataImage(
            offset=self._offset,
            cluster_id=self._cluster_id,
            brokers=image.brokers if self._brokers is None else MappingProxyType(self._brokers),
            topics=image.topics if self._topics is None else MappingProxyType(self._topics),
            topic_names_by_id=(
                image.topic_names_by_id
                if self._names_by_id is None
                else MappingProxyType(self._names_by_id)
            ),
            next_producer_id=self._next_producer_id,
            last_timestamp_ms=self._timestamp_ms,
            scram_credentials=(image.scram_credentials if self._credentials is None
                               else MappingProxyType(self._credentials)),
            acls=image.acls if self._acls is None else MappingProxyType(self._acls),
        )


def apply_batch(image: MetadataImage, batch: metadata_pb2.MetadataBatch) -> MetadataImage:
    """The image after `batch`; the same image object when the batch is stale (built on an
    older image by a controller replaced meanwhile), so every node skips it alike."""
    if batch.base_offset and batch.base_offset != image.offset + 1:
        return image
    delta = MetadataDelta(image)
    delta.replay_batch(batch)
    return delta.apply()


def apply_encoded_batch(image: MetadataImage, data: bytes) -> MetadataImage:
    return apply_batch(image, decode_batch(data))


# --------------------------------------------------------------------------- snapshots
def image_to_records(image: MetadataImage) -> list[metadata_pb2.MetadataRecord]:
    """Records that rebuild `image` from empty (broker epochs and partition epochs kept)."""
    out: list[metadata_pb2.MetadataRecord] = []
    if image.cluster_id:
        out.append(
            metadata_pb2.MetadataRecord(
                cluster_id=metadata_pb2.ClusterIdRecord(cluster_id=image.cluster_id)
            )
        )
    for broker in sorted(image.brokers.values(), key=lambda b: b.broker_id):
        record = register_broker_record(
            broker.broker_id,
            broker.incarnation_id,
            broker.host,
            broker.port,
            broker.kafka_port,
            voter=broker.voter,
            pid=broker.pid,
            fenced=broker.fenced,
            kafka_listeners=broker.kafka_listeners,
            grpc_listeners=broker.grpc_listeners,
            max_replicas=broker.max_replicas,
            replication_port=broker.replication_port,
        )
        record.register_broker.broker_epoch = broker.epoch
        out.append(record)
    for topic in sorted(image.topics.values(), key=lambda t: t.name):
        out.append(topic_record(topic.name, topic.topic_id, topic.configs, internal=topic.internal))
        for index, p in enumerate(topic.partitions):
            out.append(
                partition_record(
                    topic.topic_id,
                    index,
                    p.replicas,
                    p.isr,
                    p.leader,
                    p.leader_epoch,
                    p.partition_epoch,
                )
            )
    if image.next_producer_id:
        out.append(
            metadata_pb2.MetadataRecord(
                producer_ids=metadata_pb2.ProducerIdsRecord(next_producer_id=image.next_producer_id)
            )
        )
    for (name, _), credential in sorted(image.scram_credentials.items()):
        out.append(user_scram_credential(name, credential))
    for acl_id, acl in sorted(image.acls.items()):
        out.append(access_control_entry(acl_id, acl))
    return out


def encode_snapshot(image: MetadataImage) -> bytes:
    snapshot = metadata_pb2.MetadataSnapshot(
        version=SNAPSHOT_FORMAT_VERSION,
        offset=image.offset,
        records=image_to_records(image),
        timestamp_ms=image.last_timestamp_ms,
    )
    return snapshot.SerializeToString()


def decode_snapshot(data: bytes) -> MetadataImage:
    snapshot = metadata_pb2.MetadataSnapshot()
    snapshot.ParseFromString(data)
    if snapshot.version > SNAPSHOT_FORMAT_VERSION:
        raise MetadataFormatError(f"snapshot version {snapshot.version} is too new")
    delta = MetadataDelta(EMPTY_IMAGE)
    for record in snapshot.records:
        delta.replay(record)
    image = delta.apply()
    return replace(image, offset=snapshot.offset, last_timestamp_ms=snapshot.timestamp_ms)


def replay_all(
    batches: Iterable[metadata_pb2.MetadataBatch], image: MetadataImage = EMPTY_IMAGE
) -> MetadataImage:
    for batch in batches:
        image = apply_batch(image, batch)
    return image


__all__ = [
    "NO_LEADER",
    "MetadataDelta",
    "apply_batch",
    "apply_encoded_batch",
    "decode_snapshot",
    "encode_snapshot",
    "image_to_records",
    "replay_all",
]
