"""case_manager: cheaper writes for every applied account update (HOT updates, fewer index entries)

Every applied ``ar.account.updated`` rewrites the account's row (state, version, timer), its
receivables snapshot of the day when the balance moved, and its open case's worklist columns.

- ``accounts`` and ``receivable_snapshots``: such an update changes no indexed column in the usual
  case, so PostgreSQL can write the new row version on the same page without new index entries (a
  heap-only tuple), but only if the page has room: with the default fill factor (100) pages were packed
  full and each update moved the row to another page and added an entry to every index. Pages
  written from now on keep part of their space free (existing pages get it as they are rewritten).
- ``cases``: an update of an active case's priority or overdue amount (indexed, so never heap-only)
  added an entry to every index whose predicate the row meets: 8 of them. Two of those only serve
  rows the update never concerns: the account's latest case is read only for accounts without an open
  case (so only closed cases need that index), and a collector's list filters on one assignee (so
  unassigned cases need no entry). Both become partial: 6 entries per active-case update.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

S = "case_manager"
CLOSED = "status IN ('resolved', 'written_off')"


def upgrade() -> None:
    op.execute(f"ALTER TABLE {S}.accounts SET (fillfactor = 50)")
    op.execute(f"ALTER TABLE {S}.receivable_snapshots SET (fillfactor = 70)")
    op.drop_index("ix_case_manager_cases_account_opened", table_name="cases", schema=S)
    op.execute(f"CREATE INDEX ix_case_manager_cases_account_opened ON {S}.cases (account_id, opened_at) WHERE {CLOSED}")
    op.drop_index("ix_case_manager_cases_assignee_age", table_name="cases", schema=S)
    op.execute(
        f"CREATE INDEX ix_case_manager_cases_assignee_age ON {S}.cases (assignee, opened_at, case_id) "
        "WHERE assignee IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_case_manager_cases_assignee_age", table_name="cases", schema=S)
    op.create_index("ix_case_manager_cases_assignee_age", "cases", ["assignee", "opened_at", "case_id"], schema=S)
    op.drop_index("ix_case_manager_cases_account_opened", table_name="cases", schema=S)
    op.create_index("ix_case_manager_cases_account_opened", "cases", ["account_id", "opened_at"], schema=S)
    op.execute(f"ALTER TABLE {S}.accounts RESET (fillfactor)")
    op.execute(f"ALTER TABLE {S}.receivable_snapshots RESET (fillfactor)")
