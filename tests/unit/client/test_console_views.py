"""The console's page data from protobuf replies, without a cluster."""

from __future__ import annotations

import json

from raftka.client.cluster_view import BrokerView, ClusterSnapshot, PartitionView
from raftka.client.console import views
from raftka.client.console.backend import BrowseRequest, ConsoleInputError
from raftka.proto.raftka.v1 import admin_pb2, broker_pb2, common_pb2


def test_values_show_as_json_text_hex_or_null():
    assert views.render_bytes(None)["kind"] == "null"
    shown = views.render_bytes(b'{"a": [1, 2]}')
    assert shown["kind"] == "json" and json.loads(shown["text"]) == {"a": [1, 2]}
    assert "\n" in shown["text"]  # pretty-printed
    assert views.render_bytes(b"42")["kind"] == "text"  # a bare JSON number is just text
    assert views.render_bytes(b"hello")["text"] == "hello"
    binary = views.render_bytes(b"\xff\x00\x01")
    assert binary["kind"] == "binary" and binary["hex"] == "ff 00 01" and binary["text"] is None


def test_large_values_are_cut_to_the_preview_limit():
    big = b"x" * (views.PREVIEW_MAX_BYTES + 10)
    shown = views.render_bytes(big)
    assert shown["truncated"] and shown["size"] == len(big)
    assert len(shown["text"]) == views.PREVIEW_MAX_BYTES


def test_a_record_keeps_null_keys_and_headers_apart_from_empty_ones():
    record = common_pb2.Record(value=b"", offset=7, timestamp_ms=1000,
                               headers=[common_pb2.Header(key="h")])
    shown = views.record_view(record, 2)
    assert shown["key"]["kind"] == "null" and shown["value"]["kind"] == "text"
    assert shown["headers"][0]["value"]["kind"] == "null"
    assert (shown["partition"], shown["offset"]) == (2, 7)


def cluster(fenced: tuple[int, ...] = ()) -> admin_pb2.DescribeClusterResponse:
    return admin_pb2.DescribeClusterResponse(
        cluster_id="cid", controller_id=1, metadata_offset=9,
        brokers=[admin_pb2.BrokerStatus(
            endpoint=common_pb2.BrokerEndpoint(broker_id=i, host="127.0.0.1", port=9000 + i,
                                               kafka_port=9100 + i),
            fenced=i in fenced, voter=i < 3, pid=100 + i) for i in (1, 2, 3)])


def metadata() -> broker_pb2.MetadataResponse:
    return broker_pb2.MetadataResponse(topics=[broker_pb2.TopicMetadata(name="t", partitions=[
        broker_pb2.PartitionMetadata(partition=0, leader_id=1, replicas=[1, 2], isr=[1, 2]),
        broker_pb2.PartitionMetadata(partition=1, leader_id=2, replicas=[2, 3], isr=[2]),
        broker_pb2.PartitionMetadata(partition=2, leader_id=-1, replicas=[3], isr=[]),
    ])])


def test_overview_counts_brokers_quorum_and_partitions_needing_attention():
    o = views.overview(cluster(fenced=(3,)), metadata())
    assert (o["alive"], o["fenced"], o["controller"]) == (2, 1, 1)
    assert o["quorum"] == {"leader": 1, "voters": [1, 2], "observers": [3], "applied_offset": 9}
    assert o["under_replicated"] == [{"topic": "t", "partition": 1}]
    assert o["offline"] == [{"topic": "t", "partition": 2}]
    first = o["brokers"][0]
    assert first["controller"] and first["partitions_led"] == 1 and first["replicas"] == 1
    assert {"protocol": "kafka", "name": "PLAINTEXT", "address": "127.0.0.1:9101"} in (
        first["listeners"])


def test_topic_list_marks_under_replicated_and_offline():
    listing = admin_pb2.TopicListing(name="t", num_partitions=3, replication_factor=2)
    (row,) = views.topic_list([listing], metadata())
    assert (row["under_replicated"], row["offline"]) == (1, 1)


def test_topic_detail_leaves_unknown_offsets_empty():
    description = admin_pb2.TopicDescription(name="t", partitions=[
        admin_pb2.PartitionDescription(partition=0, leader_id=1, replicas=[1], isr=[1],
                                       log_start_offset=3, high_watermark=10),
        admin_pb2.PartitionDescription(partition=1, leader_id=2, replicas=[2], isr=[2],
                                       log_start_offset=-1, high_watermark=-1),
    ])
    detail = views.topic_detail(description)
    assert detail["partitions"][0]["records"] == 7 and detail["records"] == 7
    assert detail["partitions"][1]["high_watermark"] is None


def snap(leader: int, isr: tuple[int, ...], fenced: bool = False,
         controller: int = 1) -> ClusterSnapshot:
    return ClusterSnapshot("cid", controller, 1, (
        BrokerView(1, "a:1", False, True, None), BrokerView(2, "a:2", fenced, True, None)),
        (PartitionView("t-x", 0, leader, 3, (1, 2), isr),))


def test_the_live_log_numbers_events_and_times_a_leaderless_partition():
    live = views.LiveLog()
    (first,) = live.advance(snap(2, (1, 2)), 1_000)
    assert first.kind == "WATCHING" and first.seq == 1
    kinds = [e.kind for e in live.advance(snap(-1, (1,), fenced=True), 2_000)]
    assert kinds == ["BROKER", "LEADER", "ISR"]
    (moved,) = [e for e in live.advance(snap(1, (1,), fenced=True), 2_750) if e.kind == "LEADER"]
    assert moved.text.endswith("no leader for 750 ms") and "t-x-0" in moved.text
    assert [e.seq for e in live.since(2)] == [3, 4, 5]
    assert live.state()["brokers"][1]["fenced"] is True


def test_browse_requests_are_checked():
    for bad in (BrowseRequest("t", 0, "middle"), BrowseRequest("t", 0, "earliest", limit=0),
                BrowseRequest("t", -1, "earliest")):
        try:
            bad.validate()
        except ConsoleInputError:
            continue
        raise AssertionError(f"{bad} passed")
