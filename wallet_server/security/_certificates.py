"""X.509 certificates for TLS and mTLS: EC P-256 keys, SHA-256 signatures, SPIFFE URI SANs."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wallet_server.security._files import write_atomically

CA_VALIDITY = timedelta(days=3650)
LEAF_VALIDITY_DAYS = 825
KEY_FILE_MODE = 0o600
CERT_FILE_MODE = 0o644
# Tolerates peers whose clocks run a little behind ours.
_BACKDATE = timedelta(minutes=5)
_CA_COMMON_NAME = "wallet-server dev CA"
_SPIFFE_ID = re.compile(r"spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)+")
_MAX_COMMON_NAME = 64

_IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)


@dataclass(frozen=True, slots=True)
class LeafSpec:
    """What a leaf certificate must say: its names and whether it serves or connects."""

    spiffe_id: str | None
    dns_names: tuple[str, ...]
    ip_addresses: tuple[_IpAddress, ...]
    server: bool

    @classmethod
    def create(
        cls,
        *,
        spiffe_id: str | None = None,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        server: bool = False,
    ) -> LeafSpec:
        if spiffe_id is not None and not _SPIFFE_ID.fullmatch(spiffe_id):
            raise ValueError(f"not a SPIFFE id: {spiffe_id!r}")
        if spiffe_id is None and not dns_names and not ip_addresses:
            raise ValueError("a certificate needs a SPIFFE id, a DNS name or an IP address")
        return cls(
            spiffe_id=spiffe_id,
            dns_names=tuple(dns_names),
            ip_addresses=tuple(ipaddress.ip_address(address) for address in ip_addresses),
            server=server,
        )

    @classmethod
    def for_hosts(cls, hosts: Sequence[str], *, server: bool = True) -> LeafSpec:
        """Splits host names from literal IP addresses."""
        dns_names: list[str] = []
        ip_addresses: list[str] = []
        for host in hosts:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                dns_names.append(host)
            else:
                ip_addresses.append(host)
        return cls.create(dns_names=dns_names, ip_addresses=ip_addresses, server=server)

    @property
    def subject_alternative_names(self) -> list[x509.GeneralName]:
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in self.dns_names]
        names.extend(x509.IPAddress(address) for address in self.ip_addresses)
        if self.spiffe_id is not None:
            names.append(x509.UniformResourceIdentifier(self.spiffe_id))
        return names

    @property
    def extended_key_usage(self) -> x509.ObjectIdentifier:
        return ExtendedKeyUsageOID.SERVER_AUTH if self.server else ExtendedKeyUsageOID.CLIENT_AUTH

    @property
    def common_name(self) -> str:
        if self.spiffe_id is not None:
            name = self.spiffe_id.rsplit("/", 1)[-1]
        elif self.dns_names:
            name = self.dns_names[0]
        else:
            name = str(self.ip_addresses[0])
        return name[:_MAX_COMMON_NAME]

    def is_described_by(self, certificate: x509.Certificate) -> bool:
        """Whether the certificate carries exactly these names and this key usage."""
        try:
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        except x509.ExtensionNotFound:
            return False
        same_names = set(names.value) == set(self.subject_alternative_names)
        return same_names and list(usage.value) == [self.extended_key_usage]


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def build_ca_certificate(
    private_key: ec.EllipticCurvePrivateKey, *, now: datetime
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _CA_COMMON_NAME)])
    public_key = private_key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(private_key, hashes.SHA256())
    )


def build_leaf_certificate(
    authority: CertificateAuthority,
    public_key: ec.EllipticCurvePublicKey,
    spec: LeafSpec,
    *,
    now: datetime,
    validity: timedelta,
) -> x509.Certificate:
    # A leaf never outlives its CA.
    not_after = min(now + validity, authority.certificate.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name)]))
        .issuer_name(authority.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([spec.extended_key_usage]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(spec.subject_alternative_names),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.private_key.public_key()),
            critical=False,
        )
        .sign(authority.private_key, hashes.SHA256())
    )


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} does not hold an EC private key")
    return private_key


def load_authority(certificate_path: Path, key_path: Path) -> CertificateAuthority:
    """The CA in these files; ``ValueError`` unless it is a CA whose key matches."""
    certificate = load_certificate(certificate_path)
    private_key = load_private_key(key_path)
    if not is_ca(certificate):
        raise ValueError(f"{certificate_path} is not a CA certificate")
    if not key_matches(certificate, private_key):
        raise ValueError(f"{key_path} is not the key of {certificate_path}")
    return CertificateAuthority(certificate, private_key)


def is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def key_matches(certificate: x509.Certificate, private_key: PrivateKeyTypes) -> bool:
    """Whether ``private_key`` is the key of ``certificate`` (keys of different types never
    are)."""
    return bool(certificate.public_key() == private_key.public_key())


def key_fits_certificate(key_pem: bytes, certificate_pem: bytes) -> bool:
    """:func:`key_matches` for a PEM private key (any type, unencrypted) and the first
    certificate of a PEM file; ``ValueError`` (or ``TypeError``) if either cannot be read."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    (leaf, *_) = x509.load_pem_x509_certificates(certificate_pem)
    return key_matches(leaf, key)


def is_issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def is_valid_through(certificate: x509.Certificate, moment: datetime, *, now: datetime) -> bool:
    """Whether the certificate is valid now and still at ``moment``."""
    return certificate.not_valid_before_utc <= now and moment < certificate.not_valid_after_utc


def write_private_key(path: Path, private_key: ec.EllipticCurvePrivateKey) -> None:
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomically(path, pem, mode=KEY_FILE_MODE)


def write_certificate(path: Path, certificate: x509.Certificate) -> None:
    write_atomically(
        path, certificate.public_bytes(serialization.Encoding.PEM), mode=CERT_FILE_MODE
    )


def issue_leaf(
    authority: CertificateAuthority,
    spec: LeafSpec,
    *,
    out_cert: Path,
    out_key: Path,
    now: datetime,
    validity: timedelta,
) -> None:
    private_key = new_private_key()
    certificate = build_leaf_certificate(
        authority, private_key.public_key(), spec, now=now, validity=validity
    )
    # Key first: a crash in between leaves a key that does not match the old certificate,
    # which the next start detects and repairs.
    write_private_key(out_key, private_key)
    write_certificate(out_cert, certificate)


def issue_certificate(
    *,
    ca_cert_path: Path,
    ca_key_path: Path,
    out_cert: Path,
    out_key: Path,
    spiffe_id: str | None = None,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server: bool = False,
    days: int = LEAF_VALIDITY_DAYS,
) -> None:
    """Issues a new key and a certificate signed by the CA in ``ca_cert_path``/``ca_key_path``.

    ``server`` selects the serverAuth key usage, otherwise clientAuth.
    """
    if days < 1:
        raise ValueError("a certificate must be valid for at least one day")
    ca_files = {ca_cert_path.resolve(), ca_key_path.resolve()}
    if out_cert.resolve() in ca_files or out_key.resolve() in ca_files:
        raise ValueError("refusing to overwrite the CA's own files")
    spec = LeafSpec.create(
        spiffe_id=spiffe_id, dns_names=dns_names, ip_addresses=ip_addresses, server=server
    )
    authority = load_authority(ca_cert_path, ca_key_path)
    issue_leaf(
        authority,
        spec,
        out_cert=out_cert,
        out_key=out_key,
        now=utc_now(),
        validity=timedelta(days=days),
    )
