"""case_manager: outbox, inbox, accounts (timers), cases, timeline

Revision ID: 0001
Revises:

Frozen: the tables are written out here as they were at this revision, so that later changes to
``models.py`` go into later revisions.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from arrears_shared.messaging.tables import create_messaging_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

S = "case_manager"


def upgrade() -> None:
    create_messaging_tables(op.get_bind(), S)
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("state", JSONB, nullable=False),
        sa.Column("wake_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        schema=S,
    )
    op.create_index(
        "ix_case_manager_accounts_wake_at",
        "accounts",
        ["wake_at"],
        schema=S,
        postgresql_where=sa.text("wake_at IS NOT NULL"),
    )
    op.create_table(
        "cases",
        sa.Column("case_id", sa.Text, primary_key=True),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("stage", sa.Text, nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_action_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("assignee", sa.Text, nullable=True),
        sa.Column("credit_hold", sa.Text, nullable=False, server_default=sa.text("'none'")),
        sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("1")),
        schema=S,
    )
    op.create_index(
        "uq_case_manager_open_case_per_account",
        "cases",
        ["account_id"],
        unique=True,
        schema=S,
        postgresql_where=sa.text("status NOT IN ('resolved', 'written_off')"),
    )
    op.create_table(
        "timeline",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("data", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        schema=S,
    )
    op.create_index("ix_case_manager_timeline_case_id", "timeline", ["case_id"], schema=S)


def downgrade() -> None:
    for table in ("timeline", "cases", "accounts", "inbox", "outbox"):
        op.drop_table(table, schema=S)
