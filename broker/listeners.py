"""Named listeners (Kafka's `listeners` and `advertised.listeners`), for the Kafka protocol and,
the same way, for extra gRPC listeners (`grpc.listeners`, `grpc.advertised.listeners`).

Why: one advertised address is not enough once clients sit on both sides of a network
boundary. In docker compose the brokers know each other as `raftka-1:9092`, but a NestJS app
on the host must be told `127.0.0.1:19092`. As in Kafka, a broker can open several Kafka
listeners, each with a name and the address it is advertised at; a client's Metadata and
FindCoordinator answers name the other brokers' addresses *for the listener the client
came in on*. Pure parsing here, so it is tested without sockets.

Each listener also has a security protocol, from Kafka's `listener.security.protocol.map`
("NAME:PROTOCOL,..."): PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL authentication,
over TLS for SASL_SSL). As in Kafka, a listener the map does not name takes the protocol its
name is (a listener called SSL is SSL); any other unnamed listener is a start-up error, so a
listener meant to be secured can never open in plaintext by a typo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_LISTENER = "PLAINTEXT"
PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL = "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"
SECURITY_PROTOCOLS = (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)
TLS_PROTOCOLS = frozenset({SSL, SASL_SSL})
SASL_PROTOCOLS = frozenset({SASL_PLAINTEXT, SASL_SSL})
PROTOCOL_MAP_SETTING = "listener.security.protocol.map"
_ENTRY = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_]*)://(?P<host>\[[^\]]*\]|[^:/]*):(?P<port>\d+)$")
_WILDCARDS = ("", "0.0.0.0", "::", "[::]")


class ListenerConfigError(ValueError):
    """A listener setting that cannot be used; the message names the entry."""


@dataclass(frozen=True, slots=True)
class ListenerEndpoint:
    name: str
    bind_host: str
    bind_port: int
    host: str  # advertised
    port: int  # advertised
    security_protocol: str = PLAINTEXT  # one of SECURITY_PROTOCOLS

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in TLS_PROTOCOLS

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in SASL_PROTOCOLS


def parse_entries(value: str, setting: str) -> dict[str, tuple[str, int]]:
    """'NAME://host:port,...' -> {NAME: (host, port)}, in order, names unique."""
    entries: dict[str, tuple[str, int]] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        match = _ENTRY.match(item)
        if match is None:
            raise ListenerConfigError(
                f"{setting}: {item!r} must look like NAME://HOST:PORT (e.g. PLAINTEXT://:9092)")
        name, port = match["name"].upper(), int(match["port"])
        if not 0 < port < 65536:
            raise ListenerConfigError(f"{setting}: {item!r} needs a port in 1..65535")
        if name in entries:
            raise ListenerConfigError(f"{setting}: listener {name} is named twice")
        entries[name] = (match["host"].strip("[]"), port)
    return entries


def parse_protocol_map(value: str) -> dict[str, str]:
    """'NAME:PROTOCOL,...' (Kafka's listener.security.protocol.map) -> {NAME: PROTOCOL}."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, protocol = (piece.strip().upper() for piece in item.partition(":"))
        if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
            raise ListenerConfigError(
                f"{PROTOCOL_MAP_SETTING}: {item!r} must look like NAME:PROTOCOL "
                "(e.g. EXTERNAL:SSL)")
        if protocol not in SECURITY_PROTOCOLS:
            raise ListenerConfigError(
                f"{PROTOCOL_MAP_SETTING}: {item!r} names protocol {protocol!r}; use one of "
                f"{', '.join(SECURITY_PROTOCOLS)}")
        if name in mapping:
            raise ListenerConfigError(f"{PROTOCOL_MAP_SETTING}: listener {name} is named twice")
        mapping[name] = protocol
    return mapping


def security_protocol(name: str, protocol_map: dict[str, str], setting: str) -> str:
    """The protocol of listener `name`: its map entry, else its own name when that is a
    protocol (Kafka's rule), else an error naming the listener and the setting to fix."""
    if name in protocol_map:
        return protocol_map[name]
    if name in SECURITY_PROTOCOLS:
        return name
    raise ListenerConfigError(
        f"{setting}: listener {name} has no security protocol; name it in "
        f"{PROTOCOL_MAP_SETTING} (e.g. {name}:PLAINTEXT or {name}:SSL) or call it after "
        f"one ({', '.join(SECURITY_PROTOCOLS)})")


def kafka_endpoints(listeners: str, advertised: str, default_host: str, *,
                    prefix: str = "", protocol_map: str = "") -> list[ListenerEndpoint]:
    """The listeners to open. An advertised entry is optional per listener; without one a
    listener is advertised at its bind host, or at `default_host` (the broker's advertised
    host) when it binds a wildcard address. `prefix` names the settings in errors ("grpc.").
    `protocol_map` is listener.security.protocol.map (see security_protocol)."""
    protocols = parse_protocol_map(protocol_map)
    listeners_name, advertised_name = f"{prefix}listeners", f"{prefix}advertised.listeners"
    bound = parse_entries(listeners, listeners_name)
    told = parse_entries(advertised, advertised_name)
    unknown = sorted(set(told) - set(bound))
    if unknown:
        raise ListenerConfigError(
            f"{advertised_name} names {', '.join(unknown)}, which {listeners_name} does not "
            "open")
    endpoints = []
    for name, (bind_host, bind_port) in bound.items():
        fallback = default_host if bind_host in _WILDCARDS else bind_host
        host, port = told.get(name, (fallback, bind_port))
        if host in _WILDCARDS:
            raise ListenerConfigError(
                f"{advertised_name}: {name} must name a host clients can reach, not {host!r}")
        endpoints.append(ListenerEndpoint(
            name, bind_host or "0.0.0.0", bind_port, host, port,
            security_protocol(name, protocols, listeners_name)))
    return endpoints
