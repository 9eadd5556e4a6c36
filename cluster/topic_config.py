"""Topic configs by Kafka's names, with Kafka's defaults, types and bounds.

Pure: the controller validates configs on create (so a bad value is refused with its name
before anything is written), and every broker resolves stored configs the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

LONG_MAX = 2**63 - 1
INT_MAX = 2**31 - 1


class InvalidConfigError(ValueError):
    """A config key is unknown or its value is out of range; the message names both."""


@dataclass(frozen=True, slots=True)
class ConfigDef:
    name: str
    kind: str  # "int", "long", "bool", "choice"
    default: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    doc: str = ""


CONFIG_DEFS: dict[str, ConfigDef] = {
    d.name: d
    for d in (
        ConfigDef(
            "cleanup.policy",
            "choice",
            "delete",
            choices=("delete",),
            doc="delete: old segments are removed by retention. compact: not yet.",
        ),
        ConfigDef(
            "retention.ms",
            "long",
            "604800000",
            minimum=-1,
            doc="Delete segments whose newest record is older than this; -1: never.",
        ),
        ConfigDef(
            "retention.bytes",
            "long",
            "-1",
            minimum=-1,
            doc="Delete oldest segments while the partition is larger; -1: no limit.",
        ),
        ConfigDef(
            "segment.bytes",
            "int",
            "1073741824",
            minimum=128,
            maximum=INT_MAX,
            doc="Roll to a new segment file at this size.",
        ),
        ConfigDef(
            "segment.ms",
            "long",
            "604800000",
            minimum=1,
            doc="Roll to a new segment when the active one is this old.",
        ),
        ConfigDef(
            "index.interval.bytes",
            "int",
            "4096",
            minimum=0,
            maximum=INT_MAX,
            doc="Bytes of log between two offset-index entries.",
        ),
        ConfigDef(
            "max.message.bytes",
            "int",
            "1048588",
            minimum=0,
            maximum=INT_MAX,
            doc="Largest record batch the topic accepts.",
        ),
        ConfigDef(
            "min.insync.replicas",
            "int",
            "1",
            minimum=1,
            maximum=INT_MAX,
            doc="With acks=all, refuse writes while fewer replicas are in sync.",
        ),
        ConfigDef(
            "unclean.leader.election.enable",
            "bool",
            "false",
            doc="Allow a replica outside the ISR to become leader (may lose data).",
        ),
        ConfigDef(
            "message.timestamp.type",
            "choice",
            "CreateTime",
            choices=("CreateTime", "LogAppendTime"),
            doc="Keep the producer's timestamps, or stamp the broker's time.",
        ),
        ConfigDef(
            "flush.messages",
            "long",
            str(LONG_MAX),
            minimum=1,
            doc="fsync after this many records (default: leave it to the OS).",
        ),
        ConfigDef(
            "flush.ms",
            "long",
            str(LONG_MAX),
            minimum=0,
            doc="fsync when the oldest unflushed data is this old (default: never).",
        ),
        ConfigDef(
            "compression.type",
            "choice",
            "producer",
            choices=("producer",),
            doc="Batches are stored as the producer compressed them.",
        ),
    )
}


def validate_value(name: str, value: str) -> None:
    definition = CONFIG_DEFS.get(name)
    if definition is None:
        known = ", ".join(sorted(CONFIG_DEFS))
        raise InvalidConfigError(f"unknown topic config '{name}' (known: {known})")
    if definition.kind in ("int", "long"):
        try:
            number = int(value)
        except ValueError:
            raise InvalidConfigError(f"{name}={value!r} is not an integer") from None
        if definition.minimum is not None and number < definition.minimum:
            raise InvalidConfigError(f"{name}={number} is below the minimum {definition.minimum}")
        upper = (
            definition.maximum
            if definition.maximum is not None
            else (INT_MAX if definition.kind == "int" else LONG_MAX)
        )
        if number > upper:
            raise InvalidConfigError(f"{name}={number} is above the maximum {upper}")
    elif definition.kind == "bool":
        if value.lower() not in ("true", "false"):
            raise InvalidConfigError(f"{name}={value!r} must be true or false")
    elif value not in definition.choices:
        raise InvalidConfigError(
            f"{name}={value!r} is not supported (allowed: {', '.join(definition.choices)})"
        )


def validate(configs: Mapping[str, str]) -> dict[str, str]:
    """Check every key and value; return them normalised (booleans lower-cased)."""
    normalised: dict[str, str] = {}
    for name, value in configs.items():
        validate_value(name, value)
        kind = CONFIG_DEFS[name].kind
        normalised[name] = value.lower() if kind == "bool" else value.strip()
    return normalised


def resolve(
    configs: Mapping[str, str], defaults: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Every known config with its effective value: topic value, else broker default, else
    Kafka's default."""
    effective = {name: d.default for name, d in CONFIG_DEFS.items()}
    effective.update(defaults or {})
    effective.update(configs)
    return effective


def as_int(configs: Mapping[str, str], name: str) -> int:
    return int(configs[name])


def as_bool(configs: Mapping[str, str], name: str) -> bool:
    return configs[name].lower() == "true"
