"""case_manager: an index on cases by account and opening time

The set-based consumer and sweeper read the latest case of every account of a batch that has no
open case (a written-off debt does not reopen) in one statement; without this index that is a
scan of the whole cases table per batch.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

S = "case_manager"


def upgrade() -> None:
    op.create_index("ix_case_manager_cases_account_opened", "cases", ["account_id", "opened_at"], schema=S)


def downgrade() -> None:
    op.drop_index("ix_case_manager_cases_account_opened", table_name="cases", schema=S)
