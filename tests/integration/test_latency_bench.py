"""bench/latency.py end to end, small, with each producing client: every counted record is
acknowledged without error, timed, and seen by the end-to-end consumer. Timing figures are
never asserted, only their presence. In-process, so the script's own clean-up (it stops the
cluster it started) runs even when the test fails."""

from __future__ import annotations

import json
import sys

import pytest

from bench import latency

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("client", ["sdk", "kafka"])
def test_open_loop_latency_with_each_client(client: str, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["latency.py", "--rates", "300", "--seconds", "2",
                                      "--client", client, "--json"])
    assert latency.main() == 0
    (row,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["client"] == client and row["produce_errors"] == 0
    assert row["produce_ms"]["samples"] == row["counted"] == 300
    assert row["produce_ms"]["p99"] >= row["produce_ms"]["p50"] > 0
    assert row["consumer_saw"] == row["records"] == 600
    assert row["end_to_end_ms"]["samples"] == 300
