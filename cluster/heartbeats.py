"""Broker session tracking on the active controller. Pure: time is passed in.

How it works: each heartbeat records when a broker was last heard from. A broker whose last
heartbeat is older than the session timeout is expired and gets fenced. Heartbeat history is
in memory only, so a newly elected controller starts every broker's clock at its own
activation: it waits one full session timeout before fencing anyone for silence (it cannot
know who was alive before it took over). Brokers it can prove dead — their port refuses a
connection — it fences at once instead (cluster/liveness.py); this tracker is for the silent.

Why a deposed leader has stopped writing by then: a broker's lease ends one session timeout
after the last majority contact of the controller that renewed it (broker/controller_client.py),
and that contact is no later than this controller's activation, so `activation + session`
is past every lease the old controller granted.
"""

from __future__ import annotations

from collections.abc import Iterable


class BrokerHeartbeatTracker:
    def __init__(self, session_timeout_ms: int) -> None:
        if session_timeout_ms <= 0:
            raise ValueError("session_timeout_ms must be positive")
        self.session_timeout_ms = session_timeout_ms
        self._last_seen_ms: dict[int, int] = {}
        self._activated_ms: int | None = None

    def activate(self, now_ms: int) -> None:
        """This node just became controller: forget history, grant everyone a full session."""
        self._last_seen_ms.clear()
        self._activated_ms = now_ms

    def touch(self, broker_id: int, now_ms: int) -> None:
        previous = self._last_seen_ms.get(broker_id, now_ms)
        self._last_seen_ms[broker_id] = max(previous, now_ms)

    def last_seen_ms(self, broker_id: int) -> int | None:
        return self._last_seen_ms.get(broker_id, self._activated_ms)

    def expired(self, broker_ids: Iterable[int], now_ms: int) -> list[int]:
        """Brokers among `broker_ids` not heard from within the session timeout."""
        if self._activated_ms is None:
            return []
        out = []
        for broker_id in broker_ids:
            seen = self._last_seen_ms.get(broker_id, self._activated_ms)
            if now_ms - seen > self.session_timeout_ms:
                out.append(broker_id)
        return sorted(out)
