"""Builders for controller tests: an image with registered, unfenced brokers."""

from __future__ import annotations

import itertools

from raftka.cluster import controller, records
from raftka.cluster.controller import ControllerSettings
from raftka.cluster.delta import apply_batch
from raftka.cluster.image import EMPTY_IMAGE, MetadataImage
from raftka.cluster.records import MetadataBatch
from raftka.proto.raftka.v1 import admin_pb2


def apply_records(image: MetadataImage, recs) -> MetadataImage:
    return apply_batch(image, MetadataBatch(version=1, timestamp_ms=1, records=list(recs)))


def image_with_brokers(*broker_ids: int, fenced: tuple[int, ...] = ()) -> MetadataImage:
    recs = [records.cluster_id("test-cluster")]
    for b in broker_ids:
        recs.append(
            records.register_broker(
                b, f"inc-{b}", "127.0.0.1", 9000 + b, 0, voter=True, pid=100 + b
            )
        )
        if b not in fenced:
            recs.append(records.unfence_broker(b))
    return apply_records(EMPTY_IMAGE, recs)


def id_sequence(prefix: str = "t"):
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter)}"


def create(
    image: MetadataImage,
    name: str,
    partitions: int = 1,
    rf: int = 1,
    configs: dict[str, str] | None = None,
    settings: ControllerSettings | None = None,
):
    request = admin_pb2.CreateTopicsRequest(
        topics=[
            admin_pb2.NewTopic(
                name=name, num_partitions=partitions, replication_factor=rf, configs=configs or {}
            )
        ]
    )
    result = controller.create_topics(
        image, request, settings or ControllerSettings(), id_sequence(name + "-id")
    )
    return result, apply_records(image, result.records)
