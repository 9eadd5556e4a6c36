"""Kafka wire-protocol framing and (de)serialization, over the `kio` package. The only module
of the Kafka listener that imports kio.

Why this shape: kio generates one dataclass per message per version from Kafka's own JSON
specs, so every version's exact layout (flexible versions, tagged fields, compact strings) is
kio's job. Handlers stay version-agnostic: they read request fields by name (`field()`), and
return responses as plain dicts with the superset of fields; `encode_response` keeps the
fields that the negotiated version has and fills the rest with their defaults.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import struct
import typing
import uuid
from collections.abc import Mapping
from enum import Enum
from functools import cache
from typing import Any

from kio.index import UnknownAPIKey, UnknownEntity, load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode as KafkaErrorCode
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import Records

from raftka.broker.kafka.frame_guard import FrameError, checked_frame
from raftka.broker.kafka.session import ConnectionSession

_API_VERSION_HEAD = struct.Struct(">hhi")
_SIZE = struct.Struct(">i")
API_VERSIONS_KEY = 18


class MalformedRequestError(ValueError):
    """Bytes that are not a Kafka request this broker can read; the connection closes."""


class UnsupportedVersionError(ValueError):
    """A known API at a version kio (or this broker) does not serve."""


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: Any
    # Name of the Kafka listener the request came in on (answers name that listener's
    # addresses; see broker/listeners.py).
    listener: str = "PLAINTEXT"
    # The connection it came on: who the client is (broker/kafka/session.py); None when a
    # request is decoded outside a listener (tests, tools).
    session: ConnectionSession | None = None
    # Who sent it (SASL's user, else the TLS certificate's, else User:ANONYMOUS) and from which
    # host: what the ACLs are checked against (broker/kafka/acl_guard.py).
    principal: str = "User:ANONYMOUS"
    host: str = ""
    # The connection's SASL state (broker/sasl.SaslConnection) on SASL_* listeners, else None.
    sasl: Any = None


def timeout_ms(value: Any, default: int = 30_000) -> int:
    """A request's timeout field in ms: kio gives a timedelta (or an int), None -> default."""
    if value is None:
        return default
    return int(value.total_seconds() * 1000) if hasattr(value, "total_seconds") else int(value)


def peek_header(frame: bytes) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id) without parsing the rest."""
    if len(frame) < _API_VERSION_HEAD.size:
        raise MalformedRequestError(f"request of {len(frame)} bytes has no header")
    api_key, api_version, correlation_id = _API_VERSION_HEAD.unpack_from(frame)
    return api_key, api_version, correlation_id


def decode_request(frame: bytes, listener: str = "PLAINTEXT",
                   session: ConnectionSession | None = None, principal: str = "User:ANONYMOUS",
                   host: str = "", sasl: Any = None) -> Request:
    api_key, api_version, correlation_id = peek_header(frame)
    schema = request_schema(api_key, api_version)
    try:
        frame = checked_frame(schema.__header_schema__, schema, frame)
    except FrameError as exc:
        raise MalformedRequestError(f"api {api_key} v{api_version}: {exc}") from exc
    try:
        header, header_size = entity_reader(schema.__header_schema__)(frame, 0)
        body, _ = entity_reader(schema)(frame, header_size)
    except Exception as exc:  # kio raises several types on bad bytes
        raise MalformedRequestError(f"cannot parse api {api_key} v{api_version}: {exc}") from exc
    # Bytes past the fields the schema defines are ignored, as Kafka's own parser does:
    # librdkafka 2.x's AdminClient sends Metadata v12 with three of them, and Kafka serves it.
    return Request(api_key, api_version, correlation_id, header.client_id, body, listener,
                   session, principal, host, sasl)


@cache
def request_schema(api_key: int, api_version: int) -> Any:
    try:
        return load_request_schema(api_key, api_version)
    except UnknownAPIKey:
        raise UnsupportedVersionError(f"unknown api key {api_key}") from None
    except UnknownEntity:
        raise UnsupportedVersionError(f"api {api_key} has no version {api_version}") from None


def encode_response(api_key: int, api_version: int, correlation_id: int,
                    values: Mapping[str, Any]) -> bytes:
    """A whole response frame (size, header, body) from a dict of field values."""
    schema = load_response_schema(api_key, api_version)
    body = build(schema, values)
    buffer = io.BytesIO()
    buffer.write(b"\0\0\0\0")
    buffer.write(struct.pack(">i", correlation_id))
    # ApiVersions always answers with header v0, so clients can read it at any version.
    if schema.__flexible__ and api_key != API_VERSIONS_KEY:
        buffer.write(b"\0")  # no tagged fields in the response header
    entity_writer(schema)(buffer, body)
    frame = buffer.getbuffer()
    _SIZE.pack_into(frame, 0, len(frame) - 4)
    return bytes(frame)


def response_is_flexible(api_key: int, api_version: int) -> bool:
    """Whether this response version uses Kafka's compact (flexible) encodings."""
    return bool(load_response_schema(api_key, api_version).__flexible__)


def field(entity: Any, name: str, default: Any = None) -> Any:
    """A request field that may not exist in every version."""
    return getattr(entity, name, default)


# ------------------------------------------------------------------------ building
@cache
def _hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def build(schema: type, values: Mapping[str, Any]) -> Any:
    """An instance of `schema` from `values`; fields missing from `values` get their
    default, or a zero of their type."""
    hints = _hints(schema)
    kwargs: dict[str, Any] = {}
    for item in dataclasses.fields(schema):
        if item.name in values:
            kwargs[item.name] = _convert(hints[item.name], values[item.name])
        elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            kwargs[item.name] = _zero(hints[item.name])
    return schema(**kwargs)


def _convert(kind: Any, value: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        if value is None:
            return None
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        return _convert(options[0], value)
    if origin is tuple:
        inner = typing.get_args(kind)[0]
        return tuple(_convert(inner, v) for v in value)
    if dataclasses.is_dataclass(kind) and isinstance(value, Mapping):
        return build(kind, value)  # type: ignore[arg-type]
    if isinstance(kind, type):
        if issubclass(kind, Enum):
            return kind(int(value))
        if issubclass(kind, datetime.timedelta):  # kio's phantom types accept plain values
            return value if isinstance(value, datetime.timedelta) else \
                datetime.timedelta(milliseconds=int(value))
        if issubclass(kind, Records):
            return value
        if kind in (bool, str, bytes) or issubclass(kind, uuid.UUID):
            return value
        if issubclass(kind, int):
            return kind(value)
        if issubclass(kind, str):
            return kind(value)
    return value


def _zero(kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        return None
    if origin is tuple:
        return ()
    if isinstance(kind, type):
        if issubclass(kind, Enum):
            return kind(0)
        if issubclass(kind, datetime.timedelta):
            return datetime.timedelta(0)
        if issubclass(kind, bool):
            return False
        if issubclass(kind, int):
            return kind(0)
        if issubclass(kind, str):
            return kind("")
        if issubclass(kind, bytes):
            return kind(b"")
        if issubclass(kind, uuid.UUID):
            return uuid.UUID(int=0)
    raise TypeError(f"no zero value for {kind!r}")


def kafka_error(code: int) -> KafkaErrorCode:
    return KafkaErrorCode(code)
