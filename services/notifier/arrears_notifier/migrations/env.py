"""Alembic environment for the notifier schema."""

from arrears_notifier.models import metadata
from arrears_shared.migrations import run_env

run_env(metadata)
