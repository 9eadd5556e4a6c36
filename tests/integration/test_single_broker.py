"""One real broker process: the data path, restarts, crashes, and bad input."""

from __future__ import annotations

import os
import signal
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from raftka import Admin, Consumer, Producer
from raftka.client.consumer import TopicPartition
from raftka.client.errors import MessageTooLargeError, UnknownTopicOrPartitionError
from raftka.client.partitioner import partition_for_key
from raftka.proto.raftka.v1 import broker_pb2, broker_pb2_grpc, common_pb2
from raftka.records import decode_batches, encode_batch
from tests.harness import wait_for

pytestmark = pytest.mark.integration
Code = common_pb2.ErrorCode


def now() -> int:
    return int(time.time() * 1000)


def stub(cluster) -> broker_pb2_grpc.BrokerServiceStub:
    return broker_pb2_grpc.BrokerServiceStub(grpc.insecure_channel(cluster.brokers[1].address))


def read_all(
    bootstrap: str,
    topic: str,
    partitions: int = 1,
    expected: int | None = None,
    timeout_s: float = 10,
) -> dict[int, list]:
    consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    out: dict[int, list] = {p: [] for p in range(partitions)}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=200).items():
            out[tp.partition].extend(records)
        total = sum(len(v) for v in out.values())
        if expected is not None and total >= expected:
            break
        if expected is None and total and not consumer.poll(timeout_ms=300):
            break
    consumer.close()
    return out


def produce_raw(cluster, topic, batches: bytes = b"", records=(), acks=1, partition=0):
    request = broker_pb2.ProduceRequest(
        acks=acks,
        partitions=[
            broker_pb2.PartitionProduceData(
                topic=topic, partition=partition, record_batches=batches, records=list(records)
            )
        ],
    )
    return stub(cluster).Produce(request, timeout=10).partitions[0]


def test_keyed_records_keep_their_partition_and_order(broker):
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("orders", num_partitions=3)
    with Producer(broker.bootstrap, linger_ms=2) as producer:
        sent = [
            (key, producer.send("orders", f"{key}-{i}".encode(), key=key.encode()))
            for i in range(50)
            for key in ("alice", "bob", "carol")
        ]
        producer.flush()
    for key, future in sent:
        assert future.get(5).partition == partition_for_key(key.encode(), 3)
    by_partition = read_all(broker.bootstrap, "orders", 3, expected=150)
    for records in by_partition.values():
        for key in {r.key for r in records}:
            values = [r.value.decode() for r in records if r.key == key]
            assert values == [f"{key.decode()}-{i}" for i in range(50)]
            assert all(r.partition == partition_for_key(key, 3) for r in records if r.key == key)


def test_data_survives_kill_9_and_restart(broker):
    with Producer(broker.bootstrap, acks="all") as producer:
        for i in range(200):
            producer.send("durable", f"record-{i}".encode())
        producer.flush()
    node = broker.brokers[1]
    node.kill()
    node.start()
    broker.wait_ready()
    records = read_all(broker.bootstrap, "durable", expected=200)[0]
    assert [r.value for r in records] == [f"record-{i}".encode() for i in range(200)]
    with Producer(broker.bootstrap) as producer:
        assert producer.send("durable", b"after").get(10).offset == 200


def test_torn_tail_after_a_crash_is_cut_and_never_served(broker):
    with Producer(broker.bootstrap) as producer:
        for i in range(20):
            producer.send("torn", f"ok-{i}".encode()).get(10)
    node = broker.brokers[1]
    node.kill()
    segment_dir = node.data_dir / "logs" / "torn-0"
    segment = sorted(segment_dir.glob("*.log"))[-1]
    garbage = encode_batch([(None, b"never-acknowledged", [], 1)])[:40]
    with open(segment, "ab") as handle:
        handle.write(garbage)
    node.start()
    broker.wait_ready()
    records = read_all(broker.bootstrap, "torn", expected=20)[0]
    assert [r.value for r in records] == [f"ok-{i}".encode() for i in range(20)]
    assert "torn or corrupt" in node.log_text()
    with Producer(broker.bootstrap) as producer:
        assert producer.send("torn", b"next").get(10).offset == 20


