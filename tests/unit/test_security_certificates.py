from __future__ import annotations

import ipaddress
import shutil
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from wallet_server.security import DevPkiPaths, ensure_dev_pki, issue_certificate


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def sans(certificate: x509.Certificate) -> x509.SubjectAlternativeName:
    return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def key_usages(certificate: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def fingerprint(path: Path) -> bytes:
    return load(path).fingerprint(hashes.SHA256())


def all_files(paths: DevPkiPaths) -> list[Path]:
    return [
        paths.ca_cert,
        paths.ca_key,
        paths.server_cert,
        paths.server_key,
        paths.admin_cert,
        paths.admin_key,
        paths.partner_cert,
        paths.partner_key,
    ]


def snapshot(paths: DevPkiPaths) -> dict[Path, tuple[bytes, int, int]]:
    return {
        path: (path.read_bytes(), path.stat().st_ino, path.stat().st_mtime_ns)
        for path in all_files(paths)
    }


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def later(delta: timedelta) -> datetime:
    return datetime.now(UTC) + delta


@pytest.fixture
def certs_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "certs"


@pytest.fixture
def pki(certs_dir: Path) -> DevPkiPaths:
    return ensure_dev_pki(certs_dir)


def test_creates_the_documented_files(pki: DevPkiPaths, certs_dir: Path) -> None:
    assert pki == DevPkiPaths(
        ca_cert=certs_dir / "ca.pem",
        ca_key=certs_dir / "ca-key.pem",
        server_cert=certs_dir / "server.pem",
        server_key=certs_dir / "server-key.pem",
        admin_cert=certs_dir / "admin.pem",
        admin_key=certs_dir / "admin-key.pem",
        partner_cert=certs_dir / "partner-demo.pem",
        partner_key=certs_dir / "partner-demo-key.pem",
    )
    for path in all_files(pki):
        assert path.is_file()


def test_keys_are_private_and_certificates_readable(pki: DevPkiPaths, certs_dir: Path) -> None:
    assert mode(certs_dir) == 0o700
    for path in (pki.ca_key, pki.server_key, pki.admin_key, pki.partner_key):
        assert mode(path) == 0o600, path
    for path in (pki.ca_cert, pki.server_cert, pki.admin_cert, pki.partner_cert):
        assert mode(path) == 0o644, path
    assert not list(certs_dir.glob("*.tmp"))


def test_the_ca_is_a_self_signed_p256_ca_for_ten_years(pki: DevPkiPaths) -> None:
    ca = load(pki.ca_cert)

    ca.verify_directly_issued_by(ca)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    public_key = ca.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    assert isinstance(ca.signature_hash_algorithm, hashes.SHA256)
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert timedelta(days=3650) <= lifetime <= timedelta(days=3651)
    assert load_key(pki.ca_key).public_key() == ca.public_key()


def test_the_server_certificate_names_every_host(pki: DevPkiPaths) -> None:
    server = load(pki.server_cert)

    assert sans(server).get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(sans(server).get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert sans(server).get_values_for_type(x509.UniformResourceIdentifier) == []
    assert key_usages(server) == [ExtendedKeyUsageOID.SERVER_AUTH]


@pytest.mark.parametrize(
    ("attribute", "spiffe_id"),
    [
        ("admin_cert", "spiffe://wallet/operator/admin"),
        ("partner_cert", "spiffe://wallet/partner/demo"),
    ],
)
def test_client_certificates_carry_their_spiffe_id(
    pki: DevPkiPaths, attribute: str, spiffe_id: str
) -> None:
    certificate = load(getattr(pki, attribute))

    assert sans(certificate).get_values_for_type(x509.UniformResourceIdentifier) == [spiffe_id]
    assert key_usages(certificate) == [ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize(
    ("cert", "key"),
    [
        ("server_cert", "server_key"),
        ("admin_cert", "admin_key"),
        ("partner_cert", "partner_key"),
    ],
)
def test_every_leaf_is_signed_by_the_ca_for_825_days(pki: DevPkiPaths, cert: str, key: str) -> None:
    ca = load(pki.ca_cert)
    leaf = load(getattr(pki, cert))

    leaf.verify_directly_issued_by(ca)
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert load_key(getattr(pki, key)).public_key() == leaf.public_key()
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert timedelta(days=825) <= lifetime <= timedelta(days=826)
    assert leaf.not_valid_before_utc <= datetime.now(UTC)


def test_serials_are_random_and_distinct(pki: DevPkiPaths) -> None:
    serials = {load(path).serial_number for path in all_files(pki) if "key" not in path.name}

    assert len(serials) == 4
    assert all(serial > 2**64 for serial in serials)


def test_a_second_call_reuses_everything_untouched(pki: DevPkiPaths, certs_dir: Path) -> None:
    before = snapshot(pki)

    again = ensure_dev_pki(certs_dir)

    assert again == pki
    assert snapshot(again) == before


def test_custom_names_and_hosts(certs_dir: Path) -> None:
    pki = ensure_dev_pki(
        certs_dir,
        server_hosts=("wallet.internal", "10.1.2.3"),
        operator_name="alice",
        partner_name="acme-bank",
    )

    server = load(pki.server_cert)
    assert sans(server).get_values_for_type(x509.DNSName) == ["wallet.internal"]
    assert sans(server).get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]
    assert pki.partner_cert == certs_dir / "partner-acme-bank.pem"
    assert sans(load(pki.partner_cert)).get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://wallet/partner/acme-bank"
    ]
    assert sans(load(pki.admin_cert)).get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://wallet/operator/alice"
    ]


