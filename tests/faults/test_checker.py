"""The checker on hand-made histories: each category is caught, and what Kafka allows (a
failed write that is in the log after all, a consumer reading a record twice after a
rebalance, a lower commit after a later one) is not counted."""

from __future__ import annotations

from pathlib import Path

from raftka.records import encode_batch, patch_offsets
from tests.faults.checker import SAFETY, check
from tests.faults.history import (
    FAIL,
    OK,
    PENDING,
    CommitOp,
    Consumed,
    FaultEvent,
    FinalState,
    History,
    Ownership,
    ReadRecord,
    ReplicaBatch,
    ReplicaLog,
    WriteOp,
)


def acked(value: int, partition: int, offset: int, producer: str = "p0", seq: int | None = None,
          at: float = 1.0) -> WriteOp:
    return WriteOp(value, producer, value if seq is None else seq, at, OK, at + 0.1, partition,
                   offset)


def history_of(*writes: WriteOp) -> History:
    history = History()
    history.writes.extend(writes)
    return history


def final_of(reads: list[tuple[int, int, int]], **extra: object) -> FinalState:
    final = FinalState(reads=[ReadRecord(*r) for r in reads])
    partitions = {p for p, _, _ in reads}
    final.high_watermarks = {
        p: max(o for q, o, _ in reads if q == p) + 1 for p in partitions
    }
    for key, value in extra.items():
        setattr(final, key, value)
    return final


def batch(base_offset: int, values: list[int], epoch: int = 0,
          producer: tuple[int, int, int] | None = None) -> ReplicaBatch:
    """`producer`: (producer id, producer epoch, base sequence) of an idempotent producer."""
    pid, producer_epoch, sequence = producer or (-1, -1, -1)
    data = bytearray(encode_batch([(None, str(v).encode(), [], 1_000) for v in values],
                                  producer_id=pid, producer_epoch=producer_epoch,
                                  base_sequence=sequence))
    patch_offsets(data, 0, base_offset, epoch)
    return ReplicaBatch(base_offset, base_offset + len(values) - 1, bytes(data))


def nonzero(report: object) -> dict[str, int]:
    return {k: v for k, v in report.counts.items() if v}  # type: ignore[attr-defined]


def test_a_clean_history_counts_nothing():
    history = history_of(acked(1, 0, 0), acked(2, 0, 1), acked(3, 1, 0, producer="p1"))
    history.writes.append(WriteOp(4, "p1", 4, 2.0, FAIL, 2.5, error="timeout"))
    history.writes.append(WriteOp(5, "p1", 5, 2.0))  # pending, not in the log: fine
    report = check(history, final_of([(0, 0, 1), (0, 1, 2), (1, 0, 3), (1, 1, 4)]))
    assert report.ok, report.table()
    assert set(report.counts) == set(SAFETY)
    assert report.info["acked"] == 3
    assert report.info["failed_but_present"] == 1  # an unknown outcome may land: legal
    assert report.info["pending"] == 1


def test_an_acknowledged_value_missing_from_the_final_read_is_lost():
    history = history_of(acked(1, 0, 0), acked(2, 0, 1), acked(3, 0, 2))
    history.faults.append(FaultEvent("kill", [2], 0.5, 1.5, "kill -9 broker 2"))
    report = check(history, final_of([(0, 0, 1), (0, 1, 3)]))
    assert nonzero(report) == {"lost": 1, "reordered": 1}  # 3 acked at 2, read at 1
    lost = next(a for a in report.anomalies if a.category == "lost")
    assert "value 2" in lost.detail and "kill[2]" in lost.detail


def test_a_value_read_twice_is_duplicated():
    history = history_of(acked(1, 0, 0), acked(2, 0, 1))
    report = check(history, final_of([(0, 0, 1), (0, 1, 2), (0, 2, 2)]))
    assert nonzero(report) == {"duplicated": 1}
    assert report.info["duplicate_copies"] == 1


def _renumbered_run(second_epoch: int, producer: str) -> tuple[History, FinalState]:
    """Values 1 and 2 written by one idempotent producer (id 7) in a batch of epoch 3, then
    again at offsets 3-4 in a batch of `second_epoch`, acknowledged there."""
    history = history_of(acked(1, 0, 3, producer=producer), acked(2, 0, 4, producer=producer),
                         acked(9, 0, 2, producer="other"))
    logs = [ReplicaLog(broker, 0, [batch(0, [1, 2], producer=(7, 3, 10)), batch(2, [9]),
                                   batch(3, [1, 2], producer=(7, second_epoch, 0))])
            for broker in (1, 2)]
    final = final_of([(0, 0, 1), (0, 1, 2), (0, 2, 9), (0, 3, 1), (0, 4, 2)],
                     replica_logs=logs, isr={0: [1, 2]}, replicas={0: [1, 2]})
    return history, final


