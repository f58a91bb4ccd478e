"""Den's first schema: users, tokens, resources with versions, shares, secrets, heartbeats, usage.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NAME = 128
URI = 2 * NAME + 2
SCOPE = URI + 16


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(NAME), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(NAME), nullable=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(SCOPE), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])
    op.create_table(
        "resources",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("owner_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("resource_type", sa.String(NAME), nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(NAME), nullable=False),
        sa.UniqueConstraint("owner_id", "name", name="uq_resources_owner_name"),
    )
    op.create_table(
        "resource_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "resource_id",
            sa.Integer(),
            sa.ForeignKey("resources.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(NAME), nullable=False),
        sa.UniqueConstraint("resource_id", "version", name="uq_resource_versions_version"),
    )
    op.create_table(
        "shares",
        sa.Column(
            "resource_id",
            sa.Integer(),
            sa.ForeignKey("resources.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("access_level", sa.String(8), nullable=False),
    )
    op.create_index("ix_shares_user_id", "shares", ["user_id"])
    op.create_table(
        "secret_values",
        sa.Column(
            "resource_id",
            sa.Integer(),
            sa.ForeignKey("resources.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("ciphertext", sa.Text(), nullable=False),
    )
    op.create_table(
        "heartbeats",
        sa.Column(
            "resource_id",
            sa.Integer(),
            sa.ForeignKey("resources.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "usage_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("username", sa.String(NAME), nullable=False),
        sa.Column("cluster", sa.String(URI), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("resource", sa.String(URI), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_usage_events_cluster_at", "usage_events", ["cluster", "at"])
    op.create_index("ix_usage_events_at", "usage_events", ["at"])


def downgrade() -> None:
    for index, table in (
        ("ix_usage_events_at", "usage_events"),
        ("ix_usage_events_cluster_at", "usage_events"),
        ("ix_shares_user_id", "shares"),
        ("ix_tokens_user_id", "tokens"),
    ):
        op.drop_index(index, table_name=table)
    for table in (
        "usage_events",
        "heartbeats",
        "secret_values",
        "shares",
        "resource_versions",
        "resources",
        "tokens",
        "users",
    ):
        op.drop_table(table)
