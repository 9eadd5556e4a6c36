"""bench/compare.py end to end, small: one real 3-broker cluster and one real 3-server NATS
JetStream cluster, a few rows, and the figures every row must carry (records/s, CPU per
million records of the client and of each server, who leads); with --profile, a py-spy
summary of every Python process. Timing figures are never asserted, only their presence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import compare

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert compare.main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_raftka_and_nats_rows_in_one_run(capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    markdown = tmp_path / "section.md"
    result = run(capsys, "--records", "3000", "--only",
                 "sdk-consume,kafka-consume,nats-consume,sync-sdk", "--sends", "20",
                 "--markdown", str(markdown))

    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == ["sdk-consume", "kafka-consume", "nats-consume", "sync-sdk"]
    for name in ("sdk-consume", "kafka-consume", "nats-consume"):
        assert rows[name]["records"] >= 3000 and rows[name]["records_per_s"] > 0
    for row in rows.values():
        assert set(row["cpu_s_per_m"]) == {"client", "server 1", "server 2", "server 3"}
        assert all(v is not None and v >= 0 for v in row["cpu_s_per_m"].values())
    assert rows["sdk-consume"]["leaders"].startswith("p0: broker ")
    assert rows["nats-consume"]["leaders"].startswith("stream leader: server ")
    assert rows["sync-sdk"]["produce_p99_ms"] >= rows["sync-sdk"]["produce_p50_ms"] > 0
    text = markdown.read_text()
    assert text.startswith("## Side by side: Raftka and NATS JetStream, one run")
    assert "load average before" in text and "| sdk-consume |" in text
    assert "SDK consume / NATS consume" in text


def test_profile_summarizes_every_python_process(capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "--records", "20000", "--only", "sdk-send", "--profile")

    (row,) = result["rows"]
    assert set(row["profiles"]) == {"client", "server 1", "server 2", "server 3"}
    assert row["profiles"]["client"]["samples"] > 0
    assert row["profiles"]["client"]["top"], "the producing client was never busy"


def test_an_unknown_broker_setting_stops_the_run_with_the_brokers_answer(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert compare.main(["--only", "batches", "--set", "no.such.setting=1"]) == 1
    assert "unknown broker setting 'no.such.setting'" in capsys.readouterr().err


def test_pinning_puts_brokers_and_bench_clients_on_one_cpu_each(
        capsys: pytest.CaptureFixture[str]) -> None:
    from raftka import cpuset

    result = run(capsys, "--records", "3000", "--only", "batches,sdk-consume",
                 "--pin-brokers", "--pin-clients")

    assert result["settings"] == {"cpu.affinity": "auto"}
    cpu = result["client_cpu"]
    assert cpu == compare.pinned_client_cpu(cpuset.allowed_cpus(), compare.BROKER_IDS)
    assert [row["cpus"] for row in result["rows"]] == [str(cpu), str(cpu)]
    assert all(row["records_per_s"] > 0 for row in result["rows"])
