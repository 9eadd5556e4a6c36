"""Subscription regexes (KIP-848 `subscribed_topic_regex`), matched in linear time.

Why not Python's `re`: a member's regex runs on the group coordinator against every topic
name on every heartbeat, and `re` backtracks: `(a+)+$` against a 40-character topic name
takes longer than the age of the universe, freezing the broker's event loop for every
client. Kafka evaluates these regexes with RE2/J for the same reason; this is RE2 (the
google-re2 package), which guarantees time linear in the input. RE2 syntax is Kafka's:
no backreferences and no lookaround, and such a pattern is refused with a clear error.

Pure: no I/O; compiled patterns are cached by text (members resend theirs every heartbeat).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import re2

# A regex longer than this (characters) is refused: RE2 bounds the time, this bounds the
# memory a member can make the coordinator spend compiling its pattern.
TOPIC_REGEX_MAX_CHARS = 4096
# Compiled patterns kept for reuse (entries).
COMPILED_CACHE_ENTRIES = 256

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # errors are reported to the member, not printed by the library


class TopicRegexError(ValueError):
    """The pattern cannot be used as a subscription regex; the message says why."""


@functools.lru_cache(maxsize=COMPILED_CACHE_ENTRIES)
def compile_topic_regex(pattern: str) -> re2._Regexp:
    if len(pattern) > TOPIC_REGEX_MAX_CHARS:
        raise TopicRegexError(
            f"is too long for a regular expression: {len(pattern)} characters, at most "
            f"{TOPIC_REGEX_MAX_CHARS} (TOPIC_REGEX_MAX_CHARS)"
        )
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise TopicRegexError(f"is not a valid RE2 regular expression: {reason}") from None


def matching_topics(pattern: str, topics: Iterable[str]) -> frozenset[str]:
    """The topics whose whole name matches `pattern` (TopicRegexError if it is invalid)."""
    compiled = compile_topic_regex(pattern)
    return frozenset(t for t in topics if compiled.fullmatch(t))
