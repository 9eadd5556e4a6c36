"""Kafka protocol: Produce, Fetch, ListOffsets, OffsetForLeaderEpoch, InitProducerId.

Both listeners share one data path: Kafka's RecordBatch v2 is Raftka's stored format, so a
Kafka producer's batch is validated and stored as it came, and a Kafka consumer's fetch
returns the stored bytes untouched: large ones straight from the segment files by sendfile
(broker/kafka/zero_copy.py).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from raftka.broker import metadata_view
from raftka.broker.core import BrokerCore
from raftka.broker.errors import to_error
from raftka.broker.fetch_path import close_slices
from raftka.broker.kafka.admin_handlers import kafka_brokers
from raftka.broker.kafka.codec import Request, field, timeout_ms
from raftka.broker.kafka.responder import DeferredValues
from raftka.broker.kafka.zero_copy import SplicedResponse, records_value
from raftka.proto.raftka.v1 import broker_pb2, common_pb2

Code = common_pb2.ErrorCode


async def produce(core: BrokerCore, request: Request) -> dict[str, Any] | DeferredValues | None:
    body = request.body
    if field(body, "transactional_id"):
        return _produce_refused(body, Code.UNSUPPORTED_VERSION,
                                "transactions are not supported")
    acks = int(body.acks)
    produce_timeout_ms = timeout_ms(field(body, "timeout"))
    items = [broker_pb2.PartitionProduceData(topic=topic.name, partition=p.index,
                                             record_batches=bytes(p.records or b""))
             for topic in body.topic_data for p in topic.partition_data]
    replies_when_acked = await core.produce_path.append_many(items, acks, produce_timeout_ms)
    if acks == 0:
        await replies_when_acked  # ready at once: nothing waits for acks=0
        return None
    # Appended: the connection may read its next request while these wait for their acks.
    # Only the listener's name is kept, not the request: its records would stay in memory
    # for as long as the acks take.
    return DeferredValues(_produce_response(core, request.listener, replies_when_acked))


async def _produce_response(core: BrokerCore, listener: str,
                            replies_when_acked: Awaitable[list[Any]]) -> dict[str, Any]:
    replies = await replies_when_acked
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for reply in replies:
        part: dict[str, Any] = {
            "index": reply.partition, "error_code": reply.error_code,
            "base_offset": reply.base_offset, "log_start_offset": reply.log_start_offset,
            "record_errors": [], "error_message": reply.error_message or None}
        if reply.error_code == Code.NOT_LEADER_OR_FOLLOWER and reply.leader_id >= 0:
            part["current_leader"] = {"leader_id": reply.leader_id,
                                      "leader_epoch": reply.leader_epoch}
        by_topic.setdefault(reply.topic, []).append(part)
    return {"throttle_time": 0, "responses": [
        {"name": name, "partition_responses": parts} for name, parts in by_topic.items()],
        "node_endpoints": leader_endpoints(core, replies, listener)}


def leader_endpoints(core: BrokerCore, replies: list[Any], listener: str) -> list[dict[str, Any]]:
    """KIP-951 NodeEndpoints (Produce v10+): the Kafka addresses, for the client's listener,
    of the live leaders that NOT_LEADER_OR_FOLLOWER answers name, so the client retries
    there without a Metadata round trip. Older versions drop the field when encoding."""
    named = set(metadata_view.named_leaders(replies))
    if not named:
        return []
    return [b for b in kafka_brokers(core.image, listener) if b["node_id"] in named]


def _produce_refused(body: Any, code: int, message: str) -> dict[str, Any]:
    return {"throttle_time": 0, "responses": [
        {"name": topic.name, "partition_responses": [
            {"index": p.index, "error_code": code, "base_offset": -1, "record_errors": [],
             "error_message": message} for p in topic.partition_data]}
        for topic in body.topic_data]}


async def fetch(core: BrokerCore, request: Request) -> SplicedResponse:
    body = request.body
    replica_id = int(field(body, "replica_id", -1) if field(body, "replica_id") is not None
                     else -1)
    if replica_id >= 0:  # brokers replicate over gRPC; this door is for clients
        replica_id = -1
    proto_request = broker_pb2.FetchRequest(
        replica_id=-1, max_wait_ms=timeout_ms(field(body, "max_wait"), 500),
        min_bytes=int(body.min_bytes), max_bytes=int(field(body, "max_bytes", 52428800)),
        partitions=[broker_pb2.FetchPartition(
            topic=topic.topic, partition=p.partition, fetch_offset=p.fetch_offset,
            partition_max_bytes=p.partition_max_bytes,
            current_leader_epoch=int(field(p, "current_leader_epoch", -1)),
            last_fetched_epoch=-1)
            for topic in body.topics for p in topic.partitions])
    response, slices = await core.fetch_path.fetch_slices(proto_request)
    spliced = SplicedResponse({})
    try:
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for index, item in enumerate(response.partitions):
            by_topic.setdefault(item.topic, []).append({
                "partition_index": item.partition, "error_code": item.error_code,
                "high_watermark": item.high_watermark,
                "last_stable_offset": item.high_watermark,
                "log_start_offset": item.log_start_offset, "aborted_transactions": [],
                "preferred_read_replica": -1,
                "current_leader": {"leader_id": item.leader_id,
                                   "leader_epoch": item.leader_epoch},
                "records": records_value(spliced, slices.pop(index, None))
                or item.record_batches})
    except BaseException:
        spliced.close()
        close_slices(slices)
        raise
    spliced.values.update({"throttle_time": 0, "error_code": 0, "session_id": 0, "responses": [
        {"topic": name, "partitions": parts} for name, parts in by_topic.items()]})
    return spliced


async def list_offsets(core: BrokerCore, request: Request) -> dict[str, Any]:
    proto_request = broker_pb2.ListOffsetsRequest(partitions=[
        broker_pb2.ListOffsetsPartition(topic=topic.name, partition=p.partition_index,
                                        timestamp_ms=p.timestamp)
        for topic in request.body.topics for p in topic.partitions])
    response = core.fetch_path.list_offsets(proto_request)
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for item in response.partitions:
        partition = core.replica_manager.partitions.get(
            _tp(item.topic, item.partition))
        by_topic.setdefault(item.topic, []).append({
            "partition_index": item.partition, "error_code": item.error_code,
            "timestamp": item.timestamp_ms, "offset": item.offset,
            "leader_epoch": partition.leader_epoch if partition is not None else -1})
    return {"throttle_time": 0, "topics": [
        {"name": name, "partitions": parts} for name, parts in by_topic.items()]}


def _tp(topic: str, partition: int) -> Any:
    from raftka.broker.partition import TopicPartition

    return TopicPartition(topic, partition)


async def offset_for_leader_epoch(core: BrokerCore, request: Request) -> dict[str, Any]:
    proto_request = broker_pb2.OffsetForLeaderEpochRequest(partitions=[
        broker_pb2.OffsetForLeaderEpochPartition(
            topic=topic.topic, partition=p.partition,
            current_leader_epoch=int(field(p, "current_leader_epoch", -1)),
            leader_epoch=p.leader_epoch)
        for topic in request.body.topics for p in topic.partitions])
    response = core.fetch_path.offset_for_leader_epoch(proto_request)
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for item in response.partitions:
        by_topic.setdefault(item.topic, []).append({
            "error_code": item.error_code, "partition": item.partition,
            "leader_epoch": item.leader_epoch, "end_offset": item.end_offset})
    return {"throttle_time": 0, "topics": [
        {"topic": name, "partitions": parts} for name, parts in by_topic.items()]}


async def init_producer_id(core: BrokerCore, request: Request) -> dict[str, Any]:
    if field(request.body, "transactional_id"):
        return {"throttle_time": 0, "error_code": Code.UNSUPPORTED_VERSION,
                "producer_id": -1, "producer_epoch": -1}
    try:
        producer_id = await core.producer_ids.next_id()
    except Exception as exc:
        code, _ = to_error(exc)
        return {"throttle_time": 0, "error_code": code, "producer_id": -1,
                "producer_epoch": -1}
    return {"throttle_time": 0, "error_code": 0, "producer_id": producer_id,
            "producer_epoch": 0}
