"""case_manager: worklist indexes in which every filter x sort shape is one index range scan

Revision ID: 0003
Revises: 0002

The worklist pages through active cases by (priority, case_id) descending or (opened_at, case_id)
ascending, filtered by equality on status, stage, tier, assignee and currency and by a minimum
overdue amount. 0002's (opened_at, case_id) and (priority, case_id) indexes held every case and no
filter column, so a filtered page fetched a table row for each index entry until 51 matched: tens of
thousands of rows for an age-sorted page filtered on tier, stage or currency when matching cases are
clustered in time. Here each sort key leads an index of the active cases only (the same predicate as
the default status list, so closed cases, the bulk of an old table, are not in it) whose trailing
columns are the filter columns: the filters are evaluated on the index entries and only the page's
own rows are read from the table (status is one of those columns: a single active status is a filter
too). The same with currency leading serves a currency's worklist (a rare currency's too); a closed
status has (status, sort key) indexes of the closed cases only; a collector's oldest-first list keeps
(assignee, opened_at) (0002). 0002's priority, age and (status, priority) indexes go: every update
of an active case wrote to them, and an active case's update now writes to the four active indexes,
the primary key, the open-case-per-account and the assignee index.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

S = "case_manager"
ACTIVE = "status NOT IN ('resolved', 'written_off')"
CLOSED = "status IN ('resolved', 'written_off')"
FILTERS = "status, tier, stage, currency, assignee, overdue_minor"
FILTERS_BUT_CURRENCY = "status, tier, stage, assignee, overdue_minor"


def upgrade() -> None:
    op.execute(
        f"CREATE INDEX ix_case_manager_cases_active_priority ON {S}.cases (priority, case_id, {FILTERS}) WHERE {ACTIVE}"
    )
    op.execute(
        f"CREATE INDEX ix_case_manager_cases_active_age ON {S}.cases (opened_at, case_id, {FILTERS}) WHERE {ACTIVE}"
    )
    # Collectors work a currency (a region) at a time, and a currency can be rare: its own ordered ranges.
    op.execute(
        f"CREATE INDEX ix_case_manager_cases_active_currency_priority ON {S}.cases "
        f"(currency, priority, case_id, {FILTERS_BUT_CURRENCY}) WHERE {ACTIVE}"
    )
    op.execute(
        f"CREATE INDEX ix_case_manager_cases_active_currency_age ON {S}.cases "
        f"(currency, opened_at, case_id, {FILTERS_BUT_CURRENCY}) WHERE {ACTIVE}"
    )
    # A closed status (resolved, written off) is asked for by itself: its own ordered ranges.
    op.execute(
        f"CREATE INDEX ix_case_manager_cases_closed_priority ON {S}.cases (status, priority, case_id) WHERE {CLOSED}"
    )
    op.execute(
        f"CREATE INDEX ix_case_manager_cases_closed_age ON {S}.cases (status, opened_at, case_id) WHERE {CLOSED}"
    )
    # Superseded: they held every case (so every case update wrote to them) and no filter column.
    for index in ("ix_case_manager_cases_priority", "ix_case_manager_cases_age", "ix_case_manager_cases_status"):
        op.drop_index(index, table_name="cases", schema=S)


def downgrade() -> None:
    op.create_index("ix_case_manager_cases_priority", "cases", ["priority", "case_id"], schema=S)
    op.create_index("ix_case_manager_cases_age", "cases", ["opened_at", "case_id"], schema=S)
    op.create_index("ix_case_manager_cases_status", "cases", ["status", "priority", "case_id"], schema=S)
    for index in (
        "ix_case_manager_cases_closed_age",
        "ix_case_manager_cases_closed_priority",
        "ix_case_manager_cases_active_currency_age",
        "ix_case_manager_cases_active_currency_priority",
        "ix_case_manager_cases_active_age",
        "ix_case_manager_cases_active_priority",
    ):
        op.drop_index(index, table_name="cases", schema=S)
