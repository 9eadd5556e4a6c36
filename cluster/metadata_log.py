"""The replicated metadata log as the rest of the code sees it, and an in-memory version.

The controller proposes encoded batches; every node applies committed batches to its image
and tells its subscriber (on the event loop) about each new image. raft.py implements this
over pysyncobj; InMemoryMetadataLog implements it in one process for tests of the layers
above (controller runtime, broker reactions) without sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from raftka.cluster.delta import apply_encoded_batch
from raftka.cluster.image import EMPTY_IMAGE, MetadataImage

ImageListener = Callable[[MetadataImage, MetadataImage], None]


class ProposeError(Exception):
    """A batch was not committed: not the leader, leadership lost, or timed out. The
    outcome may be unknown (timeout): callers must re-check the image before retrying."""

    def __init__(self, reason: str, *, not_leader: bool = False) -> None:
        super().__init__(reason)
        self.not_leader = not_leader


class MetadataLog(Protocol):
    @property
    def image(self) -> MetadataImage: ...

    def is_leader(self) -> bool: ...

    def has_quorum_contact(self) -> bool:
        """Leader, and a majority of the voters answered it within the Raft fallback timeout
        (so no other leader can have been elected meanwhile). What grants leases checks this."""
        ...

    def quorum_contact_age_s(self) -> float:
        """Seconds since a majority of the voters last answered this leader (0 for a lone
        voter). Leases granted now count from then."""
        ...

    def leader_id(self) -> int | None:
        """Node id of the current Raft leader (the controller), if known."""
        ...

    def subscribe(self, listener: ImageListener) -> None: ...

    def transfer_leadership(self) -> None:
        """As leader, ask the most caught-up voter to take over (best effort, asynchronous):
        a stopping controller's last act."""
        ...

    async def propose(self, batch: bytes, timeout_s: float) -> int:
        """Commit `batch`; return the metadata offset after it was applied here, or
        SKIPPED_OFFSET when replay skipped it (built on an image the log had moved past)."""
        ...

    def status(self) -> dict[str, object]: ...


# What propose returns for a batch that was committed but skipped on replay: it was built on
# an image the log had moved past (another controller wrote, or an earlier write of this
# one whose wait timed out landed first). Not an offset: an offset after a batch of the same
# length would look like success.
SKIPPED_OFFSET = -1


class InMemoryMetadataLog:
    """Single-node metadata log: commits at once, on the calling loop."""

    def __init__(self, node_id: int = 1, *, leader: bool = True) -> None:
        self.node_id = node_id
        self._leader = leader
        self.quorum_contact = True  # tests cut it to play a leader that lost its majority
        self.contact_age_s = 0.0  # tests set how long ago the majority last answered
        self._image = EMPTY_IMAGE
        self._listeners: list[ImageListener] = []
        self.batches: list[bytes] = []
        self.transfers_asked = 0

    @property
    def image(self) -> MetadataImage:
        return self._image

    def is_leader(self) -> bool:
        return self._leader

    def has_quorum_contact(self) -> bool:
        return self._leader and self.quorum_contact

    def quorum_contact_age_s(self) -> float:
        return self.contact_age_s


    def set_leader(self, leader: bool) -> None:
        self._leader = leader

    def leader_id(self) -> int | None:
        return self.node_id if self._leader else None

    def subscribe(self, listener: ImageListener) -> None:
        self._listeners.append(listener)

    def transfer_leadership(self) -> None:
        self.transfers_asked += 1  # one node: no one to hand over to

    async def propose(self, batch: bytes, timeout_s: float) -> int:
        if not self._leader:
            raise ProposeError("not the leader", not_leader=True)
        await asyncio.sleep(0)
        before = self._image
        self.apply(batch)
        return SKIPPED_OFFSET if self._image is before else self._image.offset

    def apply(self, batch: bytes) -> None:
        old, self._image = self._image, apply_encoded_batch(self._image, batch)
        self.batches.append(batch)
        for listener in self._listeners:
            listener(old, self._image)

    def status(self) -> dict[str, object]:
        return {"leader": self._leader, "offset": self._image.offset}
