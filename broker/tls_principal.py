"""Who a TLS client is: the principal its certificate names, as Kafka's default builder does.

Why one place: under mutual TLS both the Kafka listener and the gRPC services learn who is
calling from the client certificate, and authorization (ACLs) must see the same string from
both. Kafka's default principal for an SSL client is `User:` plus the certificate subject's
distinguished name in RFC 2253 form (most specific part first: `User:CN=raftka-client,O=Raftka`);
a TLS connection without a client certificate is `User:ANONYMOUS`, as in Kafka. A plaintext
connection has no TLS principal (None): SASL, or nothing, decides who it is.
"""

from __future__ import annotations

import ssl
from typing import Any

ANONYMOUS = "User:ANONYMOUS"
USER_PREFIX = "User:"


def principal_of_certificate(certificate: bytes | None) -> str:
    """`User:<subject DN>` of a DER or PEM certificate; `User:ANONYMOUS` for none."""
    if not certificate:
        return ANONYMOUS
    from cryptography import x509  # only TLS connections need it (~0.15 s to import)

    if certificate.lstrip().startswith(b"-----BEGIN"):
        parsed = x509.load_pem_x509_certificate(certificate)
    else:
        parsed = x509.load_der_x509_certificate(certificate)
    return USER_PREFIX + parsed.subject.rfc4514_string()


def kafka_connection_principal(ssl_object: ssl.SSLObject | None) -> str | None:
    """The principal of a Kafka connection from its transport's `ssl_object` extra info
    (None on a plaintext connection)."""
    if ssl_object is None:
        return None
    return principal_of_certificate(ssl_object.getpeercert(binary_form=True))


def grpc_call_principal(context: Any) -> str | None:
    """The principal of a gRPC call (its ServicerContext): None when the call did not come
    over TLS, `User:ANONYMOUS` over TLS without a client certificate."""
    auth = context.auth_context()
    if auth.get("transport_security_type", [b""])[0] != b"ssl":
        return None
    pem = auth.get("x509_pem_cert")
    return principal_of_certificate(pem[0] if pem else None)
