"""CPU microseconds per record of the SDK's own work, without brokers, for one source tree.

    python bench/sdk_costs.py [--tree PATH] [--records 200000] [--json]

Why: throughput on this shared 2-core machine mixes the client's cost with the brokers' and
with whatever else runs; CPU time (process_time) of the client's per-record work alone is the
figure a change to the SDK moves. Run it once per tree (`--tree` a checkout of the old code,
e.g. `git archive main | tar -x -C /tmp/before`) to compare.

Measured, 100-byte values, no keys:
- send: Producer.send() into the accumulator, against the unit tests' fake brokers, with
  linger and batch size so large that nothing is sent (the sender's work is next);
- encode: turning the queued records into RecordBatch v2 bytes (the sender's part; in
  trees that write records into the builder on send, this is only the final build);
- send_many: Producer.send_many() in chunks of 10,000, where the tree has it;
- consume: the Fetcher's decode of fetched bytes into ConsumerRecords and the subscription's
  hand-out (poll()'s work once the bytes have arrived).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# Records per fetched batch in the consume measurement (what 256 KiB batches hold).
RECORDS_PER_BATCH = 2_383
SEND_MANY_CHUNK = 10_000


def measure(records: int) -> dict[str, Any]:
    from raftka.client.subscription import SubscriptionState
    from raftka.client.types import TopicPartition
    from raftka.records import encode_batch
    from tests.unit.client.test_fetcher import setup as fetcher_setup
    from tests.unit.client.test_producer import A, FakeCluster, producer_on

    value = os.urandom(100)
    out: dict[str, Any] = {"records": records}
    cluster = FakeCluster({0: A, 1: A, 2: A})
    producer = producer_on(cluster, batch_size=1 << 30, buffer_memory=1 << 32)
    producer._accumulator.linger_ms = 10**9  # nothing is ready: send() alone is timed
    producer.partitions_for("t")
    started = time.process_time()
    for _ in range(records):
        producer.send("t", value)
    out["send_us"] = round((time.process_time() - started) / records * 1e6, 3)
    queued = [batch for queue in producer._accumulator._queues.values() for batch in queue]
    started = time.process_time()
    for batch in queued:
        producer._encode(batch)
    out["encode_us"] = round((time.process_time() - started) / records * 1e6, 3)
    producer._closed = True  # the fake brokers need no goodbye
    if hasattr(producer, "send_many"):
        producer = producer_on(cluster, batch_size=1 << 30, buffer_memory=1 << 32)
        producer._accumulator.linger_ms = 10**9
        producer.partitions_for("t")
        started = time.process_time()
        for _ in range(records // SEND_MANY_CHUNK):
            producer.send_many("t", [value] * SEND_MANY_CHUNK)
        out["send_many_us"] = round(
            (time.process_time() - started) / (records // SEND_MANY_CHUNK * SEND_MANY_CHUNK)
            * 1e6, 3)
    producer._closed = True
    del producer, queued
    gc.collect()

    fetcher, _, _, _ = fetcher_setup()
    fetcher._value_deserializer = fetcher._key_deserializer  # bytes, as the default
    now_ms = int(time.time() * 1000)
    batches = records // RECORDS_PER_BATCH
    tp = TopicPartition("t", 0)
    data = b"".join(
        encode_batch([(None, value, [], now_ms)] * RECORDS_PER_BATCH,
                     base_offset=i * RECORDS_PER_BATCH)
        for i in range(min(batches, 32))
    )  # one fetch of up to 32 batches (~8 MiB), decoded again and again
    per_fetch = min(batches, 32) * RECORDS_PER_BATCH
    handed = 0
    started = time.process_time()
    while handed < records:
        state: SubscriptionState[Any] = SubscriptionState("earliest")
        state.assign_from_user([tp])
        state.seek(tp, 0)
        decoded, next_offset = fetcher._decode(tp, data, 0)
        if decoded and not hasattr(decoded[0], "offset"):  # per-batch chunks
            for chunk in decoded:
                state.add_fetched(tp, chunk, next_offset)
        else:
            state.add_fetched(tp, decoded, next_offset)
        while state.has_buffered():
            for got in state.drain(10_000).values():
                handed += len(got)
                for record in got:
                    record.value  # noqa: B018 - what a caller does with each record
    out["consume_us"] = round((time.process_time() - started) / handed * 1e6, 3)
    out["consume_records"] = handed
    out["records_per_fetch"] = per_fetch
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]),
                        help="source tree to measure (default: this one)")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(args.tree).resolve()))
    result = measure(args.records)
    result["tree"] = args.tree
    if args.json:
        print(json.dumps(result))
    else:
        for key, number in result.items():
            print(f"{key:>18}: {number}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
