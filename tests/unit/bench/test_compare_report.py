"""bench/compare.py's pure parts: CPU from /proc/PID/stat text, the issue 17 targets and
ratios, py-spy raw profile summaries, row selection and the tables."""

from __future__ import annotations

import pytest

from bench import compare
from bench import compare_report as report

# A /proc/PID/stat line whose command name holds spaces and a ")" (fields 14/15 = utime,
# stime in ticks: 250 and 50).
STAT = ("4242 (python3 -m (x) y) S 1 4242 4242 0 -1 4194304 1000 0 0 0 250 50 0 0 20 0 9 0 "
        "123 456 789")


def test_cpu_is_utime_plus_stime_counted_after_the_last_parenthesis() -> None:
    assert report.cpu_seconds_from_stat(STAT, 100) == 3.0


@pytest.mark.parametrize("text", ["", "4242 python S 1", "4242 (python) S 1 2 3"])
def test_cpu_from_something_that_is_not_a_stat_line_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="not a /proc/PID/stat line"):
        report.cpu_seconds_from_stat(text, 100)


def test_cpu_per_million_records() -> None:
    assert report.cpu_per_million(10.0, 13.0, 500_000) == 6.0
    assert report.cpu_per_million(1.0, 1.0, 0) is None
    with pytest.raises(ValueError, match="backwards"):
        report.cpu_per_million(5.0, 4.0, 1000)


ROWS = {
    "batches": {"records_per_s": 1_200_000},
    "sdk-send": {"records_per_s": 400_000},
    "sdk-consume": {"records_per_s": 1_500_000},
    "nats-publish": {"records_per_s": 50_000},
    "nats-consume": {"records_per_s": 100_000},
    "latency-10000": {"produce_p99_ms": 12.5},
}


def test_targets_are_checked_for_the_rows_that_ran() -> None:
    table = {t["row"]: t for t in report.target_table(ROWS)}

    assert set(table) == {"batches", "sdk-send", "sdk-consume", "latency-10000"}
    assert table["batches"]["met"] and table["batches"]["ratio"] == 1.2
    assert not table["sdk-send"]["met"] and table["sdk-send"]["ratio"] == 0.8
    assert table["latency-10000"]["bound"] == "≤ 10" and not table["latency-10000"]["met"]


def test_ratios_against_nats_in_the_same_run() -> None:
    table = {r["ratio"]: r for r in report.ratio_table(ROWS)}

    assert table["SDK send() / NATS publish"]["value"] == 8.0
    assert table["SDK send() / NATS publish"]["met"] is False
    assert table["SDK consume / NATS consume"]["met"] is True
    assert table["pre-built batches / NATS publish"]["met"] is None  # no ratio asked
    assert "SDK send_many() / NATS publish" not in table  # that row did not run


RAW = "\n".join([
    "thread (11): MainThread;<module> (bench.py:3);Producer.send (raftka/client/producer.py:90)"
    " 30",
    "thread (11): MainThread;<module> (bench.py:3);Producer.send (raftka/client/producer.py:95)"
    " 10",
    "thread (12): sender;run (threading.py:9);Sender.loop (raftka/client/sender.py:5);"
    "PyThread_acquire_lock_timed (libpython3.11.so.1.0);0x7f00aa (libc.so.6);0x7f00ab (libc.so.6)"
    " 100",
    "thread (13);_run (grpc.py:1);epoll_wait (libc.so.6) 40",
    "thread (14);EpollSelector.select (selectors.py:468) 15",
    "thread (11): MainThread;ProducerBatch.add (raftka/client/accumulator.py:194);"
    "0x7f1ae16abcae (libc.so.6) 10",
    "thread (11): MainThread;<module> (<frozen importlib._bootstrap>:1);compile (x.py:1) 5",
    "not a sample line",
])


def test_profile_own_time_leaves_out_waiting_and_start_up() -> None:
    summary = report.summarize_raw_profile(RAW, top=5)

    assert summary["samples"] == 210
    assert summary["top"] == [
        ("Producer.send (raftka/client/producer.py)", 80.0),
        ("ProducerBatch.add (raftka/client/accumulator.py) > libc.so.6", 20.0),
    ]
    assert summary["busy_share"] == round(50 / 210, 3)


def test_an_empty_profile_summarizes_to_nothing() -> None:
    assert report.summarize_raw_profile("") == {"samples": 0, "busy_share": 0.0, "top": []}


def test_rows_are_selected_by_name_or_group() -> None:
    names = [r.name for r in compare.select_rows("nats,batches", None)]
    assert names == ["batches", "nats-publish", "nats-consume"]
    assert all("nats" not in r.name for r in compare.select_rows(None, "nats"))
    assert [r.name for r in compare.select_rows("sync", "sync-kafka")] == ["sync-sdk"]
    with pytest.raises(ValueError, match="unknown row"):
        compare.select_rows("natz", None)


