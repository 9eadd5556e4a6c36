"""Serializers and deserializers by name ("bytes", "str", "json") or any callable.

The counterparts of NestJS's `serializer`/`deserializer` options and kafka-python's
`key_serializer`/`value_serializer`. None passes through as a null key or value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Serializer = Callable[[Any], bytes | None]
Deserializer = Callable[[bytes | None], Any]


def _to_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    raise TypeError(
        f"cannot send {type(value).__name__} as bytes: pass bytes or str, or set "
        "a serializer such as 'json'"
    )


def _str_to_bytes(value: Any) -> bytes | None:
    return None if value is None else str(value).encode()


def _json_to_bytes(value: Any) -> bytes | None:
    return None if value is None else json.dumps(value, separators=(",", ":")).encode()


def _from_str(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", errors="replace")


def _from_json(data: bytes | None) -> Any:
    return None if data is None else json.loads(data)


SERIALIZERS: dict[str, Serializer] = {
    "bytes": _to_bytes,
    "str": _str_to_bytes,
    "json": _json_to_bytes,
}
DESERIALIZERS: dict[str, Deserializer] = {
    "bytes": lambda data: data,
    "str": _from_str,
    "json": _from_json,
}


def resolve_serializer(spec: str | Serializer | None) -> Serializer:
    if spec is None:
        return _to_bytes
    if callable(spec):
        return spec
    try:
        return SERIALIZERS[spec]
    except KeyError:
        raise ValueError(
            f"unknown serializer {spec!r}; use {sorted(SERIALIZERS)} or a callable"
        ) from None


def resolve_deserializer(spec: str | Deserializer | None) -> Deserializer:
    if spec is None:
        return DESERIALIZERS["bytes"]
    if callable(spec):
        return spec
    try:
        return DESERIALIZERS[spec]
    except KeyError:
        raise ValueError(
            f"unknown deserializer {spec!r}; use {sorted(DESERIALIZERS)} or a callable"
        ) from None
