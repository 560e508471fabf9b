"""Settings from a TOML file and ``WALLET_*`` environment variables, validated at start-up."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from wallet_server.config import ConfigError, Settings, load_settings, parse_key_ring
from wallet_server.security import DevPkiPaths

TOKEN_KEY = bytes(range(32, 64))  # 32 bytes
SECRET_KEY = bytes(range(100, 132))  # exactly 32 bytes
OLD_TOKEN_KEY = bytes(range(200, 240))  # 40 bytes
DB_PASSWORD = "pg-Secr3t-pw"
REQUIRED = (
    "database_url",
    "tls_cert_file",
    "tls_key_file",
    "client_ca_file",
    "token_keys",
    "token_active_key_id",
    "secret_keys",
    "secret_active_key_id",
)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def toml_config(**overrides: str) -> str:
    """A complete configuration file (TOML-quoted values), with lines replaced or removed."""
    lines = {
        "database_url": f'"postgresql://wallet:{DB_PASSWORD}@db.internal:5432/wallet"',
        "tls_cert_file": '"tls/server.pem"',
        "tls_key_file": '"tls/server-key.pem"',
        "client_ca_file": '"tls/ca.pem"',
        "token_keys": f'"t1:{b64(TOKEN_KEY)}, t0:{b64(OLD_TOKEN_KEY)}"',
        "token_active_key_id": '"t1"',
        "secret_keys": f'"s1:{b64(SECRET_KEY)}"',
        "secret_active_key_id": '"s1"',
    }
    lines.update(overrides)
    return "".join(f"{k} = {v}\n" for k, v in lines.items() if v)


@pytest.fixture
def config_dir(tmp_path: Path, pki: DevPkiPaths) -> Path:
    """A deployment directory: the config file's home, with its TLS files under tls/."""
    directory = tmp_path / "etc" / "wallet"
    (directory / "tls").mkdir(parents=True)
    for source, name in (
        (pki.server_cert, "server.pem"),
        (pki.server_key, "server-key.pem"),
        (pki.ca_cert, "ca.pem"),
    ):
        shutil.copy(source, directory / "tls" / name)
    return directory


@pytest.fixture(autouse=True)
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from a directory that is not the config file's, as a service manager would."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def write(config_dir: Path, text: str) -> Path:
    path = config_dir / "wallet.toml"
    path.write_text(text)
    return path


