"""Proof of death: which brokers the active controller watches, and what a probe proves. Pure.

How it works: the active controller keeps a watch open to every live broker (a stream the
broker answers once and then leaves silent; broker/liveness.py is the I/O). When a watch
breaks, or when a controller takes over and knows nothing of anyone's recent past, it probes
the broker's port with a plain TCP connect. Only one outcome is proof:

- REFUSED (ECONNREFUSED: the host answered with a reset, nothing listens on the port) means
  the process that registered there is gone — its sockets closed with it. The broker is
  fenced at once and its partitions get new leaders, no session timeout waited out.
- ANSWERED means something listens: a broker that is alive, paused (the kernel completes
  handshakes for a stopped process), or a new incarnation that will register itself.
- SILENT (no answer within the probe timeout) and UNREACHABLE (no route, link down) are what
  a partition or a dead host looks like from here. Neither proves anything about the
  process; a paused or cut-off broker still answers to its lease and the session timeout.

A proof is about one registration (the broker epoch watched): a broker that registered again
meanwhile is a different incarnation and is not fenced for its predecessor's death.

What this takes for granted: a reset comes from the broker's own host, i.e. nothing between
controller and broker answers for it (a firewall rule that rejects with a TCP reset would,
and would get a live broker fenced without its lease having run out). Partitions made by
dropping packets, links that go down and paused processes all stay on the timer side.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from raftka.cluster.image import MetadataImage


class ProbeOutcome(enum.Enum):
    REFUSED = "refused"  # proof: nothing listens there any more
    ANSWERED = "answered"  # something listens (alive, paused, or a new incarnation)
    SILENT = "silent"  # no answer within the probe timeout: silence, not proof
    UNREACHABLE = "unreachable"  # no route / network down: not proof either


def proves_death(outcome: ProbeOutcome) -> bool:
    return outcome is ProbeOutcome.REFUSED


@dataclass(frozen=True, slots=True)
class WatchTarget:
    """One registration of a live broker, as the controller watches it."""

    broker_id: int
    broker_epoch: int
    incarnation_id: str
    host: str
    port: int


def watch_targets(image: MetadataImage, self_id: int) -> dict[int, WatchTarget]:
    """Every unfenced broker but this one (a controller does not watch itself)."""
    return {
        broker.broker_id: WatchTarget(
            broker.broker_id, broker.epoch, broker.incarnation_id, broker.host, broker.port
        )
        for broker in image.brokers.values()
        if not broker.fenced and broker.broker_id != self_id
    }


def watch_changes(
    watching: Mapping[int, WatchTarget], wanted: Mapping[int, WatchTarget]
) -> tuple[list[int], list[WatchTarget]]:
    """(broker ids whose watch should stop, targets to start watching): a watch of a
    registration that changed (new epoch, moved address) is replaced."""
    stop = sorted(b for b, target in watching.items() if wanted.get(b) != target)
    start = [target for b, target in sorted(wanted.items()) if watching.get(b) != target]
    return stop, start