def test_broker_settings_are_key_value_pairs() -> None:
    assert compare.parse_settings(["replication.transport=stream", " a = b "]) == {
        "replication.transport": "stream", "a": "b"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        compare.parse_settings(["replication.transport"])


def test_the_markdown_table_has_a_header_rule_and_escapes_nothing_it_need_not() -> None:
    text = report.render_table(["a", "b"], [["x", "1"], ["y", "2"]], markdown=True)
    assert text.splitlines() == ["| a | b |", "|---|---|", "| x | 1 |", "| y | 2 |"]
    plain = report.render_table(["row", "n"], [["long-name", "1,000"]], markdown=False, left=1)
    assert plain.splitlines() == ["row            n", "long-name  1,000"]


def test_the_target_rows_in_the_table() -> None:
    body = report.target_body(ROWS)
    first = body[0]
    assert first == ["pre-built batches produce", "1,200,000", "≥ 1,000,000", "1.2x", "yes"]
    assert ["SDK send() / NATS publish", "8x", "≥ 10x", "", "NO"] in body


def test_the_servers_total_leaves_out_the_client() -> None:
    assert report.servers_total({"client": 9.0, "server 1": 1.25, "server 2": 2.0}) == 3.25
    assert report.servers_total({"client": 9.0}) is None


def test_a_stack_with_no_named_frame_is_counted_as_unnamed_work() -> None:
    assert report.own_frame(["0x7f00 (libc.so.6)", "0x7f01 (libc.so.6)"]) == (
        "unnamed (libc.so.6)", False)
    assert report.own_frame(["run (threading.py:9)", "wait (threading.py:320)"]) == ("", True)


def test_waiting_python_methods_are_idle_whatever_their_class() -> None:
    for frame in ("Condition.wait (threading.py:320)", "Queue.get (queue.py:171)",
                  "Thread._wait_for_tstate_lock (threading.py:1116)",
                  "EpollSelector.select (selectors.py:468)"):
        assert report.is_idle(frame), frame
    assert not report.is_idle("Producer.send (raftka/client/producer.py:90)")


MEMINFO = """MemTotal:       24587456 kB
Dirty:            204800 kB
Writeback:          1024 kB
WritebackTmp:          0 kB
"""


def test_unwritten_data_is_dirty_plus_writeback_in_mb() -> None:
    assert report.unwritten_mb(MEMINFO) == round((204800 + 1024) * 1024 / 1e6, 1)


@pytest.mark.parametrize("text", ["MemTotal: 1 kB\n", "Dirty: 5 MB\nWriteback: 0 kB\n",
                                  "Dirty: x kB\nWriteback: 0 kB\n"])
def test_meminfo_without_the_two_lines_in_kb_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="meminfo"):
        report.unwritten_mb(text)


def test_each_table_row_ends_with_the_unwritten_data_before_it() -> None:
    rows = [{"name": "batches", "records": 10, "records_per_s": 5, "mb_per_s": 1.0,
             "cpu_s_per_m": {"client": 1.0}, "unwritten_mb_before": 1234.5},
            {"name": "latency-1000", "produce_p50_ms": 1.0, "produce_p99_ms": 2.0,
             "cpu_s_per_m": {"client": 1.0}, "unwritten_mb_before": 0.0}]
    assert report.throughput_body(rows, ["client"])[0][-1] == "1,234"
    assert report.latency_body(rows, ["client"])[0][-1] == "0"


def test_pinned_clients_go_to_the_cpu_the_fewest_brokers_got() -> None:
    # auto: broker 1 -> the 2nd CPU, 2 -> the 1st, 3 -> the 2nd again (slot % count)
    assert compare.pinned_client_cpu(frozenset({0, 1}), (1, 2, 3)) == 0
    assert compare.pinned_client_cpu(frozenset({0, 1, 2, 3}), (1, 2, 3)) == 0  # free CPU
    assert compare.pinned_client_cpu(frozenset({5}), (1, 2, 3)) == 5
    assert compare.pinned_client_cpu(frozenset({3, 1}), ()) == 1  # brokers not pinned


def test_nats_starts_just_before_its_first_row_and_stops_after_its_last(tmp_path,
                                                                         monkeypatch) -> None:
    """Started with the Raftka cluster, a just-started JetStream cluster ran beside the
    Raftka rows (0.68-0.81x their figures). Each row must see NATS running only if it is
    a NATS row."""
    import argparse

    seen: list[tuple[str, bool]] = []

    class FakeNats:
        def stop(self) -> None:
            seen.append(("stopped", False))

    run = compare.Run(argparse.Namespace(profile=False), tmp_path, tmp_path)

    def start_nats() -> None:
        run.nats = FakeNats()  # type: ignore[assignment]

    def measure(spec, profile):
        seen.append((spec.name, run.nats is not None))
        if spec.fills:
            run.filled.add(spec.fills)
        return {"name": spec.name}

    monkeypatch.setattr(run, "start_nats", start_nats)
    monkeypatch.setattr(run, "measure", measure)
    monkeypatch.setattr(compare, "summary_line", lambda row: "")
    specs = compare.select_rows("batches,sdk-send,nats-publish,nats-consume,latency-1000", None)
    run.run(specs)
    assert seen == [("batches", False), ("sdk-send", False), ("nats-publish", True),
                    ("nats-consume", True), ("stopped", False), ("latency-1000", False)]
