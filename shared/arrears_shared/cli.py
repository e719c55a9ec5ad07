"""The command line every service shares: ``serve`` and ``migrate`` (each service adds its own)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer
from fastapi import FastAPI

from arrears_shared.migrations import upgrade
from arrears_shared.runtime import serve as run_server
from arrears_shared.settings import CommonSettings

S = TypeVar("S", bound=CommonSettings)


def service_cli(
    *,
    service: str,
    schema: str,
    migrations_dir: Path,
    load_settings: Callable[[], S],
    create_app: Callable[[S], FastAPI],
    port: Callable[[S], int],
) -> typer.Typer:
    cli = typer.Typer(help=f"Arrears {service} service.", no_args_is_help=True, add_completion=False)

    @cli.command()
    def serve(
        migrate: bool = typer.Option(False, help="Run the database migrations before serving."),
    ) -> None:
        """Serve HTTP and run the consumers and background loops until SIGTERM."""
        settings = load_settings()
        if migrate:
            upgrade(migrations_dir, settings.database_url, schema)
        run_server(create_app(settings), settings, port(settings), service)

    @cli.command()
    def migrate(revision: str = typer.Argument("head")) -> None:
        """Wait for the database, then migrate this service's schema (the prestart step)."""
        settings = load_settings()
        upgrade(migrations_dir, settings.database_url, schema, revision)
        typer.echo(f"{service}: schema {schema} at {revision}")

    return cli
