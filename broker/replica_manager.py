"""ReplicaManager: the partitions this broker hosts, kept in line with committed metadata.

How it works:
- Metadata: every new image is diffed against the previous one (local_changes); a single task
  applies the changes in order — open (and recover) the logs of newly hosted partitions, take
  each registration (become leader, or follower of broker X at epoch E, which moves the
  partition to the fetch loop for X), delete the logs of removed ones.
- Writes: all log mutations (append, truncate, roll, retention, delete, role changes) run on
  one writer thread per log directory, so they stay in order and the event loop never waits
  on the disk. produce_path.py and fetch_path.py serve requests over these partitions.
- Waiting: acks=all produce and long-poll fetch park in the purgatory and wake on progress.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from raftka.broker.errors import (
    LeaderNotAvailableError,
    NotLeaderError,
    UnknownTopicOrPartitionError,
)
from raftka.broker.log.checkpoint import write_json
from raftka.broker.log.config import LogConfig
from raftka.broker.log.dir_checkpoints import DirectoryCheckpoints, StoredOffsets
from raftka.broker.log.log import PartitionLog
from raftka.broker.log_writer import LogWriter
from raftka.broker.partition import NO_EPOCH, Partition, TopicPartition
from raftka.broker.purgatory import Purgatory
from raftka.broker.replication.fetcher import FetcherManager
from raftka.cluster import topic_config
from raftka.cluster.image import NO_LEADER, MetadataImage, PartitionRegistration
from raftka.cluster.local_changes import HostedPartition, LocalChanges, local_changes

log = logging.getLogger("raftka.broker")

PARTITION_METADATA_FILE = "partition.metadata"
Clock = Callable[[], int]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReplicaManagerSettings:
    broker_id: int
    log_dir: str
    topic_config_defaults: dict[str, str]
    replica_lag_time_max_ms: int = 10_000
    # How often the high watermarks (and recovery points) of every partition are written to
    # the log directory's checkpoint files, when they changed (Kafka's
    # replica.high.watermark.checkpoint.interval.ms); a moved log start offset is written
    # at once (broker/log/dir_checkpoints.py).
    high_watermark_checkpoint_interval_ms: int = 5_000


class ReplicaManager:
    """`writer`, `purgatory` and `fetchers` are shared with the produce path and the follower
    fetch loops, so they are built first (broker/server.py) and handed in."""

    def __init__(
        self,
        settings: ReplicaManagerSettings,
        clock_ms: Clock,
        writer: LogWriter,
        purgatory: Purgatory,
        fetchers: FetcherManager,
    ) -> None:
        self.settings = settings
        self.broker_id = settings.broker_id
        self._clock_ms = clock_ms
        # Called with (old ISR, new ISR) whenever the committed ISR of a partition this broker
        # leads changes, whoever proposed it (this leader's AlterPartition, or the controller
        # removing a fenced broker): what kafka_server_replicamanager_isr{shrinks,expands}
        # count. Set by broker/server.py.
        self.on_leader_isr_change: Callable[[tuple[int, ...], tuple[int, ...]], None] | None = None
        self.partitions: dict[TopicPartition, Partition] = {}
        self.purgatory = purgatory
        self.image = MetadataImage()
        self._writer = writer
        # Images published by the metadata log, newest last; None wakes the apply task.
        self._changes: asyncio.Queue[MetadataImage | None] = asyncio.Queue()
        # The offset of this broker's registration record once it has registered: no image
        # before it is acted on (see _apply_changes_forever).
        self._catch_up_offset: int | None = None
        self._applied_offset = 0
        self._applied = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self.fetchers = fetchers
        os.makedirs(settings.log_dir, exist_ok=True)
        self.checkpoints = DirectoryCheckpoints(settings.log_dir)
        self._last_checkpoint_ms = clock_ms()

    # ------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._worker = asyncio.create_task(self._apply_changes_forever())

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        await self.fetchers.close()
        now_ms = self._clock_ms()
        for partition in list(self.partitions.values()):
            await self._writer.run(partition.log.close, now_ms)
        # Every log is flushed now: the recovery points say so, and the next start scans
        # nothing it need not.
        await self._writer.run(self.checkpoints.write_all)
        self._writer.shutdown()

    async def on_writer(self, function: Callable[..., T], *args: object) -> T:
        """Run `function(*args)` on the log directory's writer thread, in submission order."""
        return await self._writer.run(function, *args)

    async def on_writer_small(self, size_bytes: int, function: Callable[..., T],
                              *args: object) -> T:
        """An append of `size_bytes` that cannot fsync: on the event loop when the writer
        thread is idle and it is small, else on the thread (log_writer.py, run_small)."""
        return await self._writer.run_small(size_bytes, function, *args)

    def clock_ms(self) -> int:
        return self._clock_ms()

    # -------------------------------------------------------------------------- metadata
    def on_metadata(self, old: MetadataImage, new: MetadataImage) -> None:
        """MetadataLog listener (event loop): queue the change for the apply task."""
        self._changes.put_nowait(new)

    def on_registered(self, registration_offset: int) -> None:
        """The controller registered this broker; its record sits at `registration_offset`.
        The first call opens the gate of `_apply_changes_forever`."""
        if self._catch_up_offset is None:
            self._catch_up_offset = registration_offset
            self._changes.put_nowait(None)

    @property
    def caught_up(self) -> bool:
        """Whether this broker acts on (and answers from) current metadata: it has applied
        the image holding its own registration."""
        return self._catch_up_offset is not None and self._applied_offset >= self._catch_up_offset

    async def _apply_changes_forever(self) -> None:
        """Apply the newest published image, diffed against the last one applied.

        Two rules keep a starting broker from acting on history (found by the fault harness:
        a restarted broker replaying its Raft journal became leader of a partition at epoch
        0, then 2, 4 and 6, and coordinated a group partition another broker held, one stale
        image after another): nothing is applied until the image holds this broker's new
        registration (everything committed before it, as Kafka's brokers wait for their
        initial catch-up), and images queued meanwhile are skipped, not replayed one by one.
        """
        pending: MetadataImage | None = None
        while True:
            item = await self._changes.get()
            pending = item or pending
            while not self._changes.empty():
                pending = self._changes.get_nowait() or pending
            target = self._catch_up_offset
            if pending is None or target is None or pending.offset < target:
                continue
            new, pending = pending, None
            try:
                await self._apply(local_changes(self.image, new, self.broker_id), new)
            except Exception:
                log.exception("applying metadata offset %d failed", new.offset)
            self.image = new
            self._applied_offset = new.offset
            self._applied.set()
            self._applied = asyncio.Event()

    @property
    def applied_offset(self) -> int:
        """Offset of the last metadata image whose local changes are in effect."""
        return self._applied_offset

    async def wait_for_metadata(
        self, condition: Callable[[MetadataImage], bool], timeout_s: float
    ) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not condition(self.image):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._applied.wait(), remaining)
            except TimeoutError:
                return condition(self.image)
        return True

    async def _apply(self, changes: LocalChanges, image: MetadataImage) -> None:
        for removed in changes.removed:
            tp = TopicPartition(removed.topic, removed.partition)
            partition = self.partitions.pop(tp, None)
            self.fetchers.unfollow(tp)
            if partition is not None:
                await self.on_writer(partition.log.delete)
                self.checkpoints.forget((tp.topic, tp.partition))
                log.info("deleted partition %s (topic id %s)", tp, removed.topic_id)
            self.purgatory.notify(tp)
        updates: list[tuple[TopicPartition, Partition, PartitionRegistration]] = []
        for hosted in changes.changed:
            tp = TopicPartition(hosted.topic, hosted.partition)
            partition = self.partitions.get(tp)
            if partition is None or partition.topic_id != hosted.topic_id:
                partition = await self._open_partition(tp, hosted)
                self.partitions[tp] = partition
            effective = topic_config.resolve(hosted.configs, self.settings.topic_config_defaults)
            partition.log.config = LogConfig.from_topic_configs(effective)
            partition.min_insync_replicas = topic_config.as_int(effective, "min.insync.replicas")
            updates.append((tp, partition, hosted.registration))
        # One trip to the writer thread for every registration, leadership changes first: a
        # broker that hands over (controlled shutdown) changes every ISR it is in at once,
        # and a trip per partition, queued behind appends, made the leader changes among
        # them wait 300-500 ms with ~130 partitions (measured in bench/cluster_timings.py).
        updates.sort(key=lambda u: u[2].leader == u[1].leader_id
                     and u[2].leader_epoch == u[1].leader_epoch)
        led_isr = [partition.isr if partition.is_leader else None for _, partition, _ in updates]
        # The clock is read when the registrations take effect, not at the start: opening
        # many new partitions first can take seconds, and a new leader grants its followers
        # a full lag period from then (a stale clock made every leader of a 1,000-partition
        # creation shrink its ISR to itself at once).
        outcomes = await self.on_writer(_apply_registrations, updates, self._clock_ms)
        for (tp, partition, _), change, old_isr in zip(updates, outcomes, led_isr, strict=True):
            if (old_isr is not None and partition.is_leader and change != "leader"
                    and set(old_isr) != set(partition.isr)
                    and self.on_leader_isr_change is not None):
                self.on_leader_isr_change(old_isr, partition.isr)
            if change == "leader":
                log.info(
                    "%s: leader at epoch %d (ISR %s)",
                    tp,
                    partition.leader_epoch,
                    list(partition.isr),
                )
            if partition.is_leader:
                self.fetchers.unfollow(tp)
            elif change == "follower" or tp not in self.fetchers.following():
                self.fetchers.follow(partition, partition.leader_id)
            self.purgatory.notify(tp)

    async def _open_partition(self, tp: TopicPartition, hosted: HostedPartition) -> Partition:
        directory = os.path.join(self.settings.log_dir, str(tp))
        effective = topic_config.resolve(hosted.configs, self.settings.topic_config_defaults)
        config = LogConfig.from_topic_configs(effective)

        def open_log() -> PartitionLog:
            stored = _read_partition_metadata(directory)
            if stored is not None and stored != hosted.topic_id:
                log.warning(
                    "%s holds topic id %s, not %s: removing the stale log",
                    directory,
                    stored,
                    hosted.topic_id,
                )
                shutil.rmtree(directory)
            partition_log = open_checkpointed_log(
                self.checkpoints, (tp.topic, tp.partition), directory, config, self._clock_ms()
            )
            _write_partition_metadata(directory, hosted.topic_id)
            return partition_log

        partition_log = await self.on_writer(open_log)
        partition = Partition(
            tp,
            hosted.topic_id,
            partition_log,
            self.broker_id,
            topic_config.as_int(effective, "min.insync.replicas"),
        )
        await self.on_writer(partition.rebuild_producer_state)
        return partition

    async def remove_stray_logs(self) -> list[str]:
        """Delete partition directories that the (caught-up) metadata no longer assigns here:
        topics deleted while this broker was down."""
        hosted = {str(tp) for tp in self.partitions}

        def remove() -> list[str]:
            removed = []
            for name in os.listdir(self.settings.log_dir):
                path = os.path.join(self.settings.log_dir, name)
                if os.path.isdir(path) and name not in hosted:
                    shutil.rmtree(path)
                    removed.append(name)
            return removed

        removed = await self.on_writer(remove)
        for name in removed:
            log.info("removed stray partition directory %s", name)
        return removed

    # ------------------------------------------------------------------------- lookups
    def leader_partition(self, tp: TopicPartition, epoch: int = NO_EPOCH) -> Partition:
        """The hosted partition if this broker leads it (at `epoch`, when given); otherwise
        the error a client can act on (unknown, no leader, or who the leader is)."""
        partition = self.partitions.get(tp)
        if partition is None:
            if not self.caught_up:
                raise self.catching_up_error(tp)
            registration = self.image.partition(tp.topic, tp.partition)
            if registration is None:
                raise UnknownTopicOrPartitionError(f"unknown topic or partition {tp}")
            if registration.leader == NO_LEADER:
                raise LeaderNotAvailableError(f"{tp} has no leader right now")
            raise NotLeaderError(
                f"broker {self.broker_id} does not host {tp}; the leader is {registration.leader}",
                registration.leader,
                registration.leader_epoch,
            )
        partition.check_leader(epoch)
        return partition

    def catching_up_error(self, tp: TopicPartition) -> NotLeaderError:
        """What a starting broker answers for a partition it does not host yet: retriable
        (clients refresh their metadata and ask the leader), never "unknown topic", which
        it cannot know yet and which some clients give up on."""
        return NotLeaderError(
            f"broker {self.broker_id} is starting and catching up on cluster metadata; "
            f"ask the leader of {tp}",
            NO_LEADER,
            NO_EPOCH,
        )

    # ------------------------------------------------------------------------ maintenance
    async def run_maintenance(self, retention: bool) -> None:
        """Periodic: fsync rolled segments, roll idle ones (segment.ms), apply retention;
        every high_watermark_checkpoint_interval_ms, write the directory's checkpoint
        files that changed (one file for all partitions, not one per partition)."""
        now_ms = self._clock_ms()
        partitions = list(self.partitions.values())
        checkpoint_due = (now_ms - self._last_checkpoint_ms
                          >= self.settings.high_watermark_checkpoint_interval_ms)
        if checkpoint_due:
            self._last_checkpoint_ms = now_ms

        def work() -> None:
            for partition in partitions:
                try:
                    partition.log.flush_if_due(now_ms)
                    partition.log.roll_if_due(now_ms)
                    if retention:
                        partition.log.enforce_retention(now_ms)
                except OSError as exc:
                    log.error("maintenance of %s failed: %s", partition.tp, exc)
            if checkpoint_due:
                try:
                    self.checkpoints.write_if_changed()
                except OSError as exc:
                    log.error("writing the checkpoints of %s failed: %s",
                              self.settings.log_dir, exc)

        await self.on_writer(work)


