"""What a Kafka connection knows about its client, kept for as long as the connection lives.

Why: authentication is per connection in Kafka (the TLS handshake, a SASL exchange), and
every request on it is authorized as the same principal. The listener makes one session per
connection and hands it to each request (codec.Request.session), so handlers and the
authorizer read who is calling without knowing how the connection was secured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class ConnectionSession:
    listener: str  # the listener's name (e.g. PLAINTEXT, EXTERNAL)
    security_protocol: str  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    peer: Any  # the client's address, as the transport gives it
    # `User:<certificate subject DN>` under TLS (User:ANONYMOUS without a client
    # certificate); None on a plaintext connection (broker/tls_principal.py).
    tls_principal: str | None = None