@pytest.mark.parametrize(
    ("operator_name", "partner_name"), [("Admin", "demo"), ("admin", "../evil"), ("admin", "")]
)
def test_invalid_identity_names_are_refused_before_writing(
    certs_dir: Path, operator_name: str, partner_name: str
) -> None:
    with pytest.raises(ValueError, match="invalid identity name"):
        ensure_dev_pki(certs_dir, operator_name=operator_name, partner_name=partner_name)
    assert not certs_dir.exists()


def test_a_corrupt_leaf_is_regenerated_alone(pki: DevPkiPaths, certs_dir: Path) -> None:
    before = snapshot(pki)
    pki.server_cert.write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n")

    ensure_dev_pki(certs_dir)

    after = snapshot(pki)
    load(pki.server_cert).verify_directly_issued_by(load(pki.ca_cert))
    assert after[pki.server_cert] != before[pki.server_cert]
    assert after[pki.server_key] != before[pki.server_key]
    for path in (pki.ca_cert, pki.ca_key, pki.admin_cert, pki.admin_key, pki.partner_cert):
        assert after[path] == before[path], path


def test_a_leaf_whose_key_does_not_match_is_regenerated(pki: DevPkiPaths, certs_dir: Path) -> None:
    shutil.copy(pki.partner_key, pki.admin_key)

    ensure_dev_pki(certs_dir)

    assert load_key(pki.admin_key).public_key() == load(pki.admin_cert).public_key()
    assert sans(load(pki.admin_cert)).get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://wallet/operator/admin"
    ]


def test_a_leaf_from_another_ca_is_regenerated(
    pki: DevPkiPaths, certs_dir: Path, tmp_path: Path
) -> None:
    stranger = ensure_dev_pki(tmp_path / "elsewhere")
    shutil.copy(stranger.admin_cert, pki.admin_cert)
    shutil.copy(stranger.admin_key, pki.admin_key)
    ca_before = fingerprint(pki.ca_cert)

    ensure_dev_pki(certs_dir)

    assert fingerprint(pki.ca_cert) == ca_before
    load(pki.admin_cert).verify_directly_issued_by(load(pki.ca_cert))


