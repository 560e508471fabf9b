"""SQLAlchemy Core tables. The migrations create exactly these (a test compares them)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _created_at() -> Column[object]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


users = Table(
    "users",
    metadata,
    Column("user_id", UUID(as_uuid=True), primary_key=True),
    Column("username", Text, nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("kyc_tier", SmallInteger, nullable=False, server_default=text("1")),
    Column("totp_secret", LargeBinary, nullable=True),
    Column("totp_enabled", Boolean, nullable=False, server_default=text("false")),
    _created_at(),
)

# Failed sign-ins per normalized username, whether or not the user exists, so a lockout
# answers alike for real and unknown names.
login_throttle = Table(
    "login_throttle",
    metadata,
    Column("username", Text, primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Attempts whose password is being checked now; they lapse at ``in_flight_until``.
    Column("in_flight", Integer, nullable=False, server_default=text("0")),
    Column("in_flight_until", DateTime(timezone=True), nullable=True),
    Index(None, "updated_at"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("session_id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), ForeignKey("users.user_id"), nullable=False),
    Column("device_name", Text, nullable=False),
    _created_at(),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoke_reason", Text, nullable=True),
    Index(None, "user_id"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", LargeBinary, primary_key=True),
    Column("session_id", UUID(as_uuid=True), ForeignKey("sessions.session_id"), nullable=False),
    _created_at(),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Index(None, "session_id"),
)

partners = Table(
    "partners",
    metadata,
    Column("partner_id", UUID(as_uuid=True), primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("spiffe_id", Text, nullable=False, unique=True),
    Column("scopes", ARRAY(Text), nullable=False),
    _created_at(),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

operators = Table(
    "operators",
    metadata,
    Column("operator_id", UUID(as_uuid=True), primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("spiffe_id", Text, nullable=False, unique=True),
    _created_at(),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", UUID(as_uuid=True), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("owner_user_id", UUID(as_uuid=True), ForeignKey("users.user_id"), nullable=True),
    Column("partner_id", UUID(as_uuid=True), ForeignKey("partners.partner_id"), nullable=True),
    Column("posted", BigInteger, nullable=False, server_default=text("0")),
    Column("pending_out", BigInteger, nullable=False, server_default=text("0")),
    Column("frozen", Boolean, nullable=False, server_default=text("false")),
    _created_at(),
    # The last line of defence: a user wallet can never be overdrawn, whatever the code does.
    CheckConstraint(
        "kind <> 'user' OR (posted >= pending_out AND pending_out >= 0)", name="user_not_negative"
    ),
    CheckConstraint(
        "kind IN ('user','settlement','fees','fx_pool','suspense','promotions')", name="kind"
    ),
    CheckConstraint("(kind = 'user') = (owner_user_id IS NOT NULL)", name="owner_iff_user"),
    Index(None, "owner_user_id", "created_at"),
    # One account per currency per user: where payments to a username land.
    Index(
        "uq_accounts_user_currency",
        "owner_user_id",
        "currency",
        unique=True,
        postgresql_where=text("kind = 'user'"),
    ),
    Index(
        "uq_accounts_system",
        "kind",
        "partner_id",
        "currency",
        unique=True,
        postgresql_where=text("kind <> 'user'"),
        postgresql_nulls_not_distinct=True,
    ),
)

transactions = Table(
    "transactions",
    metadata,
    Column("transaction_id", UUID(as_uuid=True), primary_key=True),
    Column("seq", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("from_account_id", UUID(as_uuid=True), nullable=True),
    Column("to_account_id", UUID(as_uuid=True), nullable=True),
    Column("memo", Text, nullable=False, server_default=text("''")),
    Column("external_reference", Text, nullable=False, server_default=text("''")),
    Column("initiator", Text, nullable=False),
    Column("reverses_transaction_id", UUID(as_uuid=True), nullable=True, unique=True),
    _created_at(),
    Column("posted_at", DateTime(timezone=True), nullable=True),
    # The partner involved: depositor, payout partner of a withdrawal, merchant of a payment.
    Column("partner_id", UUID(as_uuid=True), nullable=True),
    Column("order_id", UUID(as_uuid=True), nullable=True),
    Column("promotion_id", UUID(as_uuid=True), nullable=True),
    # Exchanges: what the destination received, and at which rate (decimal text).
    Column("to_amount", BigInteger, nullable=True),
    Column("to_currency", Text, nullable=True),
    Column("exchange_rate", Text, nullable=True),
    Column("status_message", Text, nullable=False, server_default=text("''")),
    CheckConstraint("amount > 0", name="amount_positive"),
    Index(None, "from_account_id", "seq"),
    Index(None, "to_account_id", "seq"),
)

postings = Table(
    "postings",
    metadata,
    Column("posting_id", BigInteger, Identity(always=True), primary_key=True),
    # Both checked once per inserting statement by a trigger, not by foreign keys (0005).
    Column("transaction_id", UUID(as_uuid=True), nullable=False),
    Column("account_id", UUID(as_uuid=True), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    _created_at(),
    CheckConstraint("amount <> 0", name="amount_nonzero"),
    Index(None, "transaction_id"),
    Index(None, "account_id", "posting_id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("principal", Text, primary_key=True),
    Column("request_id", UUID(as_uuid=True), primary_key=True),
    Column("method", Text, nullable=False),
    Column("fingerprint", LargeBinary, nullable=False),
    Column("response", Text, nullable=True),  # JSON, as text (migration 0007)
    _created_at(),
    Index(None, "created_at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, Identity(always=True), primary_key=True),
    # One row per RPC: a fallback write for a call whose commit outcome was unclear is a no-op.
    Column("call_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("principal", Text, nullable=False),
    Column("method", Text, nullable=False),
    Column("resource_ids", ARRAY(Text), nullable=False),
    Column("code", Text, nullable=False),
    Column("latency_us", BigInteger, nullable=False),
    Column("peer", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    # Filled by the sealer, which chains rows in the order it sees them committed.
    Column("chain_seq", BigInteger, nullable=True, unique=True),
    Column("prev_hash", LargeBinary, nullable=True),
    Column("hash", LargeBinary, nullable=True),
)

# A withdrawal's payout details, sealed with SecretBox (key id inside the blob).
withdrawals = Table(
    "withdrawals",
    metadata,
    Column(
        "transaction_id",
        UUID(as_uuid=True),
        ForeignKey("transactions.transaction_id"),
        primary_key=True,
    ),
    Column("partner_id", UUID(as_uuid=True), ForeignKey("partners.partner_id"), nullable=False),
    Column("destination", LargeBinary, nullable=False),
    _created_at(),
    Index(None, "partner_id"),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", UUID(as_uuid=True), primary_key=True),
    Column("partner_id", UUID(as_uuid=True), ForeignKey("partners.partner_id"), nullable=False),
    Column("currency", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("description", Text, nullable=False, server_default=text("''")),
    Column("merchant_reference", Text, nullable=False, server_default=text("''")),
    Column("status", Text, nullable=False),
    _created_at(),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("paid_at", DateTime(timezone=True), nullable=True),
    Column("payer_account_id", UUID(as_uuid=True), nullable=True),
    Column("payment_transaction_id", UUID(as_uuid=True), nullable=True),
    Column("refunded_amount", BigInteger, nullable=False, server_default=text("0")),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint(
        "refunded_amount >= 0 AND refunded_amount <= amount", name="refunds_within_payment"
    ),
    Index(None, "partner_id", "created_at"),
    # Open orders by expiry: what an expiry sweeper visits.
    Index("ix_orders_open_expires_at", "expires_at", postgresql_where=text("status = 'open'")),
)

exchange_rates = Table(
    "exchange_rates",
    metadata,
    Column("from_currency", Text, primary_key=True),
    Column("to_currency", Text, primary_key=True),
    Column("rate", Text, nullable=False),  # exact decimal text: never a float
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", Text, nullable=False),
)

quotes = Table(
    "quotes",
    metadata,
    Column("quote_id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), ForeignKey("users.user_id"), nullable=False),
    Column("from_account_id", UUID(as_uuid=True), nullable=False),
    Column("to_account_id", UUID(as_uuid=True), nullable=False),
    Column("from_currency", Text, nullable=False),
    Column("from_amount", BigInteger, nullable=False),
    Column("to_currency", Text, nullable=False),
    Column("to_amount", BigInteger, nullable=False),
    Column("rate", Text, nullable=False),
    _created_at(),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("transaction_id", UUID(as_uuid=True), nullable=True),  # set when executed
)

promotions = Table(
    "promotions",
    metadata,
    Column("promotion_id", UUID(as_uuid=True), primary_key=True),
    Column("name", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("basis_points", Integer, nullable=False),
    Column("per_payment_cap", BigInteger, nullable=False),
    Column("budget", BigInteger, nullable=False),
    Column("spent", BigInteger, nullable=False, server_default=text("0")),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    # Only these merchants' orders qualify; empty: every merchant's.
    Column(
        "merchant_partner_ids",
        ARRAY(UUID(as_uuid=True)),
        nullable=False,
        server_default=text("'{}'"),
    ),
    Column("min_payment", BigInteger, nullable=True),  # smallest qualifying payment
    Column(
        "funding_account_id",
        UUID(as_uuid=True),
        ForeignKey("accounts.account_id"),
        nullable=False,
    ),
    _created_at(),
    CheckConstraint("basis_points > 0 AND basis_points <= 10000", name="basis_points"),
    CheckConstraint("per_payment_cap > 0 AND budget > 0", name="positive_amounts"),
    CheckConstraint("min_payment IS NULL OR min_payment > 0", name="min_payment_positive"),
    CheckConstraint("ends_at > starts_at", name="period"),
    # The last line of defence: cashback never exceeds the budget, whatever the code does.
    CheckConstraint("spent >= 0 AND spent <= budget", name="within_budget"),
    Index(None, "created_at"),
)

# Balance changes of system accounts (settlement, FX pool, fees...). Every movement touching
# such an account would otherwise update, and so lock until commit, its one row; instead it
# appends here and a background job folds the rows into ``accounts.posted`` in batches. A
# system account's balance is its ``posted`` plus its unfolded deltas.
balance_deltas = Table(
    "balance_deltas",
    metadata,
    Column("delta_id", BigInteger, Identity(always=True), primary_key=True),
    Column("account_id", UUID(as_uuid=True), ForeignKey("accounts.account_id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
)

# The event log. Writers insert events, and their ids into ``outbox_unsequenced``, in the
# transaction of the change; one sequencer at a time moves committed ids from there to
# ``event_sequence`` with the next numbers, so readers resuming "after N" miss nothing. An
# outbox row is written once: its number is a row of its own (migration 0006).
outbox = Table(
    "outbox",
    metadata,
    Column("event_id", BigInteger, Identity(always=True), primary_key=True),
    _created_at(),
    Column("type", Text, nullable=False),
    Column("partner_id", UUID(as_uuid=True), nullable=True),
    Column("account_ids", ARRAY(UUID(as_uuid=True)), nullable=False),
    Column("payload", Text, nullable=False),  # JSON, as text (migration 0007)
    Index("ix_outbox_account_ids", "account_ids", postgresql_using="gin"),
)

# One row per statement that appended events: their ids, until the sequencer numbers them.
outbox_unsequenced = Table(
    "outbox_unsequenced",
    metadata,
    Column("write_id", BigInteger, Identity(always=True), primary_key=True),
    Column("event_ids", ARRAY(BigInteger), nullable=False),
)

event_sequence = Table(
    "event_sequence",
    metadata,
    Column("sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", BigInteger, nullable=False, unique=True),
)

__all__ = [
    "accounts",
    "audit_log",
    "balance_deltas",
    "event_sequence",
    "exchange_rates",
    "idempotency_keys",
    "login_throttle",
    "metadata",
    "operators",
    "orders",
    "outbox",
    "outbox_unsequenced",
    "partners",
    "postings",
    "promotions",
    "quotes",
    "refresh_tokens",
    "sessions",
    "transactions",
    "users",
    "withdrawals",
]
