"""Fetch responses whose record batches go from the segment files to the socket by sendfile.

Why: the stored format is the wire format (RecordBatch v2), so, as in Kafka, a consumer's
batches need not pass through Python at all. kio encodes a whole response into one buffer,
so the handler puts a unique marker where each large slice belongs; `splice` cuts the
encoded frame at the markers, rewrites each marker's length prefix to the slice's length and
fixes the frame size, leaving a list of byte strings and FileSlices that `send` writes in
order (bytes with write(), slices with loop.sendfile, which falls back to reading the file on
transports that cannot sendfile). Small slices are cheaper to copy than to sendfile, and go
inline.

Over TLS the kernel cannot send file bytes (they must be encrypted in user space; Linux kTLS
is not used), so `send(copy=True)` reads each slice in chunks and writes them through the TLS
transport, waiting for the buffer to drain between chunks so a large fetch does not sit in
memory whole.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from raftka.broker.log.file_slice import FileSlice

# Below this, a slice is read into the response: a sendfile call costs more than the copy.
SENDFILE_MIN_BYTES = 32 * 1024
# Over TLS, a slice is read and written this much at a time.
COPY_CHUNK_BYTES = 1024 * 1024
_MARKER_HEAD = b"\xfe\xedRaftkaSF"
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")


class SliceChangedError(ConnectionError):
    """The file behind a slice shrank before it was sent (the log was truncated); the
    response is broken mid-frame, so the connection has to close."""


@dataclass
class SplicedResponse:
    """A handler's response values in which some `records` are markers for `slices`."""

    values: dict[str, Any]
    slices: list[tuple[bytes, FileSlice]] = field(default_factory=list)

    def place(self, found: FileSlice) -> bytes:
        """The marker to encode where `found` will go."""
        marker = _MARKER_HEAD + os.urandom(8) + _UINT32.pack(len(self.slices))
        self.slices.append((marker, found))
        return marker

    def close(self) -> None:
        for _, found in self.slices:
            found.close()


def records_value(response: SplicedResponse, found: FileSlice | None) -> bytes:
    """What goes in a partition's `records`: the bytes, or a marker for sendfile. Empty, not
    null, when there are none: kafka-python 2.0.2 cannot read null records."""
    if found is None:
        return b""
    if found.length < SENDFILE_MIN_BYTES:
        with found:
            return found.read()
    return response.place(found)


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_prefix(length: int, flexible: bool) -> bytes:
    # Records are NULLABLE_BYTES (int32 length) before flexible versions, then
    # COMPACT_NULLABLE_BYTES (unsigned varint of length + 1).
    return _uvarint(length + 1) if flexible else _INT32.pack(length)


def splice(
    frame: bytes, flexible: bool, slices: Sequence[tuple[bytes, FileSlice]]
) -> list[bytes | FileSlice]:
    """The encoded `frame` (size-prefixed) with each marker replaced by its slice."""
    located = sorted(((frame.find(marker), marker, found) for marker, found in slices),
                     key=lambda item: item[0])
    pieces: list[bytes | FileSlice] = []
    cursor = 0
    size = len(frame) - 4
    for position, marker, found in located:
        placeholder = _length_prefix(len(marker), flexible)
        start = position - len(placeholder)
        if position < 0 or frame[start:position] != placeholder:
            raise ValueError(f"marker {marker.hex()} is not an encoded records field")
        prefix = _length_prefix(found.length, flexible)
        pieces.append(frame[cursor:start] + prefix)
        pieces.append(found)
        cursor = position + len(marker)
        size += len(prefix) - len(placeholder) + found.length - len(marker)
    pieces.append(frame[cursor:])
    head = pieces[0]
    assert isinstance(head, bytes)
    pieces[0] = _INT32.pack(size) + head[4:]
    return pieces


async def _copy(writer: asyncio.StreamWriter, piece: FileSlice) -> None:
    done = 0
    while done < piece.length:
        chunk = os.pread(piece.fd, min(COPY_CHUNK_BYTES, piece.length - done),
                         piece.position + done)
        if not chunk:
            raise SliceChangedError(
                f"read {done} of {piece.length} bytes: the segment was truncated meanwhile")
        writer.write(chunk)
        done += len(chunk)
        await writer.drain()


async def send(writer: asyncio.StreamWriter, pieces: Sequence[bytes | FileSlice], *,
               copy: bool = False) -> None:
    """Write the pieces in order: slices by sendfile, or copied when `copy` (TLS)."""
    loop = asyncio.get_running_loop()
    for piece in pieces:
        if isinstance(piece, bytes):
            writer.write(piece)
            continue
        if copy:
            await _copy(writer, piece)
            continue
        # The slice owns the descriptor; this file object only lends it to sendfile.
        with os.fdopen(piece.fd, "rb", buffering=0, closefd=False) as file:
            sent = await loop.sendfile(writer.transport, file, piece.position, piece.length)
        if sent != piece.length:
            raise SliceChangedError(
                f"sent {sent} of {piece.length} bytes: the segment was truncated meanwhile")
    await writer.drain()
