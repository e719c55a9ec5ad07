"""case_manager: outbox, inbox, accounts (timers), cases, timeline

Revision ID: 0001
Revises:
"""

from alembic import op
from sqlalchemy import MetaData

from arrears_shared.messaging.tables import create_messaging_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_messaging_tables(op.get_bind(), "case_manager")
    from arrears_case_manager.models import accounts, cases, timeline

    target = MetaData(schema="case_manager")
    for table in (accounts, cases, timeline):
        table.to_metadata(target)
    target.create_all(op.get_bind())


def downgrade() -> None:
    for table in ("timeline", "cases", "accounts", "inbox", "outbox"):
        op.drop_table(table, schema="case_manager")
