"""Alembic environment for the scoring schema."""

from arrears_scoring.models import metadata
from arrears_shared.migrations import run_env

run_env(metadata)
