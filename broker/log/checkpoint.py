"""Small state files written atomically: write a temp file, fsync it, rename it over the old.

A crash leaves either the old or the new file, never a torn one. Used for the partition's
offsets (high watermark, recovery point, log start offset) and its leader-epoch cache. Their
names and the epoch file's format live here because two modules share them: the loader reads
them when a log opens, the log writes them while it runs.
"""

from __future__ import annotations

import json
import os
from typing import Any

# Beside the segments in a partition directory: {"high_watermark", "recovery_point",
# "log_start_offset"} and {"entries": [[leader epoch, start offset], ...]}.
CHECKPOINT_FILE = "partition.checkpoint"
EPOCH_CHECKPOINT_FILE = "leader-epoch-checkpoint"


def write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json(path: str, value: dict[str, Any]) -> None:
    write_atomically(path, json.dumps(value, sort_keys=True).encode())


def read_json(path: str) -> dict[str, Any] | None:
    """The stored object, or None when the file is missing or unreadable (then recover)."""
    try:
        with open(path, "rb") as handle:
            value = json.loads(handle.read())
    except (FileNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_epoch_checkpoint(directory: str) -> list[tuple[int, int]]:
    """(leader epoch, start offset) entries stored in `directory`; none when missing."""
    stored = read_json(os.path.join(directory, EPOCH_CHECKPOINT_FILE)) or {}
    return [(int(epoch), int(offset)) for epoch, offset in stored.get("entries", [])]


def write_epoch_checkpoint(directory: str, entries: list[tuple[int, int]]) -> None:
    write_json(
        os.path.join(directory, EPOCH_CHECKPOINT_FILE),
        {"entries": [list(entry) for entry in entries]},
    )
