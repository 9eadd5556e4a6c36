"""FileSlice: stored batches named by where they lie in a segment file, not copied out of it.

Why: Kafka's RecordBatch v2 is both the stored and the wire format, so a fetch can hand the
kernel a (file, position, length) to send with sendfile instead of reading the bytes into
Python first. The slice owns a duplicated descriptor, so it stays readable when retention or
truncation closes the segment before the send; whoever takes a slice closes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(eq=False)
class FileSlice:
    fd: int
    position: int
    length: int
    # The offset after the slice's last batch (-1: not known), so a fetch can count the
    # offsets it served without reading the records.
    next_offset: int = -1
    _closed: bool = field(default=False, repr=False)

    def read(self) -> bytes:
        """The bytes, for paths that cannot send from the file (and for small slices, where
        a copy is cheaper than a sendfile round trip)."""
        return os.pread(self.fd, self.length, self.position)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)

    def __enter__(self) -> FileSlice:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
