"""Alembic environment for the ingest schema."""

from arrears_ingest.models import metadata
from arrears_shared.migrations import run_env

run_env(metadata)