def test_changed_server_hosts_reissue_the_server_certificate(
    pki: DevPkiPaths, certs_dir: Path
) -> None:
    admin_before = pki.admin_cert.read_bytes()

    ensure_dev_pki(certs_dir, server_hosts=("localhost", "127.0.0.1", "::1", "wallet.test"))

    assert "wallet.test" in sans(load(pki.server_cert)).get_values_for_type(x509.DNSName)
    assert pki.admin_cert.read_bytes() == admin_before


def test_a_missing_ca_key_regenerates_everything(pki: DevPkiPaths, certs_dir: Path) -> None:
    before = snapshot(pki)
    pki.ca_key.unlink()

    ensure_dev_pki(certs_dir)

    after = snapshot(pki)
    ca = load(pki.ca_cert)
    for path in all_files(pki):
        assert after[path][0] != before[path][0], path
    for path in (pki.server_cert, pki.admin_cert, pki.partner_cert):
        load(path).verify_directly_issued_by(ca)


def test_a_leaf_certificate_in_place_of_the_ca_regenerates_everything(
    pki: DevPkiPaths, certs_dir: Path
) -> None:
    ca_before = fingerprint(pki.ca_cert)
    shutil.copy(pki.server_cert, pki.ca_cert)
    shutil.copy(pki.server_key, pki.ca_key)

    ensure_dev_pki(certs_dir)

    assert fingerprint(pki.ca_cert) not in (ca_before, fingerprint(pki.server_cert))
    load(pki.server_cert).verify_directly_issued_by(load(pki.ca_cert))


def test_expired_leaves_are_renewed_under_the_same_ca(pki: DevPkiPaths, certs_dir: Path) -> None:
    ca_before = fingerprint(pki.ca_cert)
    server_before = fingerprint(pki.server_cert)
    moment = later(timedelta(days=900))

    ensure_dev_pki(certs_dir, clock=lambda: moment)

    assert fingerprint(pki.ca_cert) == ca_before
    server = load(pki.server_cert)
    assert fingerprint(pki.server_cert) != server_before
    assert server.not_valid_before_utc <= moment < server.not_valid_after_utc
    server.verify_directly_issued_by(load(pki.ca_cert))


def test_leaves_are_renewed_shortly_before_they_expire(pki: DevPkiPaths, certs_dir: Path) -> None:
    admin_before = fingerprint(pki.admin_cert)

    ensure_dev_pki(certs_dir, clock=lambda: later(timedelta(days=800)))

    assert fingerprint(pki.admin_cert) != admin_before


