"""Initial schema: users, sessions, partners, operators, ledger, idempotency, audit.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

SCHEMA = """
CREATE TABLE audit_log (
	seq BIGINT GENERATED ALWAYS AS IDENTITY,
	call_id UUID NOT NULL,
	occurred_at TIMESTAMP WITH TIME ZONE NOT NULL,
	principal TEXT NOT NULL,
	method TEXT NOT NULL,
	resource_ids TEXT[] NOT NULL,
	code TEXT NOT NULL,
	latency_us BIGINT NOT NULL,
	peer TEXT NOT NULL,
	request_id TEXT NOT NULL,
	chain_seq BIGINT,
	prev_hash BYTEA,
	hash BYTEA,
	CONSTRAINT pk_audit_log PRIMARY KEY (seq),
	CONSTRAINT uq_audit_log_call_id UNIQUE (call_id),
	CONSTRAINT uq_audit_log_chain_seq UNIQUE (chain_seq)
);

CREATE TABLE idempotency_keys (
	principal TEXT NOT NULL,
	request_id UUID NOT NULL,
	method TEXT NOT NULL,
	fingerprint BYTEA NOT NULL,
	response JSONB,
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	CONSTRAINT pk_idempotency_keys PRIMARY KEY (principal, request_id)
);
CREATE INDEX ix_idempotency_keys_created_at ON idempotency_keys (created_at);

CREATE TABLE login_throttle (
	username TEXT NOT NULL,
	failures INTEGER NOT NULL,
	locked_until TIMESTAMP WITH TIME ZONE,
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	CONSTRAINT pk_login_throttle PRIMARY KEY (username)
);
CREATE INDEX ix_login_throttle_updated_at ON login_throttle (updated_at);

CREATE TABLE operators (
	operator_id UUID NOT NULL,
	name TEXT NOT NULL,
	spiffe_id TEXT NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	revoked_at TIMESTAMP WITH TIME ZONE,
	CONSTRAINT pk_operators PRIMARY KEY (operator_id),
	CONSTRAINT uq_operators_name UNIQUE (name),
	CONSTRAINT uq_operators_spiffe_id UNIQUE (spiffe_id)
);

CREATE TABLE partners (
	partner_id UUID NOT NULL,
	name TEXT NOT NULL,
	spiffe_id TEXT NOT NULL,
	scopes TEXT[] NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	revoked_at TIMESTAMP WITH TIME ZONE,
	CONSTRAINT pk_partners PRIMARY KEY (partner_id),
	CONSTRAINT uq_partners_name UNIQUE (name),
	CONSTRAINT uq_partners_spiffe_id UNIQUE (spiffe_id)
);

CREATE TABLE transactions (
	transaction_id UUID NOT NULL,
	seq BIGINT GENERATED ALWAYS AS IDENTITY,
	kind TEXT NOT NULL,
	status TEXT NOT NULL,
	currency TEXT NOT NULL,
	amount BIGINT NOT NULL,
	from_account_id UUID,
	to_account_id UUID,
	memo TEXT DEFAULT '' NOT NULL,
	external_reference TEXT DEFAULT '' NOT NULL,
	initiator TEXT NOT NULL,
	reverses_transaction_id UUID,
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	posted_at TIMESTAMP WITH TIME ZONE,
	CONSTRAINT pk_transactions PRIMARY KEY (transaction_id),
	CONSTRAINT ck_transactions_amount_positive CHECK (amount > 0),
	CONSTRAINT uq_transactions_seq UNIQUE (seq),
	CONSTRAINT uq_transactions_reverses_transaction_id UNIQUE (reverses_transaction_id)
);
CREATE INDEX ix_transactions_from_account_id_seq ON transactions (from_account_id, seq);
CREATE INDEX ix_transactions_to_account_id_seq ON transactions (to_account_id, seq);

CREATE TABLE users (
	user_id UUID NOT NULL,
	username TEXT NOT NULL,
	password_hash TEXT NOT NULL,
	display_name TEXT NOT NULL,
	kyc_tier SMALLINT DEFAULT 1 NOT NULL,
	totp_secret BYTEA,
	totp_enabled BOOLEAN DEFAULT false NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	CONSTRAINT pk_users PRIMARY KEY (user_id),
	CONSTRAINT uq_users_username UNIQUE (username)
);

