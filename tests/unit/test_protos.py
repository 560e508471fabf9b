"""The protobuf contract: generated code is current, buf lint is clean, key names hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    ServiceDescriptor,
)
from wallet.v1 import admin_pb2, auth_pb2, ledger_pb2, partner_pb2, wallet_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATED = REPO_ROOT / "generated"
BUF = REPO_ROOT / ".tools" / "node_modules" / ".bin" / "buf"

SERVICES: dict[str, ServiceDescriptor] = {
    "AuthService": auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    "WalletService": wallet_pb2.DESCRIPTOR.services_by_name["WalletService"],
    "PartnerService": partner_pb2.DESCRIPTOR.services_by_name["PartnerService"],
    "AdminService": admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
}

# RPCs named by the product contract (DESIGN.md); SDKs and partners depend on them.
REQUIRED_RPCS: dict[str, set[str]] = {
    "AuthService": {
        "Register",
        "Login",
        "VerifySecondFactor",
        "RefreshSession",
        "Logout",
        "EnrollTotp",
        "ConfirmTotp",
        "DisableTotp",
        "ChangePassword",
        "ListSessions",
        "RevokeSession",
        "GetMe",
    },
    "WalletService": {
        "OpenAccount",
        "GetAccount",
        "ListAccounts",
        "Transfer",
        "GetTransaction",
        "ListTransactions",
        "WatchAccount",
        "RequestWithdrawal",
        "PayOrder",
        "GetQuote",
        "ExchangeCurrency",
        "GetStatement",
    },
    "PartnerService": {
        "Deposit",
        "CompleteWithdrawal",
        "FailWithdrawal",
        "CreateOrder",
        "GetOrder",
        "RefundPayment",
        "CreateTransfers",
        "WatchEvents",
    },
    "AdminService": {
        "FreezeAccount",
        "UnfreezeAccount",
        "ListReviews",
        "ApproveReview",
        "RejectReview",
        "SetLimits",
        "SetUserTier",
        "ReverseTransaction",
        "SetExchangeRate",
        "RegisterPartner",
        "RevokePartner",
        "VerifyLedger",
        "VerifyAuditChain",
        "GetAuditLog",
    },
}

# Methods whose names start with these verbs only read; every other method of the services
# below mutates and must be idempotent by `request_id`.
READ_ONLY_PREFIXES = ("Get", "List", "Watch", "Verify")
IDEMPOTENT_SERVICES = ("WalletService", "PartnerService", "AdminService")
MUTATING_METHODS = [
    f"{service}.{method.name}"
    for service in IDEMPOTENT_SERVICES
    for method in SERVICES[service].methods
    if not method.name.startswith(READ_ONLY_PREFIXES)
]


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def _fields(message: Descriptor) -> list[tuple[str, int, int]]:
    return [(field.name, field.number, field.type) for field in message.fields]


def _enum_values(enum: EnumDescriptor) -> list[tuple[str, int]]:
    return [(value.name, value.number) for value in enum.values]


def test_generated_code_is_current(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    fresh = _files(tmp_path)
    committed = {
        name: data for name, data in _files(GENERATED).items() if name.startswith("wallet/")
    }
    stale = sorted(
        name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name)
    )
    assert not stale, (
        f"generated/ is stale, run `make proto` (differing, missing or extra: {', '.join(stale)})"
    )


def test_buf_lint_is_clean() -> None:
    if not BUF.exists():
        pytest.skip("buf is not installed: it needs npm (`make tools` installs it)")
    result = subprocess.run(
        [str(BUF), "lint"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"buf lint failed:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("service", sorted(REQUIRED_RPCS))
def test_contract_rpcs_exist(service: str) -> None:
    present = {method.name for method in SERVICES[service].methods}
    assert REQUIRED_RPCS[service] <= present, sorted(REQUIRED_RPCS[service] - present)


def test_mutating_methods_are_found() -> None:
    assert "WalletService.Transfer" in MUTATING_METHODS
    assert "PartnerService.CreateTransfers" in MUTATING_METHODS
    assert "AdminService.ReverseTransaction" in MUTATING_METHODS
    assert "WalletService.GetQuote" not in MUTATING_METHODS


@pytest.mark.parametrize("qualified_name", MUTATING_METHODS)
def test_mutating_request_has_request_id_first(qualified_name: str) -> None:
    service, method = qualified_name.split(".")
    request = SERVICES[service].methods_by_name[method].input_type
    field = request.fields_by_number.get(1)
    assert field is not None, f"{request.name} has no field 1"
    assert (field.name, field.type) == ("request_id", FieldDescriptor.TYPE_STRING)
    assert not field.is_repeated


def test_money_fields() -> None:
    assert _fields(ledger_pb2.Money.DESCRIPTOR) == [
        ("currency_code", 1, FieldDescriptor.TYPE_STRING),
        ("amount_minor", 2, FieldDescriptor.TYPE_INT64),
    ]


def test_ledger_enums() -> None:
    assert _enum_values(ledger_pb2.TransactionStatus.DESCRIPTOR) == [
        ("TRANSACTION_STATUS_UNSPECIFIED", 0),
        ("TRANSACTION_STATUS_PENDING", 1),
        ("TRANSACTION_STATUS_POSTED", 2),
        ("TRANSACTION_STATUS_VOIDED", 3),
        ("TRANSACTION_STATUS_HELD_FOR_REVIEW", 4),
        ("TRANSACTION_STATUS_REJECTED", 5),
    ]
    kinds = ["DEPOSIT", "TRANSFER", "WITHDRAWAL", "PAYMENT", "REFUND"]
    kinds += ["EXCHANGE", "REVERSAL", "CASHBACK"]
    assert _enum_values(ledger_pb2.TransactionKind.DESCRIPTOR) == [
        ("TRANSACTION_KIND_UNSPECIFIED", 0),
        *((f"TRANSACTION_KIND_{kind}", number) for number, kind in enumerate(kinds, start=1)),
    ]


def test_account_and_transaction_field_order() -> None:
    account = [name for name, _, _ in _fields(ledger_pb2.Account.DESCRIPTOR)]
    assert account == [
        "account_id",
        "currency_code",
        "posted",
        "pending_out",
        "available",
        "status",
        "create_time",
    ]
    transaction = {number: name for name, number, _ in _fields(ledger_pb2.Transaction.DESCRIPTOR)}
    assert [transaction[number] for number in range(1, 13)] == [
        "transaction_id",
        "status",
        "kind",
        "amount",
        "from_account_id",
        "to_account_id",
        "memo",
        "external_reference",
        "create_time",
        "post_time",
        "postings",
        "reverses_transaction_id",
    ]


MONEY_NAMES = {"budget", "spent", "posted", "pending_out", "available"}


def test_amounts_are_money() -> None:
    """Every field named like an amount or a balance is a Money, never a bare number."""
    offenders = [
        f"{message.name}.{field.name}"
        for module in (ledger_pb2, auth_pb2, wallet_pb2, partner_pb2, admin_pb2)
        for message in module.DESCRIPTOR.message_types_by_name.values()
        for field in message.fields
        if (field.name.endswith(("amount", "balance")) or field.name in MONEY_NAMES)
        and (field.message_type is None or field.message_type.full_name != "wallet.v1.Money")
    ]
    assert not offenders