def test_a_ca_with_a_broken_signature_regenerates_everything(
    pki: DevPkiPaths, certs_dir: Path
) -> None:
    der = bytearray(load(pki.ca_cert).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # last byte of the ECDSA signature
    forged = x509.load_der_x509_certificate(bytes(der))
    pki.ca_cert.write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    ca_key_before = pki.ca_key.read_bytes()

    ensure_dev_pki(certs_dir)

    assert pki.ca_key.read_bytes() != ca_key_before
    load(pki.admin_cert).verify_directly_issued_by(load(pki.ca_cert))


def test_the_ca_is_renewed_shortly_before_it_expires(pki: DevPkiPaths, certs_dir: Path) -> None:
    ca_before = fingerprint(pki.ca_cert)

    ensure_dev_pki(certs_dir, clock=lambda: later(timedelta(days=3640)))

    assert fingerprint(pki.ca_cert) != ca_before


def test_an_expired_ca_regenerates_everything(pki: DevPkiPaths, certs_dir: Path) -> None:
    ca_before = fingerprint(pki.ca_cert)
    moment = later(timedelta(days=3700))

    ensure_dev_pki(certs_dir, clock=lambda: moment)

    ca = load(pki.ca_cert)
    assert fingerprint(pki.ca_cert) != ca_before
    assert ca.not_valid_before_utc <= moment
    load(pki.partner_cert).verify_directly_issued_by(ca)


def test_leaves_never_outlive_the_ca(pki: DevPkiPaths, certs_dir: Path) -> None:
    pki.server_cert.unlink()

    ensure_dev_pki(certs_dir, clock=lambda: later(timedelta(days=3300)))

    ca = load(pki.ca_cert)
    assert load(pki.server_cert).not_valid_after_utc == ca.not_valid_after_utc


def test_loose_permissions_are_tightened(pki: DevPkiPaths, certs_dir: Path) -> None:
    before = snapshot(pki)
    for path in all_files(pki):
        path.chmod(0o666)
    certs_dir.chmod(0o755)

    ensure_dev_pki(certs_dir)

    assert mode(certs_dir) == 0o700
    for path in (pki.ca_key, pki.server_key, pki.admin_key, pki.partner_key):
        assert mode(path) == 0o600, path
    for path in (pki.ca_cert, pki.server_cert, pki.admin_cert, pki.partner_cert):
        assert mode(path) == 0o644, path
    assert {path: content for path, (content, _, _) in snapshot(pki).items()} == {
        path: content for path, (content, _, _) in before.items()
    }


def test_issue_certificate_for_a_partner(pki: DevPkiPaths, tmp_path: Path) -> None:
    out_cert, out_key = tmp_path / "acme.pem", tmp_path / "acme-key.pem"

    issue_certificate(
        ca_cert_path=pki.ca_cert,
        ca_key_path=pki.ca_key,
        out_cert=out_cert,
        out_key=out_key,
        spiffe_id="spiffe://wallet/partner/acme",
        days=30,
    )

    certificate = load(out_cert)
    certificate.verify_directly_issued_by(load(pki.ca_cert))
    assert sans(certificate).get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://wallet/partner/acme"
    ]
    assert key_usages(certificate) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert timedelta(days=30) <= lifetime <= timedelta(days=30, minutes=10)
    assert load_key(out_key).public_key() == certificate.public_key()
    assert mode(out_key) == 0o600
    assert mode(out_cert) == 0o644


def test_issue_certificate_for_a_server(pki: DevPkiPaths, tmp_path: Path) -> None:
    out_cert = tmp_path / "api.pem"

    issue_certificate(
        ca_cert_path=pki.ca_cert,
        ca_key_path=pki.ca_key,
        out_cert=out_cert,
        out_key=tmp_path / "api-key.pem",
        dns_names=["api.wallet.example", "wallet.example"],
        ip_addresses=["192.0.2.7"],
        server=True,
    )

    certificate = load(out_cert)
    assert sans(certificate).get_values_for_type(x509.DNSName) == [
        "api.wallet.example",
        "wallet.example",
    ]
    assert sans(certificate).get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.0.2.7")
    ]
    assert key_usages(certificate) == [ExtendedKeyUsageOID.SERVER_AUTH]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "needs a SPIFFE id, a DNS name or an IP address"),
        ({"spiffe_id": "https://wallet/partner/x"}, "not a SPIFFE id"),
        ({"spiffe_id": "spiffe://wallet"}, "not a SPIFFE id"),
        ({"ip_addresses": ["300.1.1.1"]}, "300.1.1.1"),
        ({"spiffe_id": "spiffe://wallet/partner/x", "days": 0}, "at least one day"),
    ],
)
def test_issue_certificate_refuses_bad_requests(
    pki: DevPkiPaths, tmp_path: Path, arguments: dict[str, object], message: str
) -> None:
    out_cert, out_key = tmp_path / "out.pem", tmp_path / "out-key.pem"

    with pytest.raises(ValueError, match=message):
        issue_certificate(
            ca_cert_path=pki.ca_cert,
            ca_key_path=pki.ca_key,
            out_cert=out_cert,
            out_key=out_key,
            **arguments,  # type: ignore[arg-type]
        )
    assert not out_cert.exists()
    assert not out_key.exists()