def test_a_kafka_client_that_renumbered_after_an_epoch_bump_is_not_a_broker_duplicate():
    """librdkafka bumps its producer epoch after a permanent error (a message timed out) and
    renumbers the messages it still holds from sequence 0, even ones an earlier attempt may
    have stored (rdkafka_request.c, 'message sequence gap'). No broker can tell those apart
    from new records: they are counted apart, for information."""
    history, final = _renumbered_run(second_epoch=4, producer="kafka-0")
    report = check(history, final)
    assert report.ok, report.table()
    assert report.info["renumbered_by_client"] == 2


def test_copies_under_one_producer_epoch_are_duplicates_whoever_sent_them():
    history, final = _renumbered_run(second_epoch=3, producer="kafka-0")
    assert nonzero(check(history, final)) == {"duplicated": 2}


def test_the_sdk_never_renumbers_so_its_copies_are_duplicates():
    history, final = _renumbered_run(second_epoch=4, producer="raftka-0")
    assert nonzero(check(history, final)) == {"duplicated": 2}


def test_the_same_record_read_twice_by_the_reader_is_not_a_duplicate():
    history = history_of(acked(1, 0, 0))
    report = check(history, final_of([(0, 0, 1), (0, 0, 1)]))
    assert report.ok, report.table()


def test_two_values_at_one_offset_in_the_final_read_is_divergence():
    history = history_of(acked(1, 0, 0), WriteOp(2, "p0", 2, 1.0, FAIL, 2.0))
    report = check(history, final_of([(0, 0, 1), (0, 0, 2)]))
    assert nonzero(report) == {"diverged": 1}


def test_a_value_read_at_another_offset_than_its_ack_is_reordered():
    history = history_of(acked(1, 0, 0), acked(2, 0, 1))
    report = check(history, final_of([(0, 0, 2), (0, 1, 1)]))
    # both sit elsewhere than acked, and 2 (sent second) is before 1: two values flagged
    assert nonzero(report) == {"reordered": 2}


def test_a_producers_later_value_before_its_earlier_one_is_reordered():
    # the acks (wrongly) agree with the log, so only the send order shows the problem
    history = history_of(acked(1, 0, 1, seq=0), acked(2, 0, 0, seq=1))
    report = check(history, final_of([(0, 0, 2), (0, 1, 1)]))
    assert nonzero(report) == {"reordered": 1}
    # other producers, or other partitions, may interleave freely
    history = history_of(acked(1, 0, 1, "a", 0), acked(2, 0, 0, "b", 0), acked(3, 1, 0, "a", 1))
    assert check(history, final_of([(0, 0, 2), (0, 1, 1), (1, 0, 3)])).ok


def test_a_value_nobody_sent_is_unexpected():
    report = check(history_of(acked(1, 0, 0)), final_of([(0, 0, 1), (0, 1, 99)]))
    assert nonzero(report) == {"unexpected": 1}


def test_identical_replicas_do_not_diverge():
    logs = [ReplicaLog(b, 0, [batch(0, [1, 2]), batch(2, [3])]) for b in (1, 2, 3)]
    final = final_of([(0, 0, 1), (0, 1, 2), (0, 2, 3)], replica_logs=logs,
                     isr={0: [1, 2, 3]}, replicas={0: [1, 2, 3]})
    report = check(history_of(acked(1, 0, 0), acked(2, 0, 1), acked(3, 0, 2)), final)
    assert report.ok, report.table()
    assert report.info["replica_logs_compared"] == 3


def test_replicas_that_differ_below_the_high_watermark_diverge():
    good = [batch(0, [1, 2]), batch(2, [3])]
    logs = [
        ReplicaLog(1, 0, good),
        ReplicaLog(2, 0, good),
        ReplicaLog(3, 0, [batch(0, [1, 2]), batch(2, [4])]),  # another record at offset 2
    ]
    final = final_of([(0, 0, 1), (0, 1, 2), (0, 2, 3)], replica_logs=logs,
                     isr={0: [1, 2, 3]}, replicas={0: [1, 2, 3]})
    history = history_of(acked(1, 0, 0), acked(2, 0, 1), acked(3, 0, 2),
                         WriteOp(4, "p1", 0, 1.0, FAIL, 2.0))
    report = check(history, final)
    assert nonzero(report) == {"diverged": 1}
    assert "replica 3" in report.anomalies[0].detail
    assert "offset 2: 3 vs 4" in report.anomalies[0].detail