def load(config_dir: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    return load_settings(write(config_dir, text), env=env or {})


def refused(config_dir: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load(config_dir, text, env)
    message = str(caught.value)
    assert "\n" not in message  # one line for the operator
    return message


# --- sources and precedence ---------------------------------------------------------------


def test_a_complete_file_loads_with_defaults_for_the_rest(config_dir: Path) -> None:
    settings = load(config_dir, toml_config())

    assert settings.database_url.endswith("@db.internal:5432/wallet")
    assert dict(settings.token_keys) == {"t1": TOKEN_KEY, "t0": OLD_TOKEN_KEY}
    assert dict(settings.secret_keys) == {"s1": SECRET_KEY}
    assert (settings.port, settings.mtls_port, settings.revoked_serials_file) == (
        50051,
        50052,
        None,
    )


def test_relative_paths_resolve_against_the_config_files_directory(
    config_dir: Path, elsewhere: Path
) -> None:
    (config_dir / "revoked.txt").write_text("")

    settings = load(config_dir, toml_config() + 'revoked_serials_file = "revoked.txt"\n')

    assert settings.tls_cert_file == config_dir / "tls" / "server.pem"
    assert settings.tls_key_file == config_dir / "tls" / "server-key.pem"
    assert settings.client_ca_file == config_dir / "tls" / "ca.pem"
    assert settings.revoked_serials_file == config_dir / "revoked.txt"
    assert not (elsewhere / "tls").exists()


def test_absolute_paths_are_kept(config_dir: Path) -> None:
    absolute = config_dir / "tls" / "ca.pem"
    settings = load(config_dir, toml_config(client_ca_file=f'"{absolute}"'))
    assert settings.client_ca_file == absolute


def test_environment_overrides_the_file(config_dir: Path) -> None:
    new_key = bytes(range(64, 96))
    env = {
        "WALLET_PORT": "6000",
        "WALLET_LOG_LEVEL": "DEBUG",
        "WALLET_TOKEN_KEYS": f"t2:{b64(new_key)}",
        "WALLET_TOKEN_ACTIVE_KEY_ID": "t2",
        "WALLET_PRINCIPAL_CACHE_SECONDS": "0.5",
        "WALLET_MAX_STREAMS_PER_CALLER": "3",
        "WALLET_REVOKED_SERIALS_FILE": "",  # empty: not set
    }

    settings = load(config_dir, toml_config() + "port = 5000\nlog_level = 'INFO'\n", env)

    assert (settings.port, settings.log_level) == (6000, "DEBUG")
    assert dict(settings.token_keys) == {"t2": new_key}
    assert settings.token_active_key_id == "t2"
    assert settings.principal_cache_seconds == 0.5
    assert settings.max_streams_per_caller == 3
    assert settings.revoked_serials_file is None


def test_environment_alone_is_enough(config_dir: Path) -> None:
    tls = config_dir / "tls"
    env = {
        "WALLET_DATABASE_URL": "postgresql://wallet@localhost/wallet",
        "WALLET_TLS_CERT_FILE": str(tls / "server.pem"),
        "WALLET_TLS_KEY_FILE": str(tls / "server-key.pem"),
        "WALLET_CLIENT_CA_FILE": str(tls / "ca.pem"),
        "WALLET_TOKEN_KEYS": f"t1:{b64(TOKEN_KEY)}",
        "WALLET_TOKEN_ACTIVE_KEY_ID": "t1",
        "WALLET_SECRET_KEYS": f"s1:{b64(SECRET_KEY)}",
        "WALLET_SECRET_ACTIVE_KEY_ID": "s1",
        "WALLET_MTLS_PORT": "7000",
    }

    settings = load_settings(None, env=env)

    assert settings.mtls_port == 7000
    assert settings.client_ca_file == tls / "ca.pem"


def test_key_rings_may_be_toml_tables(config_dir: Path) -> None:
    text = toml_config(token_keys="", secret_keys="") + (
        f'[token_keys]\nt1 = "{b64(TOKEN_KEY)}"\n[secret_keys]\ns1 = "{b64(SECRET_KEY)}"\n'
    )
    settings = load(config_dir, text)
    assert dict(settings.token_keys) == {"t1": TOKEN_KEY}
    assert dict(settings.secret_keys) == {"s1": SECRET_KEY}


# --- refusals -----------------------------------------------------------------------------


def test_unknown_settings_are_named(config_dir: Path) -> None:
    message = refused(config_dir, toml_config() + "prot = 6000\nlog_lvl = 'DEBUG'\n")
    assert "unknown setting(s): log_lvl, prot" in message


def test_a_missing_file_is_a_config_error(config_dir: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(config_dir / "nope.toml", env={})


def test_invalid_toml_is_a_config_error(config_dir: Path) -> None:
    assert "not valid TOML" in refused(config_dir, "port = \n")


def test_every_missing_required_setting_is_named_with_its_environment_variable(
    config_dir: Path,
) -> None:
    message = refused(config_dir, "port = 5000\n")

    assert message.startswith("missing setting(s): ")
    for name in REQUIRED:
        assert f"{name} (or WALLET_{name.upper()})" in message


def test_only_the_missing_ones_are_named(config_dir: Path) -> None:
    message = refused(config_dir, toml_config(secret_keys="", database_url=""))
    assert message == (
        "missing setting(s): database_url (or WALLET_DATABASE_URL), "
        "secret_keys (or WALLET_SECRET_KEYS)"
    )


@pytest.mark.parametrize(
    ("toml_line", "env"),
    [
        ("", {"WALLET_PORT": "fifty"}),
        ("", {"WALLET_PORT": ""}),
        ("", {"WALLET_PORT": "1.5"}),
        ('port = "fifty"', {}),
        ("port = 50051.5", {}),
        ("port = 50051.0", {}),
        ("port = true", {}),
    ],
)
def test_a_bad_integer_is_refused_with_its_name(
    config_dir: Path, toml_line: str, env: dict[str, str]
) -> None:
    message = refused(config_dir, toml_config() + toml_line + "\n", env)
    assert message.startswith("port: expected int")


def test_a_bad_float_is_refused_with_its_name(config_dir: Path) -> None:
    env = {"WALLET_SHUTDOWN_GRACE_SECONDS": "soon"}
    assert refused(config_dir, toml_config(), env).startswith("shutdown_grace_seconds: expected")


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("port = 70000", "port must be between 0 and 65535"),
        ("mtls_port = -1", "mtls_port must be between 0 and 65535"),
        ("port = 6000\nmtls_port = 6000", "port and mtls_port must differ"),
        ("login_max_failures = 0", "login_max_failures must be positive"),
        ("max_streams_per_caller = 0", "max_streams_per_caller must be positive"),
        ("login_lockout_seconds = -5", "login_lockout_seconds must be positive"),
        ("shutdown_grace_seconds = -3.0", "shutdown_grace_seconds must be a number of seconds"),
        ("shutdown_grace_seconds = nan", "shutdown_grace_seconds must be a number of seconds"),
        ("principal_cache_seconds = -1.0", "principal_cache_seconds must be a number of seconds"),
        ("shutdown_grace_seconds = inf", "shutdown_grace_seconds must be at most 3600"),
        ("access_token_ttl_seconds = 100000000000000", "access_token_ttl_seconds must be at most"),
        ("password_memory_kib = 100000000000", "password_memory_kib must be at most 4194304"),
        ("access_token_ttl_seconds = -5", "access_token_ttl_seconds must be positive"),
        ("idempotency_retention_hours = 12", "at least 24"),
        ("log_level = 'LOUD'", "log_level must be one of"),
    ],
)
def test_out_of_range_values_are_refused(config_dir: Path, line: str, fragment: str) -> None:
    assert fragment in refused(config_dir, toml_config() + line + "\n")


def test_database_url_must_be_postgresql(config_dir: Path) -> None:
    message = refused(config_dir, toml_config(database_url=f'"mysql://u:{DB_PASSWORD}@h/db"'))
    assert message == "database_url must be a postgresql:// URL"


def test_missing_tls_files_are_named(config_dir: Path) -> None:
    (config_dir / "tls" / "ca.pem").unlink()
    message = refused(config_dir, toml_config())
    assert message == f"client_ca_file: no such file: {config_dir / 'tls' / 'ca.pem'}"


def test_a_configured_revocation_list_must_exist(config_dir: Path) -> None:
    # A typo here would otherwise mean "nothing is revoked": revocation silently off.
    message = refused(config_dir, toml_config() + 'revoked_serials_file = "revokd.txt"\n')
    assert message.startswith(f"revoked_serials_file: no such file: {config_dir / 'revokd.txt'}")

    env = {"WALLET_REVOKED_SERIALS_FILE": str(config_dir / "tls")}  # a directory
    assert refused(config_dir, toml_config(), env).startswith("revoked_serials_file: no such file")

    (config_dir / "revokd.txt").write_text("# nothing revoked yet\n")
    settings = load(config_dir, toml_config() + 'revoked_serials_file = "revokd.txt"\n')
    assert settings.revoked_serials_file == config_dir / "revokd.txt"


# --- key rings ------------------------------------------------------------------------------


def test_key_ring_parsing() -> None:
    ring = parse_key_ring(f" k1:{b64(TOKEN_KEY)} ,k2:{b64(SECRET_KEY)},", setting="token_keys")
    assert ring == {"k1": TOKEN_KEY, "k2": SECRET_KEY}
    assert parse_key_ring("", setting="token_keys") == {}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (f"{b64(TOKEN_KEY)}", "expected kid:base64"),
        (f":{b64(TOKEN_KEY)}", "expected kid:base64"),
        ("k1:not*base64", "key 'k1' is not valid base64"),
        (f"k1:{b64(TOKEN_KEY)},k1:{b64(OLD_TOKEN_KEY)}", "key id 'k1' appears twice"),
    ],
)
def test_malformed_key_rings_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_key_ring(text, setting="token_keys")
    message = str(caught.value)
    assert message.startswith("token_keys: ")
    assert fragment in message
    assert b64(TOKEN_KEY) not in message


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"secret_keys": f'"s1:{b64(SECRET_KEY[:16])}"'}, "secret_keys: key 's1' must be 32 bytes"),
        (
            {"secret_keys": f'"s1:{b64(SECRET_KEY + b"x")}"'},
            "secret_keys: key 's1' must be 32 bytes",
        ),
        (
            {"token_keys": f'"t1:{b64(TOKEN_KEY[:31])}"'},
            "token_keys: key 't1' must be at least 32 bytes",
        ),
        (
            {"token_keys": f'"t1:{b64(TOKEN_KEY)}, t0:{b64(b"short")}"'},
            "token_keys: key 't0' must be at least 32 bytes",
        ),
        ({"token_active_key_id": '"t9"'}, "token_keys: active key id 't9' is not in the ring"),
        ({"secret_active_key_id": '"S1"'}, "secret_keys: active key id 'S1' is not in the ring"),
        ({"token_keys": '" , "'}, "token_keys is required"),
        ({"token_keys": '"t1:%%%"'}, "token_keys: key 't1' is not valid base64"),
    ],
)
def test_bad_key_rings_stop_start_up(
    config_dir: Path, overrides: dict[str, str], fragment: str
) -> None:
    message = refused(config_dir, toml_config(**overrides))
    assert fragment in message
    for key in (TOKEN_KEY, SECRET_KEY, OLD_TOKEN_KEY):
        assert b64(key) not in message


