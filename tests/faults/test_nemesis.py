"""The safety promise under real faults: with RF=3, min.insync.replicas=2 and acks=all, any
single fault (kill -9, SIGSTOP, a network partition of any shape, a one-way cut, a link
down) loses no acknowledged record, duplicates none, reorders none, and leaves no two
replicas disagreeing about a committed offset.

Each test is one seeded run of tests/faults/runner.py (brokers in network namespaces, a
nemesis injecting one fault at a time for about a minute, producers and a group consumer
recording a history, a final read, and the checker). The seeds are fixed so that a failure
can be replayed: `python bench/fault_run.py --seed S --brokers N --minutes M`. The fault
order is seeded; the targets (which broker leads what) are whatever the cluster is doing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.nemesis import KINDS, PARTITION_KINDS, Schedule
from tests.faults.runner import TrialConfig, TrialResult, run_trial

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(600)]


def _explain(result: TrialResult) -> str:
    faults = "\n".join(
        f"  {f.start_s:7.2f}-{f.end_s}  {f.kind}: {f.description} {f.note}"
        for f in result.history.faults
    )
    notes = "\n".join(f"  {n}" for n in result.history.notes + result.final.notes)
    return (f"seed {result.config.seed}, {result.config.brokers} brokers; history in "
            f"{result.work_dir}/history.jsonl\n{result.report.table()}\nfaults:\n{faults}\n"
            f"notes:\n{notes}")


def _assert_safe(result: TrialResult) -> None:
    explanation = _explain(result)
    print(explanation)
    report = result.report
    assert report.counts["lost"] == 0, explanation
    assert report.counts["duplicated"] == 0, explanation
    assert report.counts["reordered"] == 0, explanation
    assert report.counts["diverged"] == 0, explanation
    assert report.ok, explanation
    # the run did what it says: a real workload, every kind of fault, a partition among them
    assert report.info["acked"] >= 1_000, explanation
    assert set(result.faults_by_kind) == set(KINDS)
    assert any(result.faults_by_kind[k] for k in PARTITION_KINDS), explanation
    assert all(result.faults_by_kind.values()), explanation
    assert report.info["replicas_outside_final_isr"] == 0, explanation
    assert not any("crashed" in n for n in result.final.notes), explanation
    assert not result.guard_kept, explanation


@pytest.mark.parametrize("seed", [11, 23])
def test_three_brokers_keep_every_acknowledged_write(fault_dir: Path, seed: int):
    result = run_trial(
        TrialConfig(seed=seed, brokers=3, duration_s=60, kafka_producers=1 if seed == 11 else 0,
                    kafka_consumers=2 if seed == 11 else 0),
        fault_dir,
    )
    _assert_safe(result)


def test_five_brokers_three_voters_two_observers(fault_dir: Path):
    result = run_trial(TrialConfig(seed=5, brokers=5, voters=3, duration_s=70), fault_dir)
    _assert_safe(result)
    # observers hold replicas too: every broker's logs were compared
    assert {log.broker for log in result.final.replica_logs} == {1, 2, 3, 4, 5}


def test_the_harness_sees_what_acks_1_loses(fault_dir: Path):
    """The control: with acks=1 an isolated leader (still reached by the clients) keeps
    acknowledging writes that no follower has, and truncates them when it rejoins. The
    checker must report them lost, or a green run above would prove nothing."""
    result = run_trial(
        TrialConfig(seed=3, brokers=3, duration_s=15, acks="1", kinds=("isolate-leader",),
                    consumer=False, schedule=Schedule(hold=(5.0, 6.0))),
        fault_dir,
    )
    print(_explain(result))
    assert result.faults_by_kind["isolate-leader"] >= 1
    assert result.report.counts["lost"] > 0, _explain(result)
    assert not result.guard_kept
