"""``arrears-scoring``: serve, migrate."""

from __future__ import annotations

from pathlib import Path

from arrears_scoring.app import SERVICE, create_app
from arrears_scoring.models import SCHEMA
from arrears_scoring.settings import ScoringSettings
from arrears_shared.cli import service_cli

cli = service_cli(
    service=SERVICE,
    schema=SCHEMA,
    migrations_dir=Path(__file__).parent / "migrations",
    load_settings=ScoringSettings,
    create_app=create_app,
    port=lambda s: s.http_port,
)

if __name__ == "__main__":
    cli()
