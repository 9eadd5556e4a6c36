"""The purgatory's waits: woken by notify, ended by their timeout, cleaned up however they
end (a leaked registration would count against waiters_max for ever)."""

from __future__ import annotations

import asyncio

import pytest

from raftka.broker.purgatory import Purgatory, TooManyWaitersError


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_notified_wait_returns_once_its_condition_holds():
    async def scenario() -> tuple[bool, int]:
        purgatory = Purgatory()
        state = {"moved": 0}
        waiter = asyncio.create_task(
            purgatory.wait_until(["a"], lambda: state["moved"] >= 2, timeout_s=5.0))
        await asyncio.sleep(0)
        for _ in range(2):  # the first notify wakes it with the condition still false
            state["moved"] += 1
            purgatory.notify("a")
            await asyncio.sleep(0)
        result = await waiter
        return result, purgatory.waiting

    assert run(scenario()) == (True, 0)


def test_a_wait_ends_false_at_its_timeout_and_leaves_nothing_registered():
    async def scenario() -> tuple[bool, float, int, int]:
        purgatory = Purgatory()
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await purgatory.wait_until(["a", "b"], lambda: False, timeout_s=0.05)
        return result, loop.time() - started, purgatory.waiting, len(purgatory._waiters)

    result, waited, waiting, keys = run(scenario())
    assert (result, waiting, keys) == (False, 0, 0)
    assert waited >= 0.05


def test_notify_wakes_only_the_waiters_of_that_key():
    async def scenario() -> tuple[bool, bool]:
        purgatory = Purgatory()
        flags = {"a": False, "b": False}
        on_a = asyncio.create_task(purgatory.wait_until(["a"], lambda: flags["a"], 5.0))
        on_b = asyncio.create_task(purgatory.wait_until(["b"], lambda: flags["b"], 0.1))
        await asyncio.sleep(0)
        flags["a"] = flags["b"] = True
        purgatory.notify("a")  # b's condition holds too, but nobody told it
        await on_a
        b_done_before_its_timeout = on_b.done()
        return b_done_before_its_timeout, await on_b

    assert run(scenario()) == (False, True)


def test_a_cancelled_wait_is_unregistered():
    async def scenario() -> tuple[int, int]:
        purgatory = Purgatory()
        waiter = asyncio.create_task(purgatory.wait_until(["a"], lambda: False, 5.0))
        await asyncio.sleep(0)
        assert purgatory.waiting == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        return purgatory.waiting, len(purgatory._waiters)

    assert run(scenario()) == (0, 0)


def test_waits_beyond_the_limit_are_refused():
    async def scenario() -> None:
        purgatory = Purgatory(waiters_max=1)
        first = asyncio.create_task(purgatory.wait_until(["a"], lambda: False, 5.0))
        await asyncio.sleep(0)
        with pytest.raises(TooManyWaitersError):
            await purgatory.wait_until(["a"], lambda: False, 5.0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first

    run(scenario())


def test_a_condition_known_false_is_first_checked_after_a_wake_up():
    async def scenario() -> tuple[bool, int]:
        purgatory = Purgatory()
        calls = {"n": 0}

        def condition() -> bool:
            calls["n"] += 1
            return True

        waiter = asyncio.create_task(
            purgatory.wait_until(["a"], condition, timeout_s=5.0, known_false=True))
        await asyncio.sleep(0)
        assert calls["n"] == 0 and purgatory.waiting == 1  # waiting, unchecked
        purgatory.notify("a")
        return await waiter, calls["n"]

    assert run(scenario()) == (True, 1)
