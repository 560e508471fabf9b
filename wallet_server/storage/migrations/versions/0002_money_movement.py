"""Money movement: withdrawals, orders, exchange, promotions, the event log.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

TRANSACTION_COLUMNS = """
ALTER TABLE transactions
    ADD COLUMN partner_id UUID,
    ADD COLUMN order_id UUID,
    ADD COLUMN promotion_id UUID,
    ADD COLUMN to_amount BIGINT,
    ADD COLUMN to_currency TEXT,
    ADD COLUMN exchange_rate TEXT,
    ADD COLUMN status_message TEXT DEFAULT '' NOT NULL;
"""

SCHEMA = """
CREATE TABLE withdrawals (
	transaction_id UUID NOT NULL,
	partner_id UUID NOT NULL,
	destination BYTEA NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	CONSTRAINT pk_withdrawals PRIMARY KEY (transaction_id),
	CONSTRAINT fk_withdrawals_transaction_id_transactions FOREIGN KEY(transaction_id) REFERENCES transactions (transaction_id),
	CONSTRAINT fk_withdrawals_partner_id_partners FOREIGN KEY(partner_id) REFERENCES partners (partner_id)
);
CREATE INDEX ix_withdrawals_partner_id ON withdrawals (partner_id);

CREATE TABLE orders (
	order_id UUID NOT NULL,
	partner_id UUID NOT NULL,
	currency TEXT NOT NULL,
	amount BIGINT NOT NULL,
	description TEXT DEFAULT '' NOT NULL,
	merchant_reference TEXT DEFAULT '' NOT NULL,
	status TEXT NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
	paid_at TIMESTAMP WITH TIME ZONE,
	payer_account_id UUID,
	payment_transaction_id UUID,
	refunded_amount BIGINT DEFAULT 0 NOT NULL,
	CONSTRAINT pk_orders PRIMARY KEY (order_id),
	CONSTRAINT ck_orders_amount_positive CHECK (amount > 0),
	CONSTRAINT ck_orders_refunds_within_payment CHECK (refunded_amount >= 0 AND refunded_amount <= amount),
	CONSTRAINT fk_orders_partner_id_partners FOREIGN KEY(partner_id) REFERENCES partners (partner_id)
);
CREATE INDEX ix_orders_partner_id_created_at ON orders (partner_id, created_at);
CREATE INDEX ix_orders_open_expires_at ON orders (expires_at) WHERE status = 'open';

CREATE TABLE exchange_rates (
	from_currency TEXT NOT NULL,
	to_currency TEXT NOT NULL,
	rate TEXT NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	updated_by TEXT NOT NULL,
	CONSTRAINT pk_exchange_rates PRIMARY KEY (from_currency, to_currency)
);

CREATE TABLE quotes (
	quote_id UUID NOT NULL,
	user_id UUID NOT NULL,
	from_account_id UUID NOT NULL,
	to_account_id UUID NOT NULL,
	from_currency TEXT NOT NULL,
	from_amount BIGINT NOT NULL,
	to_currency TEXT NOT NULL,
	to_amount BIGINT NOT NULL,
	rate TEXT NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
	transaction_id UUID,
	CONSTRAINT pk_quotes PRIMARY KEY (quote_id),
	CONSTRAINT fk_quotes_user_id_users FOREIGN KEY(user_id) REFERENCES users (user_id)
);

CREATE TABLE promotions (
	promotion_id UUID NOT NULL,
	name TEXT NOT NULL,
	currency TEXT NOT NULL,
	basis_points INTEGER NOT NULL,
	per_payment_cap BIGINT NOT NULL,
	budget BIGINT NOT NULL,
	spent BIGINT DEFAULT 0 NOT NULL,
	starts_at TIMESTAMP WITH TIME ZONE NOT NULL,
	ends_at TIMESTAMP WITH TIME ZONE NOT NULL,
	ended_at TIMESTAMP WITH TIME ZONE,
	merchant_partner_ids UUID[] DEFAULT '{}' NOT NULL,
	min_payment BIGINT,
	funding_account_id UUID NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	CONSTRAINT pk_promotions PRIMARY KEY (promotion_id),
	CONSTRAINT ck_promotions_basis_points CHECK (basis_points > 0 AND basis_points <= 10000),
	CONSTRAINT ck_promotions_positive_amounts CHECK (per_payment_cap > 0 AND budget > 0),
	CONSTRAINT ck_promotions_min_payment_positive CHECK (min_payment IS NULL OR min_payment > 0),
	CONSTRAINT ck_promotions_period CHECK (ends_at > starts_at),
	CONSTRAINT ck_promotions_within_budget CHECK (spent >= 0 AND spent <= budget),
	CONSTRAINT fk_promotions_funding_account_id_accounts FOREIGN KEY(funding_account_id) REFERENCES accounts (account_id)
);
CREATE INDEX ix_promotions_created_at ON promotions (created_at);

CREATE TABLE outbox (
	event_id BIGINT GENERATED ALWAYS AS IDENTITY,
	sequence BIGINT,
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	type TEXT NOT NULL,
	partner_id UUID,
	account_ids UUID[] NOT NULL,
	payload JSONB NOT NULL,
	CONSTRAINT pk_outbox PRIMARY KEY (event_id),
	CONSTRAINT uq_outbox_sequence UNIQUE (sequence)
);
CREATE INDEX ix_outbox_account_ids ON outbox USING gin (account_ids);
CREATE INDEX ix_outbox_unsequenced ON outbox (event_id) WHERE sequence IS NULL;
"""


# Wake the sequencer when events commit (NOTIFY is delivered at commit, once per channel).
OUTBOX_NOTIFY = """
CREATE FUNCTION wallet_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('wallet_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_outbox_notify();
"""


def upgrade() -> None:
    op.execute(TRANSACTION_COLUMNS)
    op.execute(SCHEMA)
    op.execute(OUTBOX_NOTIFY)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS wallet_outbox_notify()")
    for table in ("outbox", "promotions", "quotes", "exchange_rates", "orders", "withdrawals"):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    op.execute(
        "ALTER TABLE transactions DROP COLUMN partner_id, DROP COLUMN order_id, "
        "DROP COLUMN promotion_id, DROP COLUMN to_amount, DROP COLUMN to_currency, "
        "DROP COLUMN exchange_rate, DROP COLUMN status_message"
    )
