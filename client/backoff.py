"""How long the SDK waits before retrying: exponential, capped, with jitter (Kafka's KIP-580).

Pure: the caller passes the attempt number and a uniform random number, so tests pick both.

Why these defaults: a failover on a local cluster takes well under a second once the new
leader is elected; a client retrying every 100 ms (Kafka's old fixed retry.backoff.ms) adds
up to 100 ms to every recovery, and many clients retrying in lockstep hit the new leader at
the same instant. Starting at tens of ms, doubling, and spreading each wait by +/-20% keeps
the added delay small and the retries apart. A retry that follows a leader hint (KIP-951)
does not wait at all: the SDK already knows where to go.
"""

from __future__ import annotations

# First retry waits this long (ms); Producer(retry_backoff_ms=...) and the Consumer use it.
RETRY_BACKOFF_MS = 20
# No wait grows beyond this (ms); Producer(retry_backoff_max_ms=...).
RETRY_BACKOFF_MAX_MS = 100
# Each wait is spread by up to this fraction either way.
JITTER_FRACTION = 0.2


def validate(base_ms: int, max_ms: int) -> None:
    """Refuse limits that cannot work, at start-up rather than on the first retry."""
    if base_ms <= 0 or max_ms < base_ms:
        raise ValueError(
            f"retry backoff must be > 0 ms and at most its maximum; got {base_ms} ms, "
            f"max {max_ms} ms"
        )


def backoff_ms(attempt: int, unit_random: float, base_ms: int = RETRY_BACKOFF_MS,
               max_ms: int = RETRY_BACKOFF_MAX_MS) -> int:
    """The wait before retry number `attempt` (1 = the first retry), in ms.

    `unit_random` is uniform in [0, 1): 0 gives the shortest spread, 0.5 the middle."""
    assert attempt >= 1, attempt
    assert 0.0 <= unit_random < 1.0, unit_random
    exponential = min(max_ms, base_ms * 2 ** min(attempt - 1, 30))
    spread = 1.0 + JITTER_FRACTION * (2.0 * unit_random - 1.0)
    return max(1, min(max_ms, round(exponential * spread)))
