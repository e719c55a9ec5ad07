"""``arrears-ingest``: serve, migrate, keys."""

from __future__ import annotations

from pathlib import Path

from arrears_ingest.app import SERVICE, create_app
from arrears_ingest.auth.cli import keys_cli
from arrears_ingest.models import SCHEMA
from arrears_ingest.settings import IngestSettings
from arrears_shared.cli import service_cli

cli = service_cli(
    service=SERVICE,
    schema=SCHEMA,
    migrations_dir=Path(__file__).parent / "migrations",
    load_settings=IngestSettings,
    create_app=create_app,
    port=lambda s: s.http_port,
)
cli.add_typer(keys_cli, name="keys")

if __name__ == "__main__":
    cli()