def test_same_records_in_batches_of_another_leader_epoch_diverge():
    logs = [ReplicaLog(1, 0, [batch(0, [1])]), ReplicaLog(2, 0, [batch(0, [1])]),
            ReplicaLog(3, 0, [batch(0, [1], epoch=7)])]
    final = final_of([(0, 0, 1)], replica_logs=logs, isr={0: [1, 2, 3]})
    report = check(history_of(acked(1, 0, 0)), final)
    assert nonzero(report) == {"diverged": 1}
    assert "different batch bytes" in report.anomalies[0].detail


def test_an_isr_member_short_of_the_high_watermark_diverges():
    logs = [ReplicaLog(1, 0, [batch(0, [1, 2])]), ReplicaLog(2, 0, [batch(0, [1, 2])]),
            ReplicaLog(3, 0, [])]
    final = final_of([(0, 0, 1), (0, 1, 2)], replica_logs=logs, isr={0: [1, 2, 3]})
    report = check(history_of(acked(1, 0, 0), acked(2, 0, 1)), final)
    assert nonzero(report) == {"diverged": 1}
    assert "below the high watermark" in report.anomalies[0].detail


def test_uncommitted_tails_and_replicas_outside_the_isr_are_not_divergence():
    logs = [
        ReplicaLog(1, 0, [batch(0, [1]), batch(1, [5])]),  # the leader's tail past the HW
        ReplicaLog(2, 0, [batch(0, [1])]),
        ReplicaLog(3, 0, []),  # out of the ISR: may lag
    ]
    final = final_of([(0, 0, 1)], replica_logs=logs, isr={0: [1, 2]}, replicas={0: [1, 2, 3]})
    report = check(history_of(acked(1, 0, 0), WriteOp(5, "p0", 5, 1.0)), final)
    assert report.ok, report.table()
    assert report.info["uncommitted_tails"] == 1
    assert report.info["replicas_outside_final_isr"] == 1


def test_disks_that_agree_with_each_other_but_not_with_the_final_read_diverge():
    logs = [ReplicaLog(b, 0, [batch(0, [1, 2])]) for b in (1, 2, 3)]
    final = final_of([(0, 0, 1), (0, 1, 3)], replica_logs=logs, isr={0: [1, 2, 3]})
    history = history_of(acked(1, 0, 0), WriteOp(2, "p0", 1, 1.0, FAIL, 2.0),
                         WriteOp(3, "p0", 2, 1.0, FAIL, 2.0))
    report = check(history, final)
    assert nonzero(report) == {"diverged": 1}
    assert "final read" in report.anomalies[0].detail


def test_a_consumed_record_missing_from_the_final_log_is_a_phantom_read():
    history = history_of(acked(1, 0, 0), WriteOp(2, "p0", 2, 1.0, FAIL, 2.0))
    history.consumed += [Consumed(0, 0, 1, 1.5), Consumed(0, 0, 1, 3.0)]  # re-read: fine
    assert check(history, final_of([(0, 0, 1)])).ok
    history.consumed.append(Consumed(0, 1, 2, 2.0))  # read above what was committed
    report = check(history, final_of([(0, 0, 1)]))
    assert nonzero(report) == {"phantom_reads": 1}


def test_an_acknowledged_commit_above_the_final_group_offset_is_lost():
    history = history_of(acked(1, 0, 0))
    history.commits += [CommitOp(0, 5, 1.0, OK, 1.1), CommitOp(0, 9, 2.0, OK, 2.1)]
    assert check(history, final_of([(0, 0, 1)], committed={0: 9})).ok
    report = check(history, final_of([(0, 0, 1)], committed={0: 5}))
    assert nonzero(report) == {"lost_commits": 1}


def test_a_later_lower_commit_makes_only_the_commits_before_it_unbinding():
    history = history_of(acked(1, 0, 0))
    history.commits += [
        CommitOp(0, 9, 1.0, OK, 1.1),
        CommitOp(0, 4, 2.0, FAIL, 2.1),  # after a rebalance, from the committed offset
        CommitOp(0, 6, 3.0, OK, 3.1),
    ]
    # 9 is not binding (a later commit asked for less), 6 is
    assert check(history, final_of([(0, 0, 1)], committed={0: 6})).ok
    report = check(history, final_of([(0, 0, 1)], committed={0: 4}))
    assert nonzero(report) == {"lost_commits": 1}
    assert "offset 6" in report.anomalies[0].detail


