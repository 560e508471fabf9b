"""Server configuration: one frozen dataclass, built from a TOML file and ``WALLET_*`` env.

Every field can be set in the file (top-level key = field name) or in the environment
(``WALLET_`` + the field name in capitals; the environment wins). Values are validated at
start-up; a bad or missing setting raises :class:`ConfigError` with one clear line.
Key material (``token_keys``, ``secret_keys``) is written ``kid:base64,kid:base64``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from wallet_server.security import key_fits_certificate, load_revoked_serials

__all__ = [
    "DEFAULT_MAX_STREAMS_PER_CALLER",
    "ConfigError",
    "Settings",
    "load_settings",
    "parse_key_ring",
]

ENV_PREFIX = "WALLET_"
DEFAULT_MAX_STREAMS_PER_CALLER = 100


class ConfigError(ValueError):
    """A setting is missing or invalid; the message is one line meant for the operator."""


def _redacted(keys: Mapping[str, bytes]) -> str:
    return "{" + ", ".join(f"{kid}: <{len(k)} bytes>" for kid in keys for k in [keys[kid]]) + "}"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server needs to run. Paths are resolved; durations in seconds."""

    database_url: str
    tls_cert_file: Path
    tls_key_file: Path
    client_ca_file: Path
    token_keys: Mapping[str, bytes] = field(repr=False)
    token_active_key_id: str
    secret_keys: Mapping[str, bytes] = field(repr=False)
    secret_active_key_id: str
    host: str = "127.0.0.1"
    port: int = 50051
    mtls_host: str = ""  # empty: same as host
    mtls_port: int = 50052
    revoked_serials_file: Path | None = None
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    idempotency_retention_hours: int = 24
    database_pool_size: int = 20
    password_time_cost: int = 3
    password_memory_kib: int = 65536
    login_max_failures: int = 5
    login_lockout_seconds: int = 900
    principal_cache_seconds: float = 5.0
    max_streams_per_caller: int = DEFAULT_MAX_STREAMS_PER_CALLER
    shutdown_grace_seconds: float = 10.0
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def effective_mtls_host(self) -> str:
        return self.mtls_host or self.host

    def __repr__(self) -> str:
        shown = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in {"token_keys", "secret_keys", "database_url"}
        }
        return (
            f"Settings(token_keys={_redacted(self.token_keys)}, "
            f"secret_keys={_redacted(self.secret_keys)}, {shown})"
        )


def _validate(s: Settings) -> None:
    if not s.database_url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        raise ConfigError("database_url must be a postgresql:// URL")
    for name in ("port", "mtls_port"):
        value = getattr(s, name)
        if not 0 <= value <= 65535:
            raise ConfigError(f"{name} must be between 0 and 65535, got {value}")
    if s.port == s.mtls_port and s.port != 0 and s.effective_mtls_host == s.host:
        raise ConfigError("port and mtls_port must differ")
    for name in ("tls_cert_file", "tls_key_file", "client_ca_file"):
        path: Path = getattr(s, name)
        if not path.is_file():
            raise ConfigError(f"{name}: no such file: {path}")
    _validate_pem(s)
    # A mistyped path or a malformed line must not quietly mean "nothing is revoked".
    if s.revoked_serials_file is not None:
        if not s.revoked_serials_file.is_file():
            raise ConfigError(
                f"revoked_serials_file: no such file: {s.revoked_serials_file} "
                "(create it empty if nothing is revoked)"
            )
        try:
            load_revoked_serials(s.revoked_serials_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"revoked_serials_file: {exc}") from None
    _validate_ring("token_keys", s.token_keys, s.token_active_key_id, min_len=32)
    _validate_ring("secret_keys", s.secret_keys, s.secret_active_key_id, exact_len=32)
    positive = (
        "access_token_ttl_seconds",
        "refresh_token_ttl_seconds",
        "idempotency_retention_hours",
        "database_pool_size",
        "password_time_cost",
        "login_max_failures",
        "login_lockout_seconds",
        "max_streams_per_caller",
    )
    for name in positive:
        if getattr(s, name) <= 0:
            raise ConfigError(f"{name} must be positive")
    for name in ("principal_cache_seconds", "shutdown_grace_seconds"):
        if not getattr(s, name) >= 0:  # NaN too
            raise ConfigError(f"{name} must be a number of seconds, not negative")
    # Far beyond any sensible value, and below what would overflow a duration or the
    # password hasher (a traceback at start-up, or a server that cannot hash).
    for name, highest in _HIGHEST.items():
        if not getattr(s, name) <= highest:  # NaN and infinity too
            raise ConfigError(f"{name} must be at most {highest}")
    if s.idempotency_retention_hours < 24:
        raise ConfigError("idempotency_retention_hours must be at least 24")
    if s.password_memory_kib < 1024:
        raise ConfigError("password_memory_kib must be at least 1024")
    if s.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError("log_level must be one of DEBUG, INFO, WARNING, ERROR")


