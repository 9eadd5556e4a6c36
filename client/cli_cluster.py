"""`raftka cluster ...` and `raftka watch` (in progress)."""

from typing import Any


def register(commands: Any) -> None:
    pass