CREATE TABLE accounts (
	account_id UUID NOT NULL,
	kind TEXT NOT NULL,
	currency TEXT NOT NULL,
	owner_user_id UUID,
	partner_id UUID,
	posted BIGINT DEFAULT 0 NOT NULL,
	pending_out BIGINT DEFAULT 0 NOT NULL,
	frozen BOOLEAN DEFAULT false NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	CONSTRAINT pk_accounts PRIMARY KEY (account_id),
	CONSTRAINT ck_accounts_user_not_negative CHECK (kind <> 'user' OR (posted >= pending_out AND pending_out >= 0)),
	CONSTRAINT ck_accounts_kind CHECK (kind IN ('user','settlement','fees','fx_pool','suspense','promotions')),
	CONSTRAINT ck_accounts_owner_iff_user CHECK ((kind = 'user') = (owner_user_id IS NOT NULL)),
	CONSTRAINT fk_accounts_owner_user_id_users FOREIGN KEY(owner_user_id) REFERENCES users (user_id),
	CONSTRAINT fk_accounts_partner_id_partners FOREIGN KEY(partner_id) REFERENCES partners (partner_id)
);
CREATE INDEX ix_accounts_owner_user_id_created_at ON accounts (owner_user_id, created_at);
CREATE UNIQUE INDEX uq_accounts_system ON accounts (kind, partner_id, currency) NULLS NOT DISTINCT WHERE kind <> 'user';
CREATE UNIQUE INDEX uq_accounts_user_currency ON accounts (owner_user_id, currency) WHERE kind = 'user';

CREATE TABLE sessions (
	session_id UUID NOT NULL,
	user_id UUID NOT NULL,
	device_name TEXT NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
	revoked_at TIMESTAMP WITH TIME ZONE,
	revoke_reason TEXT,
	CONSTRAINT pk_sessions PRIMARY KEY (session_id),
	CONSTRAINT fk_sessions_user_id_users FOREIGN KEY(user_id) REFERENCES users (user_id)
);
CREATE INDEX ix_sessions_user_id ON sessions (user_id);

CREATE TABLE postings (
	posting_id BIGINT GENERATED ALWAYS AS IDENTITY,
	transaction_id UUID NOT NULL,
	account_id UUID NOT NULL,
	amount BIGINT NOT NULL,
	currency TEXT NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	CONSTRAINT pk_postings PRIMARY KEY (posting_id),
	CONSTRAINT ck_postings_amount_nonzero CHECK (amount <> 0),
	CONSTRAINT fk_postings_transaction_id_transactions FOREIGN KEY(transaction_id) REFERENCES transactions (transaction_id),
	CONSTRAINT fk_postings_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (account_id)
);
CREATE INDEX ix_postings_account_id_posting_id ON postings (account_id, posting_id);
CREATE INDEX ix_postings_transaction_id ON postings (transaction_id);

CREATE TABLE refresh_tokens (
	token_hash BYTEA NOT NULL,
	session_id UUID NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	used_at TIMESTAMP WITH TIME ZONE,
	CONSTRAINT pk_refresh_tokens PRIMARY KEY (token_hash),
	CONSTRAINT fk_refresh_tokens_session_id_sessions FOREIGN KEY(session_id) REFERENCES sessions (session_id)
);
CREATE INDEX ix_refresh_tokens_session_id ON refresh_tokens (session_id);
"""

# History is append-only: a posting is never edited or removed.
IMMUTABLE_POSTINGS = """
CREATE FUNCTION wallet_refuse_history_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger history is append-only (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION wallet_refuse_history_change();
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    op.execute(IMMUTABLE_POSTINGS)


def downgrade() -> None:
    for table in (
        "login_throttle",
        "audit_log",
        "idempotency_keys",
        "postings",
        "transactions",
        "accounts",
        "refresh_tokens",
        "sessions",
        "operators",
        "partners",
        "users",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    op.execute("DROP FUNCTION IF EXISTS wallet_refuse_history_change()")
