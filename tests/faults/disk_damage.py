"""Damage a stopped broker's partition directories the way a power loss would.

Why a module of its own: what is lost at a power cut is decided from the files alone (the
checkpointed recovery point: the broker had fsynced at least that far), so it is tested on
a directory without a cluster, and the nemesis only chooses the victim and the seed.

Model: everything up to the recovery point survives (it was fsynced before the checkpoint
that names it was written atomically). The log directory's `recovery-point-offset-checkpoint`
is written every replica.high.watermark.checkpoint.interval.ms, so it may trail the fsyncs
by that much: the model may take a little more than a real power cut would (what was
fsynced since), never less. Older data directories keep it in each partition's
`partition.checkpoint`, which is read when the directory's file does not name the
partition. Of what came after, a random prefix
survives, cut at any byte (so a batch may be torn), and segment files created after the
recovery point's segment are gone entirely (their directory entries were never synced).
The Raft journal and the epoch/producer checkpoints are synced on every change, so they
are left alone.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from raftka.broker.log.dir_checkpoints import RECOVERY_POINT_FILE, read_offsets
from raftka.records import HEADER_SIZE, read_header

CHECKPOINT = "partition.checkpoint"


@dataclass(frozen=True)
class PowerCut:
    """What a power loss took from one partition directory."""

    directory: str
    recovery_point: int
    bytes_lost: int
    files_removed: int

    def describe(self) -> str:
        return (f"{os.path.basename(self.directory)}: {self.bytes_lost} bytes after offset "
                f"{self.recovery_point} lost, {self.files_removed} segment file(s) gone")


def _recovery_point(directory: Path) -> int:
    topic, _, partition = directory.name.rpartition("-")
    shared = read_offsets(str(directory.parent / RECOVERY_POINT_FILE)) or {}
    if partition.isdigit() and (topic, int(partition)) in shared:
        return shared[(topic, int(partition))]
    try:
        return int(json.loads((directory / CHECKPOINT).read_text()).get("recovery_point", 0))
    except (OSError, ValueError):
        return 0


def _position_of(segment: Path, base: int, offset: int) -> int:
    """Byte position in `segment` (whose first offset is `base`) of the first batch holding
    an offset >= `offset`, or the file size when there is none."""
    size = segment.stat().st_size
    if offset <= base:
        return 0
    with open(segment, "rb") as handle:
        position = 0
        while position + HEADER_SIZE <= size:
            handle.seek(position)
            header = read_header(handle.read(HEADER_SIZE))
            if header.last_offset >= offset or header.size_bytes <= 0:
                return position
            position += header.size_bytes
    return min(position, size)


def power_cut(directory: Path, rng: random.Random) -> PowerCut:
    """Apply a power loss to one partition directory of a stopped broker."""
    recovery_point = _recovery_point(directory)
    bases = sorted(int(p.name[:-4]) for p in directory.glob("*.log") if p.name[:-4].isdigit())
    holding = [b for b in bases if b <= recovery_point]
    keep_base = holding[-1] if holding else (bases[0] if bases else None)
    lost = removed = 0
    for base in bases:
        path = directory / f"{base:020d}.log"
        if keep_base is not None and base > keep_base:
            lost += path.stat().st_size
            for suffix in (".log", ".index", ".timeindex"):
                (directory / f"{base:020d}{suffix}").unlink(missing_ok=True)
            removed += 1
        elif base == keep_base:
            size = path.stat().st_size
            synced = _position_of(path, base, recovery_point)
            cut = rng.randint(synced, size) if size > synced else size
            os.truncate(path, cut)
            lost += size - cut
    return PowerCut(str(directory), recovery_point, lost, removed)


def power_cut_broker(logs_dir: Path, rng: random.Random) -> list[PowerCut]:
    """A power loss on every partition directory under a stopped broker's `logs_dir`."""
    return [power_cut(d, rng) for d in sorted(logs_dir.iterdir()) if d.is_dir()]