def test_issue_certificate_never_overwrites_the_ca(pki: DevPkiPaths, tmp_path: Path) -> None:
    ca_before = pki.ca_key.read_bytes()

    with pytest.raises(ValueError, match="overwrite the CA"):
        issue_certificate(
            ca_cert_path=pki.ca_cert,
            ca_key_path=pki.ca_key,
            out_cert=tmp_path / "out.pem",
            out_key=pki.ca_key.parent / ".." / pki.ca_key.parent.name / "ca-key.pem",
            spiffe_id="spiffe://wallet/partner/x",
        )
    assert pki.ca_key.read_bytes() == ca_before


def test_issue_certificate_refuses_a_leaf_as_ca(pki: DevPkiPaths, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a CA certificate"):
        issue_certificate(
            ca_cert_path=pki.server_cert,
            ca_key_path=pki.server_key,
            out_cert=tmp_path / "out.pem",
            out_key=tmp_path / "out-key.pem",
            spiffe_id="spiffe://wallet/partner/x",
        )


def test_issue_certificate_refuses_a_mismatched_ca_key(pki: DevPkiPaths, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not the key of"):
        issue_certificate(
            ca_cert_path=pki.ca_cert,
            ca_key_path=pki.admin_key,
            out_cert=tmp_path / "out.pem",
            out_key=tmp_path / "out-key.pem",
            spiffe_id="spiffe://wallet/partner/x",
        )


# Real TLS handshakes over in-memory buffers: the certificates work for what they are for.


def handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> ssl.SSLObject:
    """Runs a TLS handshake between the two contexts; returns the server's side."""
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(client_in, client_out, server_hostname="localhost")
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done.values()):
            # TLS 1.3 checks the client certificate after the client thinks it is done.
            server.write(b"ping")
            client_in.write(server_out.read())
            assert client.read(4) == b"ping"
            return server
    raise AssertionError("handshake did not finish")


def server_context(pki: DevPkiPaths, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.load_verify_locations(pki.ca_cert)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(pki: DevPkiPaths, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki.ca_cert)
    context.load_cert_chain(cert, key)
    return context


@pytest.mark.parametrize(
    ("cert", "key", "spiffe_id"),
    [
        ("admin_cert", "admin_key", "spiffe://wallet/operator/admin"),
        ("partner_cert", "partner_key", "spiffe://wallet/partner/demo"),
    ],
)
def test_mutual_tls_handshake_with_each_client(
    pki: DevPkiPaths, cert: str, key: str, spiffe_id: str
) -> None:
    server = handshake(
        server_context(pki, pki.server_cert, pki.server_key),
        client_context(pki, getattr(pki, cert), getattr(pki, key)),
    )

    peer = server.getpeercert()
    assert peer is not None
    assert ("URI", spiffe_id) in peer["subjectAltName"]


def test_a_client_certificate_cannot_serve(pki: DevPkiPaths) -> None:
    with pytest.raises(ssl.SSLError, match="unsuitable certificate purpose"):
        handshake(
            server_context(pki, pki.partner_cert, pki.partner_key),
            client_context(pki, pki.admin_cert, pki.admin_key),
        )


def test_the_server_certificate_cannot_be_a_client(pki: DevPkiPaths) -> None:
    with pytest.raises(ssl.SSLError, match="unsuitable certificate purpose"):
        handshake(
            server_context(pki, pki.server_cert, pki.server_key),
            client_context(pki, pki.server_cert, pki.server_key),
        )


def test_a_client_from_another_ca_is_refused(pki: DevPkiPaths, tmp_path: Path) -> None:
    stranger = ensure_dev_pki(tmp_path / "elsewhere")

    with pytest.raises(ssl.SSLError, match="unable to get local issuer"):
        handshake(
            server_context(pki, pki.server_cert, pki.server_key),
            client_context(pki, stranger.admin_cert, stranger.admin_key),
        )