def open_checkpointed_log(
    checkpoints: DirectoryCheckpoints,
    key: tuple[str, int],
    directory: str,
    config: LogConfig,
    now_ms: int,
) -> PartitionLog:
    """Writer thread: open a partition's log from the offsets its log directory's
    checkpoints hold (or its own older file), and let them keep its offsets from now on.
    A directory that does not exist yet is a new log: whatever the files say of a partition
    of that name is a deleted one's (dropped on their next round), and would make the new
    log start at its offsets."""
    stored = (checkpoints.stored(key, directory) if os.path.isdir(directory)
              else StoredOffsets())
    partition_log = PartitionLog.open(directory, config, now_ms, stored)
    partition_log.on_offsets_changed = lambda: checkpoints.save(key, partition_log)
    checkpoints.register(key, partition_log)
    return partition_log


def _read_partition_metadata(directory: str) -> str | None:
    try:
        with open(os.path.join(directory, PARTITION_METADATA_FILE)) as handle:
            return str(json.load(handle)["topic_id"])
    except (FileNotFoundError, ValueError, KeyError):
        return None


def _write_partition_metadata(directory: str, topic_id: str) -> None:
    if _read_partition_metadata(directory) != topic_id:
        write_json(os.path.join(directory, PARTITION_METADATA_FILE), {"topic_id": topic_id})


def _apply_registrations(
    updates: list[tuple[TopicPartition, Partition, PartitionRegistration]],
    clock_ms: Callable[[], int],
) -> list[str]:
    """Writer thread: Partition.apply_registration for each, in order, at the time they
    take effect."""
    now_ms = clock_ms()
    return [partition.apply_registration(registration, now_ms) for _, partition, registration
            in updates]
