"""Fixtures of the fault-injection tests: skip (with the reason) where network namespaces
cannot be made, and a work directory per run that survives a failure for the post-mortem."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from tests.faults.netns import unavailable_reason


@cache
def _reason() -> str | None:
    return unavailable_reason()


@pytest.fixture
def netns_available() -> None:
    reason = _reason()
    if reason is not None:
        pytest.skip(f"fault injection needs network namespaces: {reason}")


@pytest.fixture
def fault_dir(tmp_path: Path, netns_available: None) -> Iterator[Path]:
    yield tmp_path / "run"
