"""A TCP connect probe: does anything listen at host:port? What the answer proves is
cluster/liveness.py's to say; this is the I/O, shared by the Raft node (is the leader gone?)
and the controller's broker watch (is this broker gone?)."""

from __future__ import annotations

import asyncio
import socket

from raftka.cluster.liveness import ProbeOutcome


async def probe(host: str, port: int, timeout_s: float) -> ProbeOutcome:
    """Connect to host:port and hang up at once. REFUSED only when every address the name
    resolves to refused; a name that does not resolve is UNREACHABLE."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout_s
        )
    except (OSError, TimeoutError):
        return ProbeOutcome.UNREACHABLE
    outcomes = set()
    for family, kind, proto, _, address in infos:
        outcome = await _probe_address(family, kind, proto, address, timeout_s)
        if outcome is ProbeOutcome.ANSWERED:
            return outcome
        outcomes.add(outcome)
    if outcomes == {ProbeOutcome.REFUSED}:
        return ProbeOutcome.REFUSED
    return ProbeOutcome.SILENT if ProbeOutcome.SILENT in outcomes else ProbeOutcome.UNREACHABLE


async def _probe_address(
    family: int, kind: int, proto: int, address: tuple[object, ...], timeout_s: float
) -> ProbeOutcome:
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, address), timeout_s)
    except ConnectionRefusedError:
        return ProbeOutcome.REFUSED
    except TimeoutError:
        return ProbeOutcome.SILENT
    except OSError:
        return ProbeOutcome.UNREACHABLE
    finally:
        sock.close()
    return ProbeOutcome.ANSWERED