def test_sigterm_flushes_and_exits_cleanly(broker):
    with Producer(broker.bootstrap) as producer:
        producer.send("clean", b"x").get(10)
    node = broker.brokers[1]
    assert node.stop() == 0
    assert "stopped cleanly" in node.log_text()
    node.start()
    broker.wait_ready()
    assert "torn or corrupt" not in node.log_text()
    assert [r.value for r in read_all(broker.bootstrap, "clean", expected=1)[0]] == [b"x"]


def test_oversized_batch_is_refused_with_its_size_and_the_limit(broker):
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("small", configs={"max.message.bytes": "1000"})
    reply = produce_raw(broker, "small", encode_batch([(None, b"x" * 5000, [], 0)], now_ms=now()))
    assert reply.error_code == Code.MESSAGE_TOO_LARGE
    assert "exceeds max.message.bytes (1000)" in reply.error_message
    assert "5" in reply.error_message.split("bytes")[0]
    with Producer(broker.bootstrap) as producer:
        with pytest.raises(MessageTooLargeError):
            producer.send("small", b"y" * 5000).get(10)
        assert producer.send("small", b"fits").get(10).offset == 0


def test_corrupt_and_malformed_produce_requests_store_nothing(broker):
    produce_raw(broker, "strict", records=[common_pb2.Record(value=b"first")])
    batch = bytearray(encode_batch([(None, b"payload", [], 0)], now_ms=now()))
    batch[-2] ^= 0xFF
    reply = produce_raw(broker, "strict", bytes(batch))
    assert reply.error_code == Code.CORRUPT_MESSAGE and "CRC32C" in reply.error_message
    reply = produce_raw(broker, "strict", bytes(batch[:30]))
    assert reply.error_code == Code.CORRUPT_MESSAGE
    both = produce_raw(
        broker,
        "strict",
        encode_batch([(None, b"a", [], 0)], now_ms=now()),
        records=[common_pb2.Record(value=b"b")],
    )
    assert both.error_code == Code.INVALID_REQUEST and "not both" in both.error_message
    assert produce_raw(broker, "strict").error_code == Code.INVALID_REQUEST
    bad_acks = produce_raw(broker, "strict", records=[common_pb2.Record(value=b"c")], acks=5)
    assert bad_acks.error_code == Code.INVALID_REQUIRED_ACKS
    bad_partition = produce_raw(
        broker, "strict", records=[common_pb2.Record(value=b"d")], partition=7
    )
    assert bad_partition.error_code == Code.UNKNOWN_TOPIC_OR_PARTITION
    bad_name = produce_raw(broker, "no spaces", records=[common_pb2.Record(value=b"e")])
    assert bad_name.error_code == Code.INVALID_TOPIC_EXCEPTION
    values = [r.value for r in read_all(broker.bootstrap, "strict", expected=1)[0]]
    assert values == [b"first"]


def test_unknown_topic_is_refused_when_auto_create_is_off(cluster_factory):
    cluster = cluster_factory(1, {"auto.create.topics.enable": "false"})
    cluster.start()
    cluster.wait_ready()
    reply = produce_raw(cluster, "ghost", records=[common_pb2.Record(value=b"x")])
    assert reply.error_code == Code.UNKNOWN_TOPIC_OR_PARTITION
    assert "auto.create.topics.enable is false" in reply.error_message
    with pytest.raises(UnknownTopicOrPartitionError):
        Producer(cluster.bootstrap).send("ghost", b"x")


