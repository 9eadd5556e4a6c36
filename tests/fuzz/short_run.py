"""What the short runs share: hypothesis settings (derandomized: the same examples on every
run and machine, no example database), and a time bound per input."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings

from tests.fuzz.targets import Unexpected

# Far above what any input takes (milliseconds; the slowest, a store reset, ~0.5 s), far
# below a hang: an input that takes longer is reported with its bytes.
SLOW_SECONDS = 5.0


def fuzz_settings(max_examples: int) -> Any:
    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                    print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much,
                                           HealthCheck.function_scoped_fixture])


def bounded(target: str, data: bytes, check: Callable[..., str], *args: Any) -> str:
    """check(*args), failing when that one input takes more than SLOW_SECONDS."""
    started = time.perf_counter()
    outcome = check(*args)
    took = time.perf_counter() - started
    if took > SLOW_SECONDS:
        raise Unexpected(target, data, f"took {took:.1f} s (bound {SLOW_SECONDS} s)")
    return outcome
