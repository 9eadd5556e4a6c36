"""A controller call made on the controller itself keeps its deadline.

Seen with 1,000 partitions on a loaded machine: ISR proposals a leader sent to itself (it
had become the controller) queued behind the controller's lock with no deadline, so the
leader's single pending proposal per partition never ended, its partitions stayed out of the
ISR for minutes and acks=all produce timed out. Over gRPC the same call gave up after its
timeout and was proposed again.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from raftka.broker.controller_client import ChannelPool, ControllerClient
from raftka.cluster.quorum import ControllerTimeoutError


class _SelfLeadingLog:
    def leader_id(self) -> int:
        return 1


def test_a_local_controller_call_that_does_not_finish_times_out():
    async def main() -> float:
        client = ControllerClient(1, _SelfLeadingLog(), None, ChannelPool())  # type: ignore[arg-type]
        never = asyncio.Event()

        async def stuck(_request: object) -> object:
            await never.wait()  # e.g. queued behind the controller's lock
            return None

        started = time.monotonic()
        with pytest.raises(ControllerTimeoutError, match="stuck_call timed out"):
            await client.call("stuck_call", stuck, lambda _channel: None,  # type: ignore[arg-type]
                              "/raftka.v1.ControllerService/X", object(), 0.3)
        return time.monotonic() - started

    elapsed = asyncio.run(main())
    assert elapsed < 5.0
