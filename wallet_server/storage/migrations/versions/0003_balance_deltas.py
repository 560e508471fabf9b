"""System accounts' balance changes are appended, then folded into the account in batches.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None

SCHEMA = """
CREATE TABLE balance_deltas (
	delta_id BIGINT GENERATED ALWAYS AS IDENTITY,
	account_id UUID NOT NULL,
	amount BIGINT NOT NULL,
	CONSTRAINT pk_balance_deltas PRIMARY KEY (delta_id),
	CONSTRAINT fk_balance_deltas_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (account_id)
);
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS balance_deltas")
