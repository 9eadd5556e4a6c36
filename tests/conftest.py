"""Shared fixtures: real broker processes that are always cleaned up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import LocalCluster

# Lines a suite wants in the "suites" summary (how its prerequisites were met, say).
SUITE_NOTES = pytest.StashKey[list[str]]()
# The suite whose running or skipping CI must say in so many words.
COMPOSE_SUITE = "tests/e2e"


@pytest.fixture(scope="session")
def suite_notes(pytestconfig: pytest.Config) -> list[str]:
    """Append a line here to have it printed in the closing "suites" section."""
    return pytestconfig.stash.setdefault(SUITE_NOTES, [])


@pytest.fixture
def cluster_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator:
    """Make LocalClusters; every broker they start is killed when the test ends."""
    made: list[LocalCluster] = []

    def make(
        nodes: int = 1, settings: dict[str, str] | None = None, **kwargs: object
    ) -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"cluster-{len(made)}", nodes, settings, **kwargs)
        made.append(cluster)
        return cluster

    yield make
    failed = getattr(request.node, "rep_call", None)
    for cluster in made:
        if failed is not None and failed.failed:
            print(cluster.logs())
        cluster.stop_all()


@pytest.fixture
def broker(cluster_factory) -> LocalCluster:
    """One running broker, ready for requests."""
    cluster = cluster_factory(1)
    cluster.start()
    cluster.wait_ready()
    return cluster


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Which suites ran and which were skipped, and why (CI prints this last)."""
    suites: dict[str, dict[str, int]] = {}
    reasons: dict[str, set[str]] = {}
    for outcome in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if not nodeid.startswith("tests/"):
                continue
            parts = nodeid.split("/")
            suite = "/".join(parts[:2]) if len(parts) > 2 else "tests (top level)"
            counts = suites.setdefault(suite, {})
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome == "skipped" and isinstance(report.longrepr, tuple):
                reasons.setdefault(suite, set()).add(str(report.longrepr[2]))
    if not suites:
        return
    terminalreporter.section("suites")
    for suite in sorted(suites):
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(suites[suite].items()))
        terminalreporter.write_line(f"{suite:28} {counts}")
        for reason in sorted(reasons.get(suite, ())):
            terminalreporter.write_line(f"{'':28}   skipped: {reason}")
    for note in terminalreporter.config.stash.get(SUITE_NOTES, []):
        terminalreporter.write_line(note)
    if COMPOSE_SUITE in suites:
        terminalreporter.write_line(compose_verdict(suites[COMPOSE_SUITE], reasons))


def compose_verdict(counts: dict[str, int], reasons: dict[str, set[str]]) -> str:
    """One line: did the compose end-to-end suite (a real Docker engine) run, and how."""
    ran = sum(n for kind, n in counts.items() if kind != "skipped")
    tally = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    if ran == 0:
        why = "; ".join(sorted(reasons.get(COMPOSE_SUITE, ()))) or "no reason given"
        return f"compose end-to-end suite: NOT RUN ({tally}): {why}"
    return f"compose end-to-end suite: RAN against a real Docker engine ({tally})"
