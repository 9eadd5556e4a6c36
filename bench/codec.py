"""RecordBatch v2 codec choices, measured: why the SDK and broker use aiokafka's compiled
codec and the crc32c package.

    python bench/codec.py [--records 1000] [--rounds 200]
"""

from __future__ import annotations

import argparse
import time

import crc32c
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    value = b"x" * 100
    started = time.perf_counter()
    for _ in range(args.rounds):
        builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 30)
        for i in range(args.records):
            builder.append(i, 1_700_000_000_000 + i, None, value, [])
        batch = bytes(builder.build())
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.rounds):
        reader = DefaultRecordBatch(batch)
        assert reader.validate_crc()
        count = sum(1 for _ in reader)
    decode_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.rounds * 10):
        crc32c.crc32c(memoryview(batch)[21:])
    crc_s = time.perf_counter() - started
    total = args.rounds * args.records
    print(f"aiokafka build : {total / build_s:12,.0f} records/s")
    print(f"aiokafka decode: {total / decode_s:12,.0f} records/s ({count} per batch)")
    print(f"crc32c         : {args.rounds * 10 * len(batch) / crc_s / 1e9:12.1f} GB/s")
    try:
        from kio.records.readers import read_batch
    except ImportError:
        print("kio            : not installed (pip install kio to compare)")
        return
    rounds = max(1, args.rounds // 20)
    started = time.perf_counter()
    for _ in range(rounds):
        read_batch(batch, 0)
    kio_s = time.perf_counter() - started
    print(
        f"kio decode     : {rounds * args.records / kio_s:12,.0f} records/s "
        "(pure Python; truncates timestamps to seconds)"
    )


if __name__ == "__main__":
    main()
