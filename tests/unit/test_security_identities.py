from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wallet_server.security import (
    OPERATOR_SPIFFE_PREFIX,
    PARTNER_SPIFFE_PREFIX,
    DevPkiPaths,
    ensure_dev_pki,
    operator_spiffe_id,
    partner_spiffe_id,
    peer_certificate_from_pem,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPkiPaths:
    return ensure_dev_pki(tmp_path_factory.mktemp("pki"))


def self_signed_with_uris(*uris: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri) for uri in uris]),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_spiffe_ids_for_partners_and_operators() -> None:
    assert partner_spiffe_id("acme-bank-2") == "spiffe://wallet/partner/acme-bank-2"
    assert operator_spiffe_id("admin") == "spiffe://wallet/operator/admin"
    assert partner_spiffe_id("demo").startswith(PARTNER_SPIFFE_PREFIX)
    assert operator_spiffe_id("demo").startswith(OPERATOR_SPIFFE_PREFIX)
    assert partner_spiffe_id("x" * 64).endswith("/" + "x" * 64)


@pytest.mark.parametrize(
    "name", ["", "Acme", "acme_bank", "acme/bank", "acme bank", "x" * 65, "bänk", "acme\n"]
)
def test_invalid_identity_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid identity name"):
        partner_spiffe_id(name)
    with pytest.raises(ValueError, match="invalid identity name"):
        operator_spiffe_id(name)


def test_a_peer_certificate_yields_its_identity(pki: DevPkiPaths) -> None:
    pem = pki.partner_cert.read_bytes()
    certificate = x509.load_pem_x509_certificate(pem)

    peer = peer_certificate_from_pem(pem)

    assert peer.spiffe_id == "spiffe://wallet/partner/demo"
    assert peer.serial_number == certificate.serial_number
    assert (
        peer.fingerprint_sha256
        == hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    )
    assert peer.not_after == certificate.not_valid_after_utc
    assert peer.not_after.tzinfo is not None


def test_operator_and_partner_certificates_are_told_apart(pki: DevPkiPaths) -> None:
    operator = peer_certificate_from_pem(pki.admin_cert.read_bytes())
    partner = peer_certificate_from_pem(pki.partner_cert.read_bytes())

    assert operator.spiffe_id == "spiffe://wallet/operator/admin"
    assert operator.serial_number != partner.serial_number
    assert operator.fingerprint_sha256 != partner.fingerprint_sha256


def test_a_certificate_without_a_spiffe_id(pki: DevPkiPaths) -> None:
    assert peer_certificate_from_pem(pki.server_cert.read_bytes()).spiffe_id is None
    assert peer_certificate_from_pem(self_signed_with_uris()).spiffe_id is None
    assert peer_certificate_from_pem(self_signed_with_uris("https://x.example")).spiffe_id is None


@pytest.mark.parametrize(
    "uris",
    [
        ("spiffe://wallet/partner/demo", "spiffe://wallet/operator/admin"),
        ("spiffe://wallet/operator/admin", "spiffe://wallet/partner/demo"),
        ("https://wallet.example/partner/other", "spiffe://wallet/partner/demo"),
        ("spiffe://wallet/partner/demo", "spiffe://wallet/partner/demo"),
    ],
)
def test_a_certificate_with_several_uri_names_has_no_identity(uris: tuple[str, ...]) -> None:
    # A SPIFFE certificate has exactly one URI name: with two, a partner's certificate
    # could also name an operator, and which one counted would be this server's choice.
    assert peer_certificate_from_pem(self_signed_with_uris(*uris)).spiffe_id is None
    assert peer_certificate_from_pem(self_signed_with_uris(uris[-1])).spiffe_id == uris[-1]


def test_parsing_is_memoized(pki: DevPkiPaths) -> None:
    pem = pki.admin_cert.read_bytes()

    assert peer_certificate_from_pem(pem) is peer_certificate_from_pem(bytes(bytearray(pem)))


@pytest.mark.parametrize(
    "pem", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]
)
def test_a_malformed_certificate_is_a_value_error(pem: bytes) -> None:
    with pytest.raises(ValueError, match=r"not a PEM X\.509 certificate"):
        peer_certificate_from_pem(pem)


def test_a_private_key_is_not_a_certificate(pki: DevPkiPaths) -> None:
    with pytest.raises(ValueError, match=r"not a PEM X\.509 certificate"):
        peer_certificate_from_pem(Path(pki.admin_key).read_bytes())
