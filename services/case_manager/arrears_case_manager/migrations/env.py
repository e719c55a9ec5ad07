"""Alembic environment for the case_manager schema."""

from arrears_case_manager.models import metadata
from arrears_shared.migrations import run_env

run_env(metadata)
