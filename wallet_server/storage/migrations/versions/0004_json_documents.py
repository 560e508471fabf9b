"""Stored responses and event payloads are kept as ``json``, not ``jsonb``.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE idempotency_keys ALTER COLUMN response TYPE json USING response::json")
    op.execute("ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json")


def downgrade() -> None:
    op.execute("ALTER TABLE outbox ALTER COLUMN payload TYPE jsonb USING payload::jsonb")
    op.execute(
        "ALTER TABLE idempotency_keys ALTER COLUMN response TYPE jsonb USING response::jsonb"
    )
