"""Small state files written atomically: write a temp file, fsync it, rename it over the old.

A crash leaves either the old or the new file, never a torn one. Used for the partition's
offsets (high watermark, recovery point, log start offset) and its leader-epoch cache.
"""

from __future__ import annotations

import json
import os
from typing import Any


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
