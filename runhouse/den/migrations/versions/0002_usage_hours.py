"""Usage summed per hour, cluster, user and kind (``usage_hours``), filled from existing events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NAME = 128
URI = 2 * NAME + 2

# Whole hours since 1970-01-01 of a naive UTC timestamp, per database. SQLite's date functions
# round to the millisecond (10:59:59.9999 would count as 11:00), so its hour is read from the
# stored text, 'YYYY-MM-DD HH:MM:SS.ffffff'.
_HOUR = {
    "postgresql": "CAST(FLOOR(EXTRACT(EPOCH FROM at) / 3600) AS INTEGER)",
    "sqlite": "CAST(julianday(substr(at, 1, 10)) - 2440587.5 AS INTEGER) * 24 + CAST(substr(at, 12, 2) AS INTEGER)",
}


def upgrade() -> None:
    op.create_table(
        "usage_hours",
        sa.Column("hour", sa.Integer(), primary_key=True),
        sa.Column("cluster", sa.String(URI), primary_key=True),
        sa.Column("username", sa.String(NAME), primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("first_at", sa.DateTime(), nullable=False),
        sa.Column("last_at", sa.DateTime(), nullable=False),
    )
    hour = _HOUR[op.get_bind().dialect.name]
    op.execute(
        "INSERT INTO usage_hours (hour, cluster, username, kind, count, first_at, last_at) "
        f"SELECT {hour}, cluster, username, kind, SUM(count), MIN(at), MAX(at) FROM usage_events "
        f"GROUP BY {hour}, cluster, username, kind"
    )


def downgrade() -> None:
    op.drop_table("usage_hours")
