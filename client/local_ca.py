"""A local certificate authority for `raftka cluster up --tls`: a CA, one certificate per
broker and one client certificate, as PEM files, made with the `cryptography` package.

Why: a secured drill on one machine should take one flag, not an openssl recipe. The CA signs
each broker's certificate with the names clients and the other brokers dial (127.0.0.1,
localhost, the broker's advertised host) and with both serverAuth and clientAuth usage, because
under mutual TLS a broker presents the same certificate when it calls the others. The client
certificate (CN=raftka-client) is what the CLI, the SDK and Kafka clients present under mutual
TLS. Making the material is pure (time and keys are inputs or made here from
`cryptography`'s own randomness); `write_local_ca` is the thin shell that puts it on disk,
keys readable by the owner only.

This is for local and test clusters: the CA key sits next to the certificates it signed.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# P-256 ECDSA keys: as strong as RSA-3072 and far cheaper to make and to handshake with.
KEY_CURVE = ec.SECP256R1()
CA_VALIDITY_DAYS = 3650
CERT_VALIDITY_DAYS = 825  # the longest leaf validity Apple's TLS clients accept
# Certificates start a little in the past, so a clock slightly behind still accepts them.
NOT_BEFORE_SLACK = datetime.timedelta(minutes=5)
CA_NAME = "Raftka local CA"
CLIENT_NAME = "raftka-client"
ORGANIZATION = "Raftka"

CA_CERT, CA_KEY = "ca.pem", "ca.key"
CLIENT_CERT, CLIENT_KEY = "client.pem", "client.key"


def broker_files(broker_id: int) -> tuple[str, str]:
    """Certificate and key file names of broker `broker_id` in the TLS directory."""
    return f"broker-{broker_id}.pem", f"broker-{broker_id}.key"


@dataclass(frozen=True, slots=True)
class Issued:
    certificate_pem: bytes
    key_pem: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(KEY_CURVE)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(now: datetime.datetime) -> tuple[Issued, ec.EllipticCurvePrivateKey]:
    key = _key()
    name = _name(CA_NAME)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - NOT_BEFORE_SLACK)
        .not_valid_after(now + datetime.timedelta(days=CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)), key


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue(ca_pem: bytes, ca_key: ec.EllipticCurvePrivateKey, common_name: str,
          hosts: Iterable[str], now: datetime.datetime) -> Issued:
    """A leaf certificate signed by the CA, for server and client use, valid for `hosts`
    (IP addresses or DNS names; none for a client-only certificate)."""
    ca = x509.load_pem_x509_certificate(ca_pem)
    key = _key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - NOT_BEFORE_SLACK)
        .not_valid_after(now + datetime.timedelta(days=CERT_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=False, key_cert_sign=False,
            crl_sign=False, content_commitment=False, data_encipherment=False,
            key_agreement=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False)
    )
    hosts = list(hosts)
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    certificate = builder.sign(ca_key, hashes.SHA256())
    return Issued(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def broker_hosts(advertised_host: str) -> list[str]:
    """The names a broker's certificate is valid for: loopback and its advertised host."""
    return ["127.0.0.1", "localhost", advertised_host]


@dataclass(frozen=True, slots=True)
class LocalCa:
    """Paths of the material in a TLS directory."""

    directory: str

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    @property
    def ca(self) -> str:
        return self.path(CA_CERT)

    @property
    def client_cert(self) -> str:
        return self.path(CLIENT_CERT)

    @property
    def client_key(self) -> str:
        return self.path(CLIENT_KEY)

    def broker(self, broker_id: int) -> tuple[str, str]:
        cert, key = broker_files(broker_id)
        return self.path(cert), self.path(key)


def _write(path: str, data: bytes, mode: int) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def write_local_ca(directory: str, brokers: dict[int, str],
                   now: datetime.datetime | None = None) -> LocalCa:
    """Make a CA, a certificate per broker ({broker_id: advertised host}) and a client
    certificate in `directory`. An existing CA there is reused, so certificates a client
    already trusts stay valid when brokers are added or their certificates renewed."""
    now = now or datetime.datetime.now(datetime.UTC)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    layout = LocalCa(directory)
    if os.path.exists(layout.ca) and os.path.exists(layout.path(CA_KEY)):
        with open(layout.ca, "rb") as handle:
            ca_pem = handle.read()
        with open(layout.path(CA_KEY), "rb") as handle:
            loaded = serialization.load_pem_private_key(handle.read(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{layout.path(CA_KEY)} is not an EC key made by raftka")
        ca_key = loaded
    else:
        ca, ca_key = make_ca(now)
        ca_pem = ca.certificate_pem
        _write(layout.path(CA_KEY), ca.key_pem, 0o600)
        _write(layout.ca, ca_pem, 0o644)
    for broker_id, host in brokers.items():
        issued = issue(ca_pem, ca_key, f"raftka-broker-{broker_id}", broker_hosts(host), now)
        cert_path, key_path = layout.broker(broker_id)
        _write(key_path, issued.key_pem, 0o600)
        _write(cert_path, issued.certificate_pem, 0o644)
    client = issue(ca_pem, ca_key, CLIENT_NAME, [], now)
    _write(layout.client_key, client.key_pem, 0o600)
    _write(layout.client_cert, client.certificate_pem, 0o644)
    return layout
