"""Usage summed per day, cluster, user, kind and resource (``usage_days``), and the clusters that have
usage (``usage_clusters``); both filled from the existing events.

``usage_days`` serves the dashboard's ranges cut into whole days (30 and 90 days) and ``GET
/v1/usage`` (which groups by resource too, so the resource is part of the key: ``''`` for none).
``usage_clusters`` is the short list the readable-clusters rule is applied to once per request.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NAME = 128
URI = 2 * NAME + 2

# Whole days since 1970-01-01 of a naive UTC timestamp, per database. SQLite's date functions
# round to the millisecond (23:59:59.9999 would count as the next day), so its day is read from
# the date part of the stored text, 'YYYY-MM-DD HH:MM:SS.ffffff'.
_DAY = {
    "postgresql": "CAST(FLOOR(EXTRACT(EPOCH FROM at) / 86400) AS INTEGER)",
    "sqlite": "CAST(julianday(substr(at, 1, 10)) - 2440587.5 AS INTEGER)",
}
# "/owner/name" split at its second slash (names hold no slash), per database.
_OWNER = {
    "postgresql": "split_part(cluster, '/', 2)",
    "sqlite": "substr(cluster, 2, instr(substr(cluster, 2), '/') - 1)",
}
_NAME = {
    "postgresql": "split_part(cluster, '/', 3)",
    "sqlite": "substr(cluster, instr(substr(cluster, 2), '/') + 2)",
}


def upgrade() -> None:
    op.create_table(
        "usage_days",
        sa.Column("day", sa.Integer(), primary_key=True),
        sa.Column("cluster", sa.String(URI), primary_key=True),
        sa.Column("username", sa.String(NAME), primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("resource", sa.String(URI), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("first_at", sa.DateTime(), nullable=False),
        sa.Column("last_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_usage_days_cluster_day", "usage_days", ["cluster", "day"])
    op.create_table(
        "usage_clusters",
        sa.Column("cluster", sa.String(URI), primary_key=True),
        sa.Column("owner", sa.String(NAME), nullable=False),
        sa.Column("name", sa.String(NAME), nullable=False),
    )
    dialect = op.get_bind().dialect.name
    day = _DAY[dialect]
    op.execute(
        "INSERT INTO usage_days (day, cluster, username, kind, resource, count, first_at, last_at) "
        f"SELECT {day}, cluster, username, kind, COALESCE(resource, ''), SUM(count), MIN(at), MAX(at) "
        f"FROM usage_events GROUP BY {day}, cluster, username, kind, COALESCE(resource, '')"
    )
    op.execute(
        "INSERT INTO usage_clusters (cluster, owner, name) "
        f"SELECT cluster, {_OWNER[dialect]}, {_NAME[dialect]} FROM usage_events GROUP BY cluster"
    )


def downgrade() -> None:
    op.drop_table("usage_clusters")
    op.drop_index("ix_usage_days_cluster_day", table_name="usage_days")
    op.drop_table("usage_days")
