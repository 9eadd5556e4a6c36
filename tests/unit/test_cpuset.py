"""CPU lists for `cpu.affinity` and the benches' `--cpu`: parsing, choosing, refusing."""

from __future__ import annotations

import pytest

from raftka import cpuset
from raftka.broker.config import BrokerConfig, ConfigError


@pytest.mark.parametrize(("text", "cpus"), [
    ("0", {0}), ("0,2", {0, 2}), ("1-3", {1, 2, 3}), (" 0 , 4-5 ", {0, 4, 5}), ("2,2", {2}),
])
def test_cpu_lists_parse_as_linux_writes_them(text: str, cpus: set[int]) -> None:
    assert cpuset.parse_cpu_list(text) == cpus
    assert cpuset.parse_cpu_list(cpuset.format_cpu_list(cpus)) == cpus


def test_format_joins_runs_into_ranges() -> None:
    assert cpuset.format_cpu_list({0, 2, 3, 4, 7}) == "0,2-4,7"
    assert cpuset.format_cpu_list(set()) == ""


@pytest.mark.parametrize(("text", "says"), [
    ("", "empty"), ("x", "'x' is not a CPU number"), ("1-", "'1-'"), ("3-1", "backwards"),
    ("-1", "'-1'"), ("9000", "past 8191"), ("0,,", "'' is not"),
])
def test_bad_cpu_lists_are_refused_naming_the_bad_part(text: str, says: str) -> None:
    with pytest.raises(cpuset.CpuSetError, match=r"cpu\.affinity") as error:
        cpuset.parse_cpu_list(text, "cpu.affinity")
    assert says in str(error.value)


def test_auto_spreads_slots_over_the_allowed_cpus_in_turn() -> None:
    allowed = {4, 1, 6}
    assert [cpuset.auto_cpu(allowed, slot) for slot in range(5)] == [1, 4, 6, 1, 4]
    assert cpuset.resolve("auto", allowed, 2, "cpu.affinity") == {6}
    with pytest.raises(cpuset.CpuSetError, match="no CPU"):
        cpuset.auto_cpu(set(), 0)


def test_resolve_leaves_an_unset_value_alone_and_refuses_cpus_not_allowed() -> None:
    assert cpuset.resolve("", {0, 1}, 1, "cpu.affinity") is None
    assert cpuset.resolve("1", {0, 1}, 1, "cpu.affinity") == {1}
    with pytest.raises(cpuset.CpuSetError) as error:
        cpuset.resolve("1-3", {0, 1}, 1, "cpu.affinity")
    assert str(error.value) == (
        "cpu.affinity=1-3: CPU 2, 3 is not one this process may use (it may use 0-1)")


def test_the_broker_setting_is_checked_at_start_up_under_both_names(tmp_path) -> None:
    base = BrokerConfig(broker_id=1, data_dir=str(tmp_path))
    assert base.cpu_affinity == ""  # not pinned unless asked
    for value in ("auto", "0", "0-1"):
        BrokerConfig(broker_id=1, data_dir=str(tmp_path), cpu_affinity=value).validate()
    with pytest.raises(ConfigError, match=r"cpu\.affinity: .one. is not a CPU number"):
        BrokerConfig(broker_id=1, data_dir=str(tmp_path), cpu_affinity="one").validate()
    from raftka.broker.config import KAFKA_ALIASES
    assert KAFKA_ALIASES["cpu.affinity"] == "cpu_affinity"
