"""Sign-in attempts in flight are counted in the throttle row.

A password is checked outside any transaction (argon2 is slow), so a server process that
read the throttle before another process recorded the last allowed failure still checked
its guess: with several processes a burst got more guesses than the limit. Each attempt now
takes a place in ``in_flight`` before its password is checked, refused once failures plus
attempts in flight reach the limit; ``in_flight_until`` lets the places of attempts that
never came back (a process that died) lapse.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "login_throttle",
        sa.Column("in_flight", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.add_column(
        "login_throttle", sa.Column("in_flight_until", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("login_throttle", "in_flight_until")
    op.drop_column("login_throttle", "in_flight")
