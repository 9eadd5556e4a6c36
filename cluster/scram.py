"""SCRAM credentials (RFC 5802 / RFC 7677), the form in which user passwords are stored.

Why this form: the cluster metadata keeps, per user and mechanism, a random salt, an
iteration count, StoredKey = H(HMAC(SaltedPassword, "Client Key")) and
ServerKey = HMAC(SaltedPassword, "Server Key"), never the password nor SaltedPassword. A
leaked image lets nobody log in (StoredKey only checks a proof), as in Kafka's KRaft
UserScramCredentialRecord. Pure functions: the salt is an input.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

# Kafka's names and their hash functions.
MECHANISMS: dict[str, str] = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
# Kafka's ids for them (DescribeUserScramCredentials' "mechanism" field).
MECHANISM_IDS: dict[str, int] = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}
MECHANISMS_BY_ID: dict[int, str] = {v: k for k, v in MECHANISM_IDS.items()}
# Kafka's bounds on the iteration count (ScramMechanism.minIterations / max 16384).
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 16384
DEFAULT_ITERATIONS = 8192
SALT_BYTES = 32
USERNAME_MAX_CHARS = 256


class ScramCredentialError(ValueError):
    """A credential that cannot be stored; the message says which part."""


@dataclass(frozen=True, slots=True)
class ScramCredential:
    mechanism: str
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def hash_name(mechanism: str) -> str:
    try:
        return MECHANISMS[mechanism]
    except KeyError:
        raise ScramCredentialError(
            f"unknown SCRAM mechanism {mechanism!r}; use one of {', '.join(MECHANISMS)}"
        ) from None


def validate_username(name: str) -> None:
    if not name or len(name) > USERNAME_MAX_CHARS:
        raise ScramCredentialError(f"user name must have 1..{USERNAME_MAX_CHARS} characters")
    if any(ord(c) < 0x20 for c in name) or "," in name or "=" in name:
        raise ScramCredentialError(
            f"user name {name!r} must not contain ',', '=' or control characters"
        )


def validate_iterations(iterations: int) -> None:
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ScramCredentialError(
            f"iterations {iterations} must be within {MIN_ITERATIONS}..{MAX_ITERATIONS}"
        )


def salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    """Hi(password, salt, i) = PBKDF2-HMAC (RFC 5802 2.2)."""
    return hashlib.pbkdf2_hmac(hash_name(mechanism), password.encode(), salt, iterations)


def hmac_of(mechanism: str, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hash_name(mechanism)).digest()


def digest(mechanism: str, data: bytes) -> bytes:
    return hashlib.new(hash_name(mechanism), data).digest()


def from_salted_password(
    mechanism: str, salted: bytes, salt: bytes, iterations: int
) -> ScramCredential:
    """What is stored, from what Kafka's AlterUserScramCredentials sends (the client salts)."""
    validate_iterations(iterations)
    if len(salt) < 16:
        raise ScramCredentialError(f"salt of {len(salt)} bytes is too short (at least 16)")
    if len(salted) != len(digest(mechanism, b"")):
        raise ScramCredentialError(
            f"salted password of {len(salted)} bytes does not fit {mechanism}"
        )
    client_key = hmac_of(mechanism, salted, b"Client Key")
    return ScramCredential(
        mechanism=mechanism,
        salt=salt,
        iterations=iterations,
        stored_key=digest(mechanism, client_key),
        server_key=hmac_of(mechanism, salted, b"Server Key"),
    )


def make_credential(
    mechanism: str, password: str, salt: bytes, iterations: int = DEFAULT_ITERATIONS
) -> ScramCredential:
    if not password:
        raise ScramCredentialError("the password must not be empty")
    validate_iterations(iterations)
    return from_salted_password(
        mechanism, salted_password(mechanism, password, salt, iterations), salt, iterations
    )


def password_matches(credential: ScramCredential, password: str) -> bool:
    """Whether `password` is the one `credential` was made from (for PLAIN and gRPC): the
    StoredKey it yields equals the stored one (compared in constant time)."""
    salted = salted_password(credential.mechanism, password, credential.salt,
                             credential.iterations)
    client_key = hmac_of(credential.mechanism, salted, b"Client Key")
    return hmac.compare_digest(digest(credential.mechanism, client_key), credential.stored_key)
