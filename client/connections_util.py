"""Asking the first broker that answers, for calls any broker serves (users, ACLs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc

from raftka.client.transport import translate_rpc_error

T = TypeVar("T")
_TRY_NEXT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def first_answer(addresses: Sequence[str], invoke: Callable[[str], T]) -> T:
    """`invoke(address)` on each address until one answers; a refusal (bad credentials,
    an ACL) is final, an unreachable broker is skipped."""
    problems = []
    for address in addresses:
        try:
            return invoke(address)
        except grpc.RpcError as exc:
            error = translate_rpc_error(exc, address)
            if exc.code() not in _TRY_NEXT:  # type: ignore[attr-defined]
                raise error from None
            problems.append(str(error))
    raise translate_rpc_error_all(problems)


def translate_rpc_error_all(problems: list[str]) -> Exception:
    from raftka.client.errors import BrokerNotAvailableError

    return BrokerNotAvailableError("no broker answered: " + "; ".join(problems))
