"""The descriptor budget: the limit split into a reserve and a pool of segment files."""

from __future__ import annotations

import resource

import pytest

from raftka.broker.config import ConfigError, build_config
from raftka.broker.fd_budget import (
    MIN_POOL_DESCRIPTORS,
    FdBudget,
    FdBudgetError,
    effective_limit,
)


def test_pool_is_the_limit_minus_the_reserve_and_bounds_the_replicas() -> None:
    budget = FdBudget(limit=20_000, reserve=1_024).validate()
    assert budget.pool_capacity == 18_976
    assert budget.max_replicas == 18_976
    assert "at most 18976 replicas" in budget.describe()


def test_a_limit_that_leaves_no_working_pool_is_refused_with_what_to_change() -> None:
    with pytest.raises(FdBudgetError, match="raise `ulimit -n` or max_open_files"):
        FdBudget(limit=1_024 + MIN_POOL_DESCRIPTORS - 1, reserve=1_024).validate()
    with pytest.raises(FdBudgetError, match="fd_reserve must be positive"):
        FdBudget(limit=4_096, reserve=0).validate()


def test_effective_limit_raises_soft_to_hard_unless_told() -> None:
    assert effective_limit(1_024, 20_000, 0) == 20_000
    assert effective_limit(1_024, 20_000, 600) == 600
    assert effective_limit(1_024, 20_000, 50_000) == 20_000  # never above the hard limit
    assert effective_limit(1_024, resource.RLIM_INFINITY, 0) == 1 << 20


def test_config_validates_the_settings() -> None:
    config = build_config({}, {"broker_id": 1, "data_dir": "/tmp/x", "max_open_files": 600,
                               "fd_reserve": 100})
    assert (config.max_open_files, config.fd_reserve) == (600, 100)
    with pytest.raises(ConfigError, match="max_open_files"):
        build_config({}, {"broker_id": 1, "data_dir": "/tmp/x", "max_open_files": -1})
    with pytest.raises(ConfigError, match="fd_reserve must be positive"):
        build_config({}, {"broker_id": 1, "data_dir": "/tmp/x", "fd_reserve": 0})