_TEN_YEARS = 10 * 365 * 24 * 3600
_HIGHEST: dict[str, float] = {
    "access_token_ttl_seconds": _TEN_YEARS,
    "refresh_token_ttl_seconds": _TEN_YEARS,
    "idempotency_retention_hours": _TEN_YEARS // 3600,
    "login_lockout_seconds": _TEN_YEARS,
    "database_pool_size": 10_000,
    "password_time_cost": 100,
    "password_memory_kib": 4 * 1024 * 1024,
    "login_max_failures": 1_000,
    "max_streams_per_caller": 1_000_000,
    "principal_cache_seconds": 3600,
    "shutdown_grace_seconds": 3600,
}


def _validate_pem(s: Settings) -> None:
    """Unreadable TLS material would otherwise surface as a baffling bind failure."""
    try:
        for name in ("tls_cert_file", "client_ca_file"):
            x509.load_pem_x509_certificates(getattr(s, name).read_bytes())
    except ValueError:
        raise ConfigError(f"{name}: not a PEM certificate: {getattr(s, name)}") from None
    try:
        fits = key_fits_certificate(s.tls_key_file.read_bytes(), s.tls_cert_file.read_bytes())
    except (ValueError, TypeError):
        raise ConfigError(
            f"tls_key_file: not an unencrypted PEM private key: {s.tls_key_file}"
        ) from None
    if not fits:
        raise ConfigError(
            f"tls_key_file: {s.tls_key_file} is not the key of tls_cert_file {s.tls_cert_file}"
        )


def _validate_ring(
    name: str,
    ring: Mapping[str, bytes],
    active: str,
    *,
    min_len: int = 0,
    exact_len: int | None = None,
) -> None:
    if not ring:
        raise ConfigError(f"{name} is required (format kid:base64,...)")
    if active not in ring:
        raise ConfigError(f"{name}: active key id {active!r} is not in the ring")
    for kid, key in ring.items():
        if exact_len is not None and len(key) != exact_len:
            raise ConfigError(f"{name}: key {kid!r} must be {exact_len} bytes")
        if len(key) < min_len:
            raise ConfigError(f"{name}: key {kid!r} must be at least {min_len} bytes")


def parse_key_ring(text: str, *, setting: str) -> dict[str, bytes]:
    """``kid:base64,kid:base64`` → ``{kid: key}``."""
    items: list[tuple[str, str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        kid, sep, encoded = item.partition(":")
        if not sep or not kid:
            raise ConfigError(f"{setting}: expected kid:base64, got an item without ':'")
        items.append((kid, encoded))
    return _decode_ring(items, setting=setting)


def _decode_ring(items: Iterable[tuple[str, str]], *, setting: str) -> dict[str, bytes]:
    ring: dict[str, bytes] = {}
    for kid, encoded in items:
        if kid in ring:
            raise ConfigError(f"{setting}: key id {kid!r} appears twice")
        try:
            ring[kid] = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ConfigError(f"{setting}: key {kid!r} is not valid base64") from None
    return ring


def _convert(name: str, hint: Any, raw: Any, base_dir: Path) -> Any:
    """Turn a TOML or environment value into the field's declared type."""
    if isinstance(hint, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if raw in ("", None):
            return None
        hint = args[0]
    is_ring = typing.get_origin(hint) in (Mapping, dict) or hint is Mapping
    if isinstance(raw, list | dict) and not (is_ring and isinstance(raw, dict)):
        raise ConfigError(f"{name}: expected a single value, got {type(raw).__name__}")
    if hint is Path:
        path = Path(str(raw)).expanduser()
        return path if path.is_absolute() else (base_dir / path).resolve()
    if is_ring:
        if isinstance(raw, Mapping):
            return _decode_ring(((str(k), str(v)) for k, v in raw.items()), setting=name)
        return parse_key_ring(str(raw), setting=name)
    try:
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            return {"1": True, "true": True, "0": False, "false": False}[str(raw).lower()]
        if hint is int:
            if isinstance(raw, bool | float):  # int(1.5) would quietly be 1
                raise ValueError
            return int(raw)
        if hint is float:
            return float(raw)
    except (KeyError, ValueError, TypeError):
        raise ConfigError(f"{name}: expected {hint.__name__}, got {raw!r}") from None
    return str(raw)


def load_settings(
    config_file: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings from ``defaults`` < file < environment, validated."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = dict(defaults or {})
    base_dir = Path.cwd()
    if config_file is not None:
        try:
            raw.update(tomllib.loads(config_file.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {config_file}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
        base_dir = config_file.resolve().parent
    hints = typing.get_type_hints(Settings)
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    for name in known:
        env_value = env.get(ENV_PREFIX + name.upper())
        if env_value is not None:
            raw[name] = env_value
    missing = sorted(
        f.name
        for f in dataclasses.fields(Settings)
        if f.name not in raw
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    )
    if missing:
        names = ", ".join(f"{m} (or {ENV_PREFIX}{m.upper()})" for m in missing)
        raise ConfigError(f"missing setting(s): {names}")
    values = {name: _convert(name, hints[name], value, base_dir) for name, value in raw.items()}
    return Settings(**values)
