"""What decoding a Kafka request costs the broker: the frame guard's schema walk
(broker/kafka/frame_guard.py), kio's native reader, and both (codec.decode_request).

    python bench/request_decode_bench.py [--rounds 20000]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kio.index import load_request_schema  # noqa: E402
from kio.serial import entity_reader, entity_writer  # noqa: E402

from raftka.broker.kafka import codec  # noqa: E402
from raftka.broker.kafka.frame_guard import checked_frame  # noqa: E402


def element_type(entity: type, name: str) -> Any:
    field = next(f for f in dataclasses.fields(entity) if f.name == name)
    return field.type.__args__[0]


def frame_of(api_key: int, version: int, body: Any) -> bytes:
    schema = load_request_schema(api_key, version)
    header = schema.__header_schema__(request_api_key=api_key, request_api_version=version,
                                      correlation_id=1, client_id="bench")
    buffer = io.BytesIO()
    entity_writer(type(header))(buffer, header)
    entity_writer(schema)(buffer, body)
    return buffer.getvalue()


def produce_frame(partitions: int, batch_bytes: int) -> bytes:
    schema = load_request_schema(0, 9)
    topic = element_type(schema, "topic_data")
    partition = element_type(topic, "partition_data")
    body = schema(transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=30),
                  topic_data=(topic(name="bench", partition_data=tuple(
                      partition(index=i, records=b"x" * batch_bytes)
                      for i in range(partitions))),))
    return frame_of(0, 9, body)


def fetch_frame(partitions: int) -> bytes:
    schema = load_request_schema(1, 12)
    topic = element_type(schema, "topics")
    partition = element_type(topic, "partitions")
    body = schema(replica_id=-1, max_wait=datetime.timedelta(milliseconds=500), min_bytes=1,
                  max_bytes=52428800, isolation_level=0, session_id=0, session_epoch=-1,
                  topics=(topic(topic="bench", partitions=tuple(
                      partition(partition=i, current_leader_epoch=-1, fetch_offset=1000 * i,
                                last_fetched_epoch=-1, log_start_offset=-1,
                                partition_max_bytes=1048576)
                      for i in range(partitions))),),
                  forgotten_topics_data=(), rack_id="")
    return frame_of(1, 12, body)


def per_call_us(call: Callable[[], object], rounds: int) -> float:
    call()
    start = time.perf_counter()
    for _ in range(rounds):
        call()
    return (time.perf_counter() - start) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20_000)
    args = parser.parse_args()
    cases = {
        "Produce v9, 1 partition x 16 KiB": (0, 9, produce_frame(1, 16384)),
        "Produce v9, 3 partitions x 16 KiB": (0, 9, produce_frame(3, 16384)),
        "Fetch v12, 12 partitions": (1, 12, fetch_frame(12)),
    }
    print(f"{'request':<36}{'guard us':>10}{'kio us':>10}{'decode us':>11}")
    for name, (api_key, version, frame) in cases.items():
        schema = load_request_schema(api_key, version)
        header_reader, body_reader = entity_reader(schema.__header_schema__), entity_reader(schema)

        def kio_only(frame: bytes = frame, header_reader: Any = header_reader,
                     body_reader: Any = body_reader) -> object:
            _, size = header_reader(frame, 0)
            return body_reader(frame, size)

        guard = per_call_us(lambda s=schema, f=frame: checked_frame(s.__header_schema__, s, f),
                            args.rounds)
        kio = per_call_us(kio_only, args.rounds)
        decode = per_call_us(lambda f=frame: codec.decode_request(f), args.rounds)
        print(f"{name:<36}{guard:>10.1f}{kio:>10.1f}{decode:>11.1f}")


if __name__ == "__main__":
    main()