def test_a_history_survives_being_written_and_read_back(tmp_path: Path):
    history = history_of(acked(1, 0, 0), WriteOp(2, "p1", 0, 1.0, PENDING))
    history.faults.append(FaultEvent("pause", [1], 0.5, 1.5, "SIGSTOP", ["kill -STOP 42"]))
    history.commits.append(CommitOp(0, 1, 1.0, OK, 1.2))
    history.consumed.append(Consumed(0, 0, 1, 1.1))
    history.note("something")
    final = final_of([(0, 0, 1)], committed={0: 1}, isr={0: [1, 2, 3]})
    path = tmp_path / "history.jsonl"
    history.dump(path, final)
    loaded, loaded_final = History.load(path)
    assert loaded.writes == history.writes
    assert loaded.faults == history.faults
    assert loaded.commits == history.commits and loaded.consumed == history.consumed
    assert loaded_final is not None and loaded_final.reads == final.reads
    assert check(loaded, loaded_final).to_json() == check(history, final).to_json()


def test_an_ack_without_an_offset_is_checked_for_presence_and_order_only():
    # Seen once in a 32-minute run: a confluent-kafka delivery report with no offset.
    unknown = acked(2, 0, 0, seq=1)
    unknown.offset = None
    history = history_of(acked(1, 0, 0, seq=0), unknown)
    report = check(history, final_of([(0, 0, 1), (0, 1, 2)]))
    assert report.ok and report.info["acked_without_offset"] == 1
    assert "acked_without_offset" not in report.counts  # information, not a safety count
    missing = check(history, final_of([(0, 0, 1)]))
    assert missing.counts["lost"] == 1 and not missing.ok
    # sent second, sits first: 1 is not where its ack said, and 2 is out of send order
    before = check(history, final_of([(0, 0, 2), (0, 1, 1)]))
    assert before.counts["reordered"] == 2


def test_two_members_acknowledged_for_one_partition_at_once_are_two_owners():
    history = History(clock=lambda: 10.0)
    history.ownerships += [
        Ownership("g", "a", 0, 1.0, 5.0),
        Ownership("g", "b", 0, 4.0, None),  # b got p0 before a let it go
    ]
    history.commits += [
        CommitOp(0, 3, 4.2, OK, 4.3, group="g", member="a"),
        CommitOp(0, 4, 4.5, OK, 4.6, group="g", member="b"),
    ]
    report = check(history, final_of([(0, 0, 1)], group_committed={"g": {0: 4}}))
    assert report.counts["two_owners"] == 1


def test_a_handover_or_a_removed_member_whose_commits_fail_is_not_two_owners():
    history = History(clock=lambda: 10.0)
    history.ownerships += [
        Ownership("g", "a", 0, 1.0, 4.0),
        Ownership("g", "b", 0, 4.0, None),  # a clean handover at t=4
        Ownership("g", "c", 1, 1.0, 8.0),
        Ownership("g", "d", 1, 5.0, None),  # c was removed but only hears so at t=8
    ]
    history.commits += [
        CommitOp(0, 3, 3.0, OK, 3.1, group="g", member="a"),
        CommitOp(0, 4, 5.0, OK, 5.1, group="g", member="b"),
        CommitOp(1, 2, 6.0, FAIL, 6.1, group="g", member="c"),  # fenced by the coordinator
        CommitOp(1, 3, 6.5, OK, 6.6, group="g", member="d"),
    ]
    report = check(history, final_of([(0, 0, 1)], group_committed={"g": {0: 4, 1: 3}}))
    assert report.counts["two_owners"] == 0
    assert report.info["ownership_overlaps"] == 1


def test_commits_of_a_group_of_any_name_are_checked_against_final_committed():
    """The compose e2e test names its group "load-group" and sets final.committed: its
    acknowledged commits were all taken for lost when only "faults-group" was looked up."""
    history = History()
    history.commits.append(CommitOp(0, 7, 1.0, OK, 1.1, group="load-group"))
    kept = check(history, final_of([], committed={0: 7}))
    assert kept.counts["lost_commits"] == 0
    assert check(history, final_of([], committed={0: 3})).counts["lost_commits"] == 1
