"""The TCP probe (cluster/probe.py): only a refused connection comes back REFUSED."""

from __future__ import annotations

import asyncio
import socket

from raftka.cluster.liveness import ProbeOutcome
from raftka.cluster.probe import probe
from tests.harness import free_port_block


def test_a_listening_port_answers_and_a_closed_one_refuses():
    async def scenario() -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            port = listener.getsockname()[1]
            assert await probe("127.0.0.1", port, 1.0) is ProbeOutcome.ANSWERED
        assert await probe("127.0.0.1", port, 1.0) is ProbeOutcome.REFUSED
        assert await probe("127.0.0.1", free_port_block(1), 1.0) is ProbeOutcome.REFUSED

    asyncio.run(scenario())


def test_a_name_that_does_not_resolve_is_unreachable_not_dead():
    async def scenario() -> None:
        outcome = await probe("no-such-broker.invalid", 9090, 1.0)
        assert outcome is ProbeOutcome.UNREACHABLE

    asyncio.run(scenario())