def test_a_bad_key_in_a_toml_table_is_a_config_error(config_dir: Path) -> None:
    text = toml_config(token_keys="") + '[token_keys]\nt1 = "not base64 at all!"\n'
    assert refused(config_dir, text) == "token_keys: key 't1' is not valid base64"


# --- never show secrets ----------------------------------------------------------------------


def test_repr_shows_no_key_material_and_no_database_password(config_dir: Path) -> None:
    settings = load(config_dir, toml_config())

    for text in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        assert DB_PASSWORD not in text
        for key in (TOKEN_KEY, SECRET_KEY, OLD_TOKEN_KEY):
            assert b64(key) not in text
            assert repr(key) not in text
            assert key.hex() not in text
        # What is safe to show still helps an operator.
        assert "t1: <32 bytes>" in text
        assert "t0: <40 bytes>" in text
        assert "s1: <32 bytes>" in text
        assert "'port': 50051" in text


@pytest.mark.parametrize(
    ("setting", "value"),
    [("port", "[1]"), ("host", '["a", "b"]'), ("log_level", "{ level = 'INFO' }")],
)
def test_a_list_or_table_where_one_value_belongs_is_a_config_error(
    config_dir: Path, setting: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=setting):
        load_settings(write(config_dir, toml_config(**{setting: value})))


@pytest.mark.parametrize("target", ["tls_cert_file", "tls_key_file", "client_ca_file"])
def test_tls_files_that_are_not_pem_are_named(config_dir: Path, target: str) -> None:
    names = {"tls_cert_file": "server.pem", "tls_key_file": "server-key.pem"}
    (config_dir / "tls" / names.get(target, "ca.pem")).write_text("not pem\n")
    with pytest.raises(ConfigError, match=target):
        load_settings(write(config_dir, toml_config()))


def test_a_key_that_is_not_the_certificates_is_refused(config_dir: Path, pki: DevPkiPaths) -> None:
    shutil.copy(pki.admin_key, config_dir / "tls" / "admin-key.pem")

    message = refused(config_dir, toml_config(tls_key_file='"tls/admin-key.pem"'))

    assert "admin-key.pem is not the key of tls_cert_file" in message
