"""Typed helpers over metadata_pb2: building records and encoding batches. No policy here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from raftka.cluster.acl import AclBinding
from raftka.cluster.scram import ScramCredential
from raftka.proto.raftka.v1 import common_pb2, metadata_pb2

BATCH_FORMAT_VERSION = 1
SNAPSHOT_FORMAT_VERSION = 1

MetadataRecord = metadata_pb2.MetadataRecord
MetadataBatch = metadata_pb2.MetadataBatch


class MetadataFormatError(ValueError):
    """Bytes in the metadata log that this version cannot read."""


def encode_batch(
    records: Iterable[MetadataRecord], *, timestamp_ms: int, controller_id: int,
    base_offset: int = 0,
) -> bytes:
    """`base_offset`: the offset its first record must get (built on an image at
    base_offset - 1); 0 applies the batch wherever it lands."""
    batch = MetadataBatch(
        version=BATCH_FORMAT_VERSION,
        timestamp_ms=timestamp_ms,
        controller_id=controller_id,
        records=list(records),
        base_offset=base_offset,
    )
    return batch.SerializeToString()


def decode_batch(data: bytes) -> MetadataBatch:
    batch = MetadataBatch()
    try:
        batch.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError, a private subclass
        raise MetadataFormatError(f"undecodable metadata batch: {exc}") from exc
    if batch.version > BATCH_FORMAT_VERSION:
        raise MetadataFormatError(
            f"metadata batch version {batch.version} is newer than this broker "
            f"understands ({BATCH_FORMAT_VERSION}); upgrade the broker"
        )
    return batch


def cluster_id(value: str) -> MetadataRecord:
    return MetadataRecord(cluster_id=metadata_pb2.ClusterIdRecord(cluster_id=value))


def register_broker(
    broker_id: int,
    incarnation_id: str,
    host: str,
    port: int,
    kafka_port: int,
    *,
    voter: bool,
    pid: int,
    fenced: bool = True,
    kafka_listeners: Sequence[tuple[str, str, int]] = (),
    grpc_listeners: Sequence[tuple[str, str, int]] = (),
    max_replicas: int = 0,
    replication_port: int = 0,
) -> MetadataRecord:
    return MetadataRecord(
        register_broker=metadata_pb2.RegisterBrokerRecord(
            broker_id=broker_id,
            incarnation_id=incarnation_id,
            endpoint=common_pb2.BrokerEndpoint(
                broker_id=broker_id, host=host, port=port, kafka_port=kafka_port,
                kafka_listeners=[common_pb2.NamedEndpoint(name=name, host=h, port=p)
                                 for name, h, p in kafka_listeners],
                grpc_listeners=[common_pb2.NamedEndpoint(name=name, host=h, port=p)
                                for name, h, p in grpc_listeners],
                replication_port=replication_port,
            ),
            voter=voter,
            pid=pid,
            fenced=fenced,
            max_replicas=max_replicas,
        )
    )


def fence_broker(broker_id: int) -> MetadataRecord:
    return MetadataRecord(fence_broker=metadata_pb2.FenceBrokerRecord(broker_id=broker_id))


def unfence_broker(broker_id: int) -> MetadataRecord:
    return MetadataRecord(unfence_broker=metadata_pb2.UnfenceBrokerRecord(broker_id=broker_id))


def topic(
    name: str, topic_id: str, configs: Mapping[str, str], *, internal: bool = False
) -> MetadataRecord:
    return MetadataRecord(
        topic=metadata_pb2.TopicRecord(
            name=name, topic_id=topic_id, configs=dict(configs), internal=internal
        )
    )


def partition(
    topic_id: str,
    index: int,
    replicas: Sequence[int],
    isr: Sequence[int],
    leader: int,
    leader_epoch: int = 0,
    partition_epoch: int = 0,
) -> MetadataRecord:
    return MetadataRecord(
        partition=metadata_pb2.PartitionRecord(
            topic_id=topic_id,
            partition=index,
            replicas=list(replicas),
            isr=list(isr),
            leader=leader,
            leader_epoch=leader_epoch,
            partition_epoch=partition_epoch,
        )
    )


def partition_change(
    topic_id: str, index: int, *, leader: int | None = None, isr: Sequence[int] | None = None
) -> MetadataRecord:
    change = metadata_pb2.PartitionChangeRecord(topic_id=topic_id, partition=index)
    if leader is not None:
        change.leader = leader
    if isr is not None:
        change.has_isr = True
        change.isr.extend(isr)
    return MetadataRecord(partition_change=change)


def remove_topic(topic_id: str) -> MetadataRecord:
    return MetadataRecord(remove_topic=metadata_pb2.RemoveTopicRecord(topic_id=topic_id))


def producer_ids(next_producer_id: int) -> MetadataRecord:
    return MetadataRecord(
        producer_ids=metadata_pb2.ProducerIdsRecord(next_producer_id=next_producer_id)
    )


def user_scram_credential(name: str, credential: ScramCredential) -> MetadataRecord:
    return MetadataRecord(user_scram_credential=metadata_pb2.UserScramCredentialRecord(
        name=name, mechanism=credential.mechanism, salt=credential.salt,
        stored_key=credential.stored_key, server_key=credential.server_key,
        iterations=credential.iterations))


def remove_user_scram_credential(name: str, mechanism: str) -> MetadataRecord:
    return MetadataRecord(remove_user_scram_credential=metadata_pb2.RemoveUserScramCredentialRecord(
        name=name, mechanism=mechanism))


def access_control_entry(acl_id: str, acl: AclBinding) -> MetadataRecord:
    return MetadataRecord(access_control_entry=metadata_pb2.AccessControlEntryRecord(
        id=acl_id, resource_type=int(acl.resource_type), resource_name=acl.resource_name,
        pattern_type=int(acl.pattern_type), principal=acl.principal, host=acl.host,
        operation=int(acl.operation), permission=int(acl.permission)))


def remove_access_control_entry(acl_id: str) -> MetadataRecord:
    return MetadataRecord(
        remove_access_control_entry=metadata_pb2.RemoveAccessControlEntryRecord(id=acl_id))


def noop() -> MetadataRecord:
    return MetadataRecord(noop=metadata_pb2.NoOpRecord())
