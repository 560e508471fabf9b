"""A development CA with server, operator and partner certificates, created once and reused."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from wallet_server.security._certificates import (
    CERT_FILE_MODE,
    KEY_FILE_MODE,
    LEAF_VALIDITY_DAYS,
    CertificateAuthority,
    LeafSpec,
    build_ca_certificate,
    is_issued_by,
    is_valid_through,
    issue_leaf,
    key_matches,
    load_authority,
    load_certificate,
    load_private_key,
    new_private_key,
    utc_now,
    write_certificate,
    write_private_key,
)
from wallet_server.security._identities import operator_spiffe_id, partner_spiffe_id

_DIRECTORY_MODE = 0o700
# Renew a little before expiry so a running dev server never holds an expired certificate.
_RENEW_BEFORE = timedelta(days=30)
_LEAF_VALIDITY = timedelta(days=LEAF_VALIDITY_DAYS)


@dataclass(frozen=True, slots=True)
class DevPkiPaths:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    admin_cert: Path
    admin_key: Path
    partner_cert: Path
    partner_key: Path


def ensure_dev_pki(
    certs_dir: Path,
    *,
    server_hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
    operator_name: str = "admin",
    partner_name: str = "demo",
    clock: Callable[[], datetime] = utc_now,
) -> DevPkiPaths:
    """Makes sure ``certs_dir`` holds a usable dev CA and leaf certificates; returns their paths.

    Files that are still valid are left untouched, so restarts keep the same CA and clients
    configured with it keep working. Anything unreadable, expired, mismatched or not signed
    by the CA is regenerated; a bad CA means everything is regenerated.
    """
    paths = DevPkiPaths(
        ca_cert=certs_dir / "ca.pem",
        ca_key=certs_dir / "ca-key.pem",
        server_cert=certs_dir / "server.pem",
        server_key=certs_dir / "server-key.pem",
        admin_cert=certs_dir / "admin.pem",
        admin_key=certs_dir / "admin-key.pem",
        partner_cert=certs_dir / f"partner-{partner_name}.pem",
        partner_key=certs_dir / f"partner-{partner_name}-key.pem",
    )
    leaves = (
        (paths.server_cert, paths.server_key, LeafSpec.for_hosts(server_hosts, server=True)),
        (
            paths.admin_cert,
            paths.admin_key,
            LeafSpec.create(spiffe_id=operator_spiffe_id(operator_name)),
        ),
        (
            paths.partner_cert,
            paths.partner_key,
            LeafSpec.create(spiffe_id=partner_spiffe_id(partner_name)),
        ),
    )
    certs_dir.mkdir(mode=_DIRECTORY_MODE, parents=True, exist_ok=True)
    _ensure_mode(certs_dir, _DIRECTORY_MODE)
    with _exclusive_lock(certs_dir / ".lock"):
        now = clock()
        authority = _current_authority(paths, now)
        renew_all = authority is None
        if authority is None:
            authority = _new_authority(paths, now)
        for cert_path, key_path, spec in leaves:
            if renew_all or not _leaf_is_current(cert_path, key_path, spec, authority, now):
                issue_leaf(
                    authority,
                    spec,
                    out_cert=cert_path,
                    out_key=key_path,
                    now=now,
                    validity=_LEAF_VALIDITY,
                )
            _ensure_mode(key_path, KEY_FILE_MODE)
            _ensure_mode(cert_path, CERT_FILE_MODE)
        _ensure_mode(paths.ca_key, KEY_FILE_MODE)
        _ensure_mode(paths.ca_cert, CERT_FILE_MODE)
    return paths


def _current_authority(paths: DevPkiPaths, now: datetime) -> CertificateAuthority | None:
    try:
        authority = load_authority(paths.ca_cert, paths.ca_key)
    except (OSError, ValueError, TypeError):
        return None
    certificate = authority.certificate
    usable = is_issued_by(certificate, certificate) and is_valid_through(
        certificate, now + _RENEW_BEFORE, now=now
    )
    return authority if usable else None


def _new_authority(paths: DevPkiPaths, now: datetime) -> CertificateAuthority:
    private_key = new_private_key()
    certificate = build_ca_certificate(private_key, now=now)
    write_private_key(paths.ca_key, private_key)
    write_certificate(paths.ca_cert, certificate)
    return CertificateAuthority(certificate, private_key)


def _leaf_is_current(
    cert_path: Path,
    key_path: Path,
    spec: LeafSpec,
    authority: CertificateAuthority,
    now: datetime,
) -> bool:
    try:
        certificate = load_certificate(cert_path)
        private_key = load_private_key(key_path)
    except (OSError, ValueError, TypeError):
        return False
    return (
        key_matches(certificate, private_key)
        and is_issued_by(certificate, authority.certificate)
        and is_valid_through(certificate, now + _RENEW_BEFORE, now=now)
        and spec.is_described_by(certificate)
    )


def _ensure_mode(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.stat().st_mode) != mode:
        path.chmod(mode)


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    # Several server processes may start at once on the same directory; one generates,
    # the others wait and then find valid files.
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, KEY_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
