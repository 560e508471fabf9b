"""Alembic environment: runs migrations on a synchronous psycopg connection.

An advisory lock makes concurrent starts (several workers or servers) migrate once.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from wallet_server.storage._tables import metadata

_MIGRATION_LOCK = 0x77616C6C6574  # "wallet"

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None
engine = create_engine(url)
with engine.connect() as connection:
    connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
    try:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
        connection.commit()
engine.dispose()
