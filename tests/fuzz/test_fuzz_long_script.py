"""bench/fuzz_long.py, the long run, run short: it finishes clean on the real targets, and
its watchdog reports (with the input in hex) what a fuzzer exists to find: an unexpected
exception, a process killed by a native crash, a hang, a runaway allocation."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from bench import fuzz_long
from tests.fuzz.targets import Unexpected


def test_a_short_long_run_is_clean(capfd: pytest.CaptureFixture[str]) -> None:
    status = fuzz_long.main(["--inputs", "3000", "--seed", "5"])

    out = capfd.readouterr().out
    assert status == 0, out
    for name in ("kafka", "records", "grpc"):
        assert f"{name}: 3,000 inputs" in out
    assert "unexpected failures: 0" in out


def _planted(trigger: str) -> Any:
    """A target whose 50th input is b"boom" and whose check misbehaves on it."""

    def make(name: str, rng: Any) -> tuple[Any, Any, Any]:
        counter = iter(range(10**9))

        def next_input() -> tuple[bytes]:
            return (b"boom" if next(counter) == 49 else b"fine",)

        def check(data: bytes) -> str:
            if data == b"boom":
                if trigger == "raise":
                    raise Unexpected(name, data, "planted failure")
                if trigger == "abort":
                    os.abort()
                if trigger == "hang":
                    time.sleep(3600)
                if trigger == "memory":  # beyond the worker's address-space cap
                    bytearray(64 * 2**30)
            return "ok"

        return next_input, check, lambda: None

    return make


@pytest.mark.parametrize(("trigger", "reported"), [
    ("raise", "UNEXPECTED x1: kafka: planted failure"),
    ("abort", "worker killed by signal 6"),
    ("hang", "no progress for 2 s: hang"),
    ("memory", "worker exited with status 1"),  # MemoryError, not the machine swapping
])
def test_the_watchdog_reports_the_input_that_broke_a_worker(
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], trigger: str,
        reported: str) -> None:
    monkeypatch.setattr(fuzz_long, "_make_target", _planted(trigger))

    status = fuzz_long.main(["--inputs", "200", "--targets", "kafka", "--hang-seconds", "2"])

    out = capfd.readouterr().out
    assert status == 1, out
    assert reported in out
    assert "input (hex): 626f6f6d" in out  # b"boom"
