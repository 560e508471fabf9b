"""Stored responses and event payloads are kept as ``text``, not ``json``.

``json`` parses every document on the way in to check it, and these are written by this
server's own encoder, read back whole by it and never queried inside. For a 1000-item
batch (1000 responses of about 0.8 KB and 1000 events of about 1.2 KB) the statement that
stores them took a median 22.3 ms on PostgreSQL 15 with ``json`` columns and 14.7 ms with
``text``, on the batch's critical path. To look inside one by hand, cast it: ``payload::json``.

Changing the type rewrites both tables under an exclusive lock: on a large outbox or key
table, writers wait until it is done.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE idempotency_keys ALTER COLUMN response TYPE text USING response::text")
    op.execute("ALTER TABLE outbox ALTER COLUMN payload TYPE text USING payload::text")


def downgrade() -> None:
    op.execute("ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json")
    op.execute("ALTER TABLE idempotency_keys ALTER COLUMN response TYPE json USING response::json")
