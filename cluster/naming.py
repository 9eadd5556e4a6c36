"""Topic and group name rules, as Kafka's (so names valid here are valid there and back)."""

from __future__ import annotations

import re

TOPIC_NAME_MAX_LENGTH = 249
_LEGAL = re.compile(r"^[a-zA-Z0-9._-]+$")


class InvalidTopicNameError(ValueError):
    """The name breaks Kafka's topic naming rules; the message says which rule."""


def validate_topic_name(name: str) -> None:
    if not name:
        raise InvalidTopicNameError("topic name is empty")
    if name in (".", ".."):
        raise InvalidTopicNameError(f"topic name cannot be '{name}'")
    if len(name) > TOPIC_NAME_MAX_LENGTH:
        raise InvalidTopicNameError(
            f"topic name is {len(name)} characters long; the maximum is {TOPIC_NAME_MAX_LENGTH}"
        )
    if not _LEGAL.match(name):
        bad = sorted({c for c in name if not _LEGAL.match(c)})
        raise InvalidTopicNameError(
            f"topic name '{name}' contains illegal characters {''.join(bad)!r}; "
            "allowed are ASCII letters, digits, '.', '_' and '-'"
        )


def collides(name: str, other: str) -> bool:
    """Kafka refuses topics that differ only by '.' versus '_' (metric names collide)."""
    return name != other and name.replace(".", "_") == other.replace(".", "_")
