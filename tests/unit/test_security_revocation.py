from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from wallet_server.security import ensure_dev_pki, load_revoked_serials, peer_certificate_from_pem


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "revoked.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_path_means_nothing_is_revoked() -> None:
    assert load_revoked_serials(None) == frozenset()


def test_a_missing_file_means_nothing_is_revoked(tmp_path: Path) -> None:
    assert load_revoked_serials(tmp_path / "absent.txt") == frozenset()


def test_an_empty_file_means_nothing_is_revoked(tmp_path: Path) -> None:
    assert load_revoked_serials(write(tmp_path, "")) == frozenset()


def test_decimal_and_hex_serials_with_comments(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# revoked after the 2031 laptop theft\n"
        "\n"
        "12345\n"
        "  0x1F  \n"
        "0XaBcD # partner acme, rotated\n"
        "\t\n"
        "12345\n"
        "   # indented comment\n"
        "0x00000000000000000000000000000000000000ff\n",
    )

    assert load_revoked_serials(path) == frozenset({12345, 0x1F, 0xABCD, 0xFF})


def test_windows_line_endings(tmp_path: Path) -> None:
    assert load_revoked_serials(write(tmp_path, "1\r\n0x2\r\n")) == frozenset({1, 2})


def test_a_real_certificate_serial_round_trips(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path / "certs")
    serial = x509.load_pem_x509_certificate(pki.admin_cert.read_bytes()).serial_number

    revoked = load_revoked_serials(write(tmp_path, f"{hex(serial)}\n"))

    assert peer_certificate_from_pem(pki.admin_cert.read_bytes()).serial_number in revoked
    assert load_revoked_serials(write(tmp_path, f"{serial}\n")) == revoked


@pytest.mark.parametrize(
    "bad_entry",
    ["12a", "0x", "0xZZ", "-5", "+5", "1_000", "1 2", "1.0", "١٢", "serial=1F", "x" * 10, "9" * 65],
)
def test_a_bad_line_is_an_error_naming_its_line(tmp_path: Path, bad_entry: str) -> None:
    path = write(tmp_path, f"# header\n42\n{bad_entry}\n43\n")

    with pytest.raises(ValueError, match=r"revoked\.txt:3: not a certificate serial") as raised:
        load_revoked_serials(path)
    assert repr(bad_entry.strip()) in str(raised.value)


class _Clock:
    """Stands in for ``time`` in the revocation list: its re-read window is a second."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_a_list_whose_directory_goes_keeps_what_it_revoked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wallet_server.services import _authentication

    clock = _Clock()
    monkeypatch.setattr(_authentication, "time", clock)
    folder = tmp_path / "conf"
    folder.mkdir()
    path = write(folder, "0x1f\n")
    revocations = _authentication.RevocationList(path)
    assert revocations.is_revoked(0x1F)

    folder.rename(tmp_path / "elsewhere")
    folder.write_text("a file where the directory was")  # stat: NotADirectoryError
    clock.now += 2

    assert revocations.is_revoked(0x1F)  # no error, and still revoked
    assert not revocations.is_revoked(0x20)
