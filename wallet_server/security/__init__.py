"""Passwords, tokens, certificates and the dev CA, and encryption of secrets at rest."""

from wallet_server.security._certificates import issue_certificate, key_fits_certificate
from wallet_server.security._dev_pki import DevPkiPaths, ensure_dev_pki
from wallet_server.security._identities import (
    OPERATOR_SPIFFE_PREFIX,
    PARTNER_SPIFFE_PREFIX,
    PeerCertificate,
    operator_spiffe_id,
    partner_spiffe_id,
    peer_certificate_from_pem,
)
from wallet_server.security._passwords import PasswordHasher
from wallet_server.security._revocation import load_revoked_serials
from wallet_server.security._secretbox import SecretBox, SecretBoxError
from wallet_server.security._tokens import (
    AccessClaims,
    AccessTokenCodec,
    IssuedAccessToken,
    hash_refresh_token,
    new_refresh_token,
)

__all__ = [
    "OPERATOR_SPIFFE_PREFIX",
    "PARTNER_SPIFFE_PREFIX",
    "AccessClaims",
    "AccessTokenCodec",
    "DevPkiPaths",
    "IssuedAccessToken",
    "PasswordHasher",
    "PeerCertificate",
    "SecretBox",
    "SecretBoxError",
    "ensure_dev_pki",
    "hash_refresh_token",
    "issue_certificate",
    "key_fits_certificate",
    "load_revoked_serials",
    "new_refresh_token",
    "operator_spiffe_id",
    "partner_spiffe_id",
    "peer_certificate_from_pem",
]
