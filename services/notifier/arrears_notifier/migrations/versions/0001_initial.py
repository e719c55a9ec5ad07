"""notifier: outbox, inbox, notifications, suppressions

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
    create_messaging_tables(op.get_bind(), "notifier")
    from arrears_notifier.models import notifications, suppressions

    target = MetaData(schema="notifier")
    for table in (notifications, suppressions):
        table.to_metadata(target)
    target.create_all(op.get_bind())


def downgrade() -> None:
    for table in ("suppressions", "notifications", "inbox", "outbox"):
        op.drop_table(table, schema="notifier")
