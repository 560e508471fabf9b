"""Certificate identities: SPIFFE ids and what the server needs to know about a peer certificate."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes

OPERATOR_SPIFFE_PREFIX = "spiffe://wallet/operator/"
PARTNER_SPIFFE_PREFIX = "spiffe://wallet/partner/"
_SPIFFE_SCHEME = "spiffe://"
_NAME = re.compile(r"[a-z0-9-]{1,64}")


def partner_spiffe_id(name: str) -> str:
    return PARTNER_SPIFFE_PREFIX + _checked_name(name)


def operator_spiffe_id(name: str) -> str:
    return OPERATOR_SPIFFE_PREFIX + _checked_name(name)


def _checked_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid identity name {name!r}: use 1-64 characters of a-z, 0-9 and -")
    return name


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    spiffe_id: str | None
    serial_number: int
    fingerprint_sha256: str
    not_after: datetime


def peer_certificate_from_pem(pem: bytes) -> PeerCertificate:
    """Parses a PEM certificate (as gRPC's ``x509_pem_cert``); ``ValueError`` if malformed.

    Runs on every mTLS call, and a client presents the same certificate over and over, so
    results are memoized by the PEM bytes.
    """
    return _parse_cached(bytes(pem))


@functools.lru_cache(maxsize=4096)
def _parse_cached(pem: bytes) -> PeerCertificate:
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ValueError("not a PEM X.509 certificate") from exc
    return PeerCertificate(
        spiffe_id=_spiffe_id_of(certificate),
        serial_number=certificate.serial_number,
        fingerprint_sha256=certificate.fingerprint(hashes.SHA256()).hex(),
        not_after=certificate.not_valid_after_utc,
    )


def _spiffe_id_of(certificate: x509.Certificate) -> str | None:
    """The certificate's SPIFFE id: its one URI subject alternative name, if that is a
    ``spiffe://`` URI. A SPIFFE certificate has exactly one URI name; with several, which
    one named the caller would be this server's choice, so such a certificate has none."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1 or not uris[0].startswith(_SPIFFE_SCHEME):
        return None
    return uris[0]