def test_fetch_plain_records_and_out_of_range_offsets(broker):
    produce_raw(
        broker,
        "plain",
        records=[
            common_pb2.Record(
                key=b"k", value=b"v1", headers=[common_pb2.Header(key="h", value=b"1")]
            ),
            common_pb2.Record(value=b"v2", timestamp_ms=1_600_000_000_000),
        ],
    )
    request = broker_pb2.FetchRequest(
        replica_id=-1,
        decode_records=True,
        partitions=[
            broker_pb2.FetchPartition(
                topic="plain", partition=0, fetch_offset=1, current_leader_epoch=-1
            )
        ],
    )
    reply = stub(broker).Fetch(request, timeout=5).partitions[0]
    assert reply.error_code == Code.NONE and reply.high_watermark == 2
    assert [(r.offset, r.value, r.timestamp_ms) for r in reply.records] == [
        (1, b"v2", 1_600_000_000_000)
    ]
    assert len(decode_batches(reply.record_batches)) == 2  # stored batch, untouched
    request.partitions[0].fetch_offset = 99
    reply = stub(broker).Fetch(request, timeout=5).partitions[0]
    assert reply.error_code == Code.OFFSET_OUT_OF_RANGE and "[0, 2]" in reply.error_message


def test_long_poll_fetch_wakes_when_data_arrives(broker):
    produce_raw(broker, "poll", records=[common_pb2.Record(value=b"first")])

    def later() -> None:
        time.sleep(0.5)
        produce_raw(broker, "poll", records=[common_pb2.Record(value=b"second")])

    threading.Thread(target=later).start()
    request = broker_pb2.FetchRequest(
        replica_id=-1,
        max_wait_ms=20_000,
        min_bytes=1,
        decode_records=True,
        partitions=[
            broker_pb2.FetchPartition(
                topic="poll", partition=0, fetch_offset=1, current_leader_epoch=-1
            )
        ],
    )
    reply = stub(broker).Fetch(request, timeout=15).partitions[0]
    assert [r.value for r in reply.records] == [b"second"]


def test_list_offsets_earliest_latest_and_by_timestamp(broker):
    for ts in (1000, 2000, 3000):
        produce_raw(broker, "times", records=[common_pb2.Record(value=b"x", timestamp_ms=ts)])

    def lookup(spec: int) -> broker_pb2.ListOffsetsPartitionResponse:
        request = broker_pb2.ListOffsetsRequest(
            partitions=[
                broker_pb2.ListOffsetsPartition(topic="times", partition=0, timestamp_ms=spec)
            ]
        )
        return stub(broker).ListOffsets(request, timeout=5).partitions[0]

    assert (lookup(-2).offset, lookup(-1).offset) == (0, 3)
    assert (lookup(1500).offset, lookup(1500).timestamp_ms) == (1, 2000)
    assert lookup(9999).offset == -1


def test_health_and_reflection_are_served(broker):
    channel = grpc.insecure_channel(broker.brokers[1].address)
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="raftka.v1.BrokerService"))
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"raftka.v1.BrokerService", "raftka.v1.AdminService"} <= names


def test_retention_deletes_old_segments_in_the_background(cluster_factory):
    cluster = cluster_factory(1, {"log.retention.check.interval.ms": "200"})
    cluster.start()
    cluster.wait_ready()
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("short", configs={"retention.ms": "1000", "segment.bytes": "1024"})
    old = int(time.time() * 1000) - 60_000
    for _ in range(20):
        produce_raw(
            cluster, "short", records=[common_pb2.Record(value=b"z" * 200, timestamp_ms=old)]
        )

    def start_offset() -> int:
        request = broker_pb2.ListOffsetsRequest(
            partitions=[
                broker_pb2.ListOffsetsPartition(topic="short", partition=0, timestamp_ms=-2)
            ]
        )
        return stub(cluster).ListOffsets(request, timeout=5).partitions[0].offset

    wait_for(lambda: start_offset() > 0, 15, "retention to advance the log start offset")
    segments = list((cluster.brokers[1].data_dir / "logs" / "short-0").glob("*.log"))
    assert len(segments) < 20


def test_deleted_topic_loses_its_data_directory(broker):
    produce_raw(broker, "doomed", records=[common_pb2.Record(value=b"x")])
    directory = broker.brokers[1].data_dir / "logs" / "doomed-0"
    assert directory.exists()
    with Admin(broker.bootstrap) as admin:
        admin.delete_topic("doomed")
        assert "doomed" not in [t.name for t in admin.list_topics()]
    wait_for(lambda: not directory.exists(), 10, "the partition directory to go")


