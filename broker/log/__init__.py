"""The partition log: segments of RecordBatch v2 bytes, their indexes, recovery and retention."""