def test_second_broker_on_the_same_data_dir_is_refused(broker):
    node = broker.brokers[1]
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "raftka",
            "broker",
            "--id",
            "1",
            "--data-dir",
            str(node.data_dir),
            "--listen",
            "127.0.0.1:1",
        ],
        capture_output=True,
        timeout=30,
        text=True,
    )
    assert result.returncode == 2 and "in use by another broker" in result.stderr
    assert node.running
    os.kill(node.pid, signal.SIGCONT)


def test_position_counts_records_handed_out_not_records_buffered(broker):
    """Regression: position() once jumped to the end of what was fetched, so a reader that
    stopped at the end offset silently skipped records still in the buffer."""
    produce_raw(
        broker, "positions", records=[common_pb2.Record(value=str(i).encode()) for i in range(10)]
    )
    consumer = Consumer(
        bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", max_poll_records=3
    )
    tp = TopicPartition("positions", 0)
    consumer.assign([tp])
    first = consumer.poll(timeout_ms=5000)[tp]
    assert [r.offset for r in first] == [0, 1, 2]
    assert consumer.position(tp) == 3
    seen = [r.offset for r in first]
    while consumer.position(tp) < 10:
        for records in consumer.poll(timeout_ms=1000).values():
            seen.extend(r.offset for r in records)
    assert seen == list(range(10))
    consumer.close()


@pytest.mark.parametrize("acks", [1, -1])
def test_one_request_for_many_partitions_answers_each_on_its_own(broker, acks):
    """A request's partitions are appended in one job on the writer thread; each still gets
    its own answer: stored, refused as corrupt, unknown, a duplicate's original offsets."""
    Admin(broker.bootstrap).create_topic("multi", 3, 1)
    service = stub(broker)
    identity = service.InitProducerId(broker_pb2.InitProducerIdRequest(), timeout=10)
    pid = identity.producer_id

    def batch(value: bytes, sequence: int) -> bytes:
        return encode_batch([(None, value, [], 0)], now_ms=now(), producer_id=pid,
                            producer_epoch=identity.producer_epoch, base_sequence=sequence)

    corrupt = bytearray(batch(b"bad", 0))
    corrupt[-2] ^= 0xFF
    first = service.Produce(broker_pb2.ProduceRequest(acks=acks, timeout_ms=10_000, partitions=[
        broker_pb2.PartitionProduceData(topic="multi", partition=0, record_batches=batch(b"a", 0)),
        broker_pb2.PartitionProduceData(topic="multi", partition=1, record_batches=bytes(corrupt)),
        broker_pb2.PartitionProduceData(topic="multi", partition=9, record_batches=batch(b"x", 0)),
        broker_pb2.PartitionProduceData(topic="multi", partition=2, record_batches=batch(b"c", 0)),
    ]), timeout=20)
    codes = [(p.partition, p.error_code, p.base_offset) for p in first.partitions]
    assert codes == [(0, Code.NONE, 0), (1, Code.CORRUPT_MESSAGE, -1),
                     (9, Code.UNKNOWN_TOPIC_OR_PARTITION, -1), (2, Code.NONE, 0)]
    # the retry of partition 0's batch (same sequence) is answered with its first offset
    # and not stored again; partition 2 takes its next batch; partition 1 a fixed one
    second = service.Produce(broker_pb2.ProduceRequest(acks=acks, timeout_ms=10_000, partitions=[
        broker_pb2.PartitionProduceData(topic="multi", partition=0, record_batches=batch(b"a", 0)),
        broker_pb2.PartitionProduceData(topic="multi", partition=1, record_batches=batch(b"b", 0)),
        broker_pb2.PartitionProduceData(topic="multi", partition=2, record_batches=batch(b"d", 1)),
    ]), timeout=20)
    codes = [(p.partition, p.error_code, p.base_offset) for p in second.partitions]
    assert codes == [(0, Code.NONE, 0), (1, Code.NONE, 0), (2, Code.NONE, 1)]
    stored = read_all(broker.bootstrap, "multi", partitions=3, expected=4)
    assert {p: [r.value for r in records] for p, records in stored.items()} == {
        0: [b"a"], 1: [b"b"], 2: [b"c", b"d"]}
